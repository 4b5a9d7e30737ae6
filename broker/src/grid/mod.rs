//! The WebDriver grid: Selenium-Grid-compatible `/session` and `/status` on the broker's port.
//!
//! ```text
//!  client --HTTP--> routes.rs --(new session, delete)--> hub.rs (one task: queue, slots, sessions)
//!                     |  \--(each command)--> index.rs      |  leases through the fleet, like live use
//!                     +--forward (streams.rs)--> node's outbound gRPC stream --> slot (Appium/chromedriver)
//!  node stream reader (grpc/nodes.rs) --http_response/http_body--> StreamRouter --> the waiting proxy
//! ```
//!
//! Capability matching is pure (`caps.rs`, `matching.rs`, `versions.rs`);
//! errors are W3C JSON (`w3c.rs`); `/status` is built in `status.rs`.

pub mod caps;
mod hub;
mod index;
pub mod matching;
mod routes;
pub mod status;
pub mod streams;
pub mod versions;
pub mod w3c;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use farm_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use crate::domain::Caller;
use crate::fleet::Fleet;
use crate::store::Store;
use caps::NewSessionRequest;
pub use hub::Placement;
use index::{Activity, SessionIndex};
pub use routes::routes;
use streams::{Inbound, SlotTarget, StreamRouter};
use w3c::W3cError;

/// Tunables of the grid.
#[derive(Debug, Clone)]
pub struct GridConfig {
    /// A session with no command for this long is deleted and its lease ends `idle`.
    pub idle_timeout: Duration,
    /// How long a new-session request may wait for a slot unless it sets `farm:queueTimeout`.
    pub queue_timeout: Duration,
    /// How long a slot may take to answer one request (new sessions included).
    pub response_timeout: Duration,
    /// The largest request body (e.g. an app upload) the grid forwards.
    pub max_request_bytes: u64,
    /// The largest new-session body (it is parsed whole; the node accepts 1 MiB, proto/WEBDRIVER_LINK.md).
    pub max_new_session_bytes: usize,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            idle_timeout: Duration::from_secs(300),
            queue_timeout: Duration::from_secs(300),
            response_timeout: Duration::from_secs(300),
            max_request_bytes: 256 * 1024 * 1024,
            max_new_session_bytes: 1024 * 1024,
        }
    }
}

impl GridConfig {
    /// The lease an automation session holds: outlives the idle timeout and the slowest answer.
    pub fn lease_ttl(&self) -> Duration {
        self.idle_timeout.max(self.response_timeout) + Duration::from_secs(60)
    }
}

/// A cheap, cloneable handle to the grid.
#[derive(Debug, Clone)]
pub struct Grid {
    tx: mpsc::Sender<hub::HubMsg>,
    router: StreamRouter,
    index: SessionIndex,
    config: Arc<GridConfig>,
    tickets: Arc<AtomicU64>,
}

impl Grid {
    pub fn start(fleet: Fleet, store: Store, config: GridConfig) -> Grid {
        let (tx, rx) = mpsc::channel(4096);
        let router = StreamRouter::default();
        let config = Arc::new(config);
        let index = SessionIndex::default();
        let hub = hub::Hub::new(
            fleet,
            store,
            router.clone(),
            config.clone(),
            tx.clone(),
            index.clone(),
        );
        tokio::spawn(hub.run(rx));
        Grid {
            tx,
            router,
            index,
            config,
            tickets: Arc::default(),
        }
    }

    pub fn config(&self) -> &GridConfig {
        &self.config
    }

    pub fn router(&self) -> &StreamRouter {
        &self.router
    }

    /// A node's `http_response` or `http_body`, straight from its stream reader.
    pub async fn from_node(&self, node_id: &str, msg: pb::node_message::Msg) {
        match msg {
            pb::node_message::Msg::HttpResponse(h) => {
                self.router
                    .deliver(node_id, h.stream_id, Inbound::Head(h))
                    .await
            }
            pb::node_message::Msg::HttpBody(b) => {
                self.router
                    .deliver(node_id, b.stream_id, Inbound::Body(b))
                    .await
            }
            _ => {}
        }
    }

    async fn call<T>(&self, msg: hub::HubMsg, rx: oneshot::Receiver<T>) -> Result<T, W3cError> {
        let gone = || W3cError::unknown_error("the broker is shutting down");
        self.tx.send(msg).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Queues a new-session request until a slot is placed; leaving the queue when dropped.
    pub async fn place(
        &self,
        caller: Caller,
        request: NewSessionRequest,
    ) -> Result<Placement, W3cError> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let mut cancel = QueueTicket {
            tx: self.tx.clone(),
            ticket,
            armed: true,
        };
        let msg = hub::HubMsg::Enqueue {
            ticket,
            caller,
            request: Arc::new(request),
            reply,
        };
        let result = self.call(msg, rx).await?;
        cancel.armed = false;
        result
    }

    /// Gives a placed slot back (the slot could not create the session).
    pub fn abandon(&self, alloc_id: u64) {
        let _ = self.tx.try_send(hub::HubMsg::Abandon { alloc_id });
    }

    pub async fn started(&self, alloc_id: u64, session_id: String) -> Result<(), W3cError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            hub::HubMsg::Started {
                alloc_id,
                session_id,
                reply,
            },
            rx,
        )
        .await?
    }

    /// Looks a session up for one command; `InFlight` marks it busy until dropped.
    pub fn begin(
        &self,
        session_id: &str,
        caller: &Caller,
    ) -> Result<(SlotTarget, InFlight), W3cError> {
        let (target, activity) = self.index.begin(session_id, caller)?;
        Ok((target, InFlight { activity }))
    }

    /// The client deleted the session (after the slot answered); returns once its lease has ended.
    pub async fn deleted(&self, session_id: &str) {
        let (done, ended) = oneshot::channel();
        let msg = hub::HubMsg::Deleted {
            session_id: session_id.to_string(),
            done,
        };
        if self.tx.send(msg).await.is_ok() {
            let _ = ended.await;
        }
    }

    pub async fn status(&self) -> Result<serde_json::Value, W3cError> {
        let (reply, rx) = oneshot::channel();
        let input = self.call(hub::HubMsg::Status { reply }, rx).await?;
        Ok(status::status_json(&input))
    }
}

/// Takes a queued request out of the queue when its client goes away (the handler future is dropped).
/// (If the placement was already sent, the hub gives the slot back.)
struct QueueTicket {
    tx: mpsc::Sender<hub::HubMsg>,
    ticket: u64,
    armed: bool,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.try_send(hub::HubMsg::Cancel {
                ticket: self.ticket,
            });
        }
    }
}

/// One command in flight on a session (idle time does not run while it lives).
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.finish();
    }
}
