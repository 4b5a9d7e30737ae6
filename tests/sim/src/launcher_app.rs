//! The launcher app every simulated device shows: its state, layout and input handling (sans-IO).
//!
//! Buttons "A", "B", "C" count presses (the last one pressed is highlighted), a text field
//! shows typed text, a list of [`LIST_ROWS`] rows scrolls by drags, swipes and scroll events,
//! and a 64x64 marker in the top-left corner is white while any pointer is down.
//! Coordinates are screen pixels of the current rotation.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::input_command::{InputEvent, PressAction, TouchAction};

/// The buttons' labels, left to right.
pub const BUTTONS: [&str; 3] = ["A", "B", "C"];
/// Rows in the list.
pub const LIST_ROWS: i32 = 50;
/// Side of the top-left latency marker, in screen pixels.
pub const MARKER_SIZE: i32 = 64;
/// Characters the text field keeps (older ones are dropped).
const TEXT_LIMIT: usize = 1000;
/// The largest screen side the app lays out.
pub const MAX_SIDE: i32 = 16384;

/// A rectangle in screen pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

impl Rect {
    pub fn contains(&self, x: i32, y: i32) -> bool {
        x >= self.x && y >= self.y && x < self.x + self.width && y < self.y + self.height
    }

    /// The centre point, handy for tests that click.
    pub fn center(&self) -> (i32, i32) {
        (self.x + self.width / 2, self.y + self.height / 2)
    }
}

/// Where everything is for the current rotation (`GET /devices/{serial}/app/layout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub width: i32,
    pub height: i32,
    pub rotation: u8,
    pub marker: Rect,
    pub frame_counter: Rect,
    pub clock: Rect,
    pub buttons: BTreeMap<String, Rect>,
    pub text_field: Rect,
    pub list: Rect,
    pub row_height: i32,
    pub rows: i32,
}

impl Layout {
    /// Lays the app out on a `width` x `height` screen.
    pub fn compute(width: i32, height: i32, rotation: u8) -> Self {
        // Bounded so no sum below can overflow.
        let (width, height) = (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE));
        let unit = (width.min(height) / 20).max(4);
        let top = MARKER_SIZE.max(2 * unit);
        let buttons_y = top + unit;
        let button_width = ((width - 4 * unit) / 3).max(1);
        let buttons = BUTTONS
            .iter()
            .enumerate()
            .map(|(index, label)| {
                let rect = Rect {
                    x: unit + index as i32 * (button_width + unit),
                    y: buttons_y,
                    width: button_width,
                    height: 3 * unit,
                };
                (label.to_string(), rect)
            })
            .collect();
        let text_field = Rect {
            x: unit,
            y: buttons_y + 4 * unit,
            width: (width - 2 * unit).max(1),
            height: 2 * unit,
        };
        let list_y = text_field.y + text_field.height + unit;
        let row_height = 2 * unit;
        Self {
            width,
            height,
            rotation,
            marker: Rect {
                x: 0,
                y: 0,
                width: MARKER_SIZE,
                height: MARKER_SIZE,
            },
            frame_counter: Rect {
                x: MARKER_SIZE + unit / 2,
                y: unit / 2,
                width: (width / 2 - MARKER_SIZE).max(1),
                height: unit,
            },
            clock: Rect {
                x: width - 6 * unit,
                y: unit / 2,
                width: 5 * unit,
                height: unit,
            },
            buttons,
            text_field,
            list: Rect {
                x: unit,
                y: list_y,
                width: (width - 2 * unit).max(1),
                height: (height - unit - list_y).max(row_height),
            },
            row_height,
            rows: LIST_ROWS,
        }
    }

    /// The largest list scroll offset.
    pub fn max_scroll(&self) -> i32 {
        (self.rows * self.row_height - self.list.height).max(0)
    }
}

/// One finger on the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub x: i32,
    pub y: i32,
    start_x: i32,
    start_y: i32,
    start_scroll: i32,
}

/// The app's whole state. Cheap to clone (captures render from a snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LauncherApp {
    natural_width: i32,
    natural_height: i32,
    rotation: u8,
    layout: Layout,
    presses: [u64; 3],
    last_button: Option<usize>,
    text: String,
    scroll: i32,
    pointers: BTreeMap<u64, Pointer>,
    last_key: Option<u32>,
    clipboard: String,
}

