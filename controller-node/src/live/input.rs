//! The `input` data channel protocol: validates browser JSON into [`ControlMessage`]s (pure,
//! no IO) and encodes what the node sends back (`size`, `error`, `pong`).
//!
//! Every message is checked before anything reaches a device: JSON text of at most
//! [`MAX_MESSAGE_BYTES`], a known `type`, pointer ids 0..=9, coordinates inside the current
//! video size, Android keycodes 0..=400, text of at most [`MAX_TEXT_BYTES`] of UTF-8.

use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::capture::{ControlMessage, KeyAction, TouchAction, VideoSize};

/// The largest message accepted on the channel.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// The longest `text` (and `clipboard`) accepted, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 300;
/// Pointer ids a browser may use (multi-touch fingers).
pub const MAX_POINTER_ID: u64 = 9;
/// The highest Android keycode accepted (KEYCODE_* values stay well below it).
pub const MAX_KEYCODE: u32 = 400;
/// Scroll steps per message, as scrcpy clamps them (one wheel notch = 1).
pub const MAX_SCROLL_STEPS: i64 = 16;
/// Full touch pressure (1.0 in scrcpy's fixed point).
pub const FULL_PRESSURE: u16 = 0xFFFF;

/// What one accepted message asks the node to do.
#[derive(Debug, Clone, PartialEq)]
pub enum InputAction {
    /// Send this to the device.
    Control(ControlMessage),
    /// Answer `{"type":"pong","t":t}` with the same number.
    Pong(Number),
}

/// Why a message was refused; `Display` is the text of the `error` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("observers cannot send input; only the lease holder controls the device")]
    NotController,
    #[error("message too long: {0} bytes (at most 4096)")]
    TooLong(usize),
    #[error("messages must be JSON text, not binary")]
    Binary,
    #[error("not a JSON object: {0}")]
    BadJson(String),
    #[error("missing \"type\"")]
    MissingType,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("{field:?} is missing or not {expected}")]
    BadField {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown pointer {0} (use 0..9)")]
    UnknownPointer(String),
    #[error("{axis}={value} is outside the video ({limit} pixels)")]
    OutOfRange {
        axis: &'static str,
        value: i64,
        limit: u32,
    },
    #[error("no video yet: wait for the size message")]
    NoVideoSize,
    #[error("keycode {0} is out of range (0..400)")]
    BadKeycode(i64),
    #[error("text is {0} bytes (at most 300)")]
    TextTooLong(usize),
    #[error("scroll {0} is out of range (-16..16)")]
    BadScroll(i64),
}

/// Validates one data channel message and maps it to what the node should do.
///
/// `size` is the current video size (coordinates refer to it); `control` is false for
/// observers, whose every message is refused.
pub fn parse_input(
    data: &[u8],
    is_text: bool,
    size: VideoSize,
    control: bool,
) -> Result<InputAction, InputError> {
    if !control {
        return Err(InputError::NotController);
    }
    if data.len() > MAX_MESSAGE_BYTES {
        return Err(InputError::TooLong(data.len()));
    }
    if !is_text {
        return Err(InputError::Binary);
    }
    let value: Value = serde_json::from_slice(data).map_err(|error| {
        // serde's message carries a position; the input itself is never echoed back.
        InputError::BadJson(error.to_string())
    })?;
    let Value::Object(object) = value else {
        return Err(InputError::BadJson("expected an object".into()));
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => return Err(InputError::MissingType),
    };
    let message = match kind {
        "touch" => touch(&object, size)?,
        "key" => key(&object)?,
        "text" => ControlMessage::Text(text(&object, "text")?),
        "scroll" => scroll(&object, size)?,
        "rotate" => ControlMessage::RotateDevice,
        "clipboard" => ControlMessage::SetClipboard {
            // 0: no acknowledgement requested from the device.
            sequence: 0,
            paste: optional_bool(&object, "paste")?.unwrap_or(false),
            text: text(&object, "text")?,
        },
        "ping" => match object.get("t") {
            Some(Value::Number(t)) => return Ok(InputAction::Pong(t.clone())),
            _ => {
                return Err(InputError::BadField {
                    field: "t",
                    expected: "a number",
                });
            }
        },
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(InputError::UnknownType(shown));
        }
    };
    Ok(InputAction::Control(message))
}

