//! What connections and captures tell a device task, and the app state the control API shows.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::adb_session::SessionEvent;
use crate::capture::CaptureInput;
use crate::connection::ConnectionId;
use crate::input_command::InputEvent;
use crate::launcher_app::{BUTTONS, LauncherApp};

/// What connections and captures tell the device task.
#[derive(Debug)]
pub enum DeviceEvent {
    Session(ConnectionId, SessionEvent),
    /// Input injected through scrcpy, already in screen coordinates.
    Input(InputEvent),
    /// A capture started: send it the app's state now and after every change.
    CaptureOpened {
        id: u64,
        inputs: std::sync::mpsc::Sender<CaptureInput>,
    },
    CaptureClosed {
        id: u64,
    },
}

/// The launcher app's state as `GET /devices/{serial}/app` returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppSnapshot {
    pub buttons: BTreeMap<String, u64>,
    pub last_button: Option<String>,
    pub text: String,
    pub scroll: i32,
    pub rotation: u8,
    pub width: u32,
    pub height: u32,
    /// Frames rendered by every capture so far.
    pub frames: u64,
    /// Video streams open now.
    pub captures: usize,
    /// Pointers down now.
    pub pointers: usize,
    /// The last key pressed ("HOME", "BACK", or the number).
    pub last_key: Option<String>,
    pub clipboard: String,
    /// Average time to render and encode one frame so far, in milliseconds.
    pub render_encode_ms_avg: f64,
}

impl AppSnapshot {
    /// The snapshot of `app` with the device's counters.
    pub fn new(app: &LauncherApp, frames: u64, captures: usize) -> Self {
        let (width, height) = app.size();
        Self {
            buttons: BUTTONS
                .iter()
                .enumerate()
                .map(|(index, label)| (label.to_string(), app.presses(index)))
                .collect(),
            last_button: app.last_button().map(str::to_string),
            text: app.text().to_string(),
            scroll: app.scroll(),
            rotation: app.rotation(),
            width,
            height,
            frames,
            captures,
            pointers: app.pointers().count(),
            last_key: app.last_key(),
            clipboard: app.clipboard().to_string(),
            render_encode_ms_avg: 0.0,
        }
    }
}
