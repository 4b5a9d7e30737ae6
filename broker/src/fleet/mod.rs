//! The fleet actor: one task owns the inventory, the active leases, the wait queue and the node links.
//!
//! Everything that changes devices or leases is a message to this task, so
//! decisions are serialized; each decision is written to the store (the truth,
//! with its own no-double-booking constraint) before it is answered.

pub mod inventory;
pub mod wait_queue;

use std::collections::HashMap;
use std::time::Duration;

use farm_proto::v1 as pb;
use rand::RngExt;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::domain::{
    Caller, EndReason, Lease, Millis, Node, ReportedDevice, Role, Slot, Target, format_millis,
    now_millis,
};
use crate::error::{Error, Result};
use crate::store::{NewLease, Store};
pub use inventory::DeviceView;
use inventory::{Changes, Inventory};
use wait_queue::{WaitQueue, Waiter};

/// Tunables of the fleet; defaults suit production, tests shorten them.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub max_wait: Duration,
    /// A node silent for this long is lost (3 missed heartbeats of 1 s).
    pub heartbeat_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// After a broker start, how long nodes have to reconnect before their devices go offline.
    pub reconnect_grace: Duration,
    pub tick: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            default_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(24 * 3600),
            max_wait: Duration::from_secs(3600),
            heartbeat_timeout: Duration::from_millis(2900),
            heartbeat_interval: Duration::from_secs(1),
            reconnect_grace: Duration::from_secs(10),
            tick: Duration::from_millis(100),
        }
    }
}

/// Something a connected node reported.
#[derive(Debug)]
pub enum NodeEvent {
    Snapshot(Vec<ReportedDevice>),
    Upsert(ReportedDevice),
    Removed(String),
    Heartbeat(NodeHealth),
    /// Live-session signalling from the node, for the live hub.
    Live(pb::LiveSignal),
    /// The WebDriver slots the node offers now.
    Slots(Vec<Slot>),
    /// The node's answer to a command.
    CommandResult {
        id: u64,
        ok: bool,
        error: String,
    },
}

/// The host health a node sends with each heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeHealth {
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    pub usb_devices: u32,
    pub cameras: u32,
    pub usb_status: String,
}

/// What a node link task gets back when its node is accepted.
#[derive(Debug)]
pub struct NodeSession {
    /// Messages for the node, starting with `hello_ack`. Ends when the broker drops the node.
    pub outbound: mpsc::Receiver<pb::BrokerMessage>,
}

/// A device-level event for watchers.
#[derive(Debug, Clone)]
pub enum FleetEvent {
    Device(Box<DeviceView>),
    /// A lease ended (with its reason).
    LeaseEnded(Lease),
    /// A node's link is gone (before its devices go offline).
    NodeLost(String),
}

/// What the WebDriver grid needs to place sessions: every connected node's slots and the devices.
#[derive(Debug, Clone, Default)]
pub struct GridView {
    pub nodes: Vec<NodeSlots>,
    pub devices: Vec<DeviceView>,
}

