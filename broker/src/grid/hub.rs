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
use super::index::{Activity, SessionIndex};
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
    /// The client deleted the session; `done` fires once its lease has ended.
    Deleted {
        session_id: String,
        done: oneshot::Sender<()>,
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
    activity: Arc<Activity>,
    last_renew: Instant,
    started: Instant,
}

/// How a session ends.
struct Ending {
    /// The recorded end reason (`released`, `idle`, `node_lost`, a lease's end reason).
    reason: &'static str,
    /// End the session's lease with this reason (None: it has ended already).
    lease_end: Option<EndReason>,
    /// Send `DELETE /session/ID` to the slot (not when the client did, or the node is gone).
    delete_on_slot: bool,
    /// Fires once the lease has ended and the session's end is recorded (the client's DELETE
    /// answers then: the device is free and the record complete).
    done: Option<oneshot::Sender<()>>,
}

/// Why a session ended, as a late command's error says it.
fn why_ended(reason: &str, config: &GridConfig) -> String {
    match reason {
        "idle" => format!(
            "no command for {} s (idle timeout); its lease ended",
            config.idle_timeout.as_secs()
        ),
        "node_lost" => "its node was lost (the device's lease ended with node_lost)".to_string(),
        "device_lost" => "its device disconnected".to_string(),
        "released" => "it was deleted".to_string(),
        other => format!("its lease ended ({other})"),
    }
}

/// Writes session records in order, off the hub's path (a failed write is logged).
async fn write_records(store: Store, mut pending: mpsc::UnboundedReceiver<RecordWrite>) {
    while let Some(write) = pending.recv().await {
        match write {
            RecordWrite::Start(record) => {
                if let Err(e) = store.insert_session(&record).await {
                    tracing::error!(session_id = %record.id, error = %e, "could not record a webdriver session");
                }
            }
            RecordWrite::End {
                id,
                reason,
                at,
                written,
            } => {
                if let Err(e) = store.end_session(&id, &reason, at).await {
                    tracing::error!(session_id = %id, error = %e, "could not record the end of a session");
                }
                if let Some(written) = written {
                    let _ = written.send(());
                }
            }
        }
    }
}

/// A session record change, written in order by one task (a session's end never precedes its start).
enum RecordWrite {
    Start(SessionRecord),
    End {
        id: String,
        reason: String,
        at: i64,
        /// Fires once the end is written (or failed to be).
        written: Option<oneshot::Sender<()>>,
    },
}

pub struct Hub {
    pub fleet: Fleet,
    pub router: StreamRouter,
    pub config: Arc<GridConfig>,
    pub tx: mpsc::Sender<HubMsg>,
    index: SessionIndex,
    records: mpsc::UnboundedSender<RecordWrite>,
    queue: VecDeque<Queued>,
    allocations: HashMap<u64, Allocation>,
    sessions: HashMap<String, Session>,
    slot_use: HashMap<SlotKey, u32>,
    next_alloc: u64,
}

#[path = "hub_queue.rs"]
mod queue;
pub use queue::slot_facts;

impl Hub {
    pub fn new(
        fleet: Fleet,
        store: Store,
        router: StreamRouter,
        config: Arc<GridConfig>,
        tx: mpsc::Sender<HubMsg>,
        index: SessionIndex,
    ) -> Hub {
        let (records, pending) = mpsc::unbounded_channel();
        tokio::spawn(write_records(store.clone(), pending));
        Hub {
            fleet,
            router,
            config,
            tx,
            index,
            records,
            queue: VecDeque::new(),
            allocations: HashMap::new(),
            sessions: HashMap::new(),
            slot_use: HashMap::new(),
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
            HubMsg::Deleted { session_id, done } => {
                let end = Ending {
                    reason: "released",
                    lease_end: Some(EndReason::Released),
                    delete_on_slot: false,
                    done: Some(done),
                };
                self.end_session(&session_id, end);
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
        let activity = (!session_id.is_empty() && session_id.len() <= 256)
            .then(|| {
                self.index
                    .insert(&session_id, a.caller.clone(), a.placement.target.clone())
            })
            .flatten();
        let Some(activity) = activity else {
            self.free_slot(&a.key);
            if let Some(lease) = &a.placement.lease {
                self.end_lease_later(lease.id.clone(), EndReason::Released);
            }
            return Err(W3cError::session_not_created(format!(
                "slot {} returned an unusable session id {session_id:?}",
                a.key.1
            )));
        };
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
        let _ = self.records.send(RecordWrite::Start(record));
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
                activity,
                last_renew: now,
                started: now,
            },
        );
        Ok(())
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
    fn end_session(&mut self, session_id: &str, end: Ending) {
        let Some(s) = self.sessions.remove(session_id) else {
            if let Some(done) = end.done {
                let _ = done.send(());
            }
            return;
        };
        self.free_slot(&s.key);
        tracing::info!(session_id, reason = end.reason, node_id = %s.key.0, slot = %s.key.1,
            seconds = s.started.elapsed().as_secs(), "webdriver session ended");
        self.index
            .remove(session_id, why_ended(end.reason, &self.config));
        let (written_tx, written) = match end.done {
            Some(_) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let _ = self.records.send(RecordWrite::End {
            id: session_id.to_string(),
            reason: end.reason.to_string(),
            at: now_millis(),
            written: written_tx,
        });
        let router = self.router.clone();
        let limits = Limits {
            max_request_bytes: 0,
            response_timeout: Duration::from_secs(30),
        };
        let fleet = self.fleet.clone();
        let tx = self.tx.clone();
        let id = session_id.to_string();
        tokio::spawn(async move {
            if end.delete_on_slot {
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
            if let (Some(lease), Some(r)) = (s.lease, end.lease_end)
                && let Err(e) = fleet.end_lease(lease.id.clone(), r).await
            {
                tracing::debug!(lease_id = %lease.id, error = %e, "lease already ended");
            }
            if let Some(written) = written {
                let _ = written.await;
            }
            if let Some(done) = end.done {
                let _ = done.send(());
            }
            let _ = tx.send(HubMsg::Kick).await;
        });
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
                    let end = Ending {
                        reason,
                        lease_end: None,
                        delete_on_slot: !node_gone,
                        done: None,
                    };
                    self.end_session(&id, end);
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
                // The device is free now: a queued request may take it at once.
                self.serve_queue().await;
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
                    let end = Ending {
                        reason: "node_lost",
                        lease_end: None,
                        delete_on_slot: false,
                        done: None,
                    };
                    self.end_session(&id, end);
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
            // A device came online or changed: a queued request may match it now.
            FleetEvent::Device(_) => self.serve_queue().await,
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
        if let Some(idle_since) = now.checked_sub(self.config.idle_timeout) {
            let why = why_ended("idle", &self.config);
            for id in self.index.remove_idle(idle_since, &why) {
                let end = Ending {
                    reason: "idle",
                    lease_end: Some(EndReason::Idle),
                    delete_on_slot: true,
                    done: None,
                };
                self.end_session(&id, end);
            }
        }
        let renew_every = self.config.lease_ttl() / 4;
        for s in self.sessions.values_mut() {
            let Some(lease) = &s.lease else { continue };
            let active = s.activity.inflight() > 0 || s.activity.last() > s.last_renew;
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
