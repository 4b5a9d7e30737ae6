//! The fallback capture's IO: `screenrecord --output-format=h264 -` through `exec:`,
//! restarted before its time limit (and to get a keyframe), and `input` shell commands.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::frames::FrameAssembler;
use super::h264::AccessUnitSplitter;
use super::hub::{ControlRequest, Source, SourceEvent, SourceStart};
use super::input_commands::{InputAction, InputTranslator, parse_wm_size};
use super::{CaptureError, VideoSize};
use crate::adb_host;

/// screenrecord's own limit is 180 s on most versions; ask for less and restart earlier.
const TIME_LIMIT_SECS: u32 = 170;
const RESTART_AFTER: Duration = Duration::from_secs(165);
/// A recording that ends sooner than this without a picture counts as a failure.
const QUICK_END: Duration = Duration::from_secs(2);
const MAX_QUICK_FAILURES: u32 = 3;
/// After this long without bytes, the held access unit counts as complete.
const IDLE_FLUSH: Duration = Duration::from_millis(30);
/// Keyframes come from restarts, so they are rarer than with scrcpy.
const MIN_RESTART_INTERVAL: Duration = Duration::from_secs(2);

/// The `--size` for a screen, so that its longest side is at most `max_size` (multiples
/// of 8, as encoders like); `None` keeps the screen's size.
pub fn recording_size(screen: VideoSize, max_size: u32) -> Option<VideoSize> {
    let longest = screen.width.max(screen.height);
    if max_size == 0 || longest <= max_size {
        return None;
    }
    let scale = |side: u32| {
        let scaled = u64::from(side) * u64::from(max_size) / u64::from(longest);
        ((scaled as u32) & !7).max(8)
    };
    Some(VideoSize {
        width: scale(screen.width),
        height: scale(screen.height),
    })
}

/// The recording command (run through `exec:`).
pub fn screenrecord_command(size: Option<VideoSize>) -> String {
    let size = size.map_or(String::new(), |s| {
        format!(" --size {}x{}", s.width, s.height)
    });
    format!("screenrecord --output-format=h264{size} --time-limit {TIME_LIMIT_SECS} -")
}

/// A running screenrecord capture.
pub(super) struct ScreenRecordSource {
    adb: SocketAddrV4,
    serial: String,
    command: String,
    stream: Option<TcpStream>,
    recording_since: Instant,
    pictures_in_recording: u64,
    quick_failures: u32,
    capture_start: Instant,
    splitter: AccessUnitSplitter,
    frames: FrameAssembler,
    restart: Arc<Notify>,
    restart_pending: bool,
    /// A frame that came with a size change, sent right after it.
    queued_frame: Option<super::VideoFrame>,
    input_worker: JoinHandle<()>,
}

impl Drop for ScreenRecordSource {
    fn drop(&mut self) {
        self.input_worker.abort();
    }
}

pub(super) async fn start(start: SourceStart<'_>) -> Result<(Source, VideoSize), String> {
    let SourceStart {
        adb,
        serial,
        config,
        control,
        ..
    } = start;
    let wm = adb_host::shell_output(adb, serial, "wm size", 4096)
        .await
        .map_err(|e| format!("reading the screen size failed: {e}"))?;
    let screen = parse_wm_size(&String::from_utf8_lossy(&wm)).ok_or_else(|| {
        format!(
            "`wm size` gave no screen size: {:?}",
            String::from_utf8_lossy(&wm)
        )
    })?;
    let size = recording_size(screen, config.max_size);
    let restart = Arc::new(Notify::new());
    let input_worker = tokio::spawn(run_input(
        adb,
        serial.to_string(),
        screen,
        restart.clone(),
        control,
    ));
    let mut frames = FrameAssembler::new();
    let video_size = size.unwrap_or(screen);
    frames.set_size(video_size);
    let mut source = ScreenRecordSource {
        adb,
        serial: serial.to_string(),
        command: screenrecord_command(size),
        stream: None,
        recording_since: Instant::now(),
        pictures_in_recording: 0,
        quick_failures: 0,
        capture_start: Instant::now(),
        splitter: AccessUnitSplitter::new(),
        frames,
        restart,
        restart_pending: false,
        queued_frame: None,
        input_worker,
    };
    source.open().await?;
    Ok((Source::ScreenRecord(source), video_size))
}

impl ScreenRecordSource {
    async fn open(&mut self) -> Result<(), String> {
        tracing::debug!(command = %self.command, "starting screenrecord");
        self.stream = None;
        self.splitter.discard_partial();
        let stream = adb_host::open_device_service(
            self.adb,
            &self.serial,
            &format!("exec:{}", self.command),
        )
        .await
        .map_err(|e| format!("starting screenrecord failed: {e}"))?;
        self.stream = Some(stream);
        self.recording_since = Instant::now();
        self.pictures_in_recording = 0;
        Ok(())
    }

