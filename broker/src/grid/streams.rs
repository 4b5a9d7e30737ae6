//! Proxied HTTP exchanges over the node link: stream ids, routing the node's answers, bodies both ways.
//!
//! The broker sends `http_request` then `http_body` chunks (the last with
//! `end`); the node answers `http_response` then `http_body` chunks. A small
//! body travels whole in its head instead (`end` on the head) when the node
//! announced `http-whole`; the node's answers may always come that way. Either
//! side sends `cancel` to abort. Bodies are never held whole: chunks travel
//! through bounded channels, so a slow client slows the node (up to
//! `DELIVER_TIMEOUT`, after which the stream is cancelled: the node link is
//! shared and must keep moving).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use farm_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::w3c::W3cError;

/// Largest body chunk the broker sends to a node.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// How long a node's chunk may wait for a slow client before its stream is cancelled.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a message may wait for room on a node's outbound queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks buffered per stream in each direction.
const STREAM_BUFFER: usize = 32;

/// What a node sent for one stream (or the grid's word that it never will).
#[derive(Debug)]
pub enum Inbound {
    Head(pb::HttpResponseHead),
    Body(pb::HttpBodyChunk),
    /// The node is gone; the reason is for the client.
    Failed(String),
}

/// Where a request goes: a slot on a node, and that node's outbound queue (weak: see `fleet::NodeSlots`).
#[derive(Debug, Clone)]
pub struct SlotTarget {
    pub node_id: String,
    pub slot_id: String,
    pub outbound: mpsc::WeakSender<pb::BrokerMessage>,
    /// The node takes a small request body whole in the head (`farm_proto::FEATURE_HTTP_WHOLE`).
    pub whole_bodies: bool,
}

struct Route {
    node_id: String,
    tx: mpsc::Sender<Inbound>,
}

/// The open streams, shared by the node link readers (which deliver) and the proxies (which open and close).
#[derive(Clone, Default)]
pub struct StreamRouter {
    routes: Arc<Mutex<HashMap<u64, Route>>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for StreamRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamRouter")
    }
}

impl StreamRouter {
    fn open(&self, node_id: &str) -> (u64, mpsc::Receiver<Inbound>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(
                id,
                Route {
                    node_id: node_id.to_string(),
                    tx,
                },
            );
        }
        (id, rx)
    }

    fn close(&self, id: u64) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&id);
        }
    }

    /// Open streams (for tests and metrics).
    pub fn open_streams(&self) -> usize {
        self.routes.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Hands a node's message to its stream. Messages for unknown (closed) streams are dropped.
    pub async fn deliver(&self, node_id: &str, stream_id: u64, msg: Inbound) {
        let tx = match self.routes.lock() {
            Ok(routes) => match routes.get(&stream_id) {
                Some(r) if r.node_id == node_id => r.tx.clone(),
                Some(_) => {
                    tracing::warn!(
                        node_id,
                        stream_id,
                        "http message for another node's stream ignored"
                    );
                    return;
                }
                None => return,
            },
            Err(_) => return,
        };
        if tokio::time::timeout(DELIVER_TIMEOUT, tx.send(msg))
            .await
            .is_err()
        {
            tracing::warn!(
                node_id,
                stream_id,
                "client is not reading; cancelling the stream"
            );
            self.close(stream_id);
        }
    }

    /// Fails every stream of a lost node.
    pub fn node_lost(&self, node_id: &str) {
        let lost: Vec<Route> = match self.routes.lock() {
            Ok(mut routes) => {
                let ids: Vec<u64> = routes
                    .iter()
                    .filter(|(_, r)| r.node_id == node_id)
                    .map(|(id, _)| *id)
                    .collect();
                ids.iter().filter_map(|id| routes.remove(id)).collect()
            }
            Err(_) => return,
        };
        for r in lost {
            let _ = r.tx.try_send(Inbound::Failed(format!(
                "node {node_id} was lost while this command was in flight"
            )));
        }
    }
}

fn command(kind: pb::command::Kind) -> pb::BrokerMessage {
    pb::BrokerMessage {
        msg: Some(pb::broker_message::Msg::Command(pb::Command {
            id: 0,
            kind: Some(kind),
        })),
    }
}

