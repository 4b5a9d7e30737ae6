//! A real adb server (Debian's `adb`) of the test's own, on a free loopback port.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::{READY_TIMEOUT, free_port, keep_if_panicking, temp_dir};

/// An adb server on `127.0.0.1:port`, run in the foreground (`adb server nodaemon`)
/// as the test's child so it cannot outlive the test.
///
/// `Drop` asks it to exit (`adb -P PORT kill-server`), then kills it.
pub struct AdbServer {
    port: u16,
    process: Option<ChildProcess>,
    dir: Option<TempDir>,
}

impl AdbServer {
    /// Starts a server on a free port and waits until it answers `host:version`.
    ///
    /// # Panics
    /// When `adb` is not installed (run `scripts/install-deps --test`) or the server
    /// does not answer within [`READY_TIMEOUT`] after three tries on fresh ports.
    pub async fn start() -> AdbServer {
        let dir = temp_dir("adb");
        let mut last_error = String::new();
        for attempt in 1..=3 {
            let port = free_port();
            let log = dir.path().join(format!("adb-{port}.log"));
            let mut command = Command::new("adb");
            command
                .arg("-P")
                .arg(port.to_string())
                .arg("server")
                .arg("nodaemon")
                // Its own ~/.android (adbkey): parallel first starts do not race to
                // write one key file, and the user's own keys stay untouched.
                .env("ANDROID_SDK_HOME", dir.path());
            let mut process = ChildProcess::spawn("adb server", command, &log);
            let started = Instant::now();
            let answered = tokio::time::timeout(READY_TIMEOUT, async {
                loop {
                    if host_version(port).is_ok() {
                        return true;
                    }
                    if !process.is_running() {
                        return false; // e.g. the port was taken meanwhile: try another
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            })
            .await;
            if answered == Ok(true) {
                process.stop_listening();
                return AdbServer {
                    port,
                    process: Some(process),
                    dir: Some(dir),
                };
            }
            last_error = format!(
                "attempt {attempt}: adb server on port {port} did not answer host:version \
                 ({:?} elapsed); log {}:\n{}",
                started.elapsed(),
                process.log_path().display(),
                process.log_tail()
            );
        }
        panic!("cannot start an adb server: {last_error}");
    }

    /// The server's port on 127.0.0.1 (what `--adb-server 127.0.0.1:PORT` takes).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// An `adb -P PORT` command for this server (add the subcommand, e.g. `devices`).
    pub fn command(&self) -> Command {
        let mut command = Command::new("adb");
        command.arg("-P").arg(self.port.to_string());
        command
    }

    /// The server's protocol version, as `host:version` reports it (hex, e.g. `0029`).
    pub fn version(&self) -> std::io::Result<String> {
        host_version(self.port)
    }

    /// `host:devices` as the adb server lists them: one `serial\tstate` per line.
    pub fn devices(&self) -> std::io::Result<String> {
        host_request(self.port, "host:devices")
    }
}

impl Drop for AdbServer {
    fn drop(&mut self) {
        // A polite stop first so adb can close its device connections; bounded,
        // since the child is killed below anyway.
        if let Ok(mut stop) = self
            .command()
            .arg("kill-server")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && matches!(stop.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = stop.kill();
            let _ = stop.wait();
        }
        if let Some(mut process) = self.process.take() {
            process.wait_exit(Duration::from_secs(1));
            drop(process);
        }
        keep_if_panicking(&mut self.dir);
    }
}

/// Asks the adb server on `port` for `host:version`.
fn host_version(port: u16) -> std::io::Result<String> {
    host_request(port, "host:version")
}

/// One request of adb's host protocol: `LLLLservice`, answered by `OKAY` + `LLLL` + payload.
fn host_request(port: u16, service: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(1),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(encode_host_request(service).as_bytes())?;
    let mut status = [0u8; 4];
    stream.read_exact(&mut status)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = parse_hex_len(&len)?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    let payload = String::from_utf8_lossy(&payload).into_owned();
    if &status == b"OKAY" {
        Ok(payload)
    } else {
        Err(std::io::Error::other(format!(
            "adb server refused {service}: {payload}"
        )))
    }
}

/// `host:version` -> `000chost:version`.
fn encode_host_request(service: &str) -> String {
    format!("{:04x}{service}", service.len())
}

fn parse_hex_len(bytes: &[u8; 4]) -> std::io::Result<usize> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| usize::from_str_radix(s, 16).ok())
        .ok_or_else(|| std::io::Error::other(format!("bad adb length prefix {bytes:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_requests_are_length_prefixed_in_hex() {
        assert_eq!(encode_host_request("host:version"), "000chost:version");
        assert_eq!(parse_hex_len(b"001f").expect("hex"), 31);
        assert!(parse_hex_len(b"zz00").is_err());
    }
}
