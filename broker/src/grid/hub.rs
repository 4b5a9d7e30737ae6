//! The grid hub: one task owns the new-session queue, slot occupancy and the running WebDriver sessions.
//!
//! Handlers talk to it through `Grid` (mod.rs). It places queued requests on
//! free matching slots (taking the device's lease through the fleet, like any
//! reservation), renews leases while commands flow, ends idle sessions, and
//! ends sessions whose lease or node went away.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::GridConfig;
use super::caps::{Caps, NewSessionRequest};
use super::streams::{Limits, Outgoing, SlotTarget, StreamRouter, forward};
use super::w3c::W3cError;
use crate::domain::{Caller, EndReason, Lease, SessionKind, SessionRecord, now_millis};
use crate::fleet::{Fleet, FleetEvent};
use crate::store::Store;

type SlotKey = (String, String);

/// A slot taken for a new session, before the slot has created it.
#[derive(Debug, Clone)]
pub struct Placement {
    pub alloc_id: u64,
    pub target: SlotTarget,
    /// The capability set that matched (W3C: the first matching firstMatch).
    pub matched: Caps,
    pub lease: Option<Lease>,
}

#[derive(Debug)]
pub enum HubMsg {
    Enqueue {
        ticket: u64,
        caller: Caller,
        request: Arc<NewSessionRequest>,
        reply: oneshot::Sender<Result<Placement, W3cError>>,
    },
    Cancel {
        ticket: u64,
    },
    Abandon {
        alloc_id: u64,
    },
    Started {
        alloc_id: u64,
        session_id: String,
        reply: oneshot::Sender<Result<(), W3cError>>,
    },
    Begin {
        session_id: String,
        caller: Caller,
        reply: oneshot::Sender<Result<SlotTarget, W3cError>>,
    },
    End {
        session_id: String,
    },
    Deleted {
        session_id: String,
    },
    Status {
        reply: oneshot::Sender<super::status::StatusInput>,
    },
    Kick,
}

struct Queued {
    ticket: u64,
    caller: Caller,
    request: Arc<NewSessionRequest>,
    deadline: Instant,
    waited_from: Instant,
    reply: oneshot::Sender<Result<Placement, W3cError>>,
}

struct Allocation {
    ticket: u64,
    key: SlotKey,
    caller: Caller,
    request: Arc<NewSessionRequest>,
    placement: Placement,
    device_id: String,
    kind: String,
}

struct Session {
    owner: Caller,
    key: SlotKey,
    target: SlotTarget,
    lease: Option<Lease>,
    last_activity: Instant,
    last_renew: Instant,
    inflight: u32,
    started: Instant,
}

pub struct Hub {
    pub fleet: Fleet,
    pub store: Store,
    pub router: StreamRouter,
    pub config: Arc<GridConfig>,
    pub tx: mpsc::Sender<HubMsg>,
    queue: VecDeque<Queued>,
    allocations: HashMap<u64, Allocation>,
    sessions: HashMap<String, Session>,
    slot_use: HashMap<SlotKey, u32>,
    ended: HashMap<String, String>,
    ended_order: VecDeque<String>,
    next_alloc: u64,
}

#[path = "hub_queue.rs"]
mod queue;
pub use queue::slot_facts;

/// How many ended session ids the hub remembers, to say why a late command fails.
const REMEMBER_ENDED: usize = 4096;

