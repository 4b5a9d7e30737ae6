//! Test doubles for the WebDriver proxy tests: the service under test with a fake device set
//! (`Harness`), and a stand-in slot (a tiny hyper HTTP server on 127.0.0.1:0).

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use farm_node::device_props::DeviceProps;
use farm_node::devices::{AdbEntry, ConnState, DeviceSetHandle, PropsFetcher, spawn_device_set};
use farm_node::webdriver::{
    WebDriverCommand, WebDriverConfig, WebDriverHandle, spawn_webdriver_service,
};
use farm_proto::v1::node_message::Msg;
use farm_proto::v1::{
    HttpBodyChunk, HttpHeader, HttpRequestHead, HttpResponseHead, NodeMessage, SlotInventory,
};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::sync::{mpsc, watch};

/// The longest any single wait in these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Byte `i` of every generated test body.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Every device reads as a Pixel on Android 14.
struct FakeProps;

impl PropsFetcher for FakeProps {
    fn fetch(&self, _serial: String) -> BoxFuture<'static, Result<DeviceProps, String>> {
        Box::pin(async {
            Ok(DeviceProps {
                android_version: "14".into(),
                model: "Pixel Test".into(),
                ..DeviceProps::unknown()
            })
        })
    }
}

/// The WebDriver service under test, fed as the broker link would feed it.
pub struct Harness {
    pub handle: WebDriverHandle,
    pub messages: mpsc::Receiver<NodeMessage>,
    pub slots: watch::Receiver<SlotInventory>,
    pub devices: DeviceSetHandle,
    pub connection: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Messages read while waiting for another stream's.
    parked: HashMap<u64, Vec<NodeMessage>>,
}

/// A whole answer as the broker would see it.
#[derive(Debug)]
pub struct Answer {
    pub head: HttpResponseHead,
    pub body: Vec<u8>,
    pub chunks: usize,
    pub largest_chunk: usize,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("answer body is JSON")
    }
}

impl Harness {
    pub async fn start(config: WebDriverConfig) -> Result<Self> {
        let (devices, _count, _task) = spawn_device_set(Arc::new(FakeProps));
        let (messages_tx, messages) = mpsc::channel(1024);
        let (slots_tx, slots) = watch::channel(SlotInventory::default());
        let (connection, connection_rx) = watch::channel(1);
        let (stop, stopping) = watch::channel(false);
        let (handle, task) = spawn_webdriver_service(
            config,
            devices.clone(),
            messages_tx,
            slots_tx,
            connection_rx,
            stopping,
        );
        Ok(Self {
            handle,
            messages,
            slots,
            devices,
            connection,
            stop,
            task,
            parked: HashMap::new(),
        })
    }

    /// Sets the online devices.
    pub async fn online(&self, serials: &[&str]) -> Result<()> {
        let list = serials
            .iter()
            .map(|serial| AdbEntry {
                serial: serial.to_string(),
                state: ConnState::Online,
            })
            .collect();
        self.devices.adb_list(list).await?;
        Ok(())
    }

    /// Waits until the announced inventory satisfies `check`.
    pub async fn slots_where(
        &mut self,
        check: impl FnMut(&SlotInventory) -> bool,
    ) -> Result<SlotInventory> {
        let inventory = tokio::time::timeout(DEADLINE, self.slots.wait_for(check))
            .await
            .context("slot inventory never matched")??
            .clone();
        Ok(inventory)
    }

