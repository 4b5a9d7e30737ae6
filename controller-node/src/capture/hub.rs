//! [`CaptureHub`] and [`Viewer`]: one capture task per device, shared by its viewers; the
//! task owns the video source and ends when the last viewer drops.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::Instrument;

use super::frames::{KEYFRAME_REQUEST_INTERVAL, KeyframeLimiter};
use super::{
    CaptureConfig, CaptureError, CaptureMethod, ControlMessage, VideoFrame, VideoSize,
    scrcpy_session, screenrecord_session,
};

/// Frames kept for a viewer that falls behind; past this it lags and resyncs at a keyframe.
const FRAME_BUFFER: usize = 64;
/// Input messages queued per capture.
const CONTROL_QUEUE: usize = 256;

/// A control message and where its result goes (`None`: nobody waits, e.g. keyframe requests).
pub(super) type ControlRequest = (
    ControlMessage,
    Option<oneshot::Sender<Result<(), CaptureError>>>,
);

/// What a capture source produced.
pub(super) enum SourceEvent {
    Frame(VideoFrame),
    Size(VideoSize),
}

/// A running video source; dropping it stops the capture on the device.
pub(super) enum Source {
    Scrcpy(scrcpy_session::ScrcpySource),
    ScreenRecord(screenrecord_session::ScreenRecordSource),
}

impl Source {
    fn method(&self) -> CaptureMethod {
        match self {
            Source::Scrcpy(_) => CaptureMethod::Scrcpy,
            Source::ScreenRecord(_) => CaptureMethod::ScreenRecord,
        }
    }

    /// The next event; cancel-safe. An error is the reason the capture ends.
    async fn next_event(&mut self) -> Result<SourceEvent, String> {
        match self {
            Source::Scrcpy(source) => source.next_event().await,
            Source::ScreenRecord(source) => source.next_event().await,
        }
    }

    fn request_keyframe(&mut self) {
        match self {
            Source::Scrcpy(source) => source.request_keyframe(),
            Source::ScreenRecord(source) => source.request_keyframe(),
        }
    }
}

/// Everything a source needs to start.
pub(super) struct SourceStart<'a> {
    pub adb: SocketAddrV4,
    pub serial: &'a str,
    pub config: &'a CaptureConfig,
    pub control: mpsc::Receiver<ControlRequest>,
    /// A sender to `control`, for the source's own messages (e.g. reset video).
    pub control_sender: mpsc::Sender<ControlRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CaptureState {
    Starting,
    Running(CaptureMethod),
    Ended(String),
}

enum Command {
    Subscribe(oneshot::Sender<broadcast::Receiver<Arc<VideoFrame>>>),
    RequestKeyframe,
    /// A viewer became able to receive and has no keyframe yet.
    ViewerReady,
}

/// What viewers of one capture share; when the last one drops, the capture task's command
/// channel closes and the capture stops.
struct Shared {
    serial: String,
    commands: mpsc::Sender<Command>,
    control: mpsc::Sender<ControlRequest>,
    state: watch::Receiver<CaptureState>,
    size: watch::Receiver<VideoSize>,
}

impl Shared {
    fn end_reason(&self) -> Option<String> {
        match &*self.state.borrow() {
            CaptureState::Ended(reason) => Some(reason.clone()),
            _ => None,
        }
    }
}

struct Entry {
    id: u64,
    shared: Weak<Shared>,
}

struct HubInner {
    adb: SocketAddrV4,
    config: CaptureConfig,
    captures: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
}

/// The node's screen captures: at most one per device, started by its first viewer.
#[derive(Clone)]
pub struct CaptureHub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for CaptureHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureHub")
            .field("adb", &self.inner.adb)
            .field("active_captures", &self.active_captures())
            .finish()
    }
}

