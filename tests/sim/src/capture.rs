//! One running capture (scrcpy video or screenrecord) on its own thread: renders the app when it
//! changes or the clock ticks, encodes H.264 and hands bytes to the connection; maps scrcpy
//! control messages to app input. Runs only while a client reads the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::adb_session::CaptureKind;
use crate::app_render::{FrameInfo, I420Frame, render};
use crate::device::DeviceEvent;
use crate::device_context::DeviceContext;
use crate::h264::VideoEncoder;
use crate::input_command::{InputEvent, PressAction, TouchAction};
use crate::launcher_app::LauncherApp;
use crate::scrcpy_control::{ControlMessage, ack_clipboard_message, clipboard_message};
use crate::scrcpy_video::{self, CODEC_H264};

/// Sent to a capture thread.
#[derive(Debug)]
pub enum CaptureInput {
    /// The app as it is now.
    App(Arc<LauncherApp>),
    Control(ControlMessage),
    Stop,
}

/// Sent by a capture thread to its connection.
#[derive(Debug)]
pub enum CaptureOutput {
    Data {
        stream: u32,
        bytes: Vec<u8>,
    },
    /// The capture ended by itself (time limit, encoder failure): close its stream.
    End {
        stream: u32,
    },
}

/// Unsent bytes above which frames are skipped until the client catches up.
const BACKLOG_LIMIT: usize = 2 * 1024 * 1024;
/// Frames are at least this far apart (changes in between are coalesced).
const MIN_FRAME_INTERVAL: Duration = Duration::from_millis(15);
/// screenrecord repeats a keyframe this often.
const SCREENRECORD_KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);

/// Everything a capture thread needs.
pub struct Capture {
    pub id: u64,
    pub stream: u32,
    pub kind: CaptureKind,
    pub context: Arc<DeviceContext>,
    pub inputs: Receiver<CaptureInput>,
    pub outputs: UnboundedSender<CaptureOutput>,
    pub device: UnboundedSender<DeviceEvent>,
    /// Bytes written to the stream and not yet sent, kept up to date by the connection.
    pub backlog: Arc<AtomicUsize>,
}

/// Starts the capture's thread.
pub fn spawn(capture: Capture) -> std::io::Result<()> {
    let name = format!("capture-{}", capture.id);
    std::thread::Builder::new().name(name).spawn(move || {
        let (id, device) = (capture.id, capture.device.clone());
        capture.run();
        let _ = device.send(DeviceEvent::CaptureClosed { id });
    })?;
    Ok(())
}

struct Running {
    encoder: VideoEncoder,
    frame: I420Frame,
    /// The video size touch events must carry (scrcpy) — the frame's size.
    video_size: (u32, u32),
    screen_size: (u32, u32),
    started_header: bool,
}

