//! The `input` shell command: argument parsing, key codes and the recorded input events.

use serde::Serialize;

/// One recorded input event, as the control API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum InputEvent {
    Tap {
        x: i64,
        y: i64,
    },
    Swipe {
        x1: i64,
        y1: i64,
        x2: i64,
        y2: i64,
        duration_ms: Option<u64>,
    },
    /// `input keyevent` (a whole press, no `action`) or an injected key with its action.
    Key {
        code: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        action: Option<PressAction>,
    },
    Text {
        text: String,
    },
    /// A scrcpy touch, in screen coordinates of the current rotation.
    Touch {
        action: TouchAction,
        pointer: u64,
        x: i64,
        y: i64,
    },
    /// A scrcpy scroll in screen coordinates; `hscroll`/`vscroll` as sent (i16 fixed point, 16 units).
    Scroll {
        x: i64,
        y: i64,
        hscroll: i16,
        vscroll: i16,
    },
    /// The device turns by 90 degrees.
    Rotate,
    /// The clipboard was set (and pasted when `paste`).
    Clipboard {
        text: String,
        paste: bool,
    },
}

/// Key and button press actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PressAction {
    Down,
    Up,
}

/// Touch actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TouchAction {
    Down,
    Up,
    Move,
}

/// The usage text `input` prints on stderr for bad arguments.
pub const USAGE: &str = concat!(
    "Usage: input [<source>] [-d DISPLAY_ID] <command> [<arg>...]\n",
    "\n",
    "The commands and default sources are:\n",
    "      text <string> (Default: touchscreen)\n",
    "      keyevent [--longpress|--doubletap] <key code number or name> ... (Default: keyboard)\n",
    "      tap <x> <y> (Default: touchscreen)\n",
    "      swipe <x1> <y1> <x2> <y2> [duration(ms)] (Default: touchscreen)\n",
);

const SOURCES: &[&str] = &[
    "keyboard",
    "mouse",
    "joystick",
    "touchnavigation",
    "touchpad",
    "trackball",
    "dpad",
    "stylus",
    "gamepad",
    "touchscreen",
];

/// Bad `input` arguments: the command prints [`USAGE`] and exits 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad input arguments")]
pub struct InputUsageError;

/// Parses `input ARGS...` (without the word `input`) into the events it injects.
pub fn parse_input(args: &[String]) -> Result<Vec<InputEvent>, InputUsageError> {
    let mut rest = args;
    if let Some(first) = rest.first()
        && SOURCES.contains(&first.as_str())
    {
        rest = &rest[1..];
    }
    if rest.first().map(String::as_str) == Some("-d") {
        rest = rest.get(2..).ok_or(InputUsageError)?;
    }
    let (command, args) = rest.split_first().ok_or(InputUsageError)?;
    match command.as_str() {
        "tap" => match args {
            [x, y] => Ok(vec![InputEvent::Tap {
                x: coordinate(x)?,
                y: coordinate(y)?,
            }]),
            _ => Err(InputUsageError),
        },
        "swipe" | "draganddrop" => {
            let (points, duration) = match args {
                [a, b, c, d] => ([a, b, c, d], None),
                [a, b, c, d, ms] => (
                    [a, b, c, d],
                    Some(ms.parse::<u64>().map_err(|_| InputUsageError)?),
                ),
                _ => return Err(InputUsageError),
            };
            Ok(vec![InputEvent::Swipe {
                x1: coordinate(points[0])?,
                y1: coordinate(points[1])?,
                x2: coordinate(points[2])?,
                y2: coordinate(points[3])?,
                duration_ms: duration,
            }])
        }
        "keyevent" => {
            let codes: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
            if codes.is_empty() {
                return Err(InputUsageError);
            }
            codes
                .into_iter()
                .map(|name| {
                    key_code(name)
                        .map(|code| InputEvent::Key { code, action: None })
                        .ok_or(InputUsageError)
                })
                .collect()
        }
        "text" => match args {
            [text] => Ok(vec![InputEvent::Text {
                // Android's `input text` turns %s into a space.
                text: text.replace("%s", " "),
            }]),
            _ => Err(InputUsageError),
        },
        _ => Err(InputUsageError),
    }
}

