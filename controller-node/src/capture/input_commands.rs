//! Control messages as Android `input` shell commands (the fallback without scrcpy), sans-IO:
//! a down then up without movement is a tap, with movement a swipe of the same duration;
//! keys act on key up; text is escaped for `input text` and the shell.

use std::collections::HashMap;
use std::time::Instant;

use super::{CaptureError, ControlMessage, KeyAction, TouchAction, VideoSize};
use crate::adb_host::shell_quote;

/// Movement (in screen pixels) below which a touch is a tap.
const TAP_SLOP: i64 = 10;
const KEYCODE_BACK: u32 = 4;

#[derive(Debug, Clone, Copy)]
struct Touch {
    start: (i64, i64),
    last: (i64, i64),
    at: Instant,
    moved: bool,
}

/// Turns [`ControlMessage`]s into `input` commands for a screen of `screen` pixels.
#[derive(Debug)]
pub struct InputTranslator {
    screen: VideoSize,
    touches: HashMap<u64, Touch>,
}

/// What a control message becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputAction {
    /// Nothing to run yet (a touch down, a key down).
    Nothing,
    /// Run this shell command.
    Command(String),
    /// Ask the video for a keyframe.
    ResetVideo,
}

impl InputTranslator {
    /// `screen`: the device's input coordinate space (its display size).
    pub fn new(screen: VideoSize) -> Self {
        Self {
            screen,
            touches: HashMap::new(),
        }
    }

    pub fn translate(
        &mut self,
        message: &ControlMessage,
        now: Instant,
    ) -> Result<InputAction, CaptureError> {
        use InputAction::{Command, Nothing};
        match message {
            ControlMessage::Touch {
                action,
                pointer_id,
                x,
                y,
                width,
                height,
                ..
            } => {
                let point = self.scale(*x, *y, *width, *height)?;
                match action {
                    TouchAction::Down => {
                        self.touches.insert(
                            *pointer_id,
                            Touch {
                                start: point,
                                last: point,
                                at: now,
                                moved: false,
                            },
                        );
                        Ok(Nothing)
                    }
                    TouchAction::Move => {
                        if let Some(touch) = self.touches.get_mut(pointer_id) {
                            touch.last = point;
                            touch.moved |= far(touch.start, point);
                        }
                        Ok(Nothing)
                    }
                    TouchAction::Up => {
                        let Some(touch) = self.touches.remove(pointer_id) else {
                            return Ok(Nothing);
                        };
                        let end = point;
                        if touch.moved || far(touch.start, end) {
                            let ms = now.saturating_duration_since(touch.at).as_millis().max(1);
                            Ok(Command(format!(
                                "input swipe {} {} {} {} {ms}",
                                touch.start.0, touch.start.1, end.0, end.1
                            )))
                        } else {
                            Ok(Command(format!(
                                "input tap {} {}",
                                touch.start.0, touch.start.1
                            )))
                        }
                    }
                }
            }
            ControlMessage::Key {
                action, keycode, ..
            } => Ok(match action {
                KeyAction::Down => Nothing,
                KeyAction::Up => Command(format!("input keyevent {keycode}")),
            }),
            ControlMessage::BackOrScreenOn { action } => Ok(match action {
                KeyAction::Down => Nothing,
                KeyAction::Up => Command(format!("input keyevent {KEYCODE_BACK}")),
            }),
            ControlMessage::Text(text) => {
                let text = super::scrcpy_control::truncate_utf8(text, 300);
                if text.is_empty() {
                    return Ok(Nothing);
                }
                Ok(Command(format!("input text {}", escape_input_text(text))))
            }
            ControlMessage::ResetVideo => Ok(InputAction::ResetVideo),
            ControlMessage::Scroll { .. } => Err(unsupported("scrolling")),
            ControlMessage::SetClipboard { .. } => Err(unsupported("setting the clipboard")),
            ControlMessage::RotateDevice => Err(unsupported("rotating the device")),
        }
    }

    /// Video pixels to screen pixels, clamped to the screen.
    fn scale(&self, x: i32, y: i32, width: u16, height: u16) -> Result<(i64, i64), CaptureError> {
        if width == 0 || height == 0 {
            return Err(CaptureError::Control(
                "a touch with a zero video size".into(),
            ));
        }
        let scale = |v: i32, from: u16, to: u32| {
            let to = i64::from(to.max(1));
            (i64::from(v) * to / i64::from(from)).clamp(0, to - 1)
        };
        Ok((
            scale(x, width, self.screen.width),
            scale(y, height, self.screen.height),
        ))
    }
}

fn far(a: (i64, i64), b: (i64, i64)) -> bool {
    (a.0 - b.0).abs() > TAP_SLOP || (a.1 - b.1).abs() > TAP_SLOP
}

fn unsupported(what: &str) -> CaptureError {
    CaptureError::Unsupported(format!(
        "{what} needs the scrcpy server (this node captures with screenrecord)"
    ))
}

