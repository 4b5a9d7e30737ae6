//! A real `farm-sim` process: simulated Android devices attached to an adb server, driven over its HTTP control API.

use std::process::Command;

use serde::Deserialize;
use tempfile::TempDir;

use crate::broker::default_rust_log;
use crate::process::ChildProcess;
use crate::{READY_TIMEOUT, bin, keep_if_panicking, temp_dir};

/// One simulated device, as the simulator's ready line describes it (what the
/// broker should report for it once a node announces it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SimDevice {
    /// The device's hardware serial (`ro.serialno`): the broker's device id.
    pub serial: String,
    /// The serial the adb server knows it by (e.g. `127.0.0.1:40001`, `emulator-5554`).
    pub adb_serial: String,
    /// The TCP port the device listens on.
    pub port: u16,
    /// `ro.product.model`, e.g. `Pixel 7`.
    #[serde(default)]
    pub model: String,
    /// `ro.build.version.release`, e.g. `14`.
    #[serde(default)]
    pub android_version: String,
    /// Physical screen size in pixels (`wm size`).
    #[serde(default)]
    pub screen_width: u32,
    #[serde(default)]
    pub screen_height: u32,
}

/// The JSON line `farm-sim` prints on stdout once every device is attached.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SimReady {
    /// Base URL of the control API, e.g. `http://127.0.0.1:40000`.
    pub control: String,
    pub devices: Vec<SimDevice>,
}

/// A running simulator. `Drop` kills it (its devices drop off adb).
pub struct Sim {
    /// Base URL of the control API.
    pub control: String,
    /// The simulated devices, in the simulator's order.
    pub devices: Vec<SimDevice>,
    http: reqwest::Client,
    process: Option<ChildProcess>,
    dir: Option<TempDir>,
}

impl Sim {
    /// Starts `farm-sim --devices N --adb-server 127.0.0.1:ADB_PORT --control 127.0.0.1:0`
    /// and waits for its ready line (every device attached to the adb server).
    ///
    /// # Panics
    /// When the simulator exits or is not ready within [`READY_TIMEOUT`], with its log.
    pub async fn start(adb_port: u16, devices: usize) -> Sim {
        Sim::start_with(adb_port, devices, &[]).await
    }

    /// Like [`Sim::start`], with more flags (e.g. `--screen 720x1280`, `--fps 30`).
    pub async fn start_with(adb_port: u16, devices: usize, extra_args: &[&str]) -> Sim {
        let dir = temp_dir("sim");
        let mut command = Command::new(bin("farm-sim"));
        command
            .args(["--devices", &devices.to_string()])
            .args(["--adb-server", &format!("127.0.0.1:{adb_port}")])
            .args(["--control", "127.0.0.1:0"])
            .args(extra_args);
        default_rust_log(&mut command);
        let mut process = ChildProcess::spawn("farm-sim", command, &dir.path().join("sim.log"));
        let ready = match process.wait_for_line(READY_TIMEOUT, parse_ready_line).await {
            Ok(ready) => ready,
            Err(error) => panic!("{}", process.not_ready_message(&error)),
        };
        process.stop_listening();
        Sim {
            control: ready.control.trim_end_matches('/').to_owned(),
            devices: ready.devices,
            http: reqwest::Client::new(),
            process: Some(process),
            dir: Some(dir),
        }
    }

    /// The hardware serials of all devices.
    pub fn serials(&self) -> Vec<String> {
        self.devices.iter().map(|d| d.serial.clone()).collect()
    }

    /// Disconnects the device from adb, as pulling its cable would.
    pub async fn unplug(&self, serial: &str) {
        self.post(serial, "unplug").await;
    }

    /// Attaches an unplugged device again.
    pub async fn replug(&self, serial: &str) {
        self.post(serial, "replug").await;
    }

    /// Makes the device show as `unauthorized` (USB debugging prompt not accepted).
    pub async fn unauthorize(&self, serial: &str) {
        self.post(serial, "unauthorize").await;
    }

    /// Accepts the USB debugging prompt again.
    pub async fn authorize(&self, serial: &str) {
        self.post(serial, "authorize").await;
    }

    /// The input the device recorded (taps, keys, text), as the simulator reports it.
    pub async fn input(&self, serial: &str) -> serde_json::Value {
        self.get(&format!("/devices/{serial}/input")).await
    }

    /// GET a JSON document from the control API, e.g. `/devices/SERIAL/app`.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.control);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {url}: {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
    }

    /// The PID of the simulator process.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    async fn post(&self, serial: &str, action: &str) {
        let url = format!("{}/devices/{serial}/{action}", self.control);
        let response = self
            .http
            .post(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            panic!("POST {url}: {status}: {body}");
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.process.take();
        keep_if_panicking(&mut self.dir);
    }
}

/// The simulator's ready line, or `None` for any other stdout line.
pub fn parse_ready_line(line: &str) -> Option<SimReady> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    serde_json::from_str(line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_is_parsed() {
        let line = r#"{"control":"http://127.0.0.1:40000","devices":[{"serial":"SIM0001","adb_serial":"127.0.0.1:40001","port":40001},{"serial":"SIM0002","adb_serial":"emulator-5556","port":5557,"model":"Pixel 7","android_version":"14","screen_width":1080,"screen_height":2400}]}"#;
        let ready = parse_ready_line(line).expect("ready line");
        assert_eq!(ready.control, "http://127.0.0.1:40000");
        assert_eq!(ready.devices.len(), 2);
        assert_eq!(
            ready.devices[1],
            SimDevice {
                serial: "SIM0002".into(),
                adb_serial: "emulator-5556".into(),
                port: 5557,
                model: "Pixel 7".into(),
                android_version: "14".into(),
                screen_width: 1080,
                screen_height: 2400,
            }
        );
    }

    #[test]
    fn unknown_fields_are_tolerated_and_other_lines_skipped() {
        let line = r#"{"control":"http://127.0.0.1:1","devices":[],"version":3}"#;
        assert!(parse_ready_line(line).is_some());
        assert!(parse_ready_line("2026-12-04T16:00:00Z INFO attaching").is_none());
        assert!(parse_ready_line(r#"{"level":"info","msg":"x"}"#).is_none());
    }
}
