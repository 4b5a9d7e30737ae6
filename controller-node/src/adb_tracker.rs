//! The node's link to the local adb server: follows `host:track-devices` and reads device
//! properties (with adb_client, on blocking threads, under a per-device timeout).
//!
//! Why track-devices is spoken here rather than through `adb_client::server::ADBServer`:
//! `ADBServer` runs `adb start-server` before every connection to a loopback address, and
//! `new_from_path(addr, Some(path))` only changes which binary it runs (the command has no
//! `-P PORT`, so it would start a second server on 5037 when the node is configured for
//! another port). Its `track_devices` also reports devices one by one, so an empty list
//! (every device unplugged) is never seen. The track-devices framing is small, so it is
//! spoken directly on tokio (framing in [`crate::adb_host`]); `ADBServerDevice` (which never
//! starts a server) runs the shell commands.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adb_client::ADBDeviceExt;
use adb_client::server_device::ADBServerDevice;
use futures::future::BoxFuture;
use tokio::sync::watch;

pub use crate::adb_host::{AdbError, parse_hex_length, start_server_hint};
use crate::adb_host::{read_frame, send_host_request};
use crate::backoff::{Backoff, random_jitter};
use crate::device_props::{DeviceProps, PropQuery, apply_output};
use crate::devices::{AdbEntry, ConnState, DeviceSetHandle, PropsFetcher};

/// How often the list is re-read while a device is offline or unauthorized.
const SETTLE_RECHECK: Duration = Duration::from_secs(1);

/// Parses one track-devices (or `host:devices`) payload: lines of `SERIAL<TAB>STATE`.
/// Lines that do not have that shape are skipped; nothing here panics.
pub fn parse_device_list(body: &[u8]) -> Vec<AdbEntry> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| {
            let (serial, state) = line.split_once('\t')?;
            let serial = serial.trim();
            let valid = !serial.is_empty()
                && serial.len() <= 256
                && !serial.chars().any(|c| c.is_whitespace() || c.is_control());
            valid.then(|| AdbEntry {
                serial: serial.to_string(),
                state: ConnState::from_adb(state),
            })
        })
        .collect()
}

/// Follows the adb server's device list until `shutdown` turns true, reconnecting with backoff.
/// While the server is unreachable the node reports zero devices.
pub async fn run_tracker(
    addr: SocketAddrV4,
    devices: DeviceSetHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::for_adb_server();
    let mut failures_in_a_row = 0u32;
    loop {
        let started = Instant::now();
        let mut tracking = false;
        let result = tokio::select! {
            result = track_devices(addr, &devices, &mut tracking) => result,
            () = crate::wait_for_shutdown(&mut shutdown) => return,
        };
        if devices.adb_lost().await.is_err() {
            return;
        }
        if tracking {
            failures_in_a_row = 0;
            backoff.connection_ended(started.elapsed());
        }
        failures_in_a_row += 1;
        let delay = backoff.next_delay(random_jitter());
        match result {
            Ok(()) => {
                tracing::warn!(adb_server = %addr, "adb server closed the device tracking stream; reconnecting")
            }
            Err(error) if failures_in_a_row == 1 => {
                tracing::warn!(adb_server = %addr, retry_in_ms = delay.as_millis() as u64, "{error}")
            }
            Err(error) => {
                tracing::debug!(adb_server = %addr, retry_in_ms = delay.as_millis() as u64, "{error}")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = crate::wait_for_shutdown(&mut shutdown) => return,
        }
    }
}

/// One tracking session: connect, send `host:track-devices`, forward every list.
/// Sets `tracking` once the server accepted the request.
async fn track_devices(
    addr: SocketAddrV4,
    devices: &DeviceSetHandle,
    tracking: &mut bool,
) -> Result<(), AdbError> {
    let mut stream = crate::adb_host::connect(addr).await?;
    send_host_request(&mut stream, addr, "host:track-devices").await?;
    *tracking = true;
    tracing::info!(adb_server = %addr, "tracking devices on the adb server");
    // adb 29 does not announce every transition of a device that is not yet
    // `device` (offline -> unauthorized is never sent on track-devices), so while
    // any device is in such a state the list is also re-read once a second.
    let mut settling = false;
    loop {
        let frame = if settling {
            tokio::time::timeout(SETTLE_RECHECK, read_frame(&mut stream))
                .await
                .ok()
        } else {
            Some(read_frame(&mut stream).await)
        };
        let entries = match frame {
            Some(Ok(body)) => parse_device_list(&body),
            Some(Err(AdbError::Io(error))) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(());
            }
            Some(Err(error)) => return Err(error),
            None => list_devices_once(addr).await?,
        };
        settling = entries.iter().any(|e| e.state != ConnState::Online);
        if devices.adb_list(entries).await.is_err() {
            return Ok(());
        }
    }
}

