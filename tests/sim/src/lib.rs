//! farm-sim: simulated Android devices speaking the device side of the adb transport protocol.
//!
//! Start devices in-process with [`Simulator::start`]; each one listens on 127.0.0.1,
//! attaches to a real adb server and is steered through a [`DeviceHandle`] or the HTTP
//! control interface ([`control_api`]). The protocol core ([`adb_packet`], [`adb_session`],
//! [`adb_service`], [`shell`]) is sans-IO; [`connection`] and [`device`] are the tokio shell.

pub mod adb_host;
pub mod adb_packet;
pub mod adb_service;
pub mod adb_session;
pub mod connection;
pub mod control_api;
pub mod device;
pub mod device_profile;
pub mod error;
pub mod input_command;
pub mod screen;
pub mod shell;
pub mod shell_words;
pub mod simulator;

pub use device::{AttachMode, DeviceHandle, DeviceInfo, DeviceState};
pub use device_profile::DeviceProfile;
pub use error::SimError;
pub use input_command::InputEvent;
pub use simulator::{ReadyDevice, ReadyLine, Simulator, SimulatorConfig};