    /// Sends a request head (headers as name/value pairs); body chunks follow.
    pub async fn request(
        &self,
        stream_id: u64,
        slot_id: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<()> {
        let head = head(stream_id, slot_id, method, path, headers);
        self.handle.send(WebDriverCommand::Request(head)).await?;
        Ok(())
    }

    /// Sends a request head carrying the whole body (as the broker sends small requests).
    pub async fn request_whole(
        &self,
        stream_id: u64,
        slot_id: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        let mut head = head(stream_id, slot_id, method, path, headers);
        head.body = body.to_vec();
        head.end = true;
        self.handle.send(WebDriverCommand::Request(head)).await?;
        Ok(())
    }

    pub async fn body(&self, stream_id: u64, data: Vec<u8>, end: bool) -> Result<()> {
        self.chunk(HttpBodyChunk {
            stream_id,
            data,
            end,
            cancel: false,
        })
        .await
    }

    pub async fn cancel(&self, stream_id: u64) -> Result<()> {
        self.chunk(HttpBodyChunk {
            stream_id,
            cancel: true,
            ..Default::default()
        })
        .await
    }

    async fn chunk(&self, chunk: HttpBodyChunk) -> Result<()> {
        self.handle.send(WebDriverCommand::Body(chunk)).await?;
        Ok(())
    }

    /// A request with its small body in the head, and its whole answer.
    pub async fn call(
        &mut self,
        stream_id: u64,
        slot_id: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Answer> {
        let headers = [("content-type", "application/json; charset=utf-8")];
        self.request_whole(stream_id, slot_id, method, path, &headers, body)
            .await?;
        self.answer(stream_id).await
    }

    /// A GET with an empty body, and the head of its answer.
    pub async fn call_head(
        &mut self,
        stream_id: u64,
        slot_id: &str,
        path: &str,
    ) -> Result<HttpResponseHead> {
        self.request(stream_id, slot_id, "GET", path, &[]).await?;
        self.body(stream_id, Vec::new(), true).await?;
        let head = self.head(stream_id).await?;
        if !head.error.is_empty() {
            bail!("error head: {}", head.error);
        }
        Ok(head)
    }

    /// The next message of `stream_id` (others are kept for later).
    pub async fn next(&mut self, stream_id: u64) -> Result<NodeMessage> {
        if let Some(parked) = self.parked.get_mut(&stream_id)
            && !parked.is_empty()
        {
            return Ok(parked.remove(0));
        }
        loop {
            let message = tokio::time::timeout(DEADLINE, self.messages.recv())
                .await
                .context("no message from the service in time")?
                .context("the service stopped")?;
            let id = match &message.msg {
                Some(Msg::HttpResponse(head)) => head.stream_id,
                Some(Msg::HttpBody(chunk)) => chunk.stream_id,
                other => bail!("unexpected message {other:?}"),
            };
            if id == stream_id {
                return Ok(message);
            }
            self.parked.entry(id).or_default().push(message);
        }
    }

    /// The head of `stream_id`'s answer (an error head included).
    pub async fn head(&mut self, stream_id: u64) -> Result<HttpResponseHead> {
        match self.next(stream_id).await?.msg {
            Some(Msg::HttpResponse(head)) => Ok(head),
            other => bail!("expected a response head, got {other:?}"),
        }
    }

    /// The next body chunk of `stream_id`.
    pub async fn chunk_of(&mut self, stream_id: u64) -> Result<HttpBodyChunk> {
        match self.next(stream_id).await?.msg {
            Some(Msg::HttpBody(chunk)) => Ok(chunk),
            other => bail!("expected a body chunk, got {other:?}"),
        }
    }

    /// The whole answer of `stream_id` (`chunks` 0: it came whole in the head); fails on an
    /// error head or a cancel.
    pub async fn answer(&mut self, stream_id: u64) -> Result<Answer> {
        let mut head = self.head(stream_id).await?;
        if !head.error.is_empty() {
            bail!("error head: {}", head.error);
        }
        let whole = head.end;
        let body = std::mem::take(&mut head.body);
        let mut answer = Answer {
            head,
            body,
            chunks: 0,
            largest_chunk: 0,
        };
        if whole {
            return Ok(answer);
        }
        loop {
            let chunk = self.chunk_of(stream_id).await?;
            if chunk.cancel {
                bail!("the node cancelled stream {stream_id}");
            }
            answer.chunks += 1;
            answer.largest_chunk = answer.largest_chunk.max(chunk.data.len());
            answer.body.extend_from_slice(&chunk.data);
            if chunk.end {
                return Ok(answer);
            }
        }
    }

    /// Stops the service and waits for it (and its chromedriver) to end.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .context("the service did not stop")??;
        Ok(())
    }
}

/// What the stand-in slot saw of one request.
#[derive(Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    /// The body for `/session`; for `/upload` only its length (the bytes are checked inline).
    pub body: Vec<u8>,
    pub body_len: usize,
}

