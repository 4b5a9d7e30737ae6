//! The IO shell of one transport connection: socket bytes in and out of an [`AdbSession`].

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::adb_packet::PacketDecoder;
use crate::adb_session::{AdbSession, SessionEvent, SessionOutput};
use crate::device_profile::DeviceProfile;

/// Identifies a connection within its device.
pub type ConnectionId = u64;

/// Serves the host on `stream` until it closes, the peer misbehaves or the task is aborted.
/// Returns `id` so the device knows which connection ended.
pub async fn serve_connection(
    stream: TcpStream,
    id: ConnectionId,
    profile: Arc<DeviceProfile>,
    authorized: bool,
    events: mpsc::UnboundedSender<(ConnectionId, SessionEvent)>,
) -> ConnectionId {
    let span = tracing::info_span!("connection", serial = %profile.serial, connection = id);
    async move {
        if let Err(error) = run(stream, id, profile, authorized, &events).await {
            tracing::warn!(%error, "connection closed");
        } else {
            tracing::info!("host closed the connection");
        }
        id
    }
    .instrument(span)
    .await
}

async fn run(
    mut stream: TcpStream,
    id: ConnectionId,
    profile: Arc<DeviceProfile>,
    authorized: bool,
    events: &mpsc::UnboundedSender<(ConnectionId, SessionEvent)>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = stream.set_nodelay(true);
    let mut session = AdbSession::new(profile, authorized);
    let mut decoder = PacketDecoder::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        decoder.push(&buffer[..read]);
        // A malformed packet ends this connection (and only this one).
        while let Some(packet) = decoder.next_packet()? {
            tracing::trace!(?packet, "host packet");
            session.handle_packet(packet);
        }
        while let Some(output) = session.poll_output() {
            match output {
                SessionOutput::Transmit(packet) => {
                    tracing::trace!(?packet, "device packet");
                    stream.write_all(&packet.encode()).await?;
                }
                SessionOutput::Event(event) => {
                    // The device task outlives its connections; a send error means shutdown.
                    let _ = events.send((id, event));
                }
            }
        }
    }
}
