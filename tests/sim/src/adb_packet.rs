//! adb transport packets: the 24-byte header codec, sans-IO (bytes in, packets out).

use std::fmt;

/// `CNXN`: connection banner, sent first by the host and answered by the device.
pub const A_CNXN: u32 = 0x4E58_4E43;
/// `AUTH`: authentication token, signature or public key.
pub const A_AUTH: u32 = 0x4854_5541;
/// `OPEN`: the host opens a stream to a service.
pub const A_OPEN: u32 = 0x4E45_504F;
/// `OKAY`: stream accepted, or a WRTE acknowledged.
pub const A_OKAY: u32 = 0x5941_4B4F;
/// `WRTE`: stream data.
pub const A_WRTE: u32 = 0x4554_5257;
/// `CLSE`: stream closed.
pub const A_CLSE: u32 = 0x4553_4C43;
/// `SYNC`: legacy, ignored.
pub const A_SYNC: u32 = 0x434E_5953;

/// The protocol version the device announces (checksums optional).
pub const A_VERSION: u32 = 0x0100_0001;
/// The largest payload this device accepts and announces in its CNXN.
pub const MAX_PAYLOAD: u32 = 1024 * 1024;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 24;

/// AUTH arg0: the device sends a token to sign.
pub const AUTH_TOKEN: u32 = 1;
/// AUTH arg0: the host sends a signature of the token.
pub const AUTH_SIGNATURE: u32 = 2;
/// AUTH arg0: the host sends its public key for the user to accept.
pub const AUTH_RSAPUBLICKEY: u32 = 3;

/// One adb transport message.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    pub command: u32,
    pub arg0: u32,
    pub arg1: u32,
    pub payload: Vec<u8>,
}

/// Why a byte stream is not a valid adb packet stream. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("bad magic {magic:#010x} for command {command:#010x}: the peer does not speak adb")]
    BadMagic { command: u32, magic: u32 },
    #[error("unknown adb command {0:#010x}")]
    UnknownCommand(u32),
    #[error("payload of {length} bytes exceeds the limit of {limit} bytes")]
    TooLarge { length: u32, limit: u32 },
}

impl Packet {
    pub fn new(command: u32, arg0: u32, arg1: u32, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            command,
            arg0,
            arg1,
            payload: payload.into(),
        }
    }

    /// The wire form: header then payload. The checksum is filled in for older hosts.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        let checksum = self
            .payload
            .iter()
            .fold(0u32, |sum, byte| sum.wrapping_add(u32::from(*byte)));
        // Payloads are built by this crate and stay far below 4 GiB.
        let length = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        for word in [
            self.command,
            self.arg0,
            self.arg1,
            length,
            checksum,
            self.command ^ 0xFFFF_FFFF,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.payload[..self.payload.len().min(64)];
        f.debug_struct("Packet")
            .field("command", &command_name(self.command))
            .field("arg0", &self.arg0)
            .field("arg1", &self.arg1)
            .field("len", &self.payload.len())
            .field("payload", &String::from_utf8_lossy(shown))
            .finish()
    }
}

/// The four-letter name of a command, for logs.
pub fn command_name(command: u32) -> &'static str {
    match command {
        A_CNXN => "CNXN",
        A_AUTH => "AUTH",
        A_OPEN => "OPEN",
        A_OKAY => "OKAY",
        A_WRTE => "WRTE",
        A_CLSE => "CLSE",
        A_SYNC => "SYNC",
        _ => "????",
    }
}

