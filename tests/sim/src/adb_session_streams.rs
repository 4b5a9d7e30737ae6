//! Long-lived streams of a session: `sync:`, the scrcpy server (its `app_process` shell and
//! `localabstract:scrcpy_*` sockets) and `screenrecord`. Still sans-IO: bytes in, packets out.

use super::*;
use crate::scrcpy_control::ControlError;
use crate::{scrcpy_server, screenrecord};

impl AdbSession {
    /// Opens `service` if it is one of the long-lived kinds; `false` leaves it to `start_service`.
    pub(super) fn open_long_lived(&mut self, service: &Service, remote_id: u32) -> bool {
        match service {
            Service::Sync => {
                let local_id =
                    self.accept(remote_id, Framing::Raw, StreamKind::Sync(Box::default()));
                tracing::debug!(local_id, "sync stream opened");
                true
            }
            Service::LocalAbstract { name } => {
                self.open_abstract_socket(name, remote_id);
                true
            }
            Service::Shell { v2, command, .. } => self.open_command(command, *v2, remote_id),
            Service::Exec { command } => self.open_command(command, false, remote_id),
            Service::Unknown(_) => false,
        }
    }

    fn accept(&mut self, remote_id: u32, framing: Framing, kind: StreamKind) -> u32 {
        let local_id = self.allocate_local_id();
        self.transmit(Packet::new(A_OKAY, local_id, remote_id, Vec::new()));
        self.streams
            .insert(local_id, Stream::new(remote_id, framing, kind));
        local_id
    }

    fn record_command(&mut self, command: &str) {
        self.event(SessionEvent::CommandRan {
            command: command.to_string(),
            input: Vec::new(),
        });
    }

    /// The scrcpy server start and screenrecord; other commands run to completion elsewhere.
    fn open_command(&mut self, command: &str, v2: bool, remote_id: u32) -> bool {
        let framing = if v2 { Framing::ShellV2 } else { Framing::Raw };
        let start = {
            let files = self.context.files();
            scrcpy_server::parse_start(command, |path| files.contains_key(path))
        };
        if let Some(start) = start {
            self.record_command(command);
            let local_id = self.accept(remote_id, framing, StreamKind::ScrcpyShell);
            match start {
                Ok(options) if !options.video => {
                    let stderr = b"[server] ERROR: video=false is not simulated\n";
                    self.finish_stream(local_id, stderr, 1);
                }
                Ok(options) => {
                    tracing::info!(socket = %options.socket_name(), "scrcpy server started");
                    let line = scrcpy_server::device_log_line(&self.context.profile);
                    self.write_stream(local_id, line.as_bytes());
                    self.servers.push(ScrcpyServer {
                        options,
                        shell: local_id,
                        sockets: Vec::new(),
                    });
                }
                Err(refused) => {
                    tracing::info!(stderr = %refused.stderr.trim_end(), "scrcpy server refused");
                    self.finish_stream(local_id, refused.stderr.as_bytes(), 1);
                }
            }
            return true;
        }
        if let Some(record) = screenrecord::parse(command) {
            self.record_command(command);
            let local_id = self.accept(remote_id, framing, StreamKind::ScreenRecord);
            match record {
                Ok(options) => self.event(SessionEvent::CaptureRequested {
                    stream: local_id,
                    capture: CaptureKind::ScreenRecord(options),
                }),
                Err(stderr) => self.finish_stream(local_id, stderr.as_bytes(), 1),
            }
            return true;
        }
        false
    }

    fn open_abstract_socket(&mut self, name: &str, remote_id: u32) {
        let Some(index) = self.servers.iter().position(|server| {
            server.options.socket_name() == name
                && server.sockets.len() < server.options.socket_count()
        }) else {
            tracing::info!(name, "no server listens on this abstract socket");
            self.transmit(Packet::new(A_CLSE, 0, remote_id, Vec::new()));
            return;
        };
        let options = self.servers[index].options.clone();
        // Sockets are accepted in order: video, audio, control.
        let roles: Vec<&str> = [
            (options.video, "video"),
            (options.audio, "audio"),
            (options.control, "control"),
        ]
        .into_iter()
        .filter_map(|(on, role)| on.then_some(role))
        .collect();
        let role = roles
            .get(self.servers[index].sockets.len())
            .copied()
            .unwrap_or("video");
        let kind = if role == "control" {
            StreamKind::ScrcpyControl(ControlDecoder::new())
        } else {
            StreamKind::ScrcpySocket
        };
        let local_id = self.accept(remote_id, Framing::Raw, kind);
        tracing::info!(name, role, local_id, "scrcpy socket accepted");
        let first = self.servers[index].sockets.is_empty();
        self.servers[index].sockets.push(local_id);
        if first && options.send_dummy_byte {
            self.write_stream(local_id, &[0]);
        }
        if self.servers[index].sockets.len() < options.socket_count() {
            return;
        }
        let sockets = self.servers[index].sockets.clone();
        let socket_of = |wanted: &str| {
            roles
                .iter()
                .position(|role| *role == wanted)
                .and_then(|at| sockets.get(at).copied())
        };
        if let Some(audio) = socket_of("audio") {
            // Codec id 0: "audio disabled", as the real server says when it cannot capture.
            self.write_stream(audio, &[0, 0, 0, 0]);
        }
        if let Some(video) = socket_of("video") {
            self.event(SessionEvent::CaptureRequested {
                stream: video,
                capture: CaptureKind::Scrcpy {
                    options,
                    control_stream: socket_of("control"),
                },
            });
        }
    }