/// A body chunk; `data` is the wire message's own buffer (callers copy a body's bytes once).
fn chunk(stream_id: u64, data: Vec<u8>, end: bool, cancel: bool) -> pb::BrokerMessage {
    command(pb::command::Kind::HttpBody(pb::HttpBodyChunk {
        stream_id,
        data,
        end,
        cancel,
    }))
}

async fn send(target: &SlotTarget, msg: pb::BrokerMessage) -> Result<(), W3cError> {
    let lost = || {
        W3cError::bad_gateway(format!(
            "node {} is not connected (slot {})",
            target.node_id, target.slot_id
        ))
    };
    let tx = target.outbound.upgrade().ok_or_else(lost)?;
    match tokio::time::timeout(SEND_TIMEOUT, tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(lost()),
        Err(_) => Err(W3cError::bad_gateway(format!(
            "node {} is not keeping up with its link; try again",
            target.node_id
        ))),
    }
}

/// Closes the route when the exchange is over and cancels it on the node unless it finished.
struct StreamGuard {
    router: StreamRouter,
    id: u64,
    target: SlotTarget,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.router.close(self.id);
        if !self.finished
            && let Some(tx) = self.target.outbound.upgrade()
        {
            let _ = tx.try_send(chunk(self.id, Vec::new(), false, true));
        }
    }
}

/// Headers that belong to one hop, plus the farm credentials (never shown to a slot).
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "host"
            | "authorization"
            | "proxy-authorization"
    )
}

/// Limits of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_bytes: u64,
    pub response_timeout: Duration,
}

/// The slot's answer: status, headers, and its body as it streams.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
}

/// A request for a slot: the path is as the slot should see it (no `/wd/hub`).
#[derive(Debug)]
pub struct Outgoing {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Body,
}

