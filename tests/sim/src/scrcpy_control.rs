//! The scrcpy v3.3 control socket (sans-IO): client-to-device message decoding and the
//! device-to-client clipboard messages. All integers are big-endian.

/// The longest injected text the server accepts, in bytes.
pub const TEXT_MAX: usize = 300;
/// The longest clipboard text accepted (scrcpy's limit: 256 KiB minus the header).
pub const CLIPBOARD_MAX: usize = (1 << 18) - 14;

/// One client-to-device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    InjectKeycode {
        action: u8,
        keycode: u32,
        repeat: u32,
        metastate: u32,
    },
    InjectText(String),
    InjectTouch {
        action: u8,
        pointer_id: u64,
        x: i32,
        y: i32,
        width: u16,
        height: u16,
        pressure: u16,
        action_button: u32,
        buttons: u32,
    },
    InjectScroll {
        x: i32,
        y: i32,
        width: u16,
        height: u16,
        hscroll: i16,
        vscroll: i16,
        buttons: u32,
    },
    BackOrScreenOn {
        action: u8,
    },
    ExpandNotificationPanel,
    ExpandSettingsPanel,
    CollapsePanels,
    GetClipboard {
        copy_key: u8,
    },
    SetClipboard {
        sequence: u64,
        paste: bool,
        text: String,
    },
    SetDisplayPower {
        on: bool,
    },
    RotateDevice,
    UhidCreate {
        id: u16,
        name: String,
    },
    UhidInput {
        id: u16,
        data: Vec<u8>,
    },
    UhidDestroy {
        id: u16,
    },
    OpenHardKeyboardSettings,
    StartApp {
        name: String,
    },
    ResetVideo,
}

/// A control stream that can never be read further: the socket is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("unknown control message type {0}")]
    UnknownType(u8),
    #[error("control message type {kind} declares {length} bytes, more than the limit of {limit}")]
    TooLong {
        kind: u8,
        length: usize,
        limit: usize,
    },
}

/// Reassembles messages from the control socket's bytes, however they are split.
#[derive(Debug, Default)]
pub struct ControlDecoder {
    buffer: Vec<u8>,
}

/// A cursor over a complete-or-not message; `None` means "wait for more bytes".
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self
            .bytes
            .get(self.position..self.position.checked_add(n)?)?;
        self.position += n;
        Some(slice)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        Some(u64::from_be_bytes(word))
    }
    fn i32(&mut self) -> Option<i32> {
        self.u32().map(|v| v as i32)
    }
    fn i16(&mut self) -> Option<i16> {
        self.u16().map(|v| v as i16)
    }
}

type Step = Result<Option<ControlMessage>, ControlError>;

/// A length-prefixed string, checked against `limit` before its bytes arrive.
fn text(
    reader: &mut Reader<'_>,
    kind: u8,
    length: Option<usize>,
    limit: usize,
) -> Result<Option<String>, ControlError> {
    let Some(length) = length else {
        return Ok(None);
    };
    if length > limit {
        return Err(ControlError::TooLong {
            kind,
            length,
            limit,
        });
    }
    Ok(reader
        .take(length)
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned()))
}

fn decode(reader: &mut Reader<'_>) -> Step {
    let Some(kind) = reader.u8() else {
        return Ok(None);
    };
    let message = match kind {
        0 => (|| {
            Some(ControlMessage::InjectKeycode {
                action: reader.u8()?,
                keycode: reader.u32()?,
                repeat: reader.u32()?,
                metastate: reader.u32()?,
            })
        })(),
        1 => {
            let length = reader.u32().map(|l| l as usize);
            text(reader, kind, length, TEXT_MAX)?.map(ControlMessage::InjectText)
        }
        2 => (|| {
            Some(ControlMessage::InjectTouch {
                action: reader.u8()?,
                pointer_id: reader.u64()?,
                x: reader.i32()?,
                y: reader.i32()?,
                width: reader.u16()?,
                height: reader.u16()?,
                pressure: reader.u16()?,
                action_button: reader.u32()?,
                buttons: reader.u32()?,
            })
        })(),
        3 => (|| {
            Some(ControlMessage::InjectScroll {
                x: reader.i32()?,
                y: reader.i32()?,
                width: reader.u16()?,
                height: reader.u16()?,
                hscroll: reader.i16()?,
                vscroll: reader.i16()?,
                buttons: reader.u32()?,
            })
        })(),
        4 => reader
            .u8()
            .map(|action| ControlMessage::BackOrScreenOn { action }),
        5 => Some(ControlMessage::ExpandNotificationPanel),
        6 => Some(ControlMessage::ExpandSettingsPanel),
        7 => Some(ControlMessage::CollapsePanels),
        8 => reader
            .u8()
            .map(|copy_key| ControlMessage::GetClipboard { copy_key }),
        9 => {
            let (Some(sequence), Some(paste), length) =
                (reader.u64(), reader.u8(), reader.u32().map(|l| l as usize))
            else {
                return Ok(None);
            };
            text(reader, kind, length, CLIPBOARD_MAX)?.map(|text| ControlMessage::SetClipboard {
                sequence,
                paste: paste != 0,
                text,
            })
        }
        10 => reader
            .u8()
            .map(|on| ControlMessage::SetDisplayPower { on: on != 0 }),
        11 => Some(ControlMessage::RotateDevice),
        12 => {
            let (Some(id), Some(_vendor), Some(_product)) =
                (reader.u16(), reader.u16(), reader.u16())
            else {
                return Ok(None);
            };
            let name_length = reader.u8().map(usize::from);
            let Some(name) = text(reader, kind, name_length, 255)? else {
                return Ok(None);
            };
            let descriptor_length = reader.u16().map(usize::from);
            text(reader, kind, descriptor_length, usize::from(u16::MAX))?
                .map(|_| ControlMessage::UhidCreate { id, name })
        }
        13 => (|| {
            let id = reader.u16()?;
            let size = reader.u16()?;
            let data = reader.take(usize::from(size))?.to_vec();
            Some(ControlMessage::UhidInput { id, data })
        })(),
        14 => reader.u16().map(|id| ControlMessage::UhidDestroy { id }),
        15 => Some(ControlMessage::OpenHardKeyboardSettings),
        16 => {
            let length = reader.u8().map(usize::from);
            text(reader, kind, length, 255)?.map(|name| ControlMessage::StartApp { name })
        }
        17 => Some(ControlMessage::ResetVideo),
        other => return Err(ControlError::UnknownType(other)),
    };
    Ok(message)
}

impl ControlDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes received from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or an error after which
    /// the stream cannot be resynchronised.
    pub fn next_message(&mut self) -> Step {
        let mut reader = Reader {
            bytes: &self.buffer,
            position: 0,
        };
        let message = decode(&mut reader)?;
        if message.is_some() {
            let used = reader.position;
            self.buffer.drain(..used);
        }
        Ok(message)
    }
}

/// Device message 0: the device clipboard changed (or was asked for).
pub fn clipboard_message(text: &str) -> Vec<u8> {
    let mut end = text.len().min(CLIPBOARD_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(5 + end);
    out.push(0);
    out.extend_from_slice(&(end as u32).to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
    out
}

/// Device message 1: the clipboard set with `sequence` is in place.
pub fn ack_clipboard_message(sequence: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(1);
    out.extend_from_slice(&sequence.to_be_bytes());
    out
}

#[cfg(test)]
#[path = "scrcpy_control_tests.rs"]
mod tests;