    /// The next frame or size change; cancel-safe (a cancelled reopen is redone).
    pub(super) async fn next_event(&mut self) -> Result<SourceEvent, String> {
        loop {
            if let Some(frame) = self.queued_frame.take() {
                return Ok(SourceEvent::Frame(frame));
            }
            if let Some(unit) = self.splitter.poll() {
                return Ok(self.event(&unit));
            }
            let Some(stream) = self.stream.as_mut() else {
                self.open().await?;
                continue;
            };
            let pending = self.splitter.has_pending();
            let restart_at = self.recording_since + RESTART_AFTER;
            let early_restart_at = self.recording_since + MIN_RESTART_INTERVAL;
            let mut buf = [0u8; 64 * 1024];
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        self.splitter.flush();
                        self.recording_ended()?;
                    }
                    Ok(n) => self
                        .splitter
                        .push(&buf[..n])
                        .map_err(|e| format!("screenrecord: {e}"))?,
                },
                () = tokio::time::sleep(IDLE_FLUSH), if pending => self.splitter.flush(),
                () = tokio::time::sleep_until(restart_at) => self.stream = None,
                () = self.restart.notified(), if !self.restart_pending => self.restart_pending = true,
                () = tokio::time::sleep_until(early_restart_at), if self.restart_pending => {
                    self.restart_pending = false;
                    self.stream = None;
                }
            }
        }
    }

    fn event(&mut self, unit: &super::h264::AccessUnit) -> SourceEvent {
        self.pictures_in_recording += 1;
        let pts = Instant::now().saturating_duration_since(self.capture_start);
        let pts_us = u64::try_from(pts.as_micros()).unwrap_or(u64::MAX);
        let (frame, size) = self.frames.access_unit(pts_us, unit);
        // A size change goes out before the frame that brought it.
        match size {
            Some(size) => {
                self.queued_frame = Some(frame);
                SourceEvent::Size(size)
            }
            None => SourceEvent::Frame(frame),
        }
    }

    /// The recording's stream ended: restart it, unless it keeps failing at once.
    fn recording_ended(&mut self) -> Result<(), String> {
        self.stream = None;
        let quick = self.recording_since.elapsed() < QUICK_END && self.pictures_in_recording == 0;
        if quick {
            self.quick_failures += 1;
            if self.quick_failures >= MAX_QUICK_FAILURES {
                return Err("screenrecord keeps stopping at once (device disconnected, or no screenrecord with H.264 output?)".into());
            }
        } else {
            self.quick_failures = 0;
        }
        Ok(())
    }

    /// A keyframe comes only from a new recording: restart (at most every 2 s).
    pub(super) fn request_keyframe(&mut self) {
        self.restart_pending = true;
    }
}

/// Runs input commands one at a time, in order.
async fn run_input(
    adb: SocketAddrV4,
    serial: String,
    screen: VideoSize,
    restart: Arc<Notify>,
    mut requests: mpsc::Receiver<ControlRequest>,
) {
    let mut translator = InputTranslator::new(screen);
    while let Some((message, reply)) = requests.recv().await {
        let result = match translator.translate(&message, Instant::now().into_std()) {
            Ok(InputAction::Nothing) => Ok(()),
            Ok(InputAction::ResetVideo) => {
                restart.notify_one();
                Ok(())
            }
            Ok(InputAction::Command(command)) => {
                adb_host::shell_output(adb, &serial, &command, 4096)
                    .await
                    .map(drop)
                    .map_err(|e| CaptureError::Control(format!("`{command}` failed: {e}")))
            }
            Err(error) => Err(error),
        };
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_command() {
        let screen = VideoSize {
            width: 1080,
            height: 2400,
        };
        let size = recording_size(screen, 1280).expect("scaled");
        assert_eq!((size.width, size.height), (576, 1280));
        assert_eq!(recording_size(screen, 0), None);
        assert_eq!(recording_size(screen, 4000), None);
        let odd = VideoSize {
            width: 1,
            height: 5000,
        };
        assert_eq!(recording_size(odd, 100).map(|s| s.width), Some(8));
        assert_eq!(
            screenrecord_command(Some(size)),
            "screenrecord --output-format=h264 --size 576x1280 --time-limit 170 -"
        );
        assert_eq!(
            screenrecord_command(None),
            "screenrecord --output-format=h264 --time-limit 170 -"
        );
    }
}
