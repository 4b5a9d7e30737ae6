//! Live sessions: the broker's half of WebRTC signalling between a browser and a node.
//!
//! One task (the hub) owns every live session. Browsers talk to it over a
//! WebSocket (`ws.rs`), nodes over their stream (`LiveSignal`); the hub checks
//! who may watch or drive a device, relays offers, answers and candidates, and
//! ends sessions when the lease, the device or the node goes away. Media never
//! passes through the broker.

pub mod ice;
pub mod ws;

use std::collections::HashMap;
use std::time::Duration;

use farm_proto::v1 as pb;
use pb::live_signal::Signal;
use rand::RngExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{
    Caller, EndReason, Lease, Millis, Presence, Role, SessionKind, SessionRecord, format_millis,
    now_millis,
};
use crate::error::{Error, Result};
use crate::fleet::{Fleet, FleetEvent};
use crate::store::Store;
pub use ice::{IceConfig, IceServer};

/// Settings of live sessions.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub ice: IceConfig,
    /// Whether users other than the lease holder may watch (read-only). Admins always may.
    pub allow_observers: bool,
    /// A session whose node has not answered within this time ends.
    pub negotiation_timeout: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            ice: IceConfig::default(),
            allow_observers: false,
            negotiation_timeout: Duration::from_secs(20),
        }
    }
}

/// What a browser sends, once parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum FromBrowser {
    Offer(String),
    Candidate(pb::IceCandidate),
    Bye,
}

/// What the hub sends a browser.
#[derive(Debug, Clone, PartialEq)]
pub enum ToBrowser {
    Ready {
        session: String,
        control: bool,
        ice_servers: Vec<IceServer>,
    },
    Answer(String),
    Candidate(pb::IceCandidate),
    Size {
        width: u32,
        height: u32,
    },
    /// The session is over; the socket closes after this.
    End(String),
    Error(String),
}

#[derive(Debug)]
enum HubMsg {
    Open {
        caller: Caller,
        device_id: String,
        observe: bool,
        to_browser: mpsc::Sender<ToBrowser>,
        reply: oneshot::Sender<Result<String>>,
    },
    Browser {
        session_id: String,
        msg: FromBrowser,
    },
    BrowserGone {
        session_id: String,
    },
}

/// A handle to the hub task.
#[derive(Debug, Clone)]
pub struct LiveHub {
    tx: mpsc::Sender<HubMsg>,
}

impl LiveHub {
    /// Starts the hub; `from_nodes` carries the signalling nodes send.
    pub fn start(
        fleet: Fleet,
        store: Store,
        config: LiveConfig,
        from_nodes: mpsc::Receiver<(String, pb::LiveSignal)>,
    ) -> LiveHub {
        let (tx, rx) = mpsc::channel(1024);
        let hub = Hub {
            events: fleet.subscribe(),
            fleet,
            store,
            config,
            sessions: HashMap::new(),
        };
        tokio::spawn(hub.run(rx, from_nodes));
        LiveHub { tx }
    }

    /// Opens a session; `Ready` goes to `to_browser` before this returns the session id.
    pub async fn open(
        &self,
        caller: Caller,
        device_id: String,
        observe: bool,
        to_browser: mpsc::Sender<ToBrowser>,
    ) -> Result<String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(HubMsg::Open {
                caller,
                device_id,
                observe,
                to_browser,
                reply,
            })
            .await
            .map_err(|_| Error::unavailable("the broker is shutting down"))?;
        rx.await
            .map_err(|_| Error::unavailable("the broker is shutting down"))?
    }

    pub async fn from_browser(&self, session_id: &str, msg: FromBrowser) {
        let _ = self
            .tx
            .send(HubMsg::Browser {
                session_id: session_id.to_string(),
                msg,
            })
            .await;
    }

    pub async fn browser_gone(&self, session_id: &str) {
        let _ = self
            .tx
            .send(HubMsg::BrowserGone {
                session_id: session_id.to_string(),
            })
            .await;
    }
}

struct Session {
    device_id: String,
    node_id: String,
    lease_id: Option<String>,
    to_browser: mpsc::Sender<ToBrowser>,
    started_at: Millis,
    offered: bool,
    answered: bool,
}

struct Hub {
    fleet: Fleet,
    store: Store,
    config: LiveConfig,
    events: tokio::sync::broadcast::Receiver<FleetEvent>,
    sessions: HashMap<String, Session>,
}

