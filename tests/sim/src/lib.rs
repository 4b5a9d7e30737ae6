//! farm-sim: simulated Android devices speaking the device side of the adb transport protocol.
//!
//! Start devices in-process with [`Simulator::start`]; each one listens on 127.0.0.1,
//! attaches to a real adb server and is steered through a [`DeviceHandle`] or the HTTP
//! control interface ([`control_api`]). The protocol core ([`adb_packet`], [`adb_session`],
//! [`adb_service`], [`shell`], [`sync_protocol`], [`scrcpy_control`], [`scrcpy_video`],
//! [`launcher_app`], [`app_render`]) is sans-IO; [`connection`], [`capture`] (one thread per
//! running video stream) and [`device`] are the IO shell.

pub mod adb_host;
pub mod adb_packet;
pub mod adb_service;
pub mod adb_session;
pub mod app_render;
pub mod capture;
pub mod connection;
pub mod control_api;
pub mod device;
pub mod device_context;
pub mod device_events;
pub mod device_profile;
pub mod error;
pub mod font;
pub mod h264;
pub mod input_command;
pub mod launcher_app;
pub mod scrcpy_control;
pub mod scrcpy_server;
pub mod scrcpy_video;
pub mod screen;
pub mod screenrecord;
pub mod shell;
pub mod shell_words;
pub mod simulator;
pub mod sync_protocol;

pub use device::{AppSnapshot, AttachMode, DeviceHandle, DeviceInfo, DeviceState};
pub use device_profile::DeviceProfile;
pub use error::SimError;
pub use input_command::InputEvent;
pub use simulator::{ReadyDevice, ReadyLine, Simulator, SimulatorConfig};
