//! The scrcpy (v3.x) video socket, sans-IO: bytes in, the device name, the codec header
//! and packets out. The dummy byte of forward mode is read by the caller before this.
//!
//! Layout (big-endian): 64-byte NUL-padded device name; `u32 codec_id, u32 width,
//! u32 height`; then packets `u64 pts_and_flags, u32 length, payload`.

use bytes::{Buf, Bytes, BytesMut};

/// "h264" as scrcpy's codec id.
pub const CODEC_H264: u32 = 0x6832_3634;
/// The longest packet accepted; anything longer means the stream is not what we think.
pub const MAX_PACKET_BYTES: usize = 16 << 20;
const DEVICE_NAME_BYTES: usize = 64;
const FLAG_CONFIG: u64 = 1 << 63;
const FLAG_KEY: u64 = 1 << 62;
const PTS_MASK: u64 = FLAG_KEY - 1;

/// What the video socket said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoEvent {
    DeviceName(String),
    /// The codec header (always H.264: anything else is an error).
    Header {
        width: u32,
        height: u32,
    },
    /// A config packet (SPS/PPS) or a frame.
    Packet {
        config: bool,
        keyframe: bool,
        pts_us: u64,
        data: Bytes,
    },
}

/// Why the video socket's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoStreamError {
    #[error(
        "the scrcpy server streams codec {0:?}, not h264: use a scrcpy server that can encode H.264"
    )]
    UnsupportedCodec(String),
    #[error("the scrcpy server could not start video: {0}")]
    NoVideo(&'static str),
    #[error("the scrcpy server announced an impossible video size {width}x{height}")]
    BadSize { width: u32, height: u32 },
    #[error("a scrcpy video packet of {0} bytes (limit {MAX_PACKET_BYTES}): protocol mismatch?")]
    PacketTooLarge(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    DeviceName,
    Header,
    Packets,
}

/// The parser: [`VideoStreamParser::push`] bytes, then [`VideoStreamParser::poll`] events
/// until `Ok(None)`. After an error the stream is unusable.
#[derive(Debug)]
pub struct VideoStreamParser {
    buffer: BytesMut,
    state: State,
}

impl Default for VideoStreamParser {
    fn default() -> Self {
        Self::new()
    }
}

impl VideoStreamParser {
    /// A parser that expects the device name first (the dummy byte already consumed).
    pub fn new() -> Self {
        Self {
            buffer: BytesMut::new(),
            state: State::DeviceName,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next event, `Ok(None)` when more bytes are needed.
    pub fn poll(&mut self) -> Result<Option<VideoEvent>, VideoStreamError> {
        match self.state {
            State::DeviceName => {
                if self.buffer.len() < DEVICE_NAME_BYTES {
                    return Ok(None);
                }
                let raw = self.buffer.split_to(DEVICE_NAME_BYTES);
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                self.state = State::Header;
                Ok(Some(VideoEvent::DeviceName(
                    String::from_utf8_lossy(&raw[..end]).into_owned(),
                )))
            }
            State::Header => {
                if self.buffer.len() < 12 {
                    return Ok(None);
                }
                let codec = self.buffer.get_u32();
                let width = self.buffer.get_u32();
                let height = self.buffer.get_u32();
                match codec {
                    CODEC_H264 => {}
                    0 => return Err(VideoStreamError::NoVideo("video disabled")),
                    1 => return Err(VideoStreamError::NoVideo("encoder error")),
                    other => {
                        let name = other.to_be_bytes();
                        return Err(VideoStreamError::UnsupportedCodec(
                            String::from_utf8_lossy(&name).into_owned(),
                        ));
                    }
                }
                if !(1..=16_384).contains(&width) || !(1..=16_384).contains(&height) {
                    return Err(VideoStreamError::BadSize { width, height });
                }
                self.state = State::Packets;
                Ok(Some(VideoEvent::Header { width, height }))
            }
            State::Packets => {
                if self.buffer.len() < 12 {
                    return Ok(None);
                }
                let mut head = &self.buffer[..12];
                let pts_and_flags = head.get_u64();
                let length = head.get_u32();
                if length as usize > MAX_PACKET_BYTES {
                    return Err(VideoStreamError::PacketTooLarge(length.into()));
                }
                let total = 12 + length as usize;
                if self.buffer.len() < total {
                    self.buffer.reserve(total - self.buffer.len());
                    return Ok(None);
                }
                self.buffer.advance(12);
                let data = self.buffer.split_to(length as usize).freeze();
                Ok(Some(VideoEvent::Packet {
                    config: pts_and_flags & FLAG_CONFIG != 0,
                    keyframe: pts_and_flags & FLAG_KEY != 0,
                    pts_us: pts_and_flags & PTS_MASK,
                    data,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Vec<u8> {
        let mut bytes = b"Pixel 7".to_vec();
        bytes.resize(64, 0);
        bytes.extend_from_slice(b"h264\0\0\x02\xd0\0\0\x05\0"); // 720x1280
        // Config packet: flags only.
        bytes.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]);
        bytes.extend_from_slice(&[0, 0, 0, 1]);
        // Keyframe at pts 0x0102.
        bytes.extend_from_slice(&[0x40, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 2, 0x65, 0x88]);
        // Delta frame at pts 33333.
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x82, 0x35, 0, 0, 0, 1, 0x41]);
        bytes
    }

    fn expected() -> Vec<VideoEvent> {
        vec![
            VideoEvent::DeviceName("Pixel 7".into()),
            VideoEvent::Header {
                width: 720,
                height: 1280,
            },
            VideoEvent::Packet {
                config: true,
                keyframe: false,
                pts_us: 0,
                data: Bytes::from_static(&[0, 0, 0, 1]),
            },
            VideoEvent::Packet {
                config: false,
                keyframe: true,
                pts_us: 0x0102,
                data: Bytes::from_static(&[0x65, 0x88]),
            },
            VideoEvent::Packet {
                config: false,
                keyframe: false,
                pts_us: 33_333,
                data: Bytes::from_static(&[0x41]),
            },
        ]
    }

    fn parse_in_chunks(bytes: &[u8], chunk: usize) -> Vec<VideoEvent> {
        let mut parser = VideoStreamParser::new();
        let mut events = Vec::new();
        for piece in bytes.chunks(chunk) {
            parser.push(piece);
            while let Some(event) = parser.poll().expect("valid stream") {
                events.push(event);
            }
        }
        events
    }

    #[test]
    fn parses_name_header_and_packets_from_any_chunking() {
        let bytes = stream();
        for chunk in [1, 2, 5, 12, 13, 64, 1000] {
            assert_eq!(parse_in_chunks(&bytes, chunk), expected(), "chunk {chunk}");
        }
        // Partial input: nothing until enough bytes arrived.
        let mut parser = VideoStreamParser::new();
        parser.push(&bytes[..63]);
        assert_eq!(parser.poll(), Ok(None));
    }

    fn after_name(rest: &[u8]) -> Result<Option<VideoEvent>, VideoStreamError> {
        let mut parser = VideoStreamParser::new();
        parser.push(&[0; 64]);
        assert_eq!(
            parser.poll(),
            Ok(Some(VideoEvent::DeviceName(String::new())))
        );
        parser.push(rest);
        parser.poll()
    }

    #[test]
    fn refuses_other_codecs_and_bad_headers() {
        let error = after_name(b"h265\0\0\x02\xd0\0\0\x05\0").expect_err("not h264");
        assert_eq!(error, VideoStreamError::UnsupportedCodec("h265".into()));
        assert!(error.to_string().contains("not h264"));
        assert_eq!(
            after_name(&[0; 12]),
            Err(VideoStreamError::NoVideo("video disabled"))
        );
        assert_eq!(
            after_name(b"h264\0\0\0\0\0\0\x05\0"),
            Err(VideoStreamError::BadSize {
                width: 0,
                height: 1280
            })
        );
    }

    #[test]
    fn refuses_absurd_packet_lengths() {
        let mut parser = VideoStreamParser::new();
        parser.push(&[0; 64]);
        parser.push(b"h264\0\0\x02\xd0\0\0\x05\0");
        assert!(parser.poll().expect("name").is_some());
        assert!(parser.poll().expect("header").is_some());
        parser.push(&[0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 1]);
        assert_eq!(
            parser.poll(),
            Err(VideoStreamError::PacketTooLarge(0x0100_0001))
        );
    }
}