/// One connected node's slots, and a weak handle on its outbound stream: the grid
/// upgrades it per send, so the stream still ends when the fleet drops the node.
#[derive(Debug, Clone)]
pub struct NodeSlots {
    pub node: Node,
    pub slots: Vec<Slot>,
    pub outbound: mpsc::WeakSender<pb::BrokerMessage>,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct FleetStats {
    /// (state, site) -> count
    pub devices: HashMap<(&'static str, String), u64>,
    pub nodes_connected: u64,
    pub active_leases: u64,
    pub waiting_reservations: u64,
    pub node_health: Vec<(String, String, NodeHealth)>,
}

/// A cheap, cloneable handle to the fleet task.
#[derive(Debug, Clone)]
pub struct Fleet {
    tx: mpsc::Sender<Request>,
    events: broadcast::Sender<FleetEvent>,
}

type Reply<T> = oneshot::Sender<Result<T>>;

#[derive(Debug)]
enum Request {
    NodeConnect {
        node: Node,
        conn: u64,
        reply: Reply<NodeSession>,
    },
    NodeEvent {
        node_id: String,
        conn: u64,
        event: NodeEvent,
    },
    NodeDisconnected {
        node_id: String,
        conn: u64,
    },
    Reserve {
        caller: Caller,
        target: Target,
        wait: Duration,
        ttl: Option<Duration>,
        reply: Reply<Lease>,
    },
    Renew {
        caller: Caller,
        lease_id: String,
        ttl: Option<Duration>,
        reply: Reply<Lease>,
    },
    Release {
        caller: Caller,
        lease_id: String,
        reply: Reply<Lease>,
    },
    Devices {
        reply: oneshot::Sender<Vec<DeviceView>>,
    },
    Device {
        id: String,
        reply: Reply<DeviceView>,
    },
    Stats {
        reply: oneshot::Sender<FleetStats>,
    },
    SendToNode {
        node_id: String,
        message: pb::BrokerMessage,
        reply: Reply<()>,
    },
    GridView {
        reply: oneshot::Sender<GridView>,
    },
    EndLease {
        lease_id: String,
        reason: EndReason,
        reply: Reply<Lease>,
    },
}

impl Fleet {
    /// Loads the inventory and active leases from the store and starts the task.
    /// `live` receives the live-session signalling nodes send, with their node id.
    pub async fn start(
        store: Store,
        config: FleetConfig,
        live: Option<mpsc::Sender<(String, pb::LiveSignal)>>,
    ) -> Result<(Fleet, tokio::task::JoinHandle<()>)> {
        let devices = store.load_devices().await?;
        let leases = store.load_active_leases().await?;
        tracing::info!(
            devices = devices.len(),
            leases = leases.len(),
            "fleet restored from the store"
        );
        let (tx, rx) = mpsc::channel(4096);
        let (events, _) = broadcast::channel(4096);
        let now = now_millis();
        let actor = Actor {
            grace_until: now + config.reconnect_grace.as_millis() as i64,
            config,
            store,
            inventory: Inventory::new(devices, leases),
            nodes: HashMap::new(),
            waiters: WaitQueue::default(),
            events: events.clone(),
            live,
            next_command: 1,
        };
        let task = tokio::spawn(actor.run(rx));
        Ok((Fleet { tx, events }, task))
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::unavailable("the broker is shutting down"))?;
        rx.await
            .map_err(|_| Error::unavailable("the broker is shutting down"))
    }

    pub async fn node_connect(&self, node: Node, conn: u64) -> Result<NodeSession> {
        self.call(|reply| Request::NodeConnect { node, conn, reply })
            .await?
    }

    pub async fn node_event(&self, node_id: &str, conn: u64, event: NodeEvent) {
        let _ = self
            .tx
            .send(Request::NodeEvent {
                node_id: node_id.to_string(),
                conn,
                event,
            })
            .await;
    }

    pub async fn node_disconnected(&self, node_id: &str, conn: u64) {
        let _ = self
            .tx
            .send(Request::NodeDisconnected {
                node_id: node_id.to_string(),
                conn,
            })
            .await;
    }

    pub async fn reserve(
        &self,
        caller: Caller,
        target: Target,
        wait: Duration,
        ttl: Option<Duration>,
    ) -> Result<Lease> {
        self.call(|reply| Request::Reserve {
            caller,
            target,
            wait,
            ttl,
            reply,
        })
        .await?
    }

    pub async fn renew(
        &self,
        caller: Caller,
        lease_id: String,
        ttl: Option<Duration>,
    ) -> Result<Lease> {
        self.call(|reply| Request::Renew {
            caller,
            lease_id,
            ttl,
            reply,
        })
        .await?
    }

    pub async fn release(&self, caller: Caller, lease_id: String) -> Result<Lease> {
        self.call(|reply| Request::Release {
            caller,
            lease_id,
            reply,
        })
        .await?
    }

    pub async fn devices(&self) -> Result<Vec<DeviceView>> {
        self.call(|reply| Request::Devices { reply }).await
    }

    pub async fn device(&self, id: String) -> Result<DeviceView> {
        self.call(|reply| Request::Device { id, reply }).await?
    }

    pub async fn stats(&self) -> Result<FleetStats> {
        self.call(|reply| Request::Stats { reply }).await
    }

    /// Queues a message on a connected node's stream.
    pub async fn send_to_node(&self, node_id: &str, message: pb::BrokerMessage) -> Result<()> {
        let node_id = node_id.to_string();
        self.call(|reply| Request::SendToNode {
            node_id,
            message,
            reply,
        })
        .await?
    }

    /// Connected nodes with their WebDriver slots, and every device (for the grid).
    pub async fn grid_view(&self) -> Result<GridView> {
        self.call(|reply| Request::GridView { reply }).await
    }

    /// Ends an active lease for the broker itself (e.g. the grid's idle timeout), with `reason`.
    pub async fn end_lease(&self, lease_id: String, reason: EndReason) -> Result<Lease> {
        self.call(|reply| Request::EndLease {
            lease_id,
            reason,
            reply,
        })
        .await?
    }

    /// Device changes from now on (subscribe before reading the snapshot).
    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }
}