/// A coordinate as `input` accepts it: an integer or a float (rounded).
fn coordinate(text: &str) -> Result<i64, InputUsageError> {
    if let Ok(value) = text.parse::<i64>() {
        return Ok(value);
    }
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value.abs() < 1e9 => Ok(value.round() as i64),
        _ => Err(InputUsageError),
    }
}

/// A key code from a number, `KEYCODE_NAME` or `NAME`.
pub fn key_code(name: &str) -> Option<u32> {
    if let Ok(code) = name.parse::<u32>() {
        return Some(code);
    }
    let name = name.strip_prefix("KEYCODE_").unwrap_or(name);
    let bytes = name.as_bytes();
    if let [single] = bytes {
        if single.is_ascii_digit() {
            return Some(7 + u32::from(single - b'0'));
        }
        if single.is_ascii_uppercase() {
            return Some(29 + u32::from(single - b'A'));
        }
    }
    let code = match name {
        "HOME" => 3,
        "BACK" => 4,
        "CALL" => 5,
        "ENDCALL" => 6,
        "DPAD_UP" => 19,
        "DPAD_DOWN" => 20,
        "DPAD_LEFT" => 21,
        "DPAD_RIGHT" => 22,
        "DPAD_CENTER" => 23,
        "VOLUME_UP" => 24,
        "VOLUME_DOWN" => 25,
        "POWER" => 26,
        "CAMERA" => 27,
        "COMMA" => 55,
        "PERIOD" => 56,
        "TAB" => 61,
        "SPACE" => 62,
        "ENTER" => 66,
        "DEL" => 67,
        "MENU" => 82,
        "SEARCH" => 84,
        "ESCAPE" => 111,
        "FORWARD_DEL" => 112,
        "APP_SWITCH" => 187,
        "SLEEP" => 223,
        "WAKEUP" => 224,
        _ => return None,
    };
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Vec<InputEvent>, InputUsageError> {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        parse_input(&args)
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(parse("tap 1 2"), Ok(vec![InputEvent::Tap { x: 1, y: 2 }]));
        assert_eq!(
            parse("touchscreen tap 10.6 2"),
            Ok(vec![InputEvent::Tap { x: 11, y: 2 }])
        );
        assert_eq!(
            parse("swipe 1 2 3 4 300"),
            Ok(vec![InputEvent::Swipe {
                x1: 1,
                y1: 2,
                x2: 3,
                y2: 4,
                duration_ms: Some(300)
            }])
        );
        assert_eq!(
            parse("keyevent KEYCODE_HOME 4 ENTER A KEYCODE_0"),
            Ok(vec![
                InputEvent::Key {
                    code: 3,
                    action: None
                },
                InputEvent::Key {
                    code: 4,
                    action: None
                },
                InputEvent::Key {
                    code: 66,
                    action: None
                },
                InputEvent::Key {
                    code: 29,
                    action: None
                },
                InputEvent::Key {
                    code: 7,
                    action: None
                },
            ])
        );
        assert_eq!(
            parse("text hello%sworld"),
            Ok(vec![InputEvent::Text {
                text: "hello world".into()
            }])
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        for line in [
            "",
            "tap 1",
            "tap x y",
            "swipe 1 2 3",
            "keyevent",
            "keyevent KEYCODE_NOPE",
            "text",
            "fly",
        ] {
            assert_eq!(parse(line), Err(InputUsageError), "{line}");
        }
    }

    #[test]
    fn serializes_with_kind_tags() {
        let json = serde_json::to_string(&InputEvent::Key {
            code: 3,
            action: None,
        })
        .expect("serializable");
        assert_eq!(json, r#"{"kind":"key","code":3}"#);
    }
}
