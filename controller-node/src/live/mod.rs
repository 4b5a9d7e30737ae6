//! Live sessions: the node's side of WebRTC. A browser watches (and, holding the lease,
//! drives) a device; the broker relays the signalling as `LiveSignal`s on the node stream.
//!
//! ```text
//!  broker --LiveSignal--> manager task --SessionCommand--> session task (one per session)
//!                            |   owns the sessions            | owns: peer connection, Viewer
//!                            |   ends them all when the       | helpers: frame pump, keyframe
//!                            |   broker connection changes    |   requests, data channel readers,
//!  broker <--answer/candidates/video_size/end-----------------+   input worker
//! ```
//!
//! **Invariants**: the node always answers (the browser offers) as DTLS server with H.264
//! Constrained Baseline (42e01f, packetization-mode 1) only, frames forwarded as the device
//! encoded them; a session that has not connected 15 s after its start (or after losing
//! its connection) ends with "negotiation timed out"; a capture that ends ends its sessions
//! with "device disconnected"; no input reaches a device unless [`input::parse_input`]
//! accepted it and the session controls the device.

pub mod input;
pub mod media;
pub mod peer;
pub mod session;
pub mod source;
pub mod state;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use farm_proto::v1::{LiveEnd, LiveSignal, NodeMessage, live_signal::Signal, node_message::Msg};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

pub use peer::PeerAddress;
pub use session::{DEVICE_DISCONNECTED, NEGOTIATION_TIMED_OUT, SessionContext};
pub use source::{DeviceLookup, LiveSource, LiveViewer};
use state::{Route, SessionCommand, route};

/// How long a browser has to connect (and to reconnect after losing the connection).
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(15);
/// Sessions one node runs at most (each encodes nothing, but each costs a socket and SRTP).
pub const MAX_SESSIONS: usize = 64;
const SESSION_COMMAND_QUEUE: usize = 64;
/// How long sessions get to close their peer connections when the node stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How the live service runs.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub address: PeerAddress,
    pub negotiation_timeout: Duration,
    pub max_sessions: usize,
}

impl LiveConfig {
    /// The defaults for sessions bound to `ip` (and `ports`, when given).
    pub fn new(ip: IpAddr, ports: Option<RangeInclusive<u16>>) -> Self {
        Self {
            address: PeerAddress { ip, ports },
            negotiation_timeout: NEGOTIATION_TIMEOUT,
            max_sessions: MAX_SESSIONS,
        }
    }
}

/// The address to advertise when `--webrtc-ip` is not given: 127.0.0.1 for a loopback
/// broker, otherwise the local address the node uses to reach the broker.
pub fn default_webrtc_ip(broker_url: &str) -> Result<IpAddr, String> {
    let uri: tonic::codegen::http::Uri = broker_url
        .parse()
        .map_err(|_| format!("cannot parse the broker URL {broker_url:?}"))?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let target: SocketAddr = match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|error| format!("cannot resolve the broker host {host:?}: {error}"))?
            .next()
            .ok_or_else(|| format!("the broker host {host:?} has no address"))?,
    };
    if target.ip().is_loopback() {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    // A connected UDP socket learns the route's source address; nothing is sent.
    let any: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).map_err(|error| error.to_string())?;
    socket
        .connect(target)
        .map_err(|error| format!("no route to the broker at {target}: {error}"))?;
    let local = socket.local_addr().map_err(|error| error.to_string())?;
    Ok(local.ip())
}

/// Starts the live service: it reads broker `signals`, answers on `outbound`, and ends
/// every session when `connection` changes or `shutdown` turns true.
pub fn spawn_live_service(
    config: LiveConfig,
    capture: Arc<dyn LiveSource>,
    devices: Arc<dyn DeviceLookup>,
    signals: mpsc::Receiver<LiveSignal>,
    outbound: mpsc::Sender<NodeMessage>,
    connection: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let context = Arc::new(SessionContext {
        address: config.address.clone(),
        negotiation_timeout: config.negotiation_timeout,
        capture,
        devices,
        outbound,
    });
    let manager = Manager {
        context,
        max_sessions: config.max_sessions,
        sessions: HashMap::new(),
        tasks: JoinSet::new(),
        task_sessions: HashMap::new(),
    };
    tokio::spawn(
        manager
            .run(signals, connection, shutdown)
            .instrument(tracing::Span::current()),
    )
}

