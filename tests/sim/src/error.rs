//! The crate's error type: what went wrong talking to the adb server, a socket or a device.

use std::time::Duration;

/// Errors of the simulator's library API and control interface.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("adb server refused `{request}`: {message}")]
    AdbServer { request: String, message: String },
    #[error("adb server sent an unexpected reply to `{request}`: {reply:?}")]
    AdbProtocol { request: String, reply: String },
    #[error(
        "timed out after {waited:?} waiting for {what}; is the adb server at the given address running?"
    )]
    Timeout { what: String, waited: Duration },
    #[error("no simulated device with serial `{0}`")]
    UnknownDevice(String),
    #[error("the device task for `{0}` has stopped")]
    DeviceGone(String),
}

impl SimError {
    /// Wraps an IO error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SimError {
        let context = context.into();
        move |source| SimError::Io { context, source }
    }
}
