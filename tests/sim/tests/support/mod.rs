//! Test support: a real adb server on a free loopback port, the adb CLI, and polling with a deadline.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

/// A real adb server this test started; killed on drop, even when the test fails.
pub struct AdbServer {
    port: u16,
}

impl AdbServer {
    pub fn start() -> anyhow::Result<Self> {
        // Ask the kernel for a free port, then let adb bind it.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let status = std::process::Command::new("adb")
            .args(["-P", &port.to_string(), "start-server"])
            .status()
            .context("running `adb start-server` (is Debian's `adb` installed?)")?;
        if !status.success() {
            bail!("adb -P {port} start-server failed: {status}");
        }
        Ok(Self { port })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Runs `adb -P PORT ARGS...`.
    pub async fn adb(&self, args: &[&str]) -> anyhow::Result<Output> {
        let output = tokio::process::Command::new("adb")
            .arg("-P")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .await
            .with_context(|| format!("running adb {args:?}"))?;
        Ok(output)
    }

    /// `adb devices` as (serial, state) pairs.
    pub async fn devices(&self) -> anyhow::Result<Vec<(String, String)>> {
        let output = self.adb(&["devices"]).await?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let (serial, state) = line.split_once('\t')?;
                Some((serial.to_string(), state.trim().to_string()))
            })
            .collect())
    }

    /// Polls `adb devices` until `serial` has `state` (`None`: is absent), with a deadline.
    pub async fn wait_for(&self, serial: &str, state: Option<&str>) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = self.devices().await?;
            let found = listed
                .iter()
                .find(|(s, _)| s == serial)
                .map(|(_, st)| st.as_str());
            if found == state {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{serial} is not {state:?} after 10 s; adb lists {listed:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for AdbServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("adb")
            .args(["-P", &self.port.to_string(), "kill-server"])
            .status();
    }
}
