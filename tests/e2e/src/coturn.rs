//! A real coturn TURN server on loopback with a shared secret (time-limited credentials), for TURN-only tests.

use std::process::Command;

use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::{free_port, keep_if_panicking, temp_dir};

/// A running `turnserver`. `Drop` kills it.
pub struct Coturn {
    pub port: u16,
    pub secret: String,
    process: Option<ChildProcess>,
    dir: Option<TempDir>,
}

impl Coturn {
    /// Starts `turnserver` on 127.0.0.1 with `--use-auth-secret` and waits until it listens.
    ///
    /// # Panics
    /// When coturn is not installed (`scripts/install-deps --test`) or does not start.
    pub async fn start() -> Coturn {
        let dir = temp_dir("coturn");
        let port = free_port();
        let secret = "farm-e2e-turn-secret".to_string();
        let relay_min = 49160 + (port % 20) * 20;
        let mut command = Command::new("turnserver");
        command.args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            &format!("--min-port={relay_min}"),
            &format!("--max-port={}", relay_min + 19),
            "--use-auth-secret",
            &format!("--static-auth-secret={secret}"),
            "--realm=farm.local",
            "--fingerprint",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--allow-loopback-peers",
            "--no-tcp-relay",
            &format!("--pidfile={}", dir.path().join("turn.pid").display()),
            "--log-file=stdout",
            "--simple-log",
            &format!("--userdb={}", dir.path().join("turndb").display()),
        ]);
        let mut process = ChildProcess::spawn("turnserver", command, &dir.path().join("turn.log"));
        // Ready once it answers a STUN binding request on its UDP port.
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp socket");
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        request.extend_from_slice(b"farm-e2e-txn");
        let deadline = std::time::Instant::now() + crate::READY_TIMEOUT;
        loop {
            let _ = socket.send_to(&request, ("127.0.0.1", port)).await;
            let mut buf = [0u8; 512];
            let answered = tokio::time::timeout(
                std::time::Duration::from_millis(100),
                socket.recv_from(&mut buf),
            )
            .await;
            if matches!(answered, Ok(Ok((n, _))) if n >= 20) {
                break;
            }
            assert!(
                process.is_running(),
                "turnserver exited: {}",
                process.log_tail()
            );
            assert!(
                std::time::Instant::now() < deadline,
                "turnserver not ready: {}",
                process.log_tail()
            );
        }
        process.stop_listening();
        Coturn {
            port,
            secret,
            process: Some(process),
            dir: Some(dir),
        }
    }

    /// An `--ice-config` JSON for the broker: TURN only, through this server.
    pub fn ice_config(&self) -> String {
        serde_json::json!({
            "default": {
                "turn": [format!("turn:127.0.0.1:{}?transport=udp", self.port)],
                "turn_secret": self.secret,
            }
        })
        .to_string()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        self.process.take();
        keep_if_panicking(&mut self.dir);
    }
}