impl Hub {
    pub fn new(
        fleet: Fleet,
        store: Store,
        router: StreamRouter,
        config: Arc<GridConfig>,
        tx: mpsc::Sender<HubMsg>,
    ) -> Hub {
        Hub {
            fleet,
            store,
            router,
            config,
            tx,
            queue: VecDeque::new(),
            allocations: HashMap::new(),
            sessions: HashMap::new(),
            slot_use: HashMap::new(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            next_alloc: 1,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<HubMsg>) {
        let mut events = self.fleet.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m).await,
                    None => return,
                },
                event = events.recv() => match event {
                    Ok(e) => self.fleet_event(e).await,
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "grid hub fell behind fleet events"),
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    async fn handle(&mut self, msg: HubMsg) {
        match msg {
            HubMsg::Enqueue {
                ticket,
                caller,
                request,
                reply,
            } => {
                let now = Instant::now();
                let wait = request.queue_timeout.unwrap_or(self.config.queue_timeout);
                self.queue.push_back(Queued {
                    ticket,
                    caller,
                    request,
                    deadline: now + wait,
                    waited_from: now,
                    reply,
                });
                self.serve_queue().await;
            }
            HubMsg::Cancel { ticket } => {
                if let Some(i) = self.queue.iter().position(|q| q.ticket == ticket) {
                    self.queue.remove(i);
                    tracing::info!(ticket, "a queued new-session request left (client gone)");
                } else if let Some(alloc_id) = self
                    .allocations
                    .iter()
                    .find(|(_, a)| a.ticket == ticket)
                    .map(|(id, _)| *id)
                {
                    // Placed, but the client left before it read the placement.
                    Box::pin(self.handle(HubMsg::Abandon { alloc_id })).await;
                }
            }
            HubMsg::Abandon { alloc_id } => {
                if let Some(a) = self.allocations.remove(&alloc_id) {
                    self.free_slot(&a.key);
                    if let Some(lease) = a.placement.lease {
                        self.end_lease_later(lease.id, EndReason::Released);
                    }
                    self.serve_queue().await;
                }
            }
            HubMsg::Started {
                alloc_id,
                session_id,
                reply,
            } => {
                let _ = reply.send(self.started(alloc_id, session_id).await);
            }
            HubMsg::Begin {
                session_id,
                caller,
                reply,
            } => {
                let _ = reply.send(self.begin(&session_id, &caller));
            }
            HubMsg::End { session_id } => {
                if let Some(s) = self.sessions.get_mut(&session_id) {
                    s.inflight = s.inflight.saturating_sub(1);
                    s.last_activity = Instant::now();
                }
            }
            HubMsg::Deleted { session_id } => {
                self.end_session(&session_id, "released", Some(EndReason::Released), false);
                self.serve_queue().await;
            }
            HubMsg::Status { reply } => {
                let view = self.fleet.grid_view().await.unwrap_or_default();
                let busy: HashMap<SlotKey, Vec<(String, String)>> =
                    self.sessions.iter().fold(HashMap::new(), |mut m, (id, s)| {
                        m.entry(s.key.clone())
                            .or_default()
                            .push((id.clone(), s.owner.name.clone()));
                        m
                    });
                let _ = reply.send(super::status::StatusInput {
                    slots: slot_facts(&view),
                    sessions: busy,
                    queued: self.queue.len(),
                });
            }
            HubMsg::Kick => self.serve_queue().await,
        }
    }

    async fn started(&mut self, alloc_id: u64, session_id: String) -> Result<(), W3cError> {
        let Some(a) = self.allocations.remove(&alloc_id) else {
            return Err(W3cError::session_not_created(
                "the slot was taken back while the session was created (its node or lease went away)",
            ));
        };
        if session_id.is_empty()
            || session_id.len() > 256
            || self.sessions.contains_key(&session_id)
        {
            self.free_slot(&a.key);
            if let Some(lease) = &a.placement.lease {
                self.end_lease_later(lease.id.clone(), EndReason::Released);
            }
            return Err(W3cError::session_not_created(format!(
                "slot {} returned an unusable session id {session_id:?}",
                a.key.1
            )));
        }
        let record = SessionRecord {
            id: session_id.clone(),
            kind: SessionKind::WebDriver,
            device_id: a.device_id.clone(),
            holder: a.caller.name.clone(),
            mode: a.kind.clone(),
            capabilities: a.request.requested.to_string(),
            lease_id: a.placement.lease.as_ref().map(|l| l.id.clone()),
            started_at: now_millis(),
            ended_at: None,
            end_reason: None,
        };
        if let Err(e) = self.store.insert_session(&record).await {
            tracing::error!(session_id, error = %e, "could not record a webdriver session");
        }
        let now = Instant::now();
        tracing::info!(session_id, slot = %a.key.1, node_id = %a.key.0, user = %a.caller.name,
            fencing = a.placement.lease.as_ref().map(|l| l.fencing_token), "webdriver session started");
        self.sessions.insert(
            session_id,
            Session {
                owner: a.caller,
                key: a.key,
                target: a.placement.target,
                lease: a.placement.lease,
                last_activity: now,
                last_renew: now,
                inflight: 0,
                started: now,
            },
        );
        Ok(())
    }

    fn begin(&mut self, session_id: &str, caller: &Caller) -> Result<SlotTarget, W3cError> {
        let Some(s) = self.sessions.get_mut(session_id) else {
            return Err(match self.ended.get(session_id) {
                Some(why) => {
                    W3cError::invalid_session_id(format!("session {session_id} has ended: {why}"))
                }
                None => W3cError::invalid_session_id(format!(
                    "no session {session_id} on this grid; create one with POST /session"
                )),
            });
        };
        if s.owner.name != caller.name && caller.role != crate::domain::Role::Admin {
            return Err(W3cError::forbidden(format!(
                "session {session_id} belongs to {}; only its owner or an admin may drive it",
                s.owner.name
            )));
        }
        s.inflight += 1;
        s.last_activity = Instant::now();
        Ok(s.target.clone())
    }

    fn free_slot(&mut self, key: &SlotKey) {
        if let Some(n) = self.slot_use.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.slot_use.remove(key);
            }
        }
    }

    fn end_lease_later(&self, lease_id: String, reason: EndReason) {
        let fleet = self.fleet.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Err(e) = fleet.end_lease(lease_id.clone(), reason).await {
                tracing::debug!(lease_id, error = %e, "lease already ended");
            }
            let _ = tx.send(HubMsg::Kick).await;
        });
    }

    /// Ends a session: frees its slot, optionally deletes it on the slot and ends its lease, records why.
    fn end_session(
        &mut self,
        session_id: &str,
        reason: &str,
        lease_end: Option<EndReason>,
        delete_on_slot: bool,
    ) {
        let Some(s) = self.sessions.remove(session_id) else {
            return;
        };
        self.free_slot(&s.key);
        tracing::info!(session_id, reason, node_id = %s.key.0, slot = %s.key.1,
            seconds = s.started.elapsed().as_secs(), "webdriver session ended");
        self.remember_ended(session_id, reason);
        let router = self.router.clone();
        let limits = Limits {
            max_request_bytes: 0,
            response_timeout: Duration::from_secs(30),
        };
        let fleet = self.fleet.clone();
        let store = self.store.clone();
        let tx = self.tx.clone();
        let (id, reason) = (session_id.to_string(), reason.to_string());
        tokio::spawn(async move {
            if delete_on_slot {
                let request = Outgoing {
                    method: axum::http::Method::DELETE,
                    path: format!("/session/{id}"),
                    headers: axum::http::HeaderMap::new(),
                    body: axum::body::Body::empty(),
                };
                if let Ok(answer) = forward(&router, &s.target, request, limits, ()).await {
                    let _ = axum::body::to_bytes(answer.body, 1 << 20).await;
                }
            }
            if let (Some(lease), Some(r)) = (s.lease, lease_end)
                && let Err(e) = fleet.end_lease(lease.id.clone(), r).await
            {
                tracing::debug!(lease_id = %lease.id, error = %e, "lease already ended");
            }
            if let Err(e) = store.end_session(&id, &reason, now_millis()).await {
                tracing::error!(session_id = %id, error = %e, "could not record the end of a session");
            }
            let _ = tx.send(HubMsg::Kick).await;
        });
    }

    fn remember_ended(&mut self, session_id: &str, reason: &str) {
        let why = match reason {
            "idle" => format!(
                "no command for {} s (idle timeout); its lease ended",
                self.config.idle_timeout.as_secs()
            ),
            "node_lost" => {
                "its node was lost (the device's lease ended with node_lost)".to_string()
            }
            "device_lost" => "its device disconnected".to_string(),
            "released" => "it was deleted".to_string(),
            other => format!("its lease ended ({other})"),
        };
        self.ended.insert(session_id.to_string(), why);
        self.ended_order.push_back(session_id.to_string());
        while self.ended_order.len() > REMEMBER_ENDED {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    async fn fleet_event(&mut self, event: FleetEvent) {
        match event {
            FleetEvent::LeaseEnded(lease) => {
                let ids: Vec<String> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.lease.as_ref().is_some_and(|l| l.id == lease.id))
                    .map(|(id, _)| id.clone())
                    .collect();
                let reason = lease.end_reason.map(|r| r.as_str()).unwrap_or("ended");
                let node_gone = lease.end_reason == Some(EndReason::NodeLost);
                for id in ids {
                    self.end_session(&id, reason, None, !node_gone);
                }
                // Allocations whose lease went away before their session started.
                let lost: Vec<u64> = self
                    .allocations
                    .iter()
                    .filter(|(_, a)| a.placement.lease.as_ref().is_some_and(|l| l.id == lease.id))
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    if let Some(a) = self.allocations.remove(&id) {
                        self.free_slot(&a.key);
                    }
                }
            }
            FleetEvent::NodeLost(node_id) => {
                self.router.node_lost(&node_id);
                let ids: Vec<String> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.key.0 == node_id)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    self.end_session(&id, "node_lost", None, false);
                }
                let lost: Vec<u64> = self
                    .allocations
                    .iter()
                    .filter(|(_, a)| a.key.0 == node_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    if let Some(a) = self.allocations.remove(&id) {
                        self.free_slot(&a.key);
                    }
                }
            }
            FleetEvent::Device(_) => {}
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        // Queue: clients gone or out of time.
        let mut i = 0;
        while i < self.queue.len() {
            let q = &self.queue[i];
            if q.reply.is_closed() {
                self.queue.remove(i);
            } else if now >= q.deadline {
                if let Some(q) = self.queue.remove(i) {
                    let waited = now.duration_since(q.waited_from).as_secs_f64();
                    let busy = self.busy_summary(&q.request).await;
                    let _ = q.reply.send(Err(W3cError::session_not_created(format!(
                        "timed out after {waited:.1} s in the new-session queue (farm:queueTimeout): {busy}"
                    ))));
                }
            } else {
                i += 1;
            }
        }
        // Idle sessions and lease renewals.
        let idle = self.config.idle_timeout;
        let idle_ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.inflight == 0 && now.duration_since(s.last_activity) >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle_ids {
            self.end_session(&id, "idle", Some(EndReason::Idle), true);
        }
        let renew_every = self.config.lease_ttl() / 4;
        for s in self.sessions.values_mut() {
            let Some(lease) = &s.lease else { continue };
            let active = s.inflight > 0 || s.last_activity > s.last_renew;
            if active && now.duration_since(s.last_renew) >= renew_every {
                s.last_renew = now;
                let (fleet, caller, id) = (self.fleet.clone(), s.owner.clone(), lease.id.clone());
                tokio::spawn(async move {
                    if let Err(e) = fleet.renew(caller, id.clone(), None).await {
                        tracing::warn!(lease_id = %id, error = %e, "could not renew a webdriver session's lease");
                    }
                });
            }
        }
        if !self.queue.is_empty() {
            self.serve_queue().await;
        }
    }
}
