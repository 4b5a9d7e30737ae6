//! Software rendering of the launcher app straight into an I420 frame at the video size.
//!
//! The app is laid out in screen pixels; the renderer scales every rectangle to the frame,
//! so a 1080x2400 screen renders directly into a 576x1280 video frame.

use crate::font;
use crate::launcher_app::{LauncherApp, Rect};

/// A colour in limited-range BT.601 YUV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    pub y: u8,
    pub u: u8,
    pub v: u8,
}

impl Color {
    pub const fn rgb(r: u8, g: u8, b: u8) -> Self {
        let (r, g, b) = (r as i32, g as i32, b as i32);
        let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
        let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
        let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
        Self {
            y: y as u8,
            u: u as u8,
            v: v as u8,
        }
    }
}

pub const WHITE: Color = Color::rgb(255, 255, 255);
pub const BLACK: Color = Color::rgb(0, 0, 0);
const BACKGROUND: Color = Color::rgb(32, 34, 40);
const TOP_BAR: Color = Color::rgb(16, 16, 20);
const LABEL: Color = Color::rgb(230, 230, 230);
const BUTTON: Color = Color::rgb(70, 72, 96);
const BUTTON_HIGHLIGHT: Color = Color::rgb(40, 140, 255);
const FIELD: Color = Color::rgb(240, 240, 240);
const FIELD_TEXT: Color = Color::rgb(10, 10, 10);
const ROW_EVEN: Color = Color::rgb(52, 60, 70);
const ROW_ODD: Color = Color::rgb(64, 74, 86);
const TOUCH: Color = Color::rgb(255, 70, 70);

/// A planar 4:2:0 picture with even dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct I420Frame {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl I420Frame {
    /// A black frame; odd or zero dimensions are rounded up to the next even number.
    pub fn new(width: u32, height: u32) -> Self {
        let width = (width.max(2) + 1) & !1;
        let height = (height.max(2) + 1) & !1;
        let luma = width as usize * height as usize;
        Self {
            width,
            height,
            y: vec![BLACK.y; luma],
            u: vec![128; luma / 4],
            v: vec![128; luma / 4],
        }
    }

    /// Fills the pixels [x0, x1) x [y0, y1), clipped to the frame.
    pub fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Color) {
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        let (x0, x1) = (x0.clamp(0, w) as usize, x1.clamp(0, w) as usize);
        let (y0, y1) = (y0.clamp(0, h) as usize, y1.clamp(0, h) as usize);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let stride = self.width as usize;
        for row in y0..y1 {
            self.y[row * stride + x0..row * stride + x1].fill(color.y);
        }
        let chroma_stride = stride / 2;
        let (cx0, cx1) = (x0 / 2, x1.div_ceil(2));
        for row in y0 / 2..y1.div_ceil(2) {
            let start = row * chroma_stride;
            self.u[start + cx0..start + cx1].fill(color.u);
            self.v[start + cx0..start + cx1].fill(color.v);
        }
    }

    /// The luma of pixel (x, y), or 0 outside the frame.
    pub fn luma(&self, x: u32, y: u32) -> u8 {
        if x >= self.width || y >= self.height {
            return 0;
        }
        self.y[y as usize * self.width as usize + x as usize]
    }
}

/// What a frame shows besides the app state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    /// Shown in the frame counter.
    pub frame_number: u64,
    /// Milliseconds since the capture started, shown by the clock.
    pub clock_ms: u64,
}

/// Maps screen rectangles onto the frame.
struct Painter<'a> {
    frame: &'a mut I420Frame,
    screen_width: i64,
    screen_height: i64,
}

impl Painter<'_> {
    fn to_frame_x(&self, x: i64) -> i64 {
        x * i64::from(self.frame.width) / self.screen_width
    }

    fn to_frame_y(&self, y: i64) -> i64 {
        y * i64::from(self.frame.height) / self.screen_height
    }

    /// Fills `rect` (screen pixels), clipped to `clip` (screen pixels).
    fn rect(&mut self, rect: Rect, clip: Option<Rect>, color: Color) {
        let (mut x0, mut y0) = (i64::from(rect.x), i64::from(rect.y));
        let (mut x1, mut y1) = (x0 + i64::from(rect.width), y0 + i64::from(rect.height));
        if let Some(clip) = clip {
            x0 = x0.max(clip.x.into());
            y0 = y0.max(clip.y.into());
            x1 = x1.min(i64::from(clip.x) + i64::from(clip.width));
            y1 = y1.min(i64::from(clip.y) + i64::from(clip.height));
        }
        let (fx0, fy0) = (self.to_frame_x(x0), self.to_frame_y(y0));
        let (fx1, fy1) = (self.to_frame_x(x1), self.to_frame_y(y1));
        // Keep thin things visible when scaled down.
        self.frame
            .fill(fx0, fy0, fx1.max(fx0 + 1), fy1.max(fy0 + 1), color);
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel `size` screen pixels.
    fn text(&mut self, text: &str, x: i32, y: i32, size: i32, clip: Option<Rect>, color: Color) {
        let size = size.max(1);
        font::for_each_pixel(text, |column, row| {
            let pixel = Rect {
                x: x.saturating_add(column as i32 * size),
                y: y.saturating_add(row as i32 * size),
                width: size,
                height: size,
            };
            self.rect(pixel, clip, color);
        });
    }
}

