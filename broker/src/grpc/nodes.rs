//! NodeService.Connect: the one stream each controller node keeps open to the broker.
//!
//! The node speaks first (`hello`), then sends a snapshot, changes and
//! heartbeats; the broker answers `hello_ack` and later sends commands.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use farm_proto::v1 as pb;
use futures::{Stream, StreamExt};
use pb::node_message::Msg;
use tonic::{Request, Response, Status, Streaming};

use super::Api;
use super::convert::{check_required, check_string, node_health, reported_device};
use crate::domain::{Node, Role};
use crate::error::{Error, Result};
use crate::fleet::NodeEvent;

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The most protocol features a hello may list.
const MAX_FEATURES: usize = 64;

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

fn validate_hello(h: pb::NodeHello) -> Result<Node> {
    check_required("node_id", &h.node_id)?;
    if !h
        .node_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(Error::invalid_argument(format!(
            "node_id {:?} may hold only letters, digits and - _ . :",
            h.node_id
        )));
    }
    check_required("site", &h.site)?;
    check_string("version", &h.version)?;
    check_string("hostname", &h.hostname)?;
    if h.features.len() > MAX_FEATURES {
        return Err(Error::invalid_argument(format!(
            "hello lists {} features; the limit is {MAX_FEATURES}",
            h.features.len()
        )));
    }
    for feature in &h.features {
        check_string("features", feature)?;
    }
    Ok(Node {
        id: h.node_id,
        site: h.site,
        version: h.version,
        hostname: h.hostname,
        features: h.features,
    })
}

/// Turns one node message into a fleet event, or says why it is refused.
fn node_event(msg: Msg) -> Result<NodeEvent> {
    match msg {
        Msg::Hello(_) => Err(Error::invalid_argument(
            "hello sent twice on one stream; ignored",
        )),
        Msg::Snapshot(s) => {
            let devices = s
                .devices
                .into_iter()
                .map(reported_device)
                .collect::<Result<Vec<_>>>()?;
            Ok(NodeEvent::Snapshot(devices))
        }
        Msg::Change(c) => match c.change {
            Some(pb::device_change::Change::Upsert(d)) => {
                Ok(NodeEvent::Upsert(reported_device(d)?))
            }
            Some(pb::device_change::Change::Removed(serial)) => {
                check_required("removed serial", &serial)?;
                Ok(NodeEvent::Removed(serial))
            }
            None => Err(Error::invalid_argument("empty device change")),
        },
        Msg::Heartbeat(h) => Ok(NodeEvent::Heartbeat(node_health(h))),
        Msg::Slots(inventory) => {
            let slots = inventory
                .slots
                .into_iter()
                .map(super::convert::slot)
                .collect::<Result<Vec<_>>>()?;
            Ok(NodeEvent::Slots(slots))
        }
        Msg::Live(signal) => {
            check_required("live session_id", &signal.session_id)?;
            Ok(NodeEvent::Live(signal))
        }
        Msg::HttpResponse(_) | Msg::HttpBody(_) => Err(Error::internal(
            "WebDriver messages go to the grid, not the fleet",
        )),
        Msg::Result(r) => Ok(NodeEvent::CommandResult {
            id: r.id,
            ok: r.ok,
            error: r.error.chars().take(super::convert::MAX_STRING).collect(),
        }),
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for Api {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<pb::BrokerMessage, Status>> + Send>>;

    async fn connect(
        &self,
        req: Request<Streaming<pb::NodeMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        self.caller(&req, &[Role::Node, Role::Admin]).await?;
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::NodeMessage {
                msg: Some(Msg::Hello(h)),
            }))) => h,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no hello within 10 s")),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on the node stream must be hello",
                ));
            }
        };
        let node = validate_hello(hello)?;
        let node_id = node.id.clone();
        let conn = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        let session = self.fleet.node_connect(node, conn).await?;
        let (errors_tx, errors_rx) = tokio::sync::mpsc::channel::<pb::BrokerMessage>(16);
        let fleet = self.fleet.clone();
        let grid = self.grid.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    // WebDriver bodies go straight to the grid, not through the fleet actor.
                    Ok(Some(pb::NodeMessage {
                        msg: Some(msg @ (Msg::HttpResponse(_) | Msg::HttpBody(_))),
                    })) => grid.from_node(&node_id, msg).await,
                    Ok(Some(pb::NodeMessage { msg: Some(msg) })) => match node_event(msg) {
                        Ok(event) => fleet.node_event(&node_id, conn, event).await,
                        Err(e) => {
                            tracing::warn!(node_id, error = %e, "refused a node message");
                            let refusal = pb::BrokerMessage {
                                msg: Some(pb::broker_message::Msg::Error(pb::NodeError {
                                    message: e.message,
                                })),
                            };
                            let _ = errors_tx.try_send(refusal);
                        }
                    },
                    Ok(Some(pb::NodeMessage { msg: None })) => {}
                    Ok(None) => break,
                    Err(status) => {
                        tracing::warn!(node_id, error = %status, "node stream failed");
                        break;
                    }
                }
            }
            fleet.node_disconnected(&node_id, conn).await;
        });
        // The fleet's messages end the stream when the fleet drops the node.
        let outbound = tokio_stream::wrappers::ReceiverStream::new(session.outbound);
        let errors = tokio_stream::wrappers::ReceiverStream::new(errors_rx);
        let merged = futures::stream::select(
            outbound
                .map(Some)
                .chain(futures::stream::once(futures::future::ready(None))),
            errors.map(Some).chain(futures::stream::pending()),
        )
        .take_while(|m| futures::future::ready(m.is_some()))
        .filter_map(|m| futures::future::ready(m.map(Ok)));
        Ok(Response::new(Box::pin(merged)))
    }
}