/// One `host:devices` on a connection of its own.
async fn list_devices_once(addr: SocketAddrV4) -> Result<Vec<AdbEntry>, AdbError> {
    let mut stream = crate::adb_host::connect(addr).await?;
    send_host_request(&mut stream, addr, "host:devices").await?;
    Ok(parse_device_list(&read_frame(&mut stream).await?))
}

/// Reads device properties through the adb server with adb_client's blocking client.
#[derive(Debug, Clone)]
pub struct AdbPropsFetcher {
    addr: SocketAddrV4,
    timeout: Duration,
}

impl AdbPropsFetcher {
    /// A fetcher for the server at `addr`; a device that does not answer every query
    /// within `timeout` gives an error.
    pub fn new(addr: SocketAddrV4, timeout: Duration) -> Arc<Self> {
        Arc::new(Self { addr, timeout })
    }
}

impl PropsFetcher for AdbPropsFetcher {
    fn fetch(&self, serial: String) -> BoxFuture<'static, Result<DeviceProps, String>> {
        let addr = self.addr;
        let timeout = self.timeout;
        Box::pin(async move {
            // On timeout the blocking thread is left behind; it ends when the adb server
            // closes the socket (it does when the device's transport goes away).
            let read = tokio::task::spawn_blocking(move || read_props_blocking(addr, &serial));
            match tokio::time::timeout(timeout, read).await {
                Ok(Ok(result)) => result,
                Ok(Err(join_error)) => Err(format!("property read failed: {join_error}")),
                Err(_) => Err(format!(
                    "no answer within {} ms (device gone or hung?)",
                    timeout.as_millis()
                )),
            }
        })
    }
}

/// Runs every [`PropQuery`] on the device; the first adb error ends the read.
fn read_props_blocking(addr: SocketAddrV4, serial: &str) -> Result<DeviceProps, String> {
    let mut device = ADBServerDevice::new(serial.to_string(), Some(addr));
    let mut props = DeviceProps::unknown();
    for query in PropQuery::ALL {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        device
            .shell_command(&query.command(), Some(&mut stdout), Some(&mut stderr))
            .map_err(|error| format!("`{}` failed: {error}", query.command()))?;
        apply_output(&mut props, query, &stdout);
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists() {
        let body = b"emulator-5554\tdevice\n127.0.0.1:5556\toffline\nR58M1234ABC\tunauthorized\nX\tno permissions (user in plugdev group); see [http://developer.android.com/tools/device.html]\n";
        assert_eq!(
            parse_device_list(body),
            [
                AdbEntry {
                    serial: "emulator-5554".into(),
                    state: ConnState::Online
                },
                AdbEntry {
                    serial: "127.0.0.1:5556".into(),
                    state: ConnState::Offline
                },
                AdbEntry {
                    serial: "R58M1234ABC".into(),
                    state: ConnState::Unauthorized
                },
                AdbEntry {
                    serial: "X".into(),
                    state: ConnState::Offline
                },
            ]
        );
        assert!(parse_device_list(b"").is_empty());
        assert!(parse_device_list(b"\n\n").is_empty());
        assert!(parse_device_list(b"no tab here\n\tdevice\n\xff\xfe\n").is_empty());
        assert_eq!(parse_device_list(b"a\tdevice\r\n").len(), 1);
    }
}