/// Renders `app` into `frame` (any size; the app is scaled to fill it).
pub fn render(app: &LauncherApp, frame: &mut I420Frame, info: FrameInfo) {
    let layout = app.layout();
    let mut painter = Painter {
        frame,
        screen_width: i64::from(layout.width.max(1)),
        screen_height: i64::from(layout.height.max(1)),
    };
    let whole = Rect {
        x: 0,
        y: 0,
        width: layout.width,
        height: layout.height,
    };
    painter.rect(whole, None, BACKGROUND);
    let unit = layout.row_height / 2;
    let top = Rect {
        height: layout.buttons.values().next().map_or(64, |b| b.y - unit),
        ..whole
    };
    painter.rect(top, None, TOP_BAR);

    let small = (unit / 8).max(1);
    let counter = layout.frame_counter;
    painter.text(
        &format!("F{}", info.frame_number),
        counter.x,
        counter.y,
        small,
        Some(counter),
        LABEL,
    );
    let clock = layout.clock;
    let tenths = info.clock_ms / 100;
    let clock_text = format!(
        "{:02}:{:02}.{}",
        tenths / 600 % 100,
        tenths / 10 % 60,
        tenths % 10
    );
    painter.text(&clock_text, clock.x, clock.y, small, Some(clock), LABEL);

    let label_size = (unit * 3 / 2 / 8).max(1);
    for (index, (label, rect)) in layout.buttons.iter().enumerate() {
        let color = if app.last_button() == Some(label.as_str()) {
            BUTTON_HIGHLIGHT
        } else {
            BUTTON
        };
        painter.rect(*rect, None, color);
        let text = format!("{label} {}", app.presses(index));
        let width = font::text_width(&text) as i32 * label_size;
        let x = rect.x + (rect.width - width).max(0) / 2;
        let y = rect.y + (rect.height - 7 * label_size) / 2;
        painter.text(&text, x, y, label_size, Some(*rect), LABEL);
    }

    let field = layout.text_field;
    painter.rect(field, None, FIELD);
    let text_size = (unit / 6).max(1);
    let fits = (field.width / (font::CELL_WIDTH as i32 * text_size)).max(2) as usize - 1;
    let chars = app.text().chars().count();
    let shown: String = app
        .text()
        .chars()
        .skip(chars.saturating_sub(fits))
        .collect();
    let text_y = field.y + (field.height - 7 * text_size) / 2;
    painter.text(
        &format!("{shown}_"),
        field.x + text_size * 2,
        text_y,
        text_size,
        Some(field),
        FIELD_TEXT,
    );

    let list = layout.list;
    let first = (app.scroll() / layout.row_height.max(1)).max(0);
    for row in first..layout.rows {
        let y = list.y + row * layout.row_height - app.scroll();
        if y >= list.y + list.height {
            break;
        }
        let rect = Rect {
            x: list.x,
            y,
            width: list.width,
            height: layout.row_height,
        };
        let color = if row % 2 == 0 { ROW_EVEN } else { ROW_ODD };
        painter.rect(rect, Some(list), color);
        let text_y = y + (layout.row_height - 7 * text_size) / 2;
        let label = format!("ROW {}", row + 1);
        painter.text(&label, list.x + unit, text_y, text_size, Some(list), LABEL);
    }

    for (_, x, y) in app.pointers() {
        let dot = Rect {
            x: x.saturating_sub(unit / 2),
            y: y.saturating_sub(unit / 2),
            width: unit.max(8),
            height: unit.max(8),
        };
        painter.rect(dot, None, TOUCH);
    }

    let marker = if app.any_pointer_down() { WHITE } else { BLACK };
    painter.rect(layout.marker, None, marker);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input_command::{InputEvent, TouchAction};

    fn rendered(app: &LauncherApp, width: u32, height: u32) -> I420Frame {
        let mut frame = I420Frame::new(width, height);
        render(app, &mut frame, FrameInfo::default());
        frame
    }

    #[test]
    fn marker_is_white_only_while_a_pointer_is_down() {
        let mut app = LauncherApp::new(1080, 2400);
        let frame = rendered(&app, 576, 1280);
        assert_eq!(frame.luma(0, 0), BLACK.y);
        assert_eq!(frame.luma(30, 30), BLACK.y);
        app.apply(&InputEvent::Touch {
            action: TouchAction::Down,
            pointer: 0,
            x: 540,
            y: 1800,
        });
        let frame = rendered(&app, 576, 1280);
        assert_eq!(frame.luma(0, 0), WHITE.y);
        assert_eq!(frame.luma(30, 30), WHITE.y);
        // The touch mark is drawn where the finger is (screen 540,1800 -> video 288,960).
        assert_eq!(frame.luma(288, 960), TOUCH.y);
        app.apply(&InputEvent::Touch {
            action: TouchAction::Up,
            pointer: 0,
            x: 540,
            y: 1800,
        });
        assert_eq!(rendered(&app, 576, 1280).luma(0, 0), BLACK.y);
    }

    #[test]
    fn pressed_button_is_highlighted_and_frames_differ() {
        let mut app = LauncherApp::new(1080, 2400);
        let before = rendered(&app, 576, 1280);
        let button = app.layout().buttons["A"];
        let (x, y) = button.center();
        app.apply(&InputEvent::Tap {
            x: x.into(),
            y: y.into(),
        });
        let after = rendered(&app, 576, 1280);
        assert_ne!(before, after);
        // A corner of the button, scaled into the video.
        let (vx, vy) = ((button.x + 2) * 576 / 1080, (button.y + 2) * 1280 / 2400);
        assert_eq!(after.luma(vx as u32, vy as u32), BUTTON_HIGHLIGHT.y);
    }

    #[test]
    fn odd_and_tiny_frames_render() {
        let app = LauncherApp::new(3, 5);
        let frame = rendered(&app, 3, 5);
        assert_eq!((frame.width, frame.height), (4, 6));
        assert_eq!(frame.u.len(), 6);
        let frame = rendered(&LauncherApp::new(2560, 1600), 1280, 800);
        assert_eq!(frame.y.len(), 1280 * 800);
    }
}