/// Sends one request to a slot and returns its answer as soon as the head arrives.
/// `keep` lives until the answer's body is finished or dropped (e.g. an in-flight marker).
pub async fn forward(
    router: &StreamRouter,
    target: &SlotTarget,
    request: Outgoing,
    limits: Limits,
    keep: impl Send + 'static,
) -> Result<Answer, W3cError> {
    let Outgoing {
        method,
        path,
        headers,
        body,
    } = request;
    let (stream_id, mut rx) = router.open(&target.node_id);
    let mut guard = StreamGuard {
        router: router.clone(),
        id: stream_id,
        target: target.clone(),
        finished: false,
    };
    let exact = HttpBody::size_hint(&body).exact();
    if exact.is_some_and(|n| n > limits.max_request_bytes) {
        return Err(W3cError::too_large(format!(
            "the request body ({} bytes) is over the grid's limit of {} bytes",
            exact.unwrap_or(0),
            limits.max_request_bytes
        )));
    }
    let mut head = pb::HttpRequestHead {
        stream_id,
        slot_id: target.slot_id.clone(),
        method: method.as_str().to_string(),
        path,
        headers: headers
            .iter()
            .filter(|(n, _)| forwardable(n))
            .filter_map(|(n, v)| {
                Some(pb::HttpHeader {
                    name: n.as_str().to_string(),
                    value: v.to_str().ok()?.to_string(),
                })
            })
            .collect(),
        ..Default::default()
    };
    let (upload_failed_tx, mut upload_failed) = tokio::sync::oneshot::channel::<W3cError>();
    if exact.is_some_and(|n| n <= CHUNK_BYTES as u64) {
        // Small bodies (nearly every command) go inline, no task: whole in the head when the
        // node takes that (one message), else as one last chunk after it.
        let data = axum::body::to_bytes(body, CHUNK_BYTES).await.map_err(|e| {
            W3cError::unknown_error(format!("could not read the request body: {e}"))
        })?;
        if target.whole_bodies {
            head.body = data.to_vec();
            head.end = true;
            send(target, command(pb::command::Kind::HttpRequest(head))).await?;
        } else {
            send(target, command(pb::command::Kind::HttpRequest(head))).await?;
            send(target, chunk(stream_id, data.to_vec(), true, false)).await?;
        }
        drop(upload_failed_tx);
    } else {
        send(target, command(pb::command::Kind::HttpRequest(head))).await?;
        tokio::spawn(upload(
            body,
            target.clone(),
            stream_id,
            limits.max_request_bytes,
            upload_failed_tx,
        ));
    }
    let first = tokio::select! {
        first = tokio::time::timeout(limits.response_timeout, rx.recv()) => first,
        Ok(e) = &mut upload_failed => return Err(e),
    };
    let head = match first {
        Err(_) => {
            return Err(W3cError::timeout(format!(
                "slot {} on node {} did not answer within {} s",
                target.slot_id,
                target.node_id,
                limits.response_timeout.as_secs()
            )));
        }
        Ok(None) => {
            return Err(W3cError::bad_gateway(format!(
                "the stream to slot {} on node {} closed before an answer",
                target.slot_id, target.node_id
            )));
        }
        Ok(Some(Inbound::Failed(why))) => return Err(W3cError::bad_gateway(why)),
        Ok(Some(Inbound::Body(_))) => {
            return Err(W3cError::bad_gateway(format!(
                "node {} sent a body before the response head (a node bug)",
                target.node_id
            )));
        }
        Ok(Some(Inbound::Head(head))) => head,
    };
    if !head.error.is_empty() {
        guard.finished = true;
        let why: String = head.error.chars().take(500).collect();
        return Err(W3cError::bad_gateway(format!(
            "slot {} on node {} failed: {why}",
            target.slot_id, target.node_id
        )));
    }
    let status = u16::try_from(head.status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            W3cError::bad_gateway(format!(
                "slot {} on node {} answered with an invalid HTTP status {}",
                target.slot_id, target.node_id, head.status
            ))
        })?;
    let mut out = HeaderMap::new();
    for h in head.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) && forwardable(&n)
        {
            out.append(n, v);
        }
    }
    if head.end {
        // The whole answer came in the head.
        guard.finished = true;
        return Ok(Answer {
            status,
            headers: out,
            body: Body::from(head.body),
        });
    }
    let timeout = limits.response_timeout;
    let stream = futures::stream::unfold(
        (rx, guard, keep, false),
        move |(mut rx, mut guard, keep, done)| async move {
            if done {
                return None;
            }
            let item = match tokio::time::timeout(timeout, rx.recv()).await {
                Ok(Some(Inbound::Body(c))) if c.cancel => Err("the slot cancelled the response"),
                Ok(Some(Inbound::Body(c))) => {
                    if c.end {
                        guard.finished = true;
                    }
                    Ok((Bytes::from(c.data), c.end))
                }
                Ok(Some(Inbound::Head(_))) => Err("the node sent a second response head"),
                Ok(Some(Inbound::Failed(_))) | Ok(None) => Err("the node was lost mid-response"),
                Err(_) => Err("the slot stopped sending the response"),
            };
            match item {
                Ok((data, end)) => Some((Ok::<_, std::io::Error>(data), (rx, guard, keep, end))),
                Err(why) => Some((Err(std::io::Error::other(why)), (rx, guard, keep, true))),
            }
        },
    )
    .filter(|r| futures::future::ready(!matches!(r, Ok(b) if b.is_empty())));
    Ok(Answer {
        status,
        headers: out,
        body: Body::from_stream(stream),
    })
}

/// Streams a large (or unknown-length) request body to the node in chunks, cancelling over the cap.
async fn upload(
    body: Body,
    target: SlotTarget,
    stream_id: u64,
    max: u64,
    failed: tokio::sync::oneshot::Sender<W3cError>,
) {
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    let mut error = None;
    while let Some(next) = stream.next().await {
        let data = match next {
            Ok(d) => d,
            Err(e) => {
                error = Some(W3cError::unknown_error(format!(
                    "the request body broke off: {e}"
                )));
                break;
            }
        };
        total += data.len() as u64;
        if total > max {
            error = Some(W3cError::too_large(format!(
                "the request body is over the grid's limit of {max} bytes"
            )));
            break;
        }
        for piece in data.chunks(CHUNK_BYTES) {
            if let Err(e) = send(&target, chunk(stream_id, piece.to_vec(), false, false)).await {
                error = Some(e);
                break;
            }
        }
        if error.is_some() {
            break;
        }
    }
    match error {
        None => {
            let _ = send(&target, chunk(stream_id, Vec::new(), true, false)).await;
        }
        Some(e) => {
            let _ = send(&target, chunk(stream_id, Vec::new(), false, true)).await;
            let _ = failed.send(e);
        }
    }
}
