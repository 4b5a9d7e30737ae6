//! The scrcpy (v3.x) control socket, sans-IO: [`ControlMessage`] to bytes (big-endian).

use super::{ControlMessage, KeyAction, TouchAction};

/// The longest injected text, in bytes (scrcpy's own limit).
pub const MAX_TEXT_BYTES: usize = 300;
/// The longest clipboard text, in bytes (scrcpy's message limit less its header).
pub const MAX_CLIPBOARD_BYTES: usize = (1 << 18) - 14;

const TYPE_INJECT_KEYCODE: u8 = 0;
const TYPE_INJECT_TEXT: u8 = 1;
const TYPE_INJECT_TOUCH: u8 = 2;
const TYPE_INJECT_SCROLL: u8 = 3;
const TYPE_BACK_OR_SCREEN_ON: u8 = 4;
const TYPE_SET_CLIPBOARD: u8 = 9;
const TYPE_ROTATE_DEVICE: u8 = 11;
const TYPE_RESET_VIDEO: u8 = 17;

/// The bytes of one control message.
pub fn encode(message: &ControlMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    match message {
        ControlMessage::Touch {
            action,
            pointer_id,
            x,
            y,
            width,
            height,
            pressure,
        } => {
            out.push(TYPE_INJECT_TOUCH);
            out.push(match action {
                TouchAction::Down => 0,
                TouchAction::Up => 1,
                TouchAction::Move => 2,
            });
            out.extend_from_slice(&pointer_id.to_be_bytes());
            push_position(&mut out, *x, *y, *width, *height);
            out.extend_from_slice(&pressure.to_be_bytes());
            out.extend_from_slice(&0u32.to_be_bytes()); // action_button
            out.extend_from_slice(&0u32.to_be_bytes()); // buttons
        }
        ControlMessage::Key {
            action,
            keycode,
            repeat,
            metastate,
        } => {
            out.push(TYPE_INJECT_KEYCODE);
            out.push(key_action(*action));
            out.extend_from_slice(&keycode.to_be_bytes());
            out.extend_from_slice(&repeat.to_be_bytes());
            out.extend_from_slice(&metastate.to_be_bytes());
        }
        ControlMessage::Text(text) => {
            out.push(TYPE_INJECT_TEXT);
            push_text(&mut out, text, MAX_TEXT_BYTES);
        }
        ControlMessage::Scroll {
            x,
            y,
            width,
            height,
            hscroll,
            vscroll,
        } => {
            out.push(TYPE_INJECT_SCROLL);
            push_position(&mut out, *x, *y, *width, *height);
            out.extend_from_slice(&hscroll.to_be_bytes());
            out.extend_from_slice(&vscroll.to_be_bytes());
            out.extend_from_slice(&0u32.to_be_bytes()); // buttons
        }
        ControlMessage::BackOrScreenOn { action } => {
            out.push(TYPE_BACK_OR_SCREEN_ON);
            out.push(key_action(*action));
        }
        ControlMessage::SetClipboard {
            sequence,
            paste,
            text,
        } => {
            out.push(TYPE_SET_CLIPBOARD);
            out.extend_from_slice(&sequence.to_be_bytes());
            out.push(u8::from(*paste));
            push_text(&mut out, text, MAX_CLIPBOARD_BYTES);
        }
        ControlMessage::RotateDevice => out.push(TYPE_ROTATE_DEVICE),
        ControlMessage::ResetVideo => out.push(TYPE_RESET_VIDEO),
    }
    out
}

fn key_action(action: KeyAction) -> u8 {
    match action {
        KeyAction::Down => 0,
        KeyAction::Up => 1,
    }
}

fn push_position(out: &mut Vec<u8>, x: i32, y: i32, width: u16, height: u16) {
    out.extend_from_slice(&x.to_be_bytes());
    out.extend_from_slice(&y.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&height.to_be_bytes());
}

/// `u32 length` + UTF-8, cut at a char boundary to at most `limit` bytes.
fn push_text(out: &mut Vec<u8>, text: &str, limit: usize) {
    let text = truncate_utf8(text, limit);
    // `limit` is far below u32::MAX.
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a char boundary.
pub fn truncate_utf8(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch() {
        let bytes = encode(&ControlMessage::Touch {
            action: TouchAction::Move,
            pointer_id: 0x0102,
            x: 100,
            y: -2,
            width: 720,
            height: 1280,
            pressure: 0xFFFF,
        });
        assert_eq!(
            bytes,
            [
                2, 2, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 100, 0xFF, 0xFF, 0xFF, 0xFE, 0x02, 0xD0,
                0x05, 0x00, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn key_and_back() {
        let bytes = encode(&ControlMessage::Key {
            action: KeyAction::Up,
            keycode: 3,
            repeat: 1,
            metastate: 0x1000,
        });
        assert_eq!(bytes, [0, 1, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0]);
        assert_eq!(
            encode(&ControlMessage::BackOrScreenOn {
                action: KeyAction::Down
            }),
            [4, 0]
        );
    }

    #[test]
    fn text_is_capped_at_a_char_boundary() {
        assert_eq!(
            encode(&ControlMessage::Text("hé".into())),
            [1, 0, 0, 0, 3, b'h', 0xC3, 0xA9]
        );
        let long = "é".repeat(200); // 400 bytes
        let bytes = encode(&ControlMessage::Text(long));
        assert_eq!(&bytes[..5], [1, 0, 0, 1, 0x2C]); // 300 bytes
        assert_eq!(bytes.len(), 5 + 300);
        let odd = format!("a{}", "é".repeat(200)); // boundary at 299
        let bytes = encode(&ControlMessage::Text(odd));
        assert_eq!(&bytes[..5], [1, 0, 0, 1, 0x2B]);
        assert_eq!(truncate_utf8("", 0), "");
        assert_eq!(truncate_utf8("é", 1), "");
    }

    #[test]
    fn scroll() {
        let bytes = encode(&ControlMessage::Scroll {
            x: 1,
            y: 2,
            width: 3,
            height: 4,
            hscroll: -1,
            vscroll: 0x4000,
        });
        assert_eq!(
            bytes,
            [
                3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 3, 0, 4, 0xFF, 0xFF, 0x40, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(bytes.len(), 21);
    }

    #[test]
    fn clipboard_rotate_and_reset() {
        assert_eq!(
            encode(&ControlMessage::SetClipboard {
                sequence: 5,
                paste: true,
                text: "ok".into()
            }),
            [9, 0, 0, 0, 0, 0, 0, 0, 5, 1, 0, 0, 0, 2, b'o', b'k']
        );
        assert_eq!(encode(&ControlMessage::RotateDevice), [11]);
        assert_eq!(encode(&ControlMessage::ResetVideo), [17]);
    }
}