impl Capture {
    fn run(self) {
        let span = tracing::info_span!("capture", serial = %self.context.profile.serial, stream = self.stream);
        let _entered = span.enter();
        tracing::info!(kind = ?self.kind, "capture started");
        let start = Instant::now();
        let deadline = match &self.kind {
            CaptureKind::ScreenRecord(options) => {
                Some(start + Duration::from_secs(options.time_limit_secs.into()))
            }
            CaptureKind::Scrcpy { .. } => None,
        };
        let tick = (self.context.fps > 0).then(|| Duration::from_secs(1) / self.context.fps);
        let encoder = match VideoEncoder::new(self.context.fps) {
            Ok(encoder) => encoder,
            Err(error) => {
                tracing::error!(%error, "cannot start the encoder");
                let _ = self.outputs.send(CaptureOutput::End {
                    stream: self.stream,
                });
                return;
            }
        };
        let mut running = Running {
            encoder,
            frame: I420Frame::new(2, 2),
            video_size: (0, 0),
            screen_size: (0, 0),
            started_header: false,
        };
        let mut app: Option<Arc<LauncherApp>> = None;
        let mut dirty = true;
        let mut last_frame: Option<Instant> = None;
        let mut last_keyframe = start;
        let mut next_tick = tick.map(|tick| start + tick);
        loop {
            if self.outputs.is_closed() {
                break;
            }
            let now = Instant::now();
            let mut wake = now + Duration::from_millis(500);
            for at in [next_tick, deadline].into_iter().flatten() {
                wake = wake.min(at);
            }
            if dirty && app.is_some() {
                wake = wake.min(last_frame.map_or(now, |at| at + MIN_FRAME_INTERVAL));
            }
            let mut received = match self
                .inputs
                .recv_timeout(wake.saturating_duration_since(now))
            {
                Ok(input) => vec![input],
                Err(RecvTimeoutError::Timeout) => Vec::new(),
                Err(RecvTimeoutError::Disconnected) => break,
            };
            received.extend(self.inputs.try_iter());
            let mut stop = false;
            for input in received {
                match input {
                    CaptureInput::App(latest) => {
                        app = Some(latest);
                        dirty = true;
                    }
                    CaptureInput::Control(message) => {
                        dirty |= self.control(message, &mut running, app.as_deref());
                    }
                    CaptureInput::Stop => stop = true,
                }
            }
            let now = Instant::now();
            if stop {
                break;
            }
            if deadline.is_some_and(|at| now >= at) {
                tracing::info!("time limit reached");
                let _ = self.outputs.send(CaptureOutput::End {
                    stream: self.stream,
                });
                break;
            }
            if let (Some(at), Some(tick)) = (next_tick, tick)
                && now >= at
            {
                dirty = true;
                next_tick = Some(at.max(now - tick) + tick);
            }
            if deadline.is_some()
                && now.duration_since(last_keyframe) >= SCREENRECORD_KEYFRAME_INTERVAL
            {
                running.encoder.request_keyframe();
                last_keyframe = now;
                dirty = true;
            }
            let paced = last_frame.is_none_or(|at| now >= at + MIN_FRAME_INTERVAL);
            let caught_up = self.backlog.load(Ordering::Relaxed) < BACKLOG_LIMIT;
            if let Some(app) = app.as_deref()
                && dirty
                && paced
                && caught_up
            {
                dirty = false;
                last_frame = Some(now);
                let pts_us = now.duration_since(start).as_micros() as u64;
                if !self.frame(app, &mut running, pts_us) {
                    let _ = self.outputs.send(CaptureOutput::End {
                        stream: self.stream,
                    });
                    break;
                }
            }
        }
        tracing::info!("capture stopped");
    }

    fn send(&self, stream: u32, bytes: Vec<u8>) {
        let _ = self.outputs.send(CaptureOutput::Data { stream, bytes });
    }