impl LauncherApp {
    /// The app on a screen of `width` x `height` pixels in its natural orientation.
    pub fn new(width: u32, height: u32) -> Self {
        let width = i32::try_from(width).unwrap_or(MAX_SIDE).clamp(1, MAX_SIDE);
        let height = i32::try_from(height).unwrap_or(MAX_SIDE).clamp(1, MAX_SIDE);
        Self {
            natural_width: width,
            natural_height: height,
            rotation: 0,
            layout: Layout::compute(width, height, 0),
            presses: [0; 3],
            last_button: None,
            text: String::new(),
            scroll: 0,
            pointers: BTreeMap::new(),
            last_key: None,
            clipboard: String::new(),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Screen size for the current rotation.
    pub fn size(&self) -> (u32, u32) {
        (self.layout.width as u32, self.layout.height as u32)
    }

    pub fn rotation(&self) -> u8 {
        self.rotation
    }

    pub fn presses(&self, button: usize) -> u64 {
        self.presses.get(button).copied().unwrap_or(0)
    }

    pub fn last_button(&self) -> Option<&'static str> {
        self.last_button
            .and_then(|index| BUTTONS.get(index).copied())
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn scroll(&self) -> i32 {
        self.scroll
    }

    pub fn clipboard(&self) -> &str {
        &self.clipboard
    }

    /// The last key pressed, by Android name where known ("HOME", "BACK", ...) or number.
    pub fn last_key(&self) -> Option<String> {
        self.last_key.map(key_name)
    }

    /// Pointers down now, with their positions.
    pub fn pointers(&self) -> impl Iterator<Item = (u64, i32, i32)> + '_ {
        self.pointers.iter().map(|(id, p)| (*id, p.x, p.y))
    }

    pub fn any_pointer_down(&self) -> bool {
        !self.pointers.is_empty()
    }

    /// Applies one input event; returns whether the screen changed.
    pub fn apply(&mut self, event: &InputEvent) -> bool {
        let before = self.clone();
        match event {
            InputEvent::Tap { x, y } => {
                let (x, y) = (clamp(*x), clamp(*y));
                self.touch(TouchAction::Down, u64::MAX, x, y);
                self.touch(TouchAction::Up, u64::MAX, x, y);
            }
            InputEvent::Swipe { x1, y1, x2, y2, .. } => {
                let id = u64::MAX;
                self.touch(TouchAction::Down, id, clamp(*x1), clamp(*y1));
                self.touch(TouchAction::Move, id, clamp(*x2), clamp(*y2));
                self.touch(TouchAction::Up, id, clamp(*x2), clamp(*y2));
            }
            InputEvent::Touch {
                action,
                pointer,
                x,
                y,
            } => self.touch(*action, *pointer, clamp(*x), clamp(*y)),
            InputEvent::Scroll { x, y, vscroll, .. } => {
                if self.layout.list.contains(clamp(*x), clamp(*y)) {
                    // 0x8000 is 1.0 and one unit is 16 notches; a notch scrolls one row.
                    let rows_scrolled = i64::from(*vscroll) * 16 / 32768;
                    let delta = rows_scrolled * i64::from(self.layout.row_height);
                    self.set_scroll(i64::from(self.scroll) - delta);
                }
            }
            InputEvent::Key { code, action } => {
                if *action != Some(PressAction::Up) {
                    self.key(*code);
                }
            }
            InputEvent::Text { text } => self.type_text(text),
            InputEvent::Rotate => self.rotate(),
            InputEvent::Clipboard { text, paste } => {
                self.clipboard = text.clone();
                if *paste {
                    self.type_text(text);
                }
            }
        }
        *self != before
    }

    fn touch(&mut self, action: TouchAction, id: u64, x: i32, y: i32) {
        match action {
            TouchAction::Down => {
                self.pointers.insert(
                    id,
                    Pointer {
                        x,
                        y,
                        start_x: x,
                        start_y: y,
                        start_scroll: self.scroll,
                    },
                );
            }
            TouchAction::Move => {
                if let Some(pointer) = self.pointers.get_mut(&id) {
                    pointer.x = x;
                    pointer.y = y;
                    let pointer = *pointer;
                    self.drag(&pointer);
                }
            }
            TouchAction::Up => {
                if let Some(mut pointer) = self.pointers.remove(&id) {
                    pointer.x = x;
                    pointer.y = y;
                    self.drag(&pointer);
                    self.release(&pointer);
                }
            }
        }
    }

    /// A finger that went down in the list drags it.
    fn drag(&mut self, pointer: &Pointer) {
        if self.layout.list.contains(pointer.start_x, pointer.start_y) {
            let moved = i64::from(pointer.start_y) - i64::from(pointer.y);
            self.set_scroll(i64::from(pointer.start_scroll) + moved);
        }
    }

    /// A press counts when the finger goes down and up on the same button.
    fn release(&mut self, pointer: &Pointer) {
        let hit = |x, y| {
            self.layout
                .buttons
                .values()
                .position(|rect| rect.contains(x, y))
        };
        if let Some(button) = hit(pointer.start_x, pointer.start_y)
            && hit(pointer.x, pointer.y) == Some(button)
        {
            self.presses[button] += 1;
            self.last_button = Some(button);
        }
    }

    fn set_scroll(&mut self, scroll: i64) {
        let max = i64::from(self.layout.max_scroll());
        self.scroll = scroll.clamp(0, max) as i32;
    }

    fn key(&mut self, code: u32) {
        self.last_key = Some(code);
        match code {
            // DEL (backspace)
            67 => {
                self.text.pop();
            }
            62 => self.type_text(" "),
            7..=16 => self.type_text(&char::from(b'0' + (code - 7) as u8).to_string()),
            29..=54 => self.type_text(&char::from(b'a' + (code - 29) as u8).to_string()),
            _ => {}
        }
    }

    fn type_text(&mut self, text: &str) {
        self.text.push_str(text);
        let excess = self.text.chars().count().saturating_sub(TEXT_LIMIT);
        if excess > 0 {
            self.text = self.text.chars().skip(excess).collect();
        }
    }

    /// Turns by 90 degrees: width and height swap and everything is laid out again.
    pub fn rotate(&mut self) {
        self.rotation = (self.rotation + 1) % 4;
        let (width, height) = if self.rotation % 2 == 1 {
            (self.natural_height, self.natural_width)
        } else {
            (self.natural_width, self.natural_height)
        };
        self.layout = Layout::compute(width, height, self.rotation);
        self.pointers.clear();
        self.set_scroll(i64::from(self.scroll));
    }
}

fn clamp(value: i64) -> i32 {
    value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Android's name for a few key codes.
pub fn key_name(code: u32) -> String {
    match code {
        3 => "HOME".into(),
        4 => "BACK".into(),
        24 => "VOLUME_UP".into(),
        25 => "VOLUME_DOWN".into(),
        26 => "POWER".into(),
        66 => "ENTER".into(),
        67 => "DEL".into(),
        187 => "APP_SWITCH".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[path = "launcher_app_tests.rs"]
mod tests;