fn read_u32(buf: &[u8], index: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&buf[index * 4..index * 4 + 4]);
    u32::from_le_bytes(word)
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((packet, consumed)))`
/// when a whole packet is there. The header is validated as soon as it is
/// complete, so garbage is rejected without waiting for a bogus payload.
pub fn decode(buf: &[u8], max_payload: u32) -> Result<Option<(Packet, usize)>, PacketError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let command = read_u32(buf, 0);
    let magic = read_u32(buf, 5);
    if magic != command ^ 0xFFFF_FFFF {
        return Err(PacketError::BadMagic { command, magic });
    }
    if command_name(command) == "????" {
        return Err(PacketError::UnknownCommand(command));
    }
    let length = read_u32(buf, 3);
    if length > max_payload {
        return Err(PacketError::TooLarge {
            length,
            limit: max_payload,
        });
    }
    // `length <= max_payload` (a u32), so this cannot overflow usize on 32/64-bit targets.
    let total = HEADER_LEN + length as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let packet = Packet {
        command,
        arg0: read_u32(buf, 1),
        arg1: read_u32(buf, 2),
        payload: buf[HEADER_LEN..total].to_vec(),
    };
    Ok(Some((packet, total)))
}

/// Buffers partial input from a byte stream and yields whole packets.
#[derive(Debug, Default)]
pub struct PacketDecoder {
    buffer: Vec<u8>,
}

impl PacketDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole packet, `Ok(None)` if more input is needed.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, PacketError> {
        match decode(&self.buffer, MAX_PAYLOAD)? {
            Some((packet, consumed)) => {
                self.buffer.drain(..consumed);
                Ok(Some(packet))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let packet = Packet::new(A_WRTE, 7, 9, b"hello".to_vec());
        let bytes = packet.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 5);
        assert_eq!(&bytes[0..4], b"WRTE");
        let decoded = decode(&bytes, MAX_PAYLOAD).expect("valid packet");
        assert_eq!(decoded, Some((packet, HEADER_LEN + 5)));
    }

    #[test]
    fn partial_input_needs_more() {
        let bytes = Packet::new(A_OPEN, 1, 0, b"shell:ls\0".to_vec()).encode();
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], MAX_PAYLOAD), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn decoder_yields_packets_fed_byte_by_byte() {
        let mut stream = Packet::new(A_CNXN, A_VERSION, 4096, b"host::".to_vec()).encode();
        stream.extend(Packet::new(A_OKAY, 1, 2, Vec::new()).encode());
        let mut decoder = PacketDecoder::new();
        let mut seen = Vec::new();
        for byte in stream {
            decoder.push(&[byte]);
            while let Some(packet) = decoder.next_packet().expect("valid stream") {
                seen.push(packet.command);
            }
        }
        assert_eq!(seen, vec![A_CNXN, A_OKAY]);
    }

    #[test]
    fn bad_magic_is_an_error() {
        let mut bytes = Packet::new(A_OKAY, 1, 2, Vec::new()).encode();
        bytes[20] ^= 1;
        assert!(matches!(
            decode(&bytes, MAX_PAYLOAD),
            Err(PacketError::BadMagic { .. })
        ));
    }

    #[test]
    fn unknown_command_is_an_error() {
        let bytes = Packet::new(0x1234_5678, 0, 0, Vec::new()).encode();
        assert_eq!(
            decode(&bytes, MAX_PAYLOAD),
            Err(PacketError::UnknownCommand(0x1234_5678))
        );
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        let mut header = Packet::new(A_WRTE, 1, 2, Vec::new()).encode();
        header[12..16].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert!(matches!(
            decode(&header, MAX_PAYLOAD),
            Err(PacketError::TooLarge { .. })
        ));
        header[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&header, MAX_PAYLOAD).is_err());
    }

    #[test]
    fn arbitrary_garbage_never_panics() {
        // A cheap deterministic fuzz: xorshift bytes, sometimes with a valid header prefix.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..2000 {
            let len = (round % 80) as usize;
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if round % 3 == 0 && bytes.len() >= HEADER_LEN {
                bytes[0..4].copy_from_slice(&A_WRTE.to_le_bytes());
                bytes[20..24].copy_from_slice(&(A_WRTE ^ 0xFFFF_FFFF).to_le_bytes());
            }
            let mut decoder = PacketDecoder::new();
            decoder.push(&bytes);
            while let Ok(Some(_)) = decoder.next_packet() {}
        }
    }
}