    /// Renders, encodes and sends one frame; `false` if the encoder failed.
    fn frame(&self, app: &LauncherApp, running: &mut Running, pts_us: u64) -> bool {
        let screen = app.size();
        let video = match &self.kind {
            CaptureKind::Scrcpy { options, .. } => {
                scrcpy_video::video_size(screen.0, screen.1, options.max_size)
            }
            CaptureKind::ScreenRecord(options) => options.size.unwrap_or(screen),
        };
        if video != running.video_size || screen != running.screen_size {
            tracing::info!(?screen, ?video, "video size");
            running.frame = I420Frame::new(video.0, video.1);
            running.video_size = (running.frame.width, running.frame.height);
            running.screen_size = screen;
            running.encoder.request_keyframe();
        }
        let frame_number = self.context.frames.fetch_add(1, Ordering::Relaxed) + 1;
        let info = FrameInfo {
            frame_number,
            clock_ms: pts_us / 1000,
        };
        let started = std::time::Instant::now();
        render(app, &mut running.frame, info);
        let encoded = running.encoder.encode(&running.frame, pts_us);
        self.context
            .render_encode_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(error) => {
                tracing::error!(%error, "encoding failed");
                return false;
            }
        };
        match &self.kind {
            CaptureKind::Scrcpy { options, .. } => {
                let mut bytes = Vec::new();
                if !running.started_header {
                    running.started_header = true;
                    if options.send_device_meta {
                        bytes.extend_from_slice(&scrcpy_video::device_name(
                            &self.context.profile.model,
                        ));
                    }
                    if options.send_codec_meta {
                        let (w, h) = running.video_size;
                        bytes.extend_from_slice(&scrcpy_video::codec_header(CODEC_H264, w, h));
                    }
                }
                for (payload, config) in [(&encoded.config, true), (&encoded.picture, false)] {
                    if payload.is_empty() {
                        continue;
                    }
                    if options.send_frame_meta {
                        let key = !config && encoded.keyframe;
                        bytes.extend(scrcpy_video::packet(pts_us, config, key, payload));
                    } else {
                        bytes.extend_from_slice(payload);
                    }
                }
                self.send(self.stream, bytes);
            }
            CaptureKind::ScreenRecord(_) => {
                let mut bytes = encoded.config;
                bytes.extend(encoded.picture);
                self.send(self.stream, bytes);
            }
        }
        true
    }

    /// Acts on a scrcpy control message; returns whether a new frame is needed at once.
    fn control(
        &self,
        message: ControlMessage,
        running: &mut Running,
        app: Option<&LauncherApp>,
    ) -> bool {
        let CaptureKind::Scrcpy { control_stream, .. } = &self.kind else {
            return false;
        };
        let input = |event: InputEvent| {
            let _ = self.device.send(DeviceEvent::Input(event));
        };
        let to_screen = |x: i32, y: i32, width: u16, height: u16| {
            let (vw, vh) = running.video_size;
            if (u32::from(width), u32::from(height)) != (vw, vh) || vw == 0 || vh == 0 {
                tracing::debug!(width, height, ?running.video_size, "ignoring event for another video size");
                return None;
            }
            let (sw, sh) = running.screen_size;
            Some((
                i64::from(x) * i64::from(sw) / i64::from(vw),
                i64::from(y) * i64::from(sh) / i64::from(vh),
            ))
        };
        match message {
            ControlMessage::InjectTouch {
                action,
                pointer_id,
                x,
                y,
                width,
                height,
                ..
            } => {
                let action = match action {
                    0 | 5 => TouchAction::Down,
                    1 | 3 | 6 => TouchAction::Up,
                    2 => TouchAction::Move,
                    _ => return false,
                };
                if let Some((x, y)) = to_screen(x, y, width, height) {
                    input(InputEvent::Touch {
                        action,
                        pointer: pointer_id,
                        x,
                        y,
                    });
                }
            }
            ControlMessage::InjectScroll {
                x,
                y,
                width,
                height,
                hscroll,
                vscroll,
                ..
            } => {
                if let Some((x, y)) = to_screen(x, y, width, height) {
                    input(InputEvent::Scroll {
                        x,
                        y,
                        hscroll,
                        vscroll,
                    });
                }
            }
            ControlMessage::InjectKeycode {
                action, keycode, ..
            } => input(InputEvent::Key {
                code: keycode,
                action: Some(if action == 0 {
                    PressAction::Down
                } else {
                    PressAction::Up
                }),
            }),
            ControlMessage::BackOrScreenOn { action } => input(InputEvent::Key {
                code: 4,
                action: Some(if action == 0 {
                    PressAction::Down
                } else {
                    PressAction::Up
                }),
            }),
            ControlMessage::InjectText(text) => input(InputEvent::Text { text }),
            ControlMessage::SetClipboard {
                sequence,
                paste,
                text,
            } => {
                input(InputEvent::Clipboard { text, paste });
                if sequence != 0
                    && let Some(control) = control_stream
                {
                    self.send(*control, ack_clipboard_message(sequence));
                }
            }
            ControlMessage::GetClipboard { .. } => {
                if let (Some(control), Some(app)) = (control_stream, app) {
                    self.send(*control, clipboard_message(app.clipboard()));
                }
            }
            ControlMessage::RotateDevice => input(InputEvent::Rotate),
            ControlMessage::ResetVideo => {
                tracing::info!("reset video");
                running.encoder.request_keyframe();
                return true;
            }
            other => tracing::debug!(?other, "control message without effect here"),
        }
        false
    }
}