/// What a person reads when a lease ends under their session.
pub fn lease_end_message(reason: Option<EndReason>) -> &'static str {
    match reason {
        Some(EndReason::Expired) => "lease expired",
        Some(EndReason::Released) => "lease released",
        Some(EndReason::DeviceLost) => "device disconnected",
        Some(EndReason::NodeLost) => "node lost",
        Some(EndReason::Admin) => "lease ended by an admin",
        Some(EndReason::Idle) => "session idle for too long",
        None => "lease ended",
    }
}

impl Hub {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<HubMsg>,
        mut from_nodes: mpsc::Receiver<(String, pb::LiveSignal)>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m).await,
                    None => return,
                },
                Some((node_id, signal)) = from_nodes.recv() => self.on_node(&node_id, signal).await,
                event = self.events.recv() => match event {
                    Ok(e) => self.fleet_event(e).await,
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "live hub fell behind fleet events"),
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => self.expire(now_millis()).await,
            }
        }
    }

    async fn handle(&mut self, msg: HubMsg) {
        match msg {
            HubMsg::Open {
                caller,
                device_id,
                observe,
                to_browser,
                reply,
            } => {
                let result = self.open(caller, device_id, observe, to_browser).await;
                let _ = reply.send(result);
            }
            HubMsg::Browser { session_id, msg } => self.on_browser(&session_id, msg).await,
            HubMsg::BrowserGone { session_id } => self.end(&session_id, "viewer left", true).await,
        }
    }

    async fn open(
        &mut self,
        caller: Caller,
        device_id: String,
        observe: bool,
        to_browser: mpsc::Sender<ToBrowser>,
    ) -> Result<String> {
        let view = self.fleet.device(device_id.clone()).await?;
        if view.device.presence != Presence::Online {
            return Err(Error::failed_precondition(format!(
                "device {device_id} is {} since {}",
                view.device.presence.as_str(),
                format_millis(view.device.state_since)
            )));
        }
        let holds = view.lease.as_ref().is_some_and(|l| l.holder == caller.name);
        let may_observe = self.config.allow_observers || caller.role == Role::Admin;
        let control = if observe {
            if !may_observe && !holds {
                return Err(Error::permission_denied(
                    "watching devices held by others is not allowed on this farm (ask an admin to allow observers)",
                ));
            }
            false
        } else if holds {
            true
        } else {
            let why = match &view.lease {
                Some(l) => format!(
                    "device {device_id} is held by {} until {}",
                    l.holder,
                    format_millis(l.expires_at)
                ),
                None => format!("device {device_id} is not reserved: reserve it first"),
            };
            let hint = if may_observe {
                "; you may watch it (observe)"
            } else {
                ""
            };
            return Err(Error::permission_denied(format!(
                "only the lease holder can control a device: {why}{hint}"
            )));
        };
        let id = format!("live_{}", hex::encode(rand::rng().random::<[u8; 8]>()));
        let now = now_millis();
        let lease_id = if control {
            view.lease.as_ref().map(|l| l.id.clone())
        } else {
            None
        };
        self.store
            .insert_session(&SessionRecord {
                id: id.clone(),
                kind: SessionKind::Live,
                device_id: device_id.clone(),
                holder: caller.name.clone(),
                mode: if control { "control" } else { "observe" }.into(),
                capabilities: String::new(),
                lease_id: lease_id.clone(),
                started_at: now,
                ended_at: None,
                end_reason: None,
            })
            .await?;
        let ice_servers = self
            .config
            .ice
            .servers_for(&view.device.site, &caller.name, now);
        let start = pb::LiveStart {
            device_serial: view.device.serial.clone(),
            device_id: device_id.clone(),
            control,
            fencing_token: view.lease.as_ref().map(|l| l.fencing_token).unwrap_or(0),
            user: caller.name.clone(),
            ice_servers: ice_servers
                .iter()
                .map(|s| pb::IceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone(),
                    credential: s.credential.clone(),
                })
                .collect(),
        };
        if let Err(e) = self
            .to_node(&view.device.node_id, &id, Signal::Start(start))
            .await
        {
            let _ = self.store.end_session(&id, "node unreachable", now).await;
            return Err(e);
        }
        let _ = to_browser
            .send(ToBrowser::Ready {
                session: id.clone(),
                control,
                ice_servers,
            })
            .await;
        tracing::info!(session_id = %id, device_id, user = %caller.name, control, "live session opened");
        self.sessions.insert(
            id.clone(),
            Session {
                device_id,
                node_id: view.device.node_id.clone(),
                lease_id,
                to_browser,
                started_at: now,
                offered: false,
                answered: false,
            },
        );
        Ok(id)
    }

    async fn to_node(&self, node_id: &str, session_id: &str, signal: Signal) -> Result<()> {
        let message = pb::BrokerMessage {
            msg: Some(pb::broker_message::Msg::Command(pb::Command {
                id: 0,
                kind: Some(pb::command::Kind::Live(pb::LiveSignal {
                    session_id: session_id.to_string(),
                    signal: Some(signal),
                })),
            })),
        };
        self.fleet.send_to_node(node_id, message).await
    }

    async fn on_browser(&mut self, session_id: &str, msg: FromBrowser) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        let node_id = session.node_id.clone();
        let signals = match msg {
            FromBrowser::Bye => {
                self.end(session_id, "viewer left", true).await;
                return;
            }
            FromBrowser::Offer(sdp) => {
                let restart = session.offered;
                session.offered = true;
                if restart {
                    vec![Signal::IceRestart(true), Signal::OfferSdp(sdp)]
                } else {
                    vec![Signal::OfferSdp(sdp)]
                }
            }
            FromBrowser::Candidate(c) => vec![Signal::Candidate(c)],
        };
        for signal in signals {
            if self.to_node(&node_id, session_id, signal).await.is_err() {
                self.end(session_id, "node lost", false).await;
                return;
            }
        }
    }

    async fn on_node(&mut self, node_id: &str, signal: pb::LiveSignal) {
        let Some(session) = self.sessions.get_mut(&signal.session_id) else {
            return; // ended already
        };
        if session.node_id != node_id {
            tracing::warn!(node_id, session_id = %signal.session_id, "signal for another node's session ignored");
            return;
        }
        let out = match signal.signal {
            Some(Signal::AnswerSdp(sdp)) => {
                session.answered = true;
                ToBrowser::Answer(sdp)
            }
            Some(Signal::Candidate(c)) => ToBrowser::Candidate(c),
            Some(Signal::VideoSize(v)) => ToBrowser::Size {
                width: v.width,
                height: v.height,
            },
            Some(Signal::End(end)) => {
                let reason: String = end.reason.chars().take(200).collect();
                let reason = if reason.is_empty() {
                    "ended by the node".to_string()
                } else {
                    reason
                };
                self.end(&signal.session_id, &reason, false).await;
                return;
            }
            _ => return,
        };
        if session.to_browser.try_send(out).is_err() {
            tracing::warn!(session_id = %signal.session_id, "viewer is not reading signalling; ending");
            self.end(&signal.session_id, "viewer not responding", true)
                .await;
        }
    }

    async fn fleet_event(&mut self, event: FleetEvent) {
        let ending: Vec<(String, &'static str)> = match &event {
            FleetEvent::LeaseEnded(Lease { id, end_reason, .. }) => self
                .sessions
                .iter()
                .filter(|(_, s)| s.lease_id.as_deref() == Some(id.as_str()))
                .map(|(sid, _)| (sid.clone(), lease_end_message(*end_reason)))
                .collect(),
            FleetEvent::NodeLost(node) => self
                .sessions
                .iter()
                .filter(|(_, s)| &s.node_id == node)
                .map(|(sid, _)| (sid.clone(), "node lost"))
                .collect(),
            FleetEvent::Device(view) if view.device.presence != Presence::Online => self
                .sessions
                .iter()
                .filter(|(_, s)| s.device_id == view.device.id)
                .map(|(sid, _)| (sid.clone(), "device disconnected"))
                .collect(),
            FleetEvent::Device(_) => Vec::new(),
        };
        let notify_node = !matches!(event, FleetEvent::NodeLost(_));
        for (sid, reason) in ending {
            self.end(&sid, reason, notify_node).await;
        }
    }

    async fn expire(&mut self, now: Millis) {
        let timeout = self.config.negotiation_timeout.as_millis() as i64;
        let stale: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.answered && now - s.started_at > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.end(&id, "negotiation timed out", true).await;
        }
        let gone: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.to_browser.is_closed())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.end(&id, "viewer left", true).await;
        }
    }

    async fn end(&mut self, session_id: &str, reason: &str, notify_node: bool) {
        let Some(session) = self.sessions.remove(session_id) else {
            return;
        };
        tracing::info!(session_id, device_id = %session.device_id, reason, "live session ended");
        let _ = session
            .to_browser
            .try_send(ToBrowser::End(reason.to_string()));
        if notify_node {
            let _ = self
                .to_node(
                    &session.node_id,
                    session_id,
                    Signal::End(pb::LiveEnd {
                        reason: reason.to_string(),
                    }),
                )
                .await;
        }
        if let Err(e) = self
            .store
            .end_session(session_id, reason, now_millis())
            .await
        {
            tracing::error!(session_id, error = %e, "could not record the end of a session");
        }
    }
}
