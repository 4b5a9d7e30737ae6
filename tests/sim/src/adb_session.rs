//! The device side of one adb transport connection as a sans-IO state machine.
//!
//! Feed it the host's packets with [`AdbSession::handle_packet`], then drain
//! [`AdbSession::poll_output`] for packets to send and events for the device.
//! No sockets, no clock: the IO shell in `connection.rs` is a thin loop around it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::adb_packet::{
    A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION, A_WRTE, AUTH_SIGNATURE, AUTH_TOKEN,
    MAX_PAYLOAD, Packet,
};
use crate::adb_service::{Service, ServiceStart, parse_service, start_service};
use crate::device_context::{DEFAULT_FPS, DeviceContext};
use crate::device_profile::DeviceProfile;
use crate::input_command::InputEvent;
use crate::scrcpy_control::{ControlDecoder, ControlMessage};
use crate::scrcpy_server::ScrcpyOptions;
use crate::screenrecord::ScreenRecordOptions;
use crate::sync_protocol::SyncSession;

/// The largest WRTE payload the device sends, whatever the host allows.
pub const MAX_CHUNK: usize = 256 * 1024;
/// Streams open at once on one connection; more are refused.
const MAX_STREAMS: usize = 256;

/// Something the IO shell must do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    Transmit(Packet),
    Event(SessionEvent),
}

/// What happened on the connection, for the device's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The handshake completed: the host sees the device as `device`.
    Online,
    /// The host was sent an AUTH token it can never satisfy: it shows `unauthorized`.
    AuthRequested,
    /// A shell or exec command ran.
    CommandRan {
        command: String,
        input: Vec<InputEvent>,
    },
    /// A video stream opened: start producing H.264 on `stream`.
    CaptureRequested { stream: u32, capture: CaptureKind },
    /// A scrcpy control message arrived for the capture on video stream `stream`.
    Control {
        stream: u32,
        message: ControlMessage,
    },
    /// The capture on `stream` must stop (its stream closed).
    CaptureStopped { stream: u32 },
}

/// What kind of video a capture produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureKind {
    /// The scrcpy video socket (device name, codec header, framed packets) and its control socket.
    Scrcpy {
        options: ScrcpyOptions,
        control_stream: Option<u32>,
    },
    /// `screenrecord --output-format=h264 -`: raw Annex-B.
    ScreenRecord(ScreenRecordOptions),
}

/// How bytes written to a stream are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Raw,
    /// shell v2 stdout packets, and an exit packet at the end.
    ShellV2,
}

#[derive(Debug)]
enum StreamKind {
    /// Bytes prepared at open, then closed.
    Reply,
    Sync(Box<SyncSession>),
    /// The `app_process` shell of a scrcpy server.
    ScrcpyShell,
    /// A scrcpy video or audio socket.
    ScrcpySocket,
    ScrcpyControl(ControlDecoder),
    ScreenRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingConnect,
    AwaitingAuth,
    Online,
}

#[derive(Debug)]
struct Stream {
    remote_id: u32,
    pending: Vec<u8>,
    sent: usize,
    /// A WRTE is in flight: wait for the host's OKAY before the next one.
    awaiting_ack: bool,
    framing: Framing,
    /// Close once everything pending was sent and acknowledged.
    close_when_drained: bool,
    kind: StreamKind,
}

impl Stream {
    fn new(remote_id: u32, framing: Framing, kind: StreamKind) -> Self {
        Self {
            remote_id,
            pending: Vec::new(),
            sent: 0,
            awaiting_ack: false,
            framing,
            close_when_drained: false,
            kind,
        }
    }
}

/// A scrcpy server started by `app_process`, waiting for or serving its sockets.
#[derive(Debug)]
struct ScrcpyServer {
    options: ScrcpyOptions,
    shell: u32,
    /// Sockets accepted so far, in order video, audio, control.
    sockets: Vec<u32>,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct AdbSession {
    context: Arc<DeviceContext>,
    authorized: bool,
    phase: Phase,
    max_chunk: usize,
    next_local_id: u32,
    tokens_sent: u32,
    streams: BTreeMap<u32, Stream>,
    servers: Vec<ScrcpyServer>,
    outputs: VecDeque<SessionOutput>,
}

impl AdbSession {
    /// A session for `profile`. When `authorized` is false the device answers CNXN with
    /// AUTH tokens and never accepts, so the host shows it as `unauthorized`.
    pub fn new(profile: Arc<DeviceProfile>, authorized: bool) -> Self {
        Self::with_context(
            Arc::new(DeviceContext::new(profile, DEFAULT_FPS)),
            authorized,
        )
    }