/// A stand-in slot:
/// - `POST /session`: records the body, answers `{"value":{"sessionId":"fake-session"}}`;
/// - `PUT /upload`: checks the streamed body against `pattern`, answers 201 with its length;
/// - `GET /download?size=N`: answers 203 with N bytes of `pattern` in 100 000-byte frames;
/// - `GET /endless`: streams until the reader goes away, then reports on `gone`;
/// - `GET /hang`: never answers; anything else: 200 with a body that is not JSON.
pub struct StandIn {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    pub gone: mpsc::UnboundedReceiver<()>,
}

type SlotBody = BoxBody<Bytes, Infallible>;

pub async fn stand_in_slot() -> Result<StandIn> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (gone_tx, gone) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (seen_tx, gone_tx) = (seen_tx.clone(), gone_tx.clone());
            let service = hyper::service::service_fn(move |request| {
                serve(request, seen_tx.clone(), gone_tx.clone())
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service),
            );
        }
    });
    Ok(StandIn { addr, seen, gone })
}

async fn serve(
    request: Request<Incoming>,
    seen: mpsc::UnboundedSender<Seen>,
    gone: mpsc::UnboundedSender<()>,
) -> Result<Response<SlotBody>, hyper::Error> {
    let (parts, mut body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let mut record = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: Vec::new(),
        body_len: 0,
    };
    let full = |status: u16, text: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json; charset=utf-8")
            .header("x-slot", "stand-in")
            .body(Full::new(Bytes::from(text)).boxed())
            .expect("static response parts are valid")
    };
    let response = match path.as_str() {
        "/session" => {
            record.body = body.collect().await?.to_bytes().to_vec();
            record.body_len = record.body.len();
            full(
                200,
                br#"{"value":{"sessionId":"fake-session","capabilities":{}}}"#.to_vec(),
            )
        }
        "/upload" => {
            let mut mismatches = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    for (i, byte) in data.iter().enumerate() {
                        if *byte != pattern(record.body_len + i) {
                            mismatches += 1;
                        }
                    }
                    record.body_len += data.len();
                }
            }
            let text = format!(
                r#"{{"bytes":{},"mismatches":{mismatches}}}"#,
                record.body_len
            );
            full(201, text.into_bytes())
        }
        "/download" => {
            let size: usize = parts
                .uri
                .query()
                .and_then(|q| q.strip_prefix("size="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let frames = futures::stream::iter((0..size).step_by(100_000).map(move |start| {
                let end = (start + 100_000).min(size);
                let data: Vec<u8> = (start..end).map(pattern).collect();
                Ok::<_, Infallible>(Frame::data(Bytes::from(data)))
            }));
            Response::builder()
                .status(203)
                .header("content-type", "application/octet-stream")
                .header("x-download", "yes")
                .body(StreamBody::new(frames).boxed())
                .expect("static response parts are valid")
        }
        "/endless" => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                while tx
                    .send(Ok(Frame::data(Bytes::from(vec![7u8; 65_536]))))
                    .await
                    .is_ok()
                {}
                let _ = gone.send(());
            });
            let frames = tokio_stream::wrappers::ReceiverStream::new(rx);
            Response::builder()
                .status(200)
                .body(StreamBody::new(frames).boxed())
                .expect("static response parts are valid")
        }
        "/hang" => {
            let _ = seen.send(record);
            return std::future::pending().await;
        }
        // Announces 100 bytes, sends 10 and closes the connection.
        "/short" => Response::builder()
            .status(200)
            .header("content-length", "100")
            .body(
                // The head and 10 bytes go out, then (a moment later) the body ends short.
                StreamBody::new(futures::stream::unfold(0, |step| async move {
                    match step {
                        0 => Some((
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"0123456789"))),
                            1,
                        )),
                        _ => {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            None
                        }
                    }
                }))
                .boxed(),
            )
            .expect("static response parts are valid"),
        _ => Response::builder()
            .status(200)
            .header("content-type", "text/html")
            .body(Full::new(Bytes::from_static(b"<html>not json")).boxed())
            .expect("static response parts are valid"),
    };
    let _ = seen.send(record);
    Ok(response)
}

fn head(
    stream_id: u64,
    slot_id: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpRequestHead {
    HttpRequestHead {
        stream_id,
        slot_id: slot_id.into(),
        method: method.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(name, value)| HttpHeader {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}
