//! A small async client of the adb host protocol (client to adb server) on tokio: host
//! requests, `host:transport:SERIAL` then a device service as a raw TCP stream, and
//! `sync:` pushes. The framing is sans-IO (functions on bytes, unit-tested); the IO
//! around it is thin.
//!
//! Why not adb_client: it is blocking, and its `exec` returns before long outputs arrive,
//! which does not suit H.264 and scrcpy sockets that stay open for minutes.

use std::net::SocketAddrV4;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest length-prefixed host frame accepted (a device list or a FAIL message).
pub const MAX_FRAME: usize = 1 << 20;
/// How long connecting to the adb server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest DATA chunk of a `sync:` SEND (the protocol's limit).
pub const SYNC_MAX_CHUNK: usize = 64 * 1024;

/// What went wrong talking to the adb server.
#[derive(Debug, thiserror::Error)]
pub enum AdbError {
    #[error("adb server not reachable at {addr}: start it with `{hint}` ({source})")]
    Unreachable {
        addr: SocketAddrV4,
        hint: String,
        source: std::io::Error,
    },
    #[error("adb server at {addr} refused `{request}`: {message}")]
    Refused {
        addr: SocketAddrV4,
        request: String,
        message: String,
    },
    #[error("adb server connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("adb server sent something unexpected: {0}")]
    Protocol(String),
}

/// The command that starts an adb server on `addr`'s port.
pub fn start_server_hint(addr: SocketAddrV4) -> String {
    if addr.port() == 5037 {
        "adb start-server".to_string()
    } else {
        format!("adb -P {} start-server", addr.port())
    }
}

/// Parses the 4 hex digits that prefix every adb host-protocol payload.
pub fn parse_hex_length(prefix: [u8; 4]) -> Option<usize> {
    let text = std::str::from_utf8(&prefix).ok()?;
    usize::from_str_radix(text, 16).ok()
}

/// Encodes one host request: 4 hex digits of length, then the request.
/// `None` when the request is longer than the prefix can say (65535 bytes).
pub fn encode_host_request(request: &str) -> Option<Vec<u8>> {
    if request.len() > 0xFFFF {
        return None;
    }
    let mut out = format!("{:04x}", request.len()).into_bytes();
    out.extend_from_slice(request.as_bytes());
    Some(out)
}

/// The answer to a host request, from its 4 status bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    Okay,
    /// A length-prefixed message follows.
    Fail,
    Unexpected([u8; 4]),
}

/// Reads the 4 status bytes that answer a host request.
pub fn parse_host_status(status: [u8; 4]) -> HostStatus {
    match &status {
        b"OKAY" => HostStatus::Okay,
        b"FAIL" => HostStatus::Fail,
        _ => HostStatus::Unexpected(status),
    }
}

/// The header of a `sync:` SEND: `SEND`, u32 LE length, `PATH,MODE` (mode in decimal).
pub fn encode_sync_send(remote_path: &str, mode: u32) -> Vec<u8> {
    let target = format!("{remote_path},{mode}");
    let mut out = encode_sync_request(b"SEND", target.len());
    out.extend_from_slice(target.as_bytes());
    out
}

