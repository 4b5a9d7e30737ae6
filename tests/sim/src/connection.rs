//! The IO shell of one transport connection: socket bytes in and out of an [`AdbSession`],
//! and the capture threads its video streams feed from.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::adb_packet::PacketDecoder;
use crate::adb_session::{AdbSession, SessionEvent, SessionOutput};
use crate::capture::{self, Capture, CaptureInput, CaptureOutput};
use crate::device::DeviceEvent;
use crate::device_context::DeviceContext;

/// Identifies a connection within its device.
pub type ConnectionId = u64;

/// Capture ids, unique in the process.
static NEXT_CAPTURE: AtomicU64 = AtomicU64::new(1);

/// Serves the host on `stream` until it closes, the peer misbehaves or the task is aborted.
/// Returns `id` so the device knows which connection ended.
pub async fn serve_connection(
    stream: TcpStream,
    id: ConnectionId,
    context: Arc<DeviceContext>,
    authorized: bool,
    events: mpsc::UnboundedSender<DeviceEvent>,
) -> ConnectionId {
    let span = tracing::info_span!("connection", serial = %context.profile.serial, connection = id);
    async move {
        let mut connection = Connection {
            id,
            context: context.clone(),
            events,
            captures: HashMap::new(),
        };
        if let Err(error) = connection.run(stream, authorized).await {
            tracing::warn!(%error, "connection closed");
        } else {
            tracing::info!("host closed the connection");
        }
        id
    }
    .instrument(span)
    .await
}

/// The connection's side of one capture.
struct CaptureLink {
    inputs: std::sync::mpsc::Sender<CaptureInput>,
    backlog: Arc<AtomicUsize>,
}

struct Connection {
    id: ConnectionId,
    context: Arc<DeviceContext>,
    events: mpsc::UnboundedSender<DeviceEvent>,
    /// Running captures by their video stream.
    captures: HashMap<u32, CaptureLink>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Connection {
    async fn run(&mut self, mut stream: TcpStream, authorized: bool) -> Result<(), BoxError> {
        let _ = stream.set_nodelay(true);
        let mut session = AdbSession::with_context(self.context.clone(), authorized);
        let mut decoder = PacketDecoder::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let (capture_tx, mut capture_rx) = mpsc::unbounded_channel::<CaptureOutput>();
        loop {
            tokio::select! {
                read = stream.read(&mut buffer) => {
                    let read = read?;
                    if read == 0 {
                        return Ok(());
                    }
                    decoder.push(&buffer[..read]);
                    // A malformed packet ends this connection (and only this one).
                    while let Some(packet) = decoder.next_packet()? {
                        tracing::trace!(?packet, "host packet");
                        session.handle_packet(packet);
                    }
                }
                Some(output) = capture_rx.recv() => {
                    match output {
                        CaptureOutput::Data { stream, bytes } => session.write_stream(stream, &bytes),
                        CaptureOutput::End { stream } => session.end_capture(stream),
                    }
                }
            }
            while let Some(output) = session.poll_output() {
                match output {
                    SessionOutput::Transmit(packet) => {
                        tracing::trace!(?packet, "device packet");
                        stream.write_all(&packet.encode()).await?;
                    }
                    SessionOutput::Event(event) => self.on_event(event, &capture_tx),
                }
            }
            for (video, link) in &self.captures {
                let backlog = session.backlog(*video).unwrap_or(0);
                link.backlog.store(backlog, Ordering::Relaxed);
            }
        }
    }

    fn on_event(&mut self, event: SessionEvent, capture_tx: &mpsc::UnboundedSender<CaptureOutput>) {
        match event {
            SessionEvent::CaptureRequested { stream, capture } => {
                let (inputs, receiver) = std::sync::mpsc::channel();
                let backlog = Arc::new(AtomicUsize::new(0));
                let id = NEXT_CAPTURE.fetch_add(1, Ordering::Relaxed);
                let spawned = capture::spawn(Capture {
                    id,
                    stream,
                    kind: capture,
                    context: self.context.clone(),
                    inputs: receiver,
                    outputs: capture_tx.clone(),
                    device: self.events.clone(),
                    backlog: backlog.clone(),
                });
                match spawned {
                    Ok(()) => {
                        // The device sends the app's state to the capture from now on.
                        let _ = self.events.send(DeviceEvent::CaptureOpened {
                            id,
                            inputs: inputs.clone(),
                        });
                        self.captures
                            .insert(stream, CaptureLink { inputs, backlog });
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot start a capture thread");
                        let _ = capture_tx.send(CaptureOutput::End { stream });
                    }
                }
            }
            SessionEvent::Control { stream, message } => {
                if let Some(link) = self.captures.get(&stream) {
                    let _ = link.inputs.send(CaptureInput::Control(message));
                }
            }
            SessionEvent::CaptureStopped { stream } => {
                if let Some(link) = self.captures.remove(&stream) {
                    let _ = link.inputs.send(CaptureInput::Stop);
                }
            }
            other => {
                // The device task outlives its connections; a send error means shutdown.
                let _ = self.events.send(DeviceEvent::Session(self.id, other));
            }
        }
    }
}

impl Drop for Connection {
    /// Also runs when the connection task is aborted (unplug): no capture outlives its stream.
    fn drop(&mut self) {
        for (_, link) in self.captures.drain() {
            let _ = link.inputs.send(CaptureInput::Stop);
        }
    }
}