/// `input text` reads `%s` as a space and splits on real spaces; the shell then needs quoting.
pub fn escape_input_text(text: &str) -> String {
    let text: String = text
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace(' ', "%s");
    shell_quote(&text)
}

/// Parses `wm size` output: the override size if any, else the physical size.
pub fn parse_wm_size(output: &str) -> Option<VideoSize> {
    let mut physical = None;
    let mut over = None;
    for line in output.lines() {
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        let Some((w, h)) = value.trim().split_once('x') else {
            continue;
        };
        let (Ok(width), Ok(height)) = (w.trim().parse::<u32>(), h.trim().parse::<u32>()) else {
            continue;
        };
        if width == 0 || height == 0 || width > 16_384 || height > 16_384 {
            continue;
        }
        let size = Some(VideoSize { width, height });
        match label.trim() {
            "Physical size" => physical = size,
            "Override size" => over = size,
            _ => {}
        }
    }
    over.or(physical)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn touch(action: TouchAction, x: i32, y: i32) -> ControlMessage {
        ControlMessage::Touch {
            action,
            pointer_id: 0,
            x,
            y,
            width: 540,
            height: 1200,
            pressure: 0xFFFF,
        }
    }

    fn command(text: &str) -> InputAction {
        InputAction::Command(text.into())
    }

    #[test]
    fn taps_and_swipes_in_screen_pixels() {
        let start = Instant::now();
        let mut input = InputTranslator::new(VideoSize {
            width: 1080,
            height: 2400,
        });
        let at = |ms| start + Duration::from_millis(ms);
        let down = input.translate(&touch(TouchAction::Down, 100, 200), at(0));
        assert_eq!(down, Ok(InputAction::Nothing));
        let wiggle = input.translate(&touch(TouchAction::Move, 102, 201), at(10));
        assert_eq!(wiggle, Ok(InputAction::Nothing));
        let up = input.translate(&touch(TouchAction::Up, 102, 201), at(50));
        assert_eq!(up, Ok(command("input tap 200 400")));

        input
            .translate(&touch(TouchAction::Down, 100, 1000), at(100))
            .expect("down");
        input
            .translate(&touch(TouchAction::Move, 100, 600), at(200))
            .expect("move");
        let up = input.translate(&touch(TouchAction::Up, 100, 200), at(400));
        assert_eq!(up, Ok(command("input swipe 200 2000 200 400 300")));
        // Out of range clamps; an up without a down does nothing.
        input
            .translate(&touch(TouchAction::Down, -5, 5000), at(500))
            .expect("down");
        let up = input.translate(&touch(TouchAction::Up, -5, 5000), at(501));
        assert_eq!(up, Ok(command("input tap 0 2399")));
        let stray = input.translate(&touch(TouchAction::Up, 1, 1), at(600));
        assert_eq!(stray, Ok(InputAction::Nothing));
        let zero = ControlMessage::Touch {
            action: TouchAction::Down,
            pointer_id: 1,
            x: 1,
            y: 1,
            width: 0,
            height: 0,
            pressure: 0,
        };
        assert!(input.translate(&zero, at(700)).is_err());
    }

    #[test]
    fn keys_text_and_the_rest() {
        let now = Instant::now();
        let mut input = InputTranslator::new(VideoSize {
            width: 1,
            height: 1,
        });
        let key = |action| ControlMessage::Key {
            action,
            keycode: 3,
            repeat: 0,
            metastate: 0,
        };
        assert_eq!(
            input.translate(&key(KeyAction::Down), now),
            Ok(InputAction::Nothing)
        );
        assert_eq!(
            input.translate(&key(KeyAction::Up), now),
            Ok(command("input keyevent 3"))
        );
        assert_eq!(
            input.translate(&ControlMessage::Text("hello world".into()), now),
            Ok(command("input text hello%sworld"))
        );
        assert_eq!(
            input.translate(&ControlMessage::Text("it's $HOME;\n".into()), now),
            Ok(command(r"input text 'it'\''s%s$HOME;'"))
        );
        assert_eq!(
            input.translate(&ControlMessage::Text(String::new()), now),
            Ok(InputAction::Nothing)
        );
        let back = ControlMessage::BackOrScreenOn {
            action: KeyAction::Up,
        };
        assert_eq!(input.translate(&back, now), Ok(command("input keyevent 4")));
        assert_eq!(
            input.translate(&ControlMessage::ResetVideo, now),
            Ok(InputAction::ResetVideo)
        );
        let error = input
            .translate(&ControlMessage::RotateDevice, now)
            .expect_err("unsupported");
        assert!(error.to_string().contains("scrcpy"));
    }

    #[test]
    fn wm_sizes() {
        let size = |width, height| Some(VideoSize { width, height });
        assert_eq!(
            parse_wm_size("Physical size: 1080x2400\n"),
            size(1080, 2400)
        );
        assert_eq!(
            parse_wm_size("Physical size: 1080x2400\nOverride size: 720x1600\n"),
            size(720, 1600)
        );
        assert_eq!(parse_wm_size(""), None);
        assert_eq!(parse_wm_size("Physical size: 0x5\nerror: x"), None);
    }
}
