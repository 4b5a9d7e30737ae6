//! Screen capture and input for live sessions: one capture per device, shared by every viewer.
//!
//! ```text
//!  Viewer --commands--> capture task --owns--> video source (scrcpy video socket + server shell,
//!    ^                      |                                or screenrecord through exec:)
//!    +-- broadcast<Arc<VideoFrame>> <-- frames (SPS/PPS in front of every keyframe)
//!  Viewer --control---> control worker --owns--> scrcpy control socket, or `input` commands
//! ```
//!
//! **Invariants**: one capture per device however many viewers; the capture stops (sockets
//! closed, scrcpy server ends) when the last [`Viewer`] drops; a slow viewer lags and
//! resyncs at the next keyframe, it never blocks the capture; every keyframe carries the
//! current SPS/PPS in front; keyframe requests reach the device at most once per 500 ms.
//!
//! Sans-IO cores: [`scrcpy_video`] (video socket parser), [`scrcpy_control`] (control
//! encoder), [`h264`] (Annex-B, SPS size, access units), [`frames`] (config in front of
//! keyframes, keyframe rate limit), [`input_commands`] (control messages as `input` commands).

pub mod frames;
pub mod h264;
mod hub;
pub mod input_commands;
pub mod scrcpy_control;
mod scrcpy_session;
pub mod scrcpy_video;
mod screenrecord_session;

use std::path::PathBuf;

pub use hub::{CaptureHub, Viewer};

/// How the node captures screens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// The scrcpy server jar to push; `None` uses the `screenrecord` fallback.
    pub scrcpy_server: Option<PathBuf>,
    /// The jar's version (the server refuses a different one), e.g. "3.3.4".
    pub scrcpy_version: String,
    /// The longest side of the video, in pixels (0 = the device's own size).
    pub max_size: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            scrcpy_server: None,
            scrcpy_version: "3.3.4".to_string(),
            max_size: 1280,
        }
    }
}

/// One H.264 access unit in Annex-B form. A keyframe's data starts with SPS and PPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Presentation time in microseconds, from the device (scrcpy) or the node's clock
    /// since the capture started (screenrecord).
    pub pts_us: u64,
    pub keyframe: bool,
    pub data: bytes::Bytes,
}

/// The size of the video in pixels (what touch coordinates refer to).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoSize {
    pub width: u32,
    pub height: u32,
}

/// How a capture gets its video and injects input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMethod {
    /// The scrcpy server (video and control sockets).
    Scrcpy,
    /// `screenrecord` and `input` shell commands (slower input, keyframes by restart).
    ScreenRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchAction {
    Down,
    Up,
    Move,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Down,
    Up,
}

/// Input for the device; coordinates are in pixels of `width` x `height` (the video size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    Touch {
        action: TouchAction,
        pointer_id: u64,
        x: i32,
        y: i32,
        width: u16,
        height: u16,
        /// 0xFFFF = 1.0.
        pressure: u16,
    },
    Key {
        action: KeyAction,
        keycode: u32,
        repeat: u32,
        metastate: u32,
    },
    /// At most [`scrcpy_control::MAX_TEXT_BYTES`] bytes (longer text is cut at a char boundary).
    Text(String),
    /// `hscroll`/`vscroll` as scrcpy encodes them (i16 fixed point of -1.0..1.0).
    Scroll {
        x: i32,
        y: i32,
        width: u16,
        height: u16,
        hscroll: i16,
        vscroll: i16,
    },
    BackOrScreenOn {
        action: KeyAction,
    },
    SetClipboard {
        sequence: u64,
        paste: bool,
        text: String,
    },
    RotateDevice,
    /// Ask for a new SPS/PPS and a keyframe.
    ResetVideo,
}

/// Why a capture could not start, ended, or refused input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("could not start the screen capture of {serial}: {reason}")]
    Start { serial: String, reason: String },
    #[error("the screen capture ended: {0}")]
    Ended(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("input failed: {0}")]
    Control(String),
}
