//! One proxied request (a "stream"): the request to the slot, its body streamed from the
//! broker's chunks; the answer's head, then its body in chunks of at most 64 KiB.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use farm_proto::v1::node_message::Msg;
use farm_proto::v1::{HttpBodyChunk, HttpHeader, HttpRequestHead, HttpResponseHead, NodeMessage};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body as _, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, oneshot};

use super::browser::{Chromedriver, SessionReservation, lock};
use super::config::SlotEndpoint;
use super::headers::{request_headers, response_headers};
use super::new_session::{
    MAX_NEW_SESSION_BODY, deleted_session_id, inject_device_capabilities, is_new_session,
    session_id_of_answer, w3c_error_body,
};
use super::slots::DevicePorts;

/// The largest body chunk the node sends to the broker.
pub const MAX_CHUNK: usize = 64 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
/// The one HTTP client of the node's slots (pooled keep-alive connections).
pub type HttpClient = Client<HttpConnector, ProxyBody>;

pub fn new_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

pub fn empty_body() -> ProxyBody {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A piece of a request body from the broker.
#[derive(Debug)]
pub struct BodyPiece {
    pub data: Bytes,
    pub end: bool,
}

/// Where a stream goes.
#[derive(Debug)]
pub enum Target {
    Appium {
        endpoint: SlotEndpoint,
        serial: String,
        ports: DevicePorts,
    },
    Browser(Chromedriver),
}

/// What every stream shares.
#[derive(Debug)]
pub struct StreamContext {
    pub client: HttpClient,
    pub messages: mpsc::Sender<NodeMessage>,
    pub new_session_timeout: Duration,
    pub command_timeout: Duration,
}

/// How a stream failed, by what the broker has seen of it.
enum Failure {
    /// No head sent yet: an error head tells the broker why.
    BeforeHead(String),
    /// The head went out: a cancel ends the broker's response.
    AfterHead(String),
    /// The link is gone: nobody to tell.
    LinkGone,
}

/// Runs one stream to its end; every outcome ends with a last message to the broker
/// (an end chunk, an error head or a cancel), unless the link is gone. `head_sent` turns
/// true just before the response head goes out (so whoever aborts the stream knows whether
/// the broker needs an error head or a cancel).
pub async fn run_stream(
    ctx: Arc<StreamContext>,
    head: HttpRequestHead,
    target: Target,
    body: mpsc::Receiver<BodyPiece>,
    head_sent: Arc<AtomicBool>,
) {
    let stream_id = head.stream_id;
    match proxy(&ctx, head, target, body, &head_sent).await {
        Ok(()) | Err(Failure::LinkGone) => {}
        Err(Failure::BeforeHead(error)) => {
            tracing::info!(%error, "request failed before the slot answered");
            let _ = ctx.messages.send(error_head(stream_id, error)).await;
        }
        Err(Failure::AfterHead(error)) => {
            tracing::warn!(%error, "response broke off");
            let _ = ctx.messages.send(cancel(stream_id)).await;
        }
    }
}

async fn proxy(
    ctx: &StreamContext,
    head: HttpRequestHead,
    target: Target,
    mut body: mpsc::Receiver<BodyPiece>,
    head_sent: &AtomicBool,
) -> Result<(), Failure> {
    let stream_id = head.stream_id;
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| Failure::BeforeHead(format!("invalid HTTP method {:?}", head.method)))?;
    if !head.path.starts_with('/') || head.path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(Failure::BeforeHead(format!(
            "invalid request path {:?}: it must start with /",
            head.path
        )));
    }
    let mut headers = request_headers(&head.headers);
    let new_session = is_new_session(&method, &head.path);
    let answer_timeout = if new_session {
        ctx.new_session_timeout
    } else {
        ctx.command_timeout
    };
    let idle = ctx.command_timeout;
    let mut reservation = None;
    let mut sessions = None;
    let (endpoint, request_body, body_sent) = match target {
        Target::Appium {
            endpoint,
            serial,
            ports,
        } if new_session => {
            let Some(original) = collect_small_body(&mut body, idle).await? else {
                let message = format!(
                    "the new-session request body is larger than {MAX_NEW_SESSION_BODY} bytes"
                );
                return respond_locally(
                    ctx,
                    head_sent,
                    stream_id,
                    413,
                    "session not created",
                    &message,
                )
                .await;
            };
            match inject_device_capabilities(&original, &serial, ports) {
                Ok(rewritten) => {
                    headers.remove(http::header::CONTENT_LENGTH);
                    headers.insert(http::header::CONTENT_LENGTH, rewritten.len().into());
                    let (sent, body_sent) = oneshot::channel();
                    let _ = sent.send(());
                    (endpoint, full_body(rewritten), body_sent)
                }
                Err(error) => {
                    let message = error.to_string();
                    return respond_locally(
                        ctx,
                        head_sent,
                        stream_id,
                        400,
                        "invalid argument",
                        &message,
                    )
                    .await;
                }
            }
        }
        Target::Appium { endpoint, .. } => {
            let (request_body, body_sent) = request_body(body, idle).await?;
            (endpoint, request_body, body_sent)
        }
        Target::Browser(driver) => {
            let endpoint = driver.endpoint().await.map_err(Failure::BeforeHead)?;
            if new_session {
                match SessionReservation::try_new(&driver.sessions) {
                    Some(place) => reservation = Some(place),
                    None => {
                        let in_use = lock(&driver.sessions).in_use();
                        let message = format!(
                            "all {in_use} browser sessions of this node are in use: end one first"
                        );
                        return respond_locally(
                            ctx,
                            head_sent,
                            stream_id,
                            500,
                            "session not created",
                            &message,
                        )
                        .await;
                    }
                }
            }
            sessions = Some(driver.sessions);
            let (request_body, body_sent) = request_body(body, idle).await?;
            (endpoint, request_body, body_sent)
        }
    };

    let mut request = http::Request::builder()
        .method(method.clone())
        .uri(endpoint.url(&head.path))
        .body(request_body)
        .map_err(|error| Failure::BeforeHead(format!("invalid request: {error}")))?;
    *request.headers_mut() = headers;
    let slot = &head.slot_id;
    let response = tokio::select! {
        response = ctx.client.request(request) => response.map_err(|error| {
            Failure::BeforeHead(format!("slot {slot} did not answer: {}", error_chain(&error)))
        })?,
        // The clock starts once the slot has the whole request body.
        () = async {
            let _ = body_sent.await;
            tokio::time::sleep(answer_timeout).await;
        } => {
            return Err(Failure::BeforeHead(format!(
                "slot {slot} did not answer within {} s", answer_timeout.as_secs()
            )));
        }
    };
    if let (Some(id), Some(sessions)) = (deleted_session_id(&method, &head.path), &sessions) {
        lock(sessions).forget(id);
    }
    let (parts, mut response_body) = response.into_parts();
    let status = u32::from(parts.status.as_u16());
    let headers = response_headers(&parts.headers);
    // A small answer of known length (nearly every command) goes whole, in the head.
    if response_body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_CHUNK as u64)
    {
        let whole = read_small_answer(&mut response_body, idle, slot).await?;
        if let Some(place) = reservation {
            let id = parts
                .status
                .is_success()
                .then(|| session_id_of_answer(&whole));
            place.created(id.flatten());
        }
        head_sent.store(true, Ordering::Release);
        return send(ctx, whole_response(stream_id, status, headers, whole)).await;
    }
    head_sent.store(true, Ordering::Release);
    send(
        ctx,
        NodeMessage {
            msg: Some(Msg::HttpResponse(HttpResponseHead {
                stream_id,
                status,
                headers,
                ..Default::default()
            })),
        },
    )
    .await?;
    // The new session's id is read from a copy of its (small) answer.
    let mut copy = (reservation.is_some() && parts.status.is_success()).then(Vec::new);
    loop {
        let frame = match tokio::time::timeout(idle, response_body.frame()).await {
            Err(_) => {
                return Err(Failure::AfterHead(format!(
                    "slot {slot} sent nothing for {} s in the middle of its answer",
                    idle.as_secs()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return Err(Failure::AfterHead(format!(
                    "slot {slot} broke off its answer: {}",
                    error_chain(&error)
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: WebDriver has none, the wire form neither
        };
        if let Some(buffer) = &mut copy {
            if buffer.len() + data.len() <= MAX_NEW_SESSION_BODY {
                buffer.extend_from_slice(&data);
            } else {
                copy = None;
            }
        }
        let mut rest = data;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(MAX_CHUNK));
            send(ctx, chunk(stream_id, piece, false)).await?;
        }
    }
    if let Some(place) = reservation {
        place.created(copy.and_then(|answer| session_id_of_answer(&answer)));
    }
    send(ctx, chunk(stream_id, Bytes::new(), true)).await
}

/// Reads an answer whose announced length fits one message; nothing has gone to the broker yet,
/// so a failure gets an error head.
async fn read_small_answer(
    body: &mut hyper::body::Incoming,
    idle: Duration,
    slot: &str,
) -> Result<Bytes, Failure> {
    let mut whole = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(Failure::BeforeHead(format!(
                    "slot {slot} sent nothing for {} s in the middle of its answer",
                    idle.as_secs()
                )));
            }
            Ok(None) => return Ok(whole.freeze()),
            Ok(Some(Err(error))) => {
                return Err(Failure::BeforeHead(format!(
                    "slot {slot} broke off its answer: {}",
                    error_chain(&error)
                )));
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    whole.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Reads a whole request body of at most `MAX_NEW_SESSION_BODY` bytes; `None` when larger.
async fn collect_small_body(
    body: &mut mpsc::Receiver<BodyPiece>,
    idle: Duration,
) -> Result<Option<Vec<u8>>, Failure> {
    let mut collected = Vec::new();
    loop {
        let piece = next_piece(body, idle).await?;
        if collected.len() + piece.data.len() > MAX_NEW_SESSION_BODY {
            return Ok(None);
        }
        collected.extend_from_slice(&piece.data);
        if piece.end {
            return Ok(Some(collected));
        }
    }
}

async fn next_piece(
    body: &mut mpsc::Receiver<BodyPiece>,
    idle: Duration,
) -> Result<BodyPiece, Failure> {
    match tokio::time::timeout(idle, body.recv()).await {
        Ok(Some(piece)) => Ok(piece),
        Ok(None) => Err(Failure::BeforeHead(
            "the request body ended without its last chunk".into(),
        )),
        Err(_) => Err(Failure::BeforeHead(format!(
            "no request body from the broker for {} s",
            idle.as_secs()
        ))),
    }
}

/// The body to send to the slot, and a signal that fires once the slot has taken all of it.
/// A body that fits in its first chunk is sent with a length; a longer one is streamed.
async fn request_body(
    mut body: mpsc::Receiver<BodyPiece>,
    idle: Duration,
) -> Result<(ProxyBody, oneshot::Receiver<()>), Failure> {
    let first = next_piece(&mut body, idle).await?;
    let (sent, body_sent) = oneshot::channel();
    if first.end {
        let _ = sent.send(());
        return Ok((full_body(first.data), body_sent));
    }
    struct Upload {
        first: Option<Bytes>,
        body: mpsc::Receiver<BodyPiece>,
        sent: Option<oneshot::Sender<()>>,
        idle: Duration,
    }
    let upload = Upload {
        first: Some(first.data),
        body,
        sent: Some(sent),
        idle,
    };
    let frames = futures::stream::unfold(upload, |mut upload| async move {
        if let Some(first) = upload.first.take().filter(|data| !data.is_empty()) {
            return Some((Ok(Frame::data(first)), upload));
        }
        loop {
            // After the last chunk (or an error) `sent` is gone and the stream ends.
            let sent = upload.sent.take()?;
            match tokio::time::timeout(upload.idle, upload.body.recv()).await {
                Ok(Some(piece)) => {
                    if piece.end {
                        let _ = sent.send(());
                    } else {
                        upload.sent = Some(sent);
                    }
                    if !piece.data.is_empty() {
                        return Some((Ok(Frame::data(piece.data)), upload));
                    }
                }
                Ok(None) => {
                    let error: BoxError = "the request body ended without its last chunk".into();
                    return Some((Err(error), upload));
                }
                Err(_) => {
                    let error: BoxError = "no request body from the broker in time".into();
                    return Some((Err(error), upload));
                }
            }
        }
    });
    Ok((StreamBody::new(Box::pin(frames)).boxed_unsync(), body_sent))
}

/// A real HTTP answer made by the node (W3C error JSON), for requests it refuses itself.
async fn respond_locally(
    ctx: &StreamContext,
    head_sent: &AtomicBool,
    stream_id: u64,
    status: u16,
    error: &str,
    message: &str,
) -> Result<(), Failure> {
    tracing::info!(status, error, message, "answered by the node");
    let body = w3c_error_body(error, message);
    let headers = vec![
        HttpHeader {
            name: "content-type".into(),
            value: "application/json; charset=utf-8".into(),
        },
        HttpHeader {
            name: "content-length".into(),
            value: body.len().to_string(),
        },
    ];
    head_sent.store(true, Ordering::Release);
    let answer = whole_response(stream_id, u32::from(status), headers, Bytes::from(body));
    send(ctx, answer).await
}

/// A response head carrying the whole body: nothing follows it for the stream.
fn whole_response(
    stream_id: u64,
    status: u32,
    headers: Vec<HttpHeader>,
    body: Bytes,
) -> NodeMessage {
    NodeMessage {
        msg: Some(Msg::HttpResponse(HttpResponseHead {
            stream_id,
            status,
            headers,
            body: body.into(),
            end: true,
            ..Default::default()
        })),
    }
}

async fn send(ctx: &StreamContext, message: NodeMessage) -> Result<(), Failure> {
    ctx.messages
        .send(message)
        .await
        .map_err(|_| Failure::LinkGone)
}

fn chunk(stream_id: u64, data: Bytes, end: bool) -> NodeMessage {
    NodeMessage {
        msg: Some(Msg::HttpBody(HttpBodyChunk {
            stream_id,
            data: data.into(),
            end,
            cancel: false,
        })),
    }
}

/// The node gives up on a stream whose head went out.
pub fn cancel(stream_id: u64) -> NodeMessage {
    NodeMessage {
        msg: Some(Msg::HttpBody(HttpBodyChunk {
            stream_id,
            data: Default::default(),
            end: false,
            cancel: true,
        })),
    }
}

/// The request never got an HTTP answer; nothing follows this for the stream.
pub fn error_head(stream_id: u64, error: String) -> NodeMessage {
    NodeMessage {
        msg: Some(Msg::HttpResponse(HttpResponseHead {
            stream_id,
            error,
            ..Default::default()
        })),
    }
}

/// An error and its sources joined with ": " (hyper's top-level errors say little alone).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
