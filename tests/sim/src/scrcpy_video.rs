//! The scrcpy v3.3 video socket format (sans-IO): device name, codec header, frame packets,
//! and the video size scrcpy derives from the screen size and `max_size`.

/// `h264` as the codec id in the header.
pub const CODEC_H264: u32 = 0x6832_3634;
/// Length of the NUL-padded device name.
pub const DEVICE_NAME_LEN: usize = 64;
/// Bit 63 of `pts_and_flags`: a config packet (SPS/PPS).
pub const PACKET_FLAG_CONFIG: u64 = 1 << 63;
/// Bit 62 of `pts_and_flags`: a keyframe.
pub const PACKET_FLAG_KEY_FRAME: u64 = 1 << 62;
const PTS_MASK: u64 = PACKET_FLAG_KEY_FRAME - 1;

/// The 64-byte device name field: UTF-8, truncated on a character boundary, NUL-padded.
pub fn device_name(name: &str) -> [u8; DEVICE_NAME_LEN] {
    let mut out = [0u8; DEVICE_NAME_LEN];
    let mut end = name.len().min(DEVICE_NAME_LEN - 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&name.as_bytes()[..end]);
    out
}

/// The 12-byte codec header: codec id, width, height (big-endian).
pub fn codec_header(codec: u32, width: u32, height: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&codec.to_be_bytes());
    out[4..8].copy_from_slice(&width.to_be_bytes());
    out[8..].copy_from_slice(&height.to_be_bytes());
    out
}

/// A media packet: `u64 pts_and_flags`, `u32 length`, payload. Config packets carry no PTS.
pub fn packet(pts_us: u64, config: bool, keyframe: bool, payload: &[u8]) -> Vec<u8> {
    let mut header = if config { 0 } else { pts_us & PTS_MASK };
    if config {
        header |= PACKET_FLAG_CONFIG;
    }
    if keyframe {
        header |= PACKET_FLAG_KEY_FRAME;
    }
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(&header.to_be_bytes());
    // Encoded frames are far below 4 GiB.
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// A parsed packet header, for tests and tools reading the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub pts_us: u64,
    pub config: bool,
    pub keyframe: bool,
    pub length: u32,
}

/// Parses a 12-byte packet header.
pub fn parse_packet_header(bytes: &[u8; 12]) -> PacketHeader {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    let flags = u64::from_be_bytes(word);
    let mut length = [0u8; 4];
    length.copy_from_slice(&bytes[8..]);
    PacketHeader {
        pts_us: flags & PTS_MASK,
        config: flags & PACKET_FLAG_CONFIG != 0,
        keyframe: flags & PACKET_FLAG_KEY_FRAME != 0,
        length: u32::from_be_bytes(length),
    }
}

/// The size scrcpy streams a `width` x `height` screen at: both sides floored to multiples
/// of 8, the longer side limited to `max_size` (0 = no limit) keeping the aspect ratio,
/// the shorter side rounded to the nearest multiple of 8.
pub fn video_size(width: u32, height: u32, max_size: u32) -> (u32, u32) {
    let (mut w, mut h) = ((width & !7).max(8), (height & !7).max(8));
    let max_size = max_size & !7;
    if max_size > 0 {
        let portrait = h > w;
        let (major, minor) = if portrait { (h, w) } else { (w, h) };
        if major > max_size {
            let minor_exact = u64::from(minor) * u64::from(max_size) / u64::from(major);
            let minor = ((minor_exact as u32 + 4) & !7).max(8);
            (w, h) = if portrait {
                (minor, max_size)
            } else {
                (max_size, minor)
            };
        }
    }
    (w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_size_matches_scrcpy() {
        assert_eq!(video_size(1080, 2400, 1280), (576, 1280));
        assert_eq!(video_size(2400, 1080, 1280), (1280, 576));
        assert_eq!(video_size(1080, 2340, 1280), (592, 1280));
        assert_eq!(video_size(2560, 1600, 1280), (1280, 800));
        assert_eq!(video_size(1080, 2400, 0), (1080, 2400));
        assert_eq!(video_size(720, 1280, 1920), (720, 1280));
        assert_eq!(video_size(1081, 2401, 1283), (576, 1280));
        assert_eq!(video_size(1, 1, 8), (8, 8));
    }

    #[test]
    fn packets_and_headers() {
        let bytes = packet(1234, false, true, b"abc");
        assert_eq!(bytes.len(), 15);
        assert_eq!(&bytes[..8], &(PACKET_FLAG_KEY_FRAME | 1234).to_be_bytes());
        assert_eq!(&bytes[8..12], &3u32.to_be_bytes());
        let header: [u8; 12] = bytes[..12].try_into().expect("12 bytes");
        assert_eq!(
            parse_packet_header(&header),
            PacketHeader {
                pts_us: 1234,
                config: false,
                keyframe: true,
                length: 3
            }
        );
        let config = packet(99, true, false, b"sps");
        assert_eq!(&config[..8], &PACKET_FLAG_CONFIG.to_be_bytes());
        assert_eq!(
            &codec_header(CODEC_H264, 576, 1280),
            b"h264\0\0\x02\x40\0\0\x05\x00"
        );
    }

    #[test]
    fn device_name_is_padded_and_truncated_on_char_boundary() {
        let name = device_name("Pixel 7");
        assert_eq!(&name[..7], b"Pixel 7");
        assert!(name[7..].iter().all(|&b| b == 0));
        let long = "\u{00e9}".repeat(40);
        let name = device_name(&long);
        assert_eq!(name[62], 0);
        assert!(std::str::from_utf8(&name[..62]).is_ok());
    }
}