    pub(super) fn on_stream_data(&mut self, local_id: u32, payload: &[u8]) {
        let Some(stream) = self.streams.get_mut(&local_id) else {
            return;
        };
        match &mut stream.kind {
            StreamKind::Sync(sync) => {
                let out = {
                    let mut files = self.context.files();
                    sync.push(payload, &mut files)
                };
                for path in &out.written {
                    tracing::info!(%path, "file pushed");
                }
                self.write_stream(local_id, &out.reply);
                if out.close {
                    self.finish_stream(local_id, &[], 0);
                }
            }
            StreamKind::ScrcpyControl(decoder) => {
                decoder.push(payload);
                let mut messages = Vec::new();
                let error = loop {
                    match decoder.next_message() {
                        Ok(Some(message)) => messages.push(message),
                        Ok(None) => break None,
                        Err(error) => break Some(error),
                    }
                };
                let video = self
                    .servers
                    .iter()
                    .find(|server| server.sockets.contains(&local_id))
                    .and_then(|server| server.sockets.first().copied());
                if let Some(video) = video {
                    for message in messages {
                        self.event(SessionEvent::Control {
                            stream: video,
                            message,
                        });
                    }
                }
                if let Some(error) = error {
                    self.close_control(local_id, &error);
                }
            }
            _ => {}
        }
    }

    fn close_control(&mut self, local_id: u32, error: &ControlError) {
        tracing::warn!(%error, local_id, "malformed control message: closing the control socket");
        if let Some(stream) = self.streams.remove(&local_id) {
            self.transmit(Packet::new(A_CLSE, local_id, stream.remote_id, Vec::new()));
        }
    }

    pub(super) fn on_stream_closed(&mut self, local_id: u32, kind: Option<StreamKind>) {
        match kind {
            Some(StreamKind::ScreenRecord) => {
                self.event(SessionEvent::CaptureStopped { stream: local_id })
            }
            Some(StreamKind::ScrcpyShell | StreamKind::ScrcpySocket) => self.stop_server(local_id),
            // The control socket alone closing leaves the video running.
            _ => {}
        }
    }

    /// Ends the server that owns `stream`: its capture stops, every socket and its shell close.
    fn stop_server(&mut self, stream: u32) {
        let Some(index) = self
            .servers
            .iter()
            .position(|server| server.shell == stream || server.sockets.contains(&stream))
        else {
            return;
        };
        let server = self.servers.remove(index);
        tracing::info!(socket = %server.options.socket_name(), "scrcpy server stopped");
        if let Some(&video) = server.sockets.first() {
            self.event(SessionEvent::CaptureStopped { stream: video });
        }
        for socket in server.sockets {
            if let Some(closed) = self.streams.remove(&socket) {
                self.transmit(Packet::new(A_CLSE, socket, closed.remote_id, Vec::new()));
            }
        }
        self.finish_stream(server.shell, &[], 0);
    }

    /// Streams that have a capture running, for teardown.
    pub(super) fn capture_streams(&self) -> Vec<u32> {
        let mut streams: Vec<u32> = self
            .servers
            .iter()
            .filter(|server| server.sockets.len() == server.options.socket_count())
            .filter_map(|server| server.sockets.first().copied())
            .collect();
        streams.extend(
            self.streams
                .iter()
                .filter(|(_, stream)| matches!(stream.kind, StreamKind::ScreenRecord))
                .map(|(id, _)| *id),
        );
        streams
    }

    /// Ends a capture's stream from the device side (time limit reached, encoder failed).
    pub fn end_capture(&mut self, stream: u32) {
        if self
            .servers
            .iter()
            .any(|server| server.sockets.first() == Some(&stream))
        {
            self.stop_server(stream);
        } else {
            self.finish_stream(stream, &[], 0);
        }
    }
}