    /// A session sharing `context` (pushed files, counters) with the device's other connections.
    pub fn with_context(context: Arc<DeviceContext>, authorized: bool) -> Self {
        Self {
            context,
            authorized,
            phase: Phase::AwaitingConnect,
            max_chunk: 4096,
            next_local_id: 1,
            tokens_sent: 0,
            streams: BTreeMap::new(),
            servers: Vec::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Whether the handshake completed.
    pub fn is_online(&self) -> bool {
        self.phase == Phase::Online
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        self.outputs.pop_front()
    }

    /// Processes one packet from the host. Never fails: nonsense is logged and ignored.
    pub fn handle_packet(&mut self, packet: Packet) {
        match packet.command {
            A_CNXN => self.on_connect(&packet),
            A_AUTH => self.on_auth(&packet),
            A_OPEN if self.phase == Phase::Online => self.on_open(&packet),
            A_OKAY if self.phase == Phase::Online => self.on_okay(packet.arg0, packet.arg1),
            A_WRTE if self.phase == Phase::Online => {
                self.on_write(packet.arg0, packet.arg1, &packet.payload)
            }
            A_CLSE if self.phase == Phase::Online => self.on_close(packet.arg0, packet.arg1),
            _ => tracing::debug!(?packet, phase = ?self.phase, "ignoring packet"),
        }
    }

    fn transmit(&mut self, packet: Packet) {
        self.outputs.push_back(SessionOutput::Transmit(packet));
    }

    fn event(&mut self, event: SessionEvent) {
        self.outputs.push_back(SessionOutput::Event(event));
    }

    fn on_connect(&mut self, packet: &Packet) {
        // A new CNXN restarts the connection: streams from before are gone.
        for stream in self.capture_streams() {
            self.event(SessionEvent::CaptureStopped { stream });
        }
        self.streams.clear();
        self.servers.clear();
        let host_max = usize::try_from(packet.arg1).unwrap_or(MAX_CHUNK);
        self.max_chunk = host_max.clamp(1, MAX_CHUNK);
        if self.authorized {
            self.phase = Phase::Online;
            let banner = self.context.profile.banner();
            self.transmit(Packet::new(
                A_CNXN,
                A_VERSION,
                MAX_PAYLOAD,
                banner.into_bytes(),
            ));
            self.event(SessionEvent::Online);
        } else {
            self.phase = Phase::AwaitingAuth;
            self.send_token();
            self.event(SessionEvent::AuthRequested);
        }
    }

    fn send_token(&mut self) {
        self.tokens_sent = self.tokens_sent.wrapping_add(1);
        let mut token = [0u8; 20];
        for (index, byte) in token.iter_mut().enumerate() {
            *byte = (self.tokens_sent as u8)
                .wrapping_mul(31)
                .wrapping_add(index as u8 * 7);
        }
        self.transmit(Packet::new(A_AUTH, AUTH_TOKEN, 0, token.to_vec()));
    }

    fn on_auth(&mut self, packet: &Packet) {
        // No signature is ever accepted; answer each with a fresh token like adbd does.
        // A public key (AUTH_RSAPUBLICKEY) waits for a user who never comes.
        if self.phase == Phase::AwaitingAuth && packet.arg0 == AUTH_SIGNATURE {
            self.send_token();
        }
    }

    fn on_open(&mut self, packet: &Packet) {
        let remote_id = packet.arg0;
        let service = parse_service(&packet.payload);
        if remote_id == 0 || self.streams.len() >= MAX_STREAMS {
            self.transmit(Packet::new(A_CLSE, 0, remote_id, Vec::new()));
            return;
        }
        if self.open_long_lived(&service, remote_id) {
            return;
        }
        match start_service(&service, &self.context.profile) {
            ServiceStart::Refuse => {
                tracing::info!(?service, "refusing unsupported service");
                self.transmit(Packet::new(A_CLSE, 0, remote_id, Vec::new()));
            }
            ServiceStart::Reply {
                bytes,
                command,
                outcome,
            } => {
                let local_id = self.allocate_local_id();
                tracing::debug!(
                    local_id,
                    remote_id,
                    ?service,
                    bytes = bytes.len(),
                    "stream opened"
                );
                self.transmit(Packet::new(A_OKAY, local_id, remote_id, Vec::new()));
                self.event(SessionEvent::CommandRan {
                    command,
                    input: outcome.input,
                });
                let mut stream = Stream::new(remote_id, Framing::Raw, StreamKind::Reply);
                stream.pending = bytes;
                stream.close_when_drained = true;
                self.streams.insert(local_id, stream);
                self.pump(local_id);
            }
        }
    }

    fn allocate_local_id(&mut self) -> u32 {
        loop {
            let id = self.next_local_id;
            self.next_local_id = self.next_local_id.wrapping_add(1).max(1);
            if !self.streams.contains_key(&id) {
                return id;
            }
        }
    }

    /// Sends the next chunk of a stream if the host acknowledged the last one,
    /// and closes the stream once everything was acknowledged.
    fn pump(&mut self, local_id: u32) {
        let Some(stream) = self.streams.get_mut(&local_id) else {
            return;
        };
        if stream.awaiting_ack {
            return;
        }
        let remote_id = stream.remote_id;
        if stream.sent < stream.pending.len() {
            let end = (stream.sent + self.max_chunk).min(stream.pending.len());
            let chunk = stream.pending[stream.sent..end].to_vec();
            stream.sent = end;
            if stream.sent == stream.pending.len() {
                stream.pending.clear();
                stream.sent = 0;
            }
            stream.awaiting_ack = true;
            self.transmit(Packet::new(A_WRTE, local_id, remote_id, chunk));
        } else if stream.close_when_drained {
            self.streams.remove(&local_id);
            self.transmit(Packet::new(A_CLSE, local_id, remote_id, Vec::new()));
        }
    }

    fn on_okay(&mut self, remote_id: u32, local_id: u32) {
        match self.streams.get_mut(&local_id) {
            Some(stream) if stream.remote_id == remote_id => {
                stream.awaiting_ack = false;
                self.pump(local_id);
            }
            _ => tracing::debug!(local_id, remote_id, "OKAY for an unknown stream"),
        }
    }

    fn on_write(&mut self, remote_id: u32, local_id: u32, payload: &[u8]) {
        match self.streams.get(&local_id) {
            Some(stream) if stream.remote_id == remote_id => {
                self.transmit(Packet::new(A_OKAY, local_id, remote_id, Vec::new()));
                // Shell stdin (v2 ids 0 and 4) is not needed by any command: dropped.
                self.on_stream_data(local_id, payload);
            }
            _ => tracing::debug!(local_id, remote_id, "WRTE for an unknown stream"),
        }
    }

    fn on_close(&mut self, remote_id: u32, local_id: u32) {
        if let Some(stream) = self.streams.get(&local_id)
            && stream.remote_id == remote_id
        {
            let kind = self.streams.remove(&local_id).map(|stream| stream.kind);
            self.on_stream_closed(local_id, kind);
        }
    }

    /// Appends `bytes` to a device-to-host stream (framed as the stream needs) and sends what
    /// flow control allows. Unknown streams are ignored (the host may have closed them).
    pub fn write_stream(&mut self, local_id: u32, bytes: &[u8]) {
        let Some(stream) = self.streams.get_mut(&local_id) else {
            return;
        };
        if stream.sent > 0 {
            stream.pending.drain(..stream.sent);
            stream.sent = 0;
        }
        match stream.framing {
            Framing::Raw => stream.pending.extend_from_slice(bytes),
            Framing::ShellV2 => {
                for chunk in bytes.chunks(64 * 1024) {
                    stream.pending.push(crate::adb_service::SHELL_STDOUT);
                    stream
                        .pending
                        .extend_from_slice(&(chunk.len() as u32).to_le_bytes());
                    stream.pending.extend_from_slice(chunk);
                }
            }
        }
        self.pump(local_id);
    }

    /// Ends a stream once its pending bytes are delivered; shell v2 streams get `exit_code`
    /// (and `stderr` first, if any).
    pub fn finish_stream(&mut self, local_id: u32, stderr: &[u8], exit_code: u8) {
        let Some(stream) = self.streams.get_mut(&local_id) else {
            return;
        };
        if stream.framing == Framing::ShellV2 {
            let outcome = crate::shell::ShellOutcome {
                stderr: stderr.to_vec(),
                exit_code,
                ..Default::default()
            };
            stream
                .pending
                .extend(crate::adb_service::shell_v2_bytes(&outcome));
        } else {
            stream.pending.extend_from_slice(stderr);
        }
        stream.close_when_drained = true;
        self.pump(local_id);
    }

    /// Bytes written to `local_id` and not yet sent; `None` once the stream is gone.
    pub fn backlog(&self, local_id: u32) -> Option<usize> {
        self.streams
            .get(&local_id)
            .map(|stream| stream.pending.len() - stream.sent)
    }
}

#[path = "adb_session_streams.rs"]
mod streams;

#[cfg(test)]
#[path = "adb_session_tests.rs"]
mod tests;
