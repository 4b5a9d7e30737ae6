//! Starting a set of simulated devices and their control interface: the library's entry point.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::adb_host::{self, Wanted};
use crate::control_api;
use crate::device::{AttachMode, DeviceHandle};
use crate::device_profile::DeviceProfile;
use crate::error::SimError;

/// What to start.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// How many devices.
    pub devices: usize,
    /// The adb server the devices attach to.
    pub adb_server: SocketAddr,
    pub attach: AttachMode,
    /// Where the HTTP control interface listens (`127.0.0.1:0` picks a free port).
    pub control: SocketAddr,
    /// How long [`Simulator::start`] waits for every device to show as `device`.
    pub ready_timeout: Duration,
    /// Screen size for every device (`None`: each profile's own).
    pub screen: Option<(u32, u32)>,
    /// Clock frames per second while a capture runs (0 = frames only when the screen changes).
    pub fps: u32,
}

impl SimulatorConfig {
    /// `devices` devices on the adb server at `adb_server`, emulator attach, control on a free port.
    pub fn new(devices: usize, adb_server: SocketAddr) -> Self {
        Self {
            devices,
            adb_server,
            attach: AttachMode::Emulator,
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ready_timeout: Duration::from_secs(30),
            screen: None,
            fps: crate::device_context::DEFAULT_FPS,
        }
    }
}

/// The ready line `farm-sim` prints on stdout.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyLine {
    pub control: String,
    pub devices: Vec<ReadyDevice>,
}

/// One device in the ready line.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyDevice {
    pub serial: String,
    pub adb_serial: String,
    pub port: u16,
    pub model: String,
    pub android_version: String,
    pub screen_width: u32,
    pub screen_height: u32,
}

/// Running devices and their control interface. Dropping it closes everything
/// (emulator-attached devices vanish from adb at once).
pub struct Simulator {
    control_url: String,
    devices: Arc<Vec<DeviceHandle>>,
    control_task: JoinHandle<()>,
}

impl Simulator {
    /// Binds the control interface, starts the devices and returns once the adb server
    /// lists every one of them as `device`.
    pub async fn start(config: SimulatorConfig) -> Result<Self, SimError> {
        let control_listener = TcpListener::bind(config.control)
            .await
            .map_err(SimError::io(format!(
                "binding the control interface on {}",
                config.control
            )))?;
        let control_address = control_listener
            .local_addr()
            .map_err(SimError::io("reading the control interface's address"))?;
        // The control port is unique among live processes on this host, so serials are too.
        let serial_prefix = format!("SIM-{}", control_address.port());
        let mut devices = Vec::with_capacity(config.devices);
        for index in 0..config.devices {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(SimError::io("binding a device listener on 127.0.0.1"))?;
            let mut profile = DeviceProfile::generate(&serial_prefix, index);
            if let Some((width, height)) = config.screen {
                profile.screen_width = width;
                profile.screen_height = height;
            }
            devices.push(DeviceHandle::spawn(
                profile,
                listener,
                config.adb_server,
                config.attach,
                config.fps,
            )?);
        }
        let devices = Arc::new(devices);
        let router = control_api::router(devices.clone());
        let control_task = tokio::spawn(async move {
            if let Err(error) = axum::serve(control_listener, router).await {
                tracing::error!(%error, "control interface stopped");
            }
        });
        let simulator = Self {
            control_url: format!("http://{control_address}"),
            devices,
            control_task,
        };
        let serials: Vec<String> = simulator
            .devices
            .iter()
            .map(|d| d.adb_serial().to_string())
            .collect();
        adb_host::wait_for_state(
            config.adb_server,
            &serials,
            Wanted::State("device"),
            config.ready_timeout,
        )
        .await?;
        tracing::info!(devices = serials.len(), control = %simulator.control_url, "all devices attached");
        Ok(simulator)
    }

    /// `http://IP:PORT` of the control interface.
    pub fn control_url(&self) -> &str {
        &self.control_url
    }

    pub fn devices(&self) -> &[DeviceHandle] {
        &self.devices
    }

    /// The device whose `ro.serialno` is `serial`.
    pub fn device(&self, serial: &str) -> Option<&DeviceHandle> {
        self.devices.iter().find(|device| device.serial() == serial)
    }

    /// The data of the ready line.
    pub fn ready_line(&self) -> ReadyLine {
        ReadyLine {
            control: self.control_url.clone(),
            devices: self
                .devices
                .iter()
                .map(|device| {
                    let profile = device.profile();
                    ReadyDevice {
                        serial: profile.serial.clone(),
                        adb_serial: device.adb_serial().to_string(),
                        port: device.port(),
                        model: profile.model.clone(),
                        android_version: profile.android_version.clone(),
                        screen_width: profile.screen_width,
                        screen_height: profile.screen_height,
                    }
                })
                .collect(),
        }
    }

    /// Unplugs every device (so the adb server forgets them) and stops the control interface.
    pub async fn shutdown(self) {
        for device in self.devices.iter() {
            if let Err(error) = device.unplug().await {
                tracing::warn!(serial = device.serial(), %error, "unplug at shutdown failed");
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.control_task.abort();
    }
}
