//! A small async client of the adb server's host protocol: attach, detach and list devices.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::error::SimError;

/// How long one host request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`wait_for_state`] asks the server.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

async fn send_request(server: SocketAddr, request: &str) -> Result<TcpStream, SimError> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(SimError::io(format!(
            "connecting to the adb server at {server}"
        )))?;
    let framed = format!("{:04x}{request}", request.len());
    stream
        .write_all(framed.as_bytes())
        .await
        .map_err(SimError::io(format!("sending `{request}` to {server}")))?;
    Ok(stream)
}

async fn read_length_prefixed(stream: &mut TcpStream, request: &str) -> Result<String, SimError> {
    let mut length = [0u8; 4];
    stream
        .read_exact(&mut length)
        .await
        .map_err(SimError::io(format!("reading the reply to `{request}`")))?;
    let length = std::str::from_utf8(&length)
        .ok()
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .ok_or_else(|| SimError::AdbProtocol {
            request: request.to_string(),
            reply: String::from_utf8_lossy(&length).into_owned(),
        })?;
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .await
        .map_err(SimError::io(format!("reading the reply to `{request}`")))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Sends a host request that answers `OKAY` + a length-prefixed string, and returns the string.
pub async fn host_request(server: SocketAddr, request: &str) -> Result<String, SimError> {
    let exchange = async {
        let mut stream = send_request(server, request).await?;
        let mut status = [0u8; 4];
        stream
            .read_exact(&mut status)
            .await
            .map_err(SimError::io(format!("reading the status of `{request}`")))?;
        match &status {
            b"OKAY" => read_length_prefixed(&mut stream, request).await,
            b"FAIL" => Err(SimError::AdbServer {
                request: request.to_string(),
                message: read_length_prefixed(&mut stream, request).await?,
            }),
            other => Err(SimError::AdbProtocol {
                request: request.to_string(),
                reply: String::from_utf8_lossy(other).into_owned(),
            }),
        }
    };
    timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| SimError::Timeout {
            what: format!("the adb server's reply to `{request}`"),
            waited: REQUEST_TIMEOUT,
        })?
}

/// `host:emulator:PORT`: the server connects to 127.0.0.1:PORT and lists `emulator-(PORT-1)`.
/// The server sends no reply; this returns once it closed the request socket.
pub async fn announce_emulator(server: SocketAddr, port: u16) -> Result<(), SimError> {
    let request = format!("host:emulator:{port}");
    let mut stream = send_request(server, &request).await?;
    let mut sink = Vec::new();
    // The reply is empty; waiting for EOF makes sure the server handled the request.
    let _ = timeout(REQUEST_TIMEOUT, stream.read_to_end(&mut sink)).await;
    Ok(())
}

/// `host:connect:ADDR`.
pub async fn connect(server: SocketAddr, address: SocketAddr) -> Result<(), SimError> {
    let request = format!("host:connect:{address}");
    let reply = host_request(server, &request).await?;
    if reply.contains("connected to") {
        Ok(())
    } else {
        Err(SimError::AdbServer {
            request,
            message: reply,
        })
    }
}

/// `host:disconnect:ADDR`. A device that is not connected is not an error.
pub async fn disconnect(server: SocketAddr, address: SocketAddr) -> Result<(), SimError> {
    match host_request(server, &format!("host:disconnect:{address}")).await {
        Ok(_) | Err(SimError::AdbServer { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// `host:devices`: (serial, state) pairs such as ("emulator-5554", "device").
pub async fn devices(server: SocketAddr) -> Result<Vec<(String, String)>, SimError> {
    let listing = host_request(server, "host:devices").await?;
    Ok(parse_devices(&listing))
}

/// Parses the `serial\tstate` lines of `host:devices`.
pub fn parse_devices(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(|line| {
            let (serial, state) = line.split_once('\t')?;
            Some((serial.to_string(), state.trim().to_string()))
        })
        .collect()
}

/// What the server should show for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted<'a> {
    /// Listed with this state (`device`, `unauthorized`, ...).
    State(&'a str),
    /// Not listed at all.
    Absent,
}

/// Polls `host:devices` until every serial is as wanted, or fails after `limit`.
pub async fn wait_for_state(
    server: SocketAddr,
    serials: &[String],
    wanted: Wanted<'_>,
    limit: Duration,
) -> Result<(), SimError> {
    let deadline = Instant::now() + limit;
    loop {
        let listed = devices(server).await?;
        let satisfied = serials.iter().all(|serial| {
            let state = listed
                .iter()
                .find(|(s, _)| s == serial)
                .map(|(_, st)| st.as_str());
            match wanted {
                Wanted::State(want) => state == Some(want),
                Wanted::Absent => state.is_none(),
            }
        });
        if satisfied {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(SimError::Timeout {
                what: format!("{serials:?} to be {wanted:?} (adb lists {listed:?})"),
                waited: limit,
            });
        }
        sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_listing() {
        assert_eq!(
            parse_devices("emulator-5554\tdevice\n127.0.0.1:5555\tunauthorized\n"),
            vec![
                ("emulator-5554".to_string(), "device".to_string()),
                ("127.0.0.1:5555".to_string(), "unauthorized".to_string())
            ]
        );
        assert!(parse_devices("").is_empty());
    }
}