fn touch(object: &Map<String, Value>, size: VideoSize) -> Result<ControlMessage, InputError> {
    let action = match string(object, "action")? {
        "down" => TouchAction::Down,
        "move" => TouchAction::Move,
        "up" => TouchAction::Up,
        _ => {
            return Err(InputError::BadField {
                field: "action",
                expected: "\"down\", \"move\" or \"up\"",
            });
        }
    };
    let pointer_id = match object.get("pointer") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(id) if id <= MAX_POINTER_ID => id,
            _ => return Err(InputError::UnknownPointer(n.to_string())),
        },
        Some(other) => {
            let shown: String = other.to_string().chars().take(32).collect();
            return Err(InputError::UnknownPointer(shown));
        }
        None => {
            return Err(InputError::BadField {
                field: "pointer",
                expected: "an integer",
            });
        }
    };
    let (x, y, width, height) = position(object, size)?;
    Ok(ControlMessage::Touch {
        action,
        pointer_id,
        x,
        y,
        width,
        height,
        // A lifted finger has no pressure (as scrcpy sends it).
        pressure: if action == TouchAction::Up {
            0
        } else {
            FULL_PRESSURE
        },
    })
}

fn key(object: &Map<String, Value>) -> Result<ControlMessage, InputError> {
    let action = match string(object, "action")? {
        "down" => KeyAction::Down,
        "up" => KeyAction::Up,
        _ => {
            return Err(InputError::BadField {
                field: "action",
                expected: "\"down\" or \"up\"",
            });
        }
    };
    let keycode = integer(object, "keycode")?;
    let keycode = u32::try_from(keycode)
        .ok()
        .filter(|code| *code <= MAX_KEYCODE)
        .ok_or(InputError::BadKeycode(keycode))?;
    let metastate = match object.get("meta") {
        None | Some(Value::Null) => 0,
        Some(_) => u32::try_from(integer(object, "meta")?).map_err(|_| InputError::BadField {
            field: "meta",
            expected: "an integer 0..4294967295",
        })?,
    };
    Ok(ControlMessage::Key {
        action,
        keycode,
        repeat: 0,
        metastate,
    })
}

fn scroll(object: &Map<String, Value>, size: VideoSize) -> Result<ControlMessage, InputError> {
    let (x, y, width, height) = position(object, size)?;
    let steps = |field| -> Result<i16, InputError> {
        let value = integer(object, field)?;
        if value.abs() > MAX_SCROLL_STEPS {
            return Err(InputError::BadScroll(value));
        }
        Ok(scroll_fixed_point(value))
    };
    Ok(ControlMessage::Scroll {
        x,
        y,
        width,
        height,
        hscroll: steps("dx")?,
        vscroll: steps("dy")?,
    })
}

/// scrcpy's encoding of a scroll amount: `steps / 16` as i16 fixed point of -1.0..1.0.
fn scroll_fixed_point(steps: i64) -> i16 {
    let scaled = steps.clamp(-MAX_SCROLL_STEPS, MAX_SCROLL_STEPS) * 0x8000 / MAX_SCROLL_STEPS;
    scaled.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// `x`, `y` checked against the video size, with the size as scrcpy wants it.
fn position(
    object: &Map<String, Value>,
    size: VideoSize,
) -> Result<(i32, i32, u16, u16), InputError> {
    let (Ok(width), Ok(height)) = (u16::try_from(size.width), u16::try_from(size.height)) else {
        return Err(InputError::NoVideoSize);
    };
    if width == 0 || height == 0 {
        return Err(InputError::NoVideoSize);
    }
    let x = integer(object, "x")?;
    let y = integer(object, "y")?;
    for (axis, value, limit) in [("x", x, size.width), ("y", y, size.height)] {
        if value < 0 || value >= i64::from(limit) {
            return Err(InputError::OutOfRange { axis, value, limit });
        }
    }
    // Both are below a u16 limit now.
    Ok((x as i32, y as i32, width, height))
}

fn integer(object: &Map<String, Value>, field: &'static str) -> Result<i64, InputError> {
    object
        .get(field)
        .and_then(Value::as_i64)
        .ok_or(InputError::BadField {
            field,
            expected: "an integer",
        })
}

fn string<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, InputError> {
    object
        .get(field)
        .and_then(Value::as_str)
        .ok_or(InputError::BadField {
            field,
            expected: "a string",
        })
}

fn text(object: &Map<String, Value>, field: &'static str) -> Result<String, InputError> {
    let text = string(object, field)?;
    if text.len() > MAX_TEXT_BYTES {
        return Err(InputError::TextTooLong(text.len()));
    }
    Ok(text.to_string())
}

fn optional_bool(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<bool>, InputError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(_) => Err(InputError::BadField {
            field,
            expected: "true or false",
        }),
    }
}

/// A message from the node to the browser on the `input` channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum NodeToBrowser {
    Size { width: u32, height: u32 },
    Error { message: String },
    Pong { t: Number },
}

impl NodeToBrowser {
    /// The JSON text to send.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail; keep a valid message if it ever does.
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"type":"error","message":"internal error"}"#.to_string())
    }
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