struct RunningSession {
    commands: mpsc::Sender<SessionCommand>,
    /// The broker connection the session belongs to.
    connection: u64,
}

/// The one owner of the sessions.
struct Manager {
    context: Arc<SessionContext>,
    max_sessions: usize,
    sessions: HashMap<String, RunningSession>,
    tasks: JoinSet<()>,
    task_sessions: HashMap<tokio::task::Id, String>,
}

impl Manager {
    async fn run(
        mut self,
        mut signals: mpsc::Receiver<LiveSignal>,
        mut connection: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut connection_open = true;
        loop {
            tokio::select! {
                biased;
                () = crate::wait_for_shutdown(&mut shutdown) => break,
                changed = connection.changed(), if connection_open => {
                    if changed.is_err() {
                        connection_open = false;
                    }
                    let now = *connection.borrow_and_update();
                    self.end_sessions_not_on(now);
                }
                Some(done) = self.tasks.join_next_with_id() => {
                    let id = match &done {
                        Ok((id, ())) => *id,
                        Err(error) => {
                            tracing::error!(%error, "a live session task failed");
                            error.id()
                        }
                    };
                    if let Some(session_id) = self.task_sessions.remove(&id) {
                        self.sessions.remove(&session_id);
                    }
                }
                signal = signals.recv() => match signal {
                    Some(signal) => self.on_signal(signal, *connection.borrow()),
                    None => break,
                },
            }
        }
        // Closing every command channel closes every session quietly.
        self.sessions.clear();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
        }
    }

    fn on_signal(&mut self, signal: LiveSignal, connection: u64) {
        let session_id = signal.session_id.clone();
        let known = self.sessions.contains_key(&session_id);
        match route(signal, known, self.sessions.len(), self.max_sessions) {
            Route::Start(start) => {
                let (commands, command_rx) = mpsc::channel(SESSION_COMMAND_QUEUE);
                let span = tracing::info_span!(
                    "live",
                    session_id = %session_id,
                    serial = %start.device_serial,
                    control = start.control,
                    user = %start.user,
                );
                tracing::info!(parent: &span, "live session starting");
                let task = self.tasks.spawn(
                    session::run_session(
                        Arc::clone(&self.context),
                        session_id.clone(),
                        start,
                        command_rx,
                    )
                    .instrument(span),
                );
                self.task_sessions.insert(task.id(), session_id.clone());
                self.sessions.insert(
                    session_id,
                    RunningSession {
                        commands,
                        connection,
                    },
                );
            }
            Route::Forward(command) => {
                if let Some(session) = self.sessions.get(&session_id)
                    && session.commands.try_send(command).is_err()
                {
                    tracing::warn!(session_id = %session_id, "live session is not keeping up; dropped a signal");
                }
            }
            Route::End => {
                // Dropping its command channel closes the session without an `end` back.
                self.sessions.remove(&session_id);
            }
            Route::Refuse(reason) => {
                tracing::info!(session_id = %session_id, %reason, "refused a live signal");
                let end = NodeMessage {
                    msg: Some(Msg::Live(LiveSignal {
                        session_id,
                        signal: Some(Signal::End(LiveEnd { reason })),
                    })),
                };
                let _ = self.context.outbound.try_send(end);
            }
            Route::Ignore(why) => tracing::debug!(session_id = %session_id, "ignored {why}"),
        }
    }

    /// The broker forgets a connection's sessions when it ends: so do we.
    fn end_sessions_not_on(&mut self, connection: u64) {
        let before = self.sessions.len();
        self.sessions
            .retain(|_, session| session.connection == connection);
        let ended = before - self.sessions.len();
        if ended > 0 {
            tracing::info!(ended, "broker connection changed; closed its live sessions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ip_follows_the_broker() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(default_webrtc_ip("http://127.0.0.1:4444"), Ok(loopback));
        assert_eq!(default_webrtc_ip("http://localhost:4444"), Ok(loopback));
        assert_eq!(default_webrtc_ip("http://127.3.2.1:1"), Ok(loopback));
        assert_eq!(default_webrtc_ip("http://[::1]:4444"), Ok(loopback));
        assert!(default_webrtc_ip("not a url at all").is_err());
    }
}
