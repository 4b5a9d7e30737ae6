//! What live sessions need from the rest of the node, as traits: the capture (one viewer
//! per session) and the device set (is this serial here and online?). The node implements
//! them with [`CaptureHub`] and [`DeviceSetHandle`]; tests plug in fakes.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{broadcast, watch};

use crate::capture::{CaptureHub, ControlMessage, VideoFrame, VideoSize, Viewer};
use crate::devices::{ConnState, DeviceSetHandle};

/// Starts viewers of device screens.
pub trait LiveSource: Send + Sync + 'static {
    /// A new viewer of the device's screen (starting its capture if needed); the error is
    /// the reason to give the browser.
    fn attach(&self, serial: &str) -> BoxFuture<'static, Result<Box<dyn LiveViewer>, String>>;
}

/// One session's view of a device: frames, keyframe requests, input, the video size.
/// Dropping it detaches from the capture.
pub trait LiveViewer: Send + Sync + 'static {
    /// The frame channel (taken once, by the session's frame pump); it closes when the
    /// capture ends.
    fn take_frames(&mut self) -> broadcast::Receiver<Arc<VideoFrame>>;
    /// Asks the device for a keyframe (rate-limited by the capture).
    fn request_keyframe(&self);
    /// This viewer's connection is up and it needs a keyframe to start (a short floor only).
    fn viewer_ready(&self) {
        self.request_keyframe();
    }
    /// Injects input into the device.
    fn control(&self, message: ControlMessage) -> BoxFuture<'_, Result<(), String>>;
    /// The current video size; changes on rotation.
    fn video_size(&self) -> watch::Receiver<VideoSize>;
}

/// Tells whether a device can be viewed.
pub trait DeviceLookup: Send + Sync + 'static {
    /// `Ok` when the device is attached and online; otherwise the reason for the browser.
    fn check(&self, serial: &str) -> BoxFuture<'static, Result<(), String>>;
}

impl LiveSource for CaptureHub {
    fn attach(&self, serial: &str) -> BoxFuture<'static, Result<Box<dyn LiveViewer>, String>> {
        let hub = self.clone();
        let serial = serial.to_string();
        Box::pin(async move {
            match hub.attach(&serial).await {
                Ok(viewer) => Ok(Box::new(viewer) as Box<dyn LiveViewer>),
                Err(error) => Err(error.to_string()),
            }
        })
    }
}

impl LiveViewer for Viewer {
    fn take_frames(&mut self) -> broadcast::Receiver<Arc<VideoFrame>> {
        // The viewer keeps a fresh receiver it never reads; a broadcast receiver that lags
        // costs nothing and blocks no one.
        let fresh = self.frames().resubscribe();
        std::mem::replace(self.frames(), fresh)
    }

    fn request_keyframe(&self) {
        Viewer::request_keyframe(self);
    }

    fn viewer_ready(&self) {
        Viewer::viewer_ready(self);
    }

    fn control(&self, message: ControlMessage) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            Viewer::control(self, message)
                .await
                .map_err(|error| error.to_string())
        })
    }

    fn video_size(&self) -> watch::Receiver<VideoSize> {
        Viewer::video_size(self)
    }
}

impl DeviceLookup for DeviceSetHandle {
    fn check(&self, serial: &str) -> BoxFuture<'static, Result<(), String>> {
        let devices = self.clone();
        let serial = serial.to_string();
        Box::pin(async move {
            let subscription = devices
                .subscribe()
                .await
                .map_err(|_| "the node is shutting down".to_string())?;
            match subscription.snapshot.iter().find(|d| d.serial == serial) {
                Some(device) if device.state == ConnState::Online => Ok(()),
                Some(_) => Err(format!("device {serial} is offline")),
                None => Err(format!("device {serial} is not attached to this node")),
            }
        })
    }
}