/// `DATA` packets for `data`, each at most [`SYNC_MAX_CHUNK`] bytes of payload.
pub fn encode_sync_data(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8 * (data.len() / SYNC_MAX_CHUNK + 1));
    for chunk in data.chunks(SYNC_MAX_CHUNK) {
        out.extend_from_slice(&encode_sync_request(b"DATA", chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

/// The `DONE` packet that ends a SEND; its argument is the file's mtime (seconds).
pub fn encode_sync_done(mtime_secs: u32) -> Vec<u8> {
    let mut out = b"DONE".to_vec();
    out.extend_from_slice(&mtime_secs.to_le_bytes());
    out
}

fn encode_sync_request(id: &[u8; 4], length: usize) -> Vec<u8> {
    let mut out = id.to_vec();
    // Callers pass chunk and path lengths, far below u32::MAX.
    out.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_le_bytes());
    out
}

/// The device's answer to a SEND: `OKAY` + 0, or `FAIL` + the length of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    Okay,
    Fail { message_length: usize },
    Unexpected([u8; 4]),
}

/// Parses the 8-byte status that ends a SEND.
pub fn parse_sync_status(status: [u8; 8]) -> SyncStatus {
    let id = [status[0], status[1], status[2], status[3]];
    let arg = u32::from_le_bytes([status[4], status[5], status[6], status[7]]) as usize;
    match &id {
        b"OKAY" => SyncStatus::Okay,
        b"FAIL" => SyncStatus::Fail {
            message_length: arg,
        },
        _ => SyncStatus::Unexpected(id),
    }
}

/// Quotes one argument for the Android shell (`'...'`, with `'` written as `'\''`).
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if safe {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Connects to the adb server.
pub async fn connect(addr: SocketAddrV4) -> Result<TcpStream, AdbError> {
    let unreachable = |source| AdbError::Unreachable {
        addr,
        hint: start_server_hint(addr),
        source,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable(std::io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends one host request and reads its OKAY (or FAIL with a message).
pub async fn send_host_request<S>(
    stream: &mut S,
    addr: SocketAddrV4,
    request: &str,
) -> Result<(), AdbError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let encoded = encode_host_request(request)
        .ok_or_else(|| AdbError::Protocol(format!("request of {} bytes", request.len())))?;
    stream.write_all(&encoded).await?;
    let mut status = [0u8; 4];
    stream.read_exact(&mut status).await?;
    match parse_host_status(status) {
        HostStatus::Okay => Ok(()),
        HostStatus::Fail => {
            let message = read_frame(stream).await?;
            Err(AdbError::Refused {
                addr,
                request: request.to_string(),
                message: String::from_utf8_lossy(&message).into_owned(),
            })
        }
        HostStatus::Unexpected(other) => Err(AdbError::Protocol(format!(
            "status {:?} instead of OKAY",
            String::from_utf8_lossy(&other)
        ))),
    }
}

/// Reads one length-prefixed payload (at most [`MAX_FRAME`] bytes).
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, AdbError> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let length = parse_hex_length(prefix).ok_or_else(|| {
        AdbError::Protocol(format!(
            "bad length prefix {:?}",
            String::from_utf8_lossy(&prefix)
        ))
    })?;
    if length > MAX_FRAME {
        return Err(AdbError::Protocol(format!("frame of {length} bytes")));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Opens `service` (`localabstract:NAME`, `exec:CMD`, `shell:CMD`, `sync:`, ...) on the
/// device `serial`; the returned stream carries the service's bytes both ways.
pub async fn open_device_service(
    addr: SocketAddrV4,
    serial: &str,
    service: &str,
) -> Result<TcpStream, AdbError> {
    let mut stream = connect(addr).await?;
    send_host_request(&mut stream, addr, &format!("host:transport:{serial}")).await?;
    send_host_request(&mut stream, addr, service).await?;
    Ok(stream)
}

/// Runs `shell:CMD` to its end and returns its output (stdout and stderr mixed), at most
/// `limit` bytes of it.
pub async fn shell_output(
    addr: SocketAddrV4,
    serial: &str,
    command: &str,
    limit: usize,
) -> Result<Vec<u8>, AdbError> {
    let stream = open_device_service(addr, serial, &format!("shell:{command}")).await?;
    let mut output = Vec::new();
    stream.take(limit as u64).read_to_end(&mut output).await?;
    Ok(output)
}

/// Pushes `data` to `remote_path` on the device with `sync:` (SEND, DATA..., DONE).
pub async fn push_bytes(
    addr: SocketAddrV4,
    serial: &str,
    data: &[u8],
    remote_path: &str,
    mode: u32,
    mtime_secs: u32,
) -> Result<(), AdbError> {
    let mut stream = open_device_service(addr, serial, "sync:").await?;
    let mut request = encode_sync_send(remote_path, mode);
    request.extend_from_slice(&encode_sync_data(data));
    request.extend_from_slice(&encode_sync_done(mtime_secs));
    stream.write_all(&request).await?;
    let mut status = [0u8; 8];
    stream.read_exact(&mut status).await?;
    let result = match parse_sync_status(status) {
        SyncStatus::Okay => Ok(()),
        SyncStatus::Fail { message_length } => {
            let mut message = vec![0u8; message_length.min(MAX_FRAME)];
            stream.read_exact(&mut message).await?;
            Err(AdbError::Refused {
                addr,
                request: format!("sync: SEND {remote_path}"),
                message: String::from_utf8_lossy(&message).into_owned(),
            })
        }
        SyncStatus::Unexpected(id) => Err(AdbError::Protocol(format!(
            "sync status {:?} instead of OKAY",
            String::from_utf8_lossy(&id)
        ))),
    };
    // QUIT ends the sync session politely; the server closes the socket either way.
    let _ = stream.write_all(b"QUIT\0\0\0\0").await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_lengths() {
        assert_eq!(parse_hex_length(*b"0000"), Some(0));
        assert_eq!(parse_hex_length(*b"001a"), Some(26));
        assert_eq!(parse_hex_length(*b"FFFF"), Some(65535));
        assert_eq!(parse_hex_length(*b"zzzz"), None);
        assert_eq!(parse_hex_length(*b"\xff\xff\xff\xff"), None);
    }

    #[test]
    fn host_requests() {
        assert_eq!(
            encode_host_request("host:transport:emulator-5554").expect("short"),
            b"001chost:transport:emulator-5554"
        );
        assert_eq!(encode_host_request("").expect("short"), b"0000");
        assert!(encode_host_request(&"x".repeat(70_000)).is_none());
        assert_eq!(parse_host_status(*b"OKAY"), HostStatus::Okay);
        assert_eq!(parse_host_status(*b"FAIL"), HostStatus::Fail);
        assert_eq!(
            parse_host_status(*b"OKA\0"),
            HostStatus::Unexpected(*b"OKA\0")
        );
    }

    #[test]
    fn sync_packets() {
        assert_eq!(
            encode_sync_send("/data/local/tmp/a.jar", 0o644),
            b"SEND\x19\0\0\0/data/local/tmp/a.jar,420"
        );
        assert_eq!(encode_sync_done(0x0102_0304), b"DONE\x04\x03\x02\x01");
        assert_eq!(encode_sync_data(b"abc"), b"DATA\x03\0\0\0abc");
        assert!(encode_sync_data(b"").is_empty());
        let big = vec![7u8; SYNC_MAX_CHUNK * 2 + 5];
        let encoded = encode_sync_data(&big);
        assert_eq!(encoded.len(), big.len() + 3 * 8);
        assert_eq!(&encoded[..8], b"DATA\0\0\x01\0");
        let second = 8 + SYNC_MAX_CHUNK;
        assert_eq!(&encoded[second..second + 8], b"DATA\0\0\x01\0");
        let third = 2 * second;
        assert_eq!(&encoded[third..third + 8], b"DATA\x05\0\0\0");
        assert_eq!(parse_sync_status(*b"OKAY\0\0\0\0"), SyncStatus::Okay);
        assert_eq!(
            parse_sync_status(*b"FAIL\x0a\0\0\0"),
            SyncStatus::Fail { message_length: 10 }
        );
        assert_eq!(
            parse_sync_status(*b"DATA\0\0\0\0"),
            SyncStatus::Unexpected(*b"DATA")
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("abc-1.2/x"), "abc-1.2/x");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /);`x`"), "'$(rm -rf /);`x`'");
    }

    #[test]
    fn hints_name_the_configured_port() {
        assert_eq!(
            start_server_hint("127.0.0.1:5037".parse().expect("literal")),
            "adb start-server"
        );
        assert_eq!(
            start_server_hint("127.0.0.1:15037".parse().expect("literal")),
            "adb -P 15037 start-server"
        );
    }
}