impl CaptureHub {
    pub fn new(adb_server: SocketAddrV4, config: CaptureConfig) -> CaptureHub {
        CaptureHub {
            inner: Arc::new(HubInner {
                adb: adb_server,
                config,
                captures: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Starts the device's capture if this is its first viewer, and waits until it runs
    /// (the video size is known then).
    pub async fn attach(&self, serial: &str) -> Result<Viewer, CaptureError> {
        let (shared, first_frames) = self.join_or_start(serial);
        let mut state = shared.state.clone();
        let frames = match first_frames {
            Some(frames) => Some(frames),
            None => {
                let (reply, receiver) = oneshot::channel();
                let _ = shared.commands.send(Command::Subscribe(reply)).await;
                receiver.await.ok()
            }
        };
        let method = match state.wait_for(|s| *s != CaptureState::Starting).await {
            Ok(s) => match &*s {
                CaptureState::Running(method) => Some(*method),
                _ => None,
            },
            Err(_) => None,
        };
        match (frames, method) {
            (Some(frames), Some(method)) => Ok(Viewer {
                shared,
                frames,
                method,
                synced: false,
            }),
            _ => Err(CaptureError::Start {
                serial: serial.to_string(),
                reason: shared
                    .end_reason()
                    .unwrap_or_else(|| "the capture stopped".into()),
            }),
        }
    }

    /// How many captures run now (one per device with viewers).
    pub fn active_captures(&self) -> usize {
        self.inner.captures.lock().map_or(0, |c| c.len())
    }

    fn join_or_start(
        &self,
        serial: &str,
    ) -> (Arc<Shared>, Option<broadcast::Receiver<Arc<VideoFrame>>>) {
        let mut captures = match self.inner.captures.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(shared) = captures.get(serial).and_then(|e| e.shared.upgrade()) {
            return (shared, None);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (commands, command_rx) = mpsc::channel(64);
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (state_tx, state) = watch::channel(CaptureState::Starting);
        let (size_tx, size) = watch::channel(VideoSize::default());
        let (frames_tx, frames) = broadcast::channel(FRAME_BUFFER);
        let shared = Arc::new(Shared {
            serial: serial.to_string(),
            commands,
            control,
            state,
            size,
        });
        captures.insert(
            serial.to_string(),
            Entry {
                id,
                shared: Arc::downgrade(&shared),
            },
        );
        let task = CaptureTask {
            hub: Arc::downgrade(&self.inner),
            id,
            serial: serial.to_string(),
            commands: command_rx,
            control: Some(control_rx),
            control_sender: shared.control.clone(),
            state: state_tx,
            size: size_tx,
            frames: frames_tx,
        };
        let span = tracing::info_span!("capture", serial = %serial, capture_id = id);
        tokio::spawn(task.run().instrument(span));
        (shared, Some(frames))
    }
}

/// One viewer of a device's screen. Dropping it detaches; the last one stops the capture.
pub struct Viewer {
    shared: Arc<Shared>,
    frames: broadcast::Receiver<Arc<VideoFrame>>,
    method: CaptureMethod,
    synced: bool,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("serial", &self.shared.serial)
            .field("method", &self.method)
            .finish()
    }
}

impl Viewer {
    /// The raw frame channel. It closes when the capture ends ([`Viewer::ended`] says
    /// why). On `Lagged`, skip frames until the next keyframe and call
    /// [`Viewer::request_keyframe`]; [`Viewer::recv`] does both.
    pub fn frames(&mut self) -> &mut broadcast::Receiver<Arc<VideoFrame>> {
        &mut self.frames
    }

    /// The next frame this viewer can decode: it starts at a keyframe and, after falling
    /// behind, resumes at the next keyframe (asking for one). `None` once the capture
    /// ended; [`Viewer::ended`] gives the reason.
    pub async fn recv(&mut self) -> Option<Arc<VideoFrame>> {
        loop {
            match self.frames.recv().await {
                Ok(frame) if self.synced || frame.keyframe => {
                    self.synced = true;
                    return Some(frame);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(serial = %self.shared.serial, skipped, "viewer fell behind; waiting for a keyframe");
                    self.synced = false;
                    self.request_keyframe();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Asks the device for a keyframe (rate-limited per capture to one per 500 ms; a
    /// request inside the interval is served at its end).
    pub fn request_keyframe(&self) {
        let _ = self.shared.commands.try_send(Command::RequestKeyframe);
    }

    /// This viewer can receive now (e.g. its WebRTC connection is up) and needs a keyframe
    /// to start: requested at once unless one was asked for in the last 100 ms.
    pub fn viewer_ready(&self) {
        let _ = self.shared.commands.try_send(Command::ViewerReady);
    }

    /// Injects input; returns once the device side accepted it (scrcpy: written to the
    /// control socket; screenrecord: the `input` command ran, if the message makes one).
    pub async fn control(&self, msg: ControlMessage) -> Result<(), CaptureError> {
        let ended = || CaptureError::Ended(self.ended().unwrap_or_else(|| "stopping".into()));
        let (reply, result) = oneshot::channel();
        self.shared
            .control
            .send((msg, Some(reply)))
            .await
            .map_err(|_| ended())?;
        result.await.map_err(|_| ended())?
    }

    /// The current video size; changes after a rotation.
    pub fn video_size(&self) -> watch::Receiver<VideoSize> {
        self.shared.size.clone()
    }

    pub fn method(&self) -> CaptureMethod {
        self.method
    }

    /// Why the capture ended (device disconnected, server stopped, ...), `None` while it runs.
    pub fn ended(&self) -> Option<String> {
        self.shared.end_reason()
    }
}

/// The task that owns one device's capture.
struct CaptureTask {
    hub: Weak<HubInner>,
    id: u64,
    serial: String,
    commands: mpsc::Receiver<Command>,
    control: Option<mpsc::Receiver<ControlRequest>>,
    control_sender: mpsc::Sender<ControlRequest>,
    state: watch::Sender<CaptureState>,
    size: watch::Sender<VideoSize>,
    frames: broadcast::Sender<Arc<VideoFrame>>,
}

impl CaptureTask {
    async fn run(mut self) {
        let reason = self.capture().await;
        tracing::info!(reason = %reason, "capture ended");
        // The reason is set before the frame channel closes, so a viewer that sees
        // `Closed` finds it.
        self.state.send_replace(CaptureState::Ended(reason));
        if let Some(hub) = self.hub.upgrade()
            && let Ok(mut captures) = hub.captures.lock()
            && captures.get(&self.serial).is_some_and(|e| e.id == self.id)
        {
            captures.remove(&self.serial);
        }
    }

    /// Runs the capture; returns why it ended.
    async fn capture(&mut self) -> String {
        let Some(hub) = self.hub.upgrade() else {
            return "the node is stopping".into();
        };
        let Some(control) = self.control.take() else {
            return "capture started twice".into();
        };
        let mut early = Vec::new();
        let started = {
            let start = SourceStart {
                adb: hub.adb,
                serial: &self.serial,
                config: &hub.config,
                control,
                control_sender: self.control_sender.clone(),
            };
            let starting = async {
                if hub.config.scrcpy_server.is_some() {
                    scrcpy_session::start(start).await
                } else {
                    screenrecord_session::start(start).await
                }
            };
            tokio::pin!(starting);
            loop {
                tokio::select! {
                    started = &mut starting => break started,
                    command = self.commands.recv() => match command {
                        Some(command) => early.push(command),
                        None => break Err("every viewer left".into()),
                    },
                }
            }
        };
        let (mut source, size) = match started {
            Ok(started) => started,
            Err(reason) => return reason,
        };
        drop(hub);
        self.size.send_replace(size);
        let method = source.method();
        tracing::info!(
            ?method,
            width = size.width,
            height = size.height,
            "capture running"
        );
        self.state.send_replace(CaptureState::Running(method));
        let mut limiter = KeyframeLimiter::new(KEYFRAME_REQUEST_INTERVAL);
        for command in early {
            self.handle(command, &mut limiter, &mut source);
        }
        loop {
            let deadline = limiter.deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command, &mut limiter, &mut source),
                    None => return "every viewer left".into(),
                },
                () = sleep_until(deadline) => {
                    if limiter.poll(now()) {
                        source.request_keyframe();
                    }
                }
                event = source.next_event() => match event {
                    Ok(SourceEvent::Frame(frame)) => {
                        if frame.keyframe {
                            limiter.keyframe_seen();
                        }
                        // No receivers is fine: a viewer may be between frames and joining.
                        let _ = self.frames.send(Arc::new(frame));
                    }
                    Ok(SourceEvent::Size(size)) => {
                        tracing::info!(width = size.width, height = size.height, "video size changed");
                        self.size.send_replace(size);
                    }
                    Err(reason) => return reason,
                },
            }
        }
    }

    fn handle(&mut self, command: Command, limiter: &mut KeyframeLimiter, source: &mut Source) {
        let wants_keyframe = match command {
            Command::Subscribe(reply) => reply.send(self.frames.subscribe()).is_ok(),
            Command::RequestKeyframe => true,
            Command::ViewerReady => {
                if limiter.request_urgent(now()) {
                    source.request_keyframe();
                }
                false
            }
        };
        if wants_keyframe && limiter.request(now()) {
            source.request_keyframe();
        }
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