struct NodeLink {
    node: Node,
    conn: u64,
    last_seen: Millis,
    health: NodeHealth,
    slots: Vec<Slot>,
    outbound: mpsc::Sender<pb::BrokerMessage>,
}

struct Pending {
    caller: Caller,
    ttl_ms: i64,
    reply: Reply<Lease>,
}

struct Actor {
    config: FleetConfig,
    store: Store,
    inventory: Inventory,
    nodes: HashMap<String, NodeLink>,
    waiters: WaitQueue<Pending>,
    events: broadcast::Sender<FleetEvent>,
    grace_until: Millis,
    live: Option<mpsc::Sender<(String, pb::LiveSignal)>>,
    next_command: u64,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = rx.recv() => match request {
                    Some(r) => self.handle(r).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick(now_millis()).await,
            }
        }
        tracing::info!("fleet task stopped");
    }

    async fn handle(&mut self, request: Request) {
        let now = now_millis();
        match request {
            Request::NodeConnect { node, conn, reply } => {
                let _ = reply.send(self.node_connect(node, conn, now).await);
            }
            Request::NodeEvent {
                node_id,
                conn,
                event,
            } => self.node_event(&node_id, conn, event, now).await,
            Request::NodeDisconnected { node_id, conn } => {
                if self.nodes.get(&node_id).is_some_and(|n| n.conn == conn) {
                    tracing::warn!(node_id, "node disconnected");
                    self.drop_node(&node_id, now).await;
                }
            }
            Request::Reserve {
                caller,
                target,
                wait,
                ttl,
                reply,
            } => self.reserve(caller, target, wait, ttl, reply, now).await,
            Request::Renew {
                caller,
                lease_id,
                ttl,
                reply,
            } => {
                let _ = reply.send(self.renew(&caller, &lease_id, ttl, now).await);
            }
            Request::Release {
                caller,
                lease_id,
                reply,
            } => {
                let _ = reply.send(self.release(&caller, &lease_id, now).await);
            }
            Request::Devices { reply } => {
                let _ = reply.send(self.inventory.views().collect());
            }
            Request::Device { id, reply } => {
                let _ = reply.send(self.inventory.view(&id).ok_or_else(|| {
                    Error::not_found(format!(
                        "device {id:?} not found: `farmctl devices` lists the farm"
                    ))
                }));
            }
            Request::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Request::SendToNode {
                node_id,
                message,
                reply,
            } => {
                let result = match self.nodes.get(&node_id) {
                    Some(link) => link.outbound.try_send(message).map_err(|_| {
                        Error::unavailable(format!("node {node_id} is not keeping up; try again"))
                    }),
                    None => Err(Error::unavailable(format!(
                        "node {node_id} is not connected"
                    ))),
                };
                let _ = reply.send(result);
            }
            Request::GridView { reply } => {
                let nodes = self
                    .nodes
                    .values()
                    .map(|n| NodeSlots {
                        node: n.node.clone(),
                        slots: n.slots.clone(),
                        outbound: n.outbound.downgrade(),
                    })
                    .collect();
                let devices = self.inventory.views().collect();
                let _ = reply.send(GridView { nodes, devices });
            }
            Request::EndLease {
                lease_id,
                reason,
                reply,
            } => {
                let result = if self.inventory.lease(&lease_id).is_none() {
                    Err(self.inactive_lease_error(&lease_id).await)
                } else {
                    self.end_lease_now(&lease_id, reason, now).await
                };
                if result.is_ok() {
                    self.serve_waiters(now).await;
                }
                let _ = reply.send(result);
            }
        }
    }

    // ------------------------------------------------------------------ nodes

    async fn node_connect(&mut self, node: Node, conn: u64, now: Millis) -> Result<NodeSession> {
        if let Some(existing) = self.nodes.get(&node.id) {
            return Err(Error::already_exists(format!(
                "node id {:?} is already connected (host {:?}, last heartbeat {}); give this node another --node-id",
                node.id,
                existing.node.hostname,
                format_millis(existing.last_seen)
            )));
        }
        self.store.upsert_node(&node, now).await?;
        let (outbound, rx) = mpsc::channel(256);
        let ack = pb::BrokerMessage {
            msg: Some(pb::broker_message::Msg::HelloAck(pb::HelloAck {
                node_id: node.id.clone(),
                heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
            })),
        };
        let _ = outbound.try_send(ack);
        tracing::info!(node_id = %node.id, site = %node.site, version = %node.version, "node connected");
        self.nodes.insert(
            node.id.clone(),
            NodeLink {
                node,
                conn,
                last_seen: now,
                health: NodeHealth::default(),
                slots: Vec::new(),
                outbound,
            },
        );
        Ok(NodeSession { outbound: rx })
    }

    async fn node_event(&mut self, node_id: &str, conn: u64, event: NodeEvent, now: Millis) {
        let Some(link) = self.nodes.get_mut(node_id).filter(|n| n.conn == conn) else {
            return; // a stale connection's last words
        };
        link.last_seen = now;
        let site = link.node.site.clone();
        let changes = match event {
            NodeEvent::Heartbeat(health) => {
                link.health = health;
                return;
            }
            NodeEvent::Live(signal) => {
                if let Some(live) = &self.live {
                    let _ = live.try_send((node_id.to_string(), signal));
                }
                return;
            }
            NodeEvent::Slots(slots) => {
                link.slots = slots;
                return;
            }
            NodeEvent::CommandResult { id, ok, error } => {
                if !ok {
                    tracing::warn!(node_id, command = id, error, "node refused a command");
                }
                return;
            }
            NodeEvent::Snapshot(devices) => self
                .inventory
                .apply_report(node_id, &site, &devices, true, now),
            NodeEvent::Upsert(device) => {
                self.inventory
                    .apply_report(node_id, &site, &[device], false, now)
            }
            NodeEvent::Removed(serial) => self.inventory.device_removed(node_id, &serial, now),
        };
        self.apply_changes(changes, EndReason::DeviceLost, now)
            .await;
    }

    async fn drop_node(&mut self, node_id: &str, now: Millis) {
        // Dropping the link drops its outbound sender, which ends the node's stream.
        self.nodes.remove(node_id);
        let _ = self.events.send(FleetEvent::NodeLost(node_id.to_string()));
        let changes = self.inventory.node_lost(node_id, now);
        self.apply_changes(changes, EndReason::NodeLost, now).await;
    }

    /// Persists device changes, ends the leases of lost devices, serves waiters.
    async fn apply_changes(&mut self, changes: Changes, lost_reason: EndReason, now: Millis) {
        if changes == Changes::default() {
            return;
        }
        if let Err(e) = self
            .store
            .save_devices(&changes.updated, &changes.history)
            .await
        {
            tracing::error!(error = %e, "could not save device changes");
        }
        let lost_leases: Vec<String> = changes
            .lost
            .iter()
            .filter_map(|d| self.inventory.lease_of_device(d).map(|l| l.id.clone()))
            .collect();
        self.end_leases(&lost_leases, lost_reason, now).await;
        for d in &changes.updated {
            self.publish(&d.id);
        }
        if !changes.came_online.is_empty() {
            self.serve_waiters(now).await;
        }
    }

    // ------------------------------------------------------------ reservations

    fn ttl_ms(&self, ttl: Option<Duration>) -> Result<i64> {
        let ttl = ttl.unwrap_or(self.config.default_ttl);
        if ttl < Duration::from_secs(1) || ttl > self.config.max_ttl {
            return Err(Error::invalid_argument(format!(
                "ttl must be between 1 and {} seconds",
                self.config.max_ttl.as_secs()
            )));
        }
        Ok(ttl.as_millis() as i64)
    }

    async fn reserve(
        &mut self,
        caller: Caller,
        target: Target,
        wait: Duration,
        ttl: Option<Duration>,
        reply: Reply<Lease>,
        now: Millis,
    ) {
        let ttl_ms = match self.ttl_ms(ttl) {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if wait > self.config.max_wait {
            let _ = reply.send(Err(Error::invalid_argument(format!(
                "wait must be at most {} seconds",
                self.config.max_wait.as_secs()
            ))));
            return;
        }
        if let Err(e) = self.check_satisfiable(&target) {
            let _ = reply.send(Err(e));
            return;
        }
        // Waiters were served whenever a device freed up, so a free device now is
        // one no earlier waiter can use: taking it keeps the queue fair.
        if let Some(device_id) = self.inventory.pick(&target) {
            let result = self.grant(&caller, &device_id, ttl_ms, now).await;
            let _ = reply.send(result);
            return;
        }
        if wait.is_zero() {
            let _ = reply.send(Err(self.busy_error(&target)));
            return;
        }
        self.waiters.push(Waiter {
            target,
            deadline: now + wait.as_millis() as i64,
            payload: Pending {
                caller,
                ttl_ms,
                reply,
            },
        });
        self.serve_waiters(now).await;
    }

    /// Fails when no device in the farm could ever satisfy the target.
    fn check_satisfiable(&self, target: &Target) -> Result<()> {
        match target {
            Target::Device(id) if self.inventory.device(id).is_none() => Err(Error::not_found(
                format!("device {id:?} not found: `farmctl devices` lists the farm"),
            )),
            Target::Selector(sel) if self.inventory.matching(sel).next().is_none() => {
                Err(Error::not_found(format!(
                    "no device in the farm matches {sel}: `farmctl devices` lists what exists"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Why a target cannot be served now.
    fn busy_error(&self, target: &Target) -> Error {
        let describe = |id: &str| -> String {
            match (
                self.inventory.device(id),
                self.inventory.lease_of_device(id),
            ) {
                (_, Some(l)) => {
                    format!("held by {} until {}", l.holder, format_millis(l.expires_at))
                }
                (Some(d), None) => format!(
                    "{} since {}",
                    d.presence.as_str(),
                    format_millis(d.state_since)
                ),
                (None, None) => "unknown".to_string(),
            }
        };
        match target {
            Target::Device(id) => Error::failed_precondition(format!(
                "device {id} is {}; pass a wait time (farmctl --wait SECS) to queue for it",
                describe(id)
            )),
            Target::Selector(sel) => {
                let ids: Vec<String> = self.inventory.matching(sel).map(|d| d.id.clone()).collect();
                let mut parts: Vec<String> = ids
                    .iter()
                    .take(5)
                    .map(|id| format!("{id} {}", describe(id)))
                    .collect();
                if ids.len() > 5 {
                    parts.push(format!("and {} more", ids.len() - 5));
                }
                Error::failed_precondition(format!(
                    "all {} devices matching {sel} are busy ({}); pass a wait time (farmctl --wait SECS) to queue",
                    ids.len(),
                    parts.join(", ")
                ))
            }
        }
    }

    async fn grant(
        &mut self,
        caller: &Caller,
        device_id: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Lease> {
        let new = NewLease {
            id: new_lease_id(),
            device_id: device_id.to_string(),
            holder: caller.name.clone(),
            created_at: now,
            ttl_ms,
        };
        let lease = self.store.create_lease(&new).await?;
        tracing::debug!(lease_id = %lease.id, device_id, holder = %lease.holder, fencing = lease.fencing_token, "lease granted");
        self.inventory.insert_lease(lease.clone());
        self.notify_node(&lease, true);
        self.publish(device_id);
        Ok(lease)
    }

    /// Hands free devices to waiters, oldest first.
    async fn serve_waiters(&mut self, now: Millis) {
        self.waiters.retain(|w| !w.payload.reply.is_closed());
        loop {
            let inventory = &self.inventory;
            let Some((waiter, device_id)) = self.waiters.take_first(|w| inventory.pick(&w.target))
            else {
                return;
            };
            let Pending {
                caller,
                ttl_ms,
                reply,
            } = waiter.payload;
            let result = self.grant(&caller, &device_id, ttl_ms, now).await;
            if let (Err(_), Ok(lease)) = (reply.send(result.clone()), result) {
                // The client left between our check and the grant: give the device back.
                let _ = self
                    .end_lease_now(&lease.id, EndReason::Released, now)
                    .await;
            }
        }
    }

    fn own_lease(&self, caller: &Caller, lease_id: &str) -> Result<Lease> {
        let lease = self.inventory.lease(lease_id).cloned();
        match lease {
            Some(l) if l.holder == caller.name || caller.role == Role::Admin => Ok(l),
            Some(l) => Err(Error::permission_denied(format!(
                "lease {lease_id} belongs to {}; only its holder or an admin may change it",
                l.holder
            ))),
            None => Err(Error::not_found(format!(
                "lease {lease_id:?} not found: `farmctl reservations` lists yours"
            ))),
        }
    }

    /// The error for a lease id that is not active: ended, or unknown.
    async fn inactive_lease_error(&self, lease_id: &str) -> Error {
        match self.store.get_lease(lease_id).await {
            Ok(Some(l)) => Error::failed_precondition(format!(
                "lease {lease_id} already ended ({}) at {}; reserve the device again",
                l.end_reason.map(|r| r.as_str()).unwrap_or("unknown"),
                l.ended_at.map(format_millis).unwrap_or_default()
            )),
            Ok(None) => Error::not_found(format!(
                "lease {lease_id:?} not found: `farmctl reservations` lists yours"
            )),
            Err(e) => e,
        }
    }

    async fn renew(
        &mut self,
        caller: &Caller,
        lease_id: &str,
        ttl: Option<Duration>,
        now: Millis,
    ) -> Result<Lease> {
        if self.inventory.lease(lease_id).is_none() {
            return Err(self.inactive_lease_error(lease_id).await);
        }
        let lease = self.own_lease(caller, lease_id)?;
        let ttl_ms = match ttl {
            Some(t) => self.ttl_ms(Some(t))?,
            None => lease.ttl_ms,
        };
        let renewed = self
            .store
            .renew_lease(lease_id, now + ttl_ms, ttl_ms)
            .await?
            .ok_or_else(|| {
                Error::failed_precondition(format!("lease {lease_id} is no longer active"))
            })?;
        self.inventory.insert_lease(renewed.clone());
        Ok(renewed)
    }

    async fn release(&mut self, caller: &Caller, lease_id: &str, now: Millis) -> Result<Lease> {
        if self.inventory.lease(lease_id).is_none() {
            return Err(self.inactive_lease_error(lease_id).await);
        }
        let lease = self.own_lease(caller, lease_id)?;
        let reason = if lease.holder == caller.name {
            EndReason::Released
        } else {
            EndReason::Admin
        };
        let ended = self.end_lease_now(lease_id, reason, now).await?;
        self.serve_waiters(now).await;
        Ok(ended)
    }

    async fn end_lease_now(
        &mut self,
        lease_id: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<Lease> {
        let ended = self.end_leases(&[lease_id.to_string()], reason, now).await;
        ended.into_iter().next().ok_or_else(|| {
            Error::failed_precondition(format!("lease {lease_id} is no longer active"))
        })
    }

    async fn end_leases(&mut self, ids: &[String], reason: EndReason, now: Millis) -> Vec<Lease> {
        if ids.is_empty() {
            return Vec::new();
        }
        let ended = match self.store.end_leases(ids, reason, now).await {
            Ok(ended) => ended,
            Err(e) => {
                tracing::error!(error = %e, "could not end leases; will retry on the next tick");
                return Vec::new();
            }
        };
        for lease in &ended {
            let _ = self.events.send(FleetEvent::LeaseEnded(lease.clone()));
        }
        for id in ids {
            // Ended in the store (now or before): forget it here.
            if let Some(l) = self.inventory.remove_lease(id) {
                tracing::debug!(lease_id = %l.id, device_id = %l.device_id, reason = %reason, "lease ended");
                self.notify_node(&l, false);
                self.publish(&l.device_id);
            }
        }
        ended
    }

    // ------------------------------------------------------------------- timers

    async fn on_tick(&mut self, now: Millis) {
        let expired = self.inventory.expired_leases(now);
        if !expired.is_empty() {
            self.end_leases(&expired, EndReason::Expired, now).await;
            self.serve_waiters(now).await;
        }
        for w in self.waiters.take_expired(now) {
            let message = match &w.target {
                Target::Device(id) => format!(
                    "device {id} did not become free in time; {}",
                    self.busy_error(&w.target)
                ),
                Target::Selector(_) => format!(
                    "no device became free in time; {}",
                    self.busy_error(&w.target)
                ),
            };
            let _ = w.payload.reply.send(Err(Error::deadline_exceeded(message)));
        }
        let timeout = self.config.heartbeat_timeout.as_millis() as i64;
        let silent: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| now - n.last_seen > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for node_id in silent {
            tracing::warn!(node_id, "node missed its heartbeats; dropping it");
            self.drop_node(&node_id, now).await;
        }
        if self.grace_until != 0 && now >= self.grace_until {
            self.grace_until = 0;
            let orphans: Vec<String> = self
                .inventory
                .devices()
                .filter(|d| !self.nodes.contains_key(&d.node_id))
                .map(|d| d.node_id.clone())
                .collect();
            for node_id in orphans {
                let changes = self.inventory.node_lost(&node_id, now);
                self.apply_changes(changes, EndReason::NodeLost, now).await;
            }
        }
    }

    // ------------------------------------------------------------------ outputs

    fn publish(&self, device_id: &str) {
        if let Some(view) = self.inventory.view(device_id) {
            let _ = self.events.send(FleetEvent::Device(Box::new(view)));
        }
    }

    fn notify_node(&mut self, lease: &Lease, active: bool) {
        let Some(device) = self.inventory.device(&lease.device_id) else {
            return;
        };
        let Some(link) = self.nodes.get(&device.node_id) else {
            return;
        };
        let id = self.next_command;
        self.next_command += 1;
        let message = pb::BrokerMessage {
            msg: Some(pb::broker_message::Msg::Command(pb::Command {
                id,
                kind: Some(pb::command::Kind::LeaseUpdate(pb::LeaseUpdate {
                    device_serial: device.serial.clone(),
                    device_id: device.id.clone(),
                    active,
                    fencing_token: lease.fencing_token,
                    holder: lease.holder.clone(),
                })),
            })),
        };
        if link.outbound.try_send(message).is_err() {
            tracing::warn!(node_id = %device.node_id, "node outbound queue full; lease update not sent");
        }
    }

    fn stats(&self) -> FleetStats {
        let mut stats = FleetStats {
            nodes_connected: self.nodes.len() as u64,
            active_leases: self.inventory.active_leases().count() as u64,
            waiting_reservations: self.waiters.len() as u64,
            ..Default::default()
        };
        for v in self.inventory.views() {
            *stats
                .devices
                .entry((v.state().as_str(), v.device.site.clone()))
                .or_default() += 1;
        }
        stats.node_health = self
            .nodes
            .values()
            .map(|n| (n.node.id.clone(), n.node.site.clone(), n.health.clone()))
            .collect();
        stats
    }
}

/// A lease id: `lease_` and 20 hex digits of randomness.
fn new_lease_id() -> String {
    let bytes: [u8; 10] = rand::rng().random();
    format!("lease_{}", hex::encode(bytes))
}
