//! Test doubles for the live-session tests: a fake capture fed from an H.264 clip and a fake
//! device set; `client` is the browser side.

#![allow(dead_code)]

mod client;
pub use client::*;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use farm_node::capture::h264::AccessUnitSplitter;
use farm_node::capture::{ControlMessage, VideoFrame, VideoSize};
use farm_node::live::{DeviceLookup, LiveSource, LiveViewer};
use futures::future::BoxFuture;
use tokio::sync::{Notify, broadcast, mpsc, watch};

/// Access units of a 2 s 720x1280 test clip (keyframe every 30 frames), made by ffmpeg.
pub fn clip_frames(dir: &Path) -> Result<Vec<VideoFrame>> {
    let path = dir.join("clip.h264");
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc=size=720x1280:rate=30")
        .args(["-t", "2", "-c:v", "libx264", "-profile:v", "baseline"])
        .args([
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-g", "30", "-f", "h264"])
        .arg(&path)
        .status()
        .context("run ffmpeg (Debian package `ffmpeg`)")?;
    if !status.success() {
        bail!("ffmpeg failed: {status}");
    }
    let bytes = std::fs::read(&path)?;
    let mut splitter = AccessUnitSplitter::new();
    splitter.push(&bytes)?;
    splitter.flush();
    let mut frames = Vec::new();
    while let Some(unit) = splitter.poll() {
        frames.push(VideoFrame {
            pts_us: frames.len() as u64 * 33_333,
            keyframe: unit.keyframe,
            data: unit.data.into(),
        });
    }
    if frames.len() < 50 || !frames[0].keyframe {
        bail!("unexpected clip: {} frames", frames.len());
    }
    Ok(frames)
}

/// A capture of one device: frames come from the test, input and keyframe requests are
/// recorded; [`FakeCapture::end`] ends it as an unplugged device would.
pub struct FakeCapture {
    pub frames: Mutex<Option<broadcast::Sender<Arc<VideoFrame>>>>,
    pub size: watch::Sender<VideoSize>,
    pub keyframe_requests: AtomicUsize,
    pub keyframe_requested: Notify,
    pub controls: mpsc::UnboundedSender<ControlMessage>,
    /// Viewers alive now.
    pub viewers: AtomicUsize,
    pub viewers_changed: Notify,
}

impl FakeCapture {
    pub fn new(size: VideoSize) -> (Arc<Self>, mpsc::UnboundedReceiver<ControlMessage>) {
        let (frames, _) = broadcast::channel(64);
        let (controls, control_rx) = mpsc::unbounded_channel();
        let capture = Arc::new(Self {
            frames: Mutex::new(Some(frames)),
            size: watch::Sender::new(size),
            keyframe_requests: AtomicUsize::new(0),
            keyframe_requested: Notify::new(),
            controls,
            viewers: AtomicUsize::new(0),
            viewers_changed: Notify::new(),
        });
        (capture, control_rx)
    }

    /// Sends a frame to every viewer; false once the capture ended.
    pub fn send(&self, frame: VideoFrame) -> bool {
        let frames = self.frames.lock().expect("not poisoned");
        match &*frames {
            Some(sender) => {
                let _ = sender.send(Arc::new(frame));
                true
            }
            None => false,
        }
    }

    /// The device goes away: the frame channel closes.
    pub fn end(&self) {
        self.frames.lock().expect("not poisoned").take();
    }

    /// Loops `clip` at 30 fps with growing PTS until the capture ends.
    pub fn play(self: &Arc<Self>, clip: Vec<VideoFrame>) -> tokio::task::JoinHandle<()> {
        let capture = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_micros(33_333));
            for n in 0u64.. {
                ticker.tick().await;
                let mut frame = clip[(n as usize) % clip.len()].clone();
                frame.pts_us = 1_000_000 + n * 33_333;
                if !capture.send(frame) {
                    return;
                }
            }
        })
    }
}

struct FakeViewer {
    capture: Arc<FakeCapture>,
    frames: Option<broadcast::Receiver<Arc<VideoFrame>>>,
}

impl Drop for FakeViewer {
    fn drop(&mut self) {
        self.capture.viewers.fetch_sub(1, Ordering::SeqCst);
        self.capture.viewers_changed.notify_waiters();
    }
}

/// The capture as the live service sees it.
pub struct FakeSource(pub Arc<FakeCapture>);

impl LiveSource for FakeSource {
    fn attach(&self, serial: &str) -> BoxFuture<'static, Result<Box<dyn LiveViewer>, String>> {
        let capture = Arc::clone(&self.0);
        let serial = serial.to_string();
        Box::pin(async move {
            let frames = capture
                .frames
                .lock()
                .expect("not poisoned")
                .as_ref()
                .map(broadcast::Sender::subscribe)
                .ok_or(format!("the screen capture of {serial} ended"))?;
            capture.viewers.fetch_add(1, Ordering::SeqCst);
            capture.viewers_changed.notify_waiters();
            Ok(Box::new(FakeViewer {
                capture,
                frames: Some(frames),
            }) as Box<dyn LiveViewer>)
        })
    }
}

impl LiveViewer for FakeViewer {
    fn take_frames(&mut self) -> broadcast::Receiver<Arc<VideoFrame>> {
        match self.frames.take() {
            Some(frames) => frames,
            None => broadcast::channel(1).1,
        }
    }

    fn request_keyframe(&self) {
        self.capture
            .keyframe_requests
            .fetch_add(1, Ordering::SeqCst);
        self.capture.keyframe_requested.notify_waiters();
    }

    fn control(&self, message: ControlMessage) -> BoxFuture<'_, Result<(), String>> {
        let sent = self.capture.controls.send(message).is_ok();
        Box::pin(async move { if sent { Ok(()) } else { Err("gone".into()) } })
    }

    fn video_size(&self) -> watch::Receiver<VideoSize> {
        self.capture.size.subscribe()
    }
}

/// Devices: only the listed serials are online.
pub struct FakeDevices(pub Vec<String>);

impl DeviceLookup for FakeDevices {
    fn check(&self, serial: &str) -> BoxFuture<'static, Result<(), String>> {
        let known = self.0.iter().any(|s| s == serial);
        let serial = serial.to_string();
        Box::pin(async move {
            if known {
                Ok(())
            } else {
                Err(format!("device {serial} is not attached to this node"))
            }
        })
    }
}
