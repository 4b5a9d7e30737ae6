//! What every connection and capture of one device shares: its profile, pushed files and counters.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::device_profile::DeviceProfile;
use crate::sync_protocol::FileStore;

/// Default clock animation rate while a capture runs.
pub const DEFAULT_FPS: u32 = 10;

/// Shared, device-wide state that is not the app (the device task owns the app).
#[derive(Debug)]
pub struct DeviceContext {
    pub profile: Arc<DeviceProfile>,
    /// Files pushed with `sync:`, kept across connections.
    files: Mutex<FileStore>,
    /// Frames rendered by every capture so far.
    pub frames: AtomicU64,
    /// Time spent rendering and encoding those frames, in microseconds (for the latency breakdown).
    pub render_encode_us: AtomicU64,
    /// Clock frames per second while a capture runs (0 = frames only on change).
    pub fps: u32,
}

impl DeviceContext {
    pub fn new(profile: Arc<DeviceProfile>, fps: u32) -> Self {
        Self {
            profile,
            files: Mutex::new(FileStore::new()),
            frames: AtomicU64::new(0),
            render_encode_us: AtomicU64::new(0),
            fps,
        }
    }

    /// The pushed files. A panic while holding the lock cannot leave the map half-updated
    /// (every change is one insert), so a poisoned lock is used as is.
    pub fn files(&self) -> MutexGuard<'_, FileStore> {
        self.files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
