//! A fake node for grid tests: advertises WebDriver slots and answers proxied requests as the test says.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_proto::v1 as pb;
use pb::broker_message::Msg as B;
use pb::command::Kind;
use pb::node_message::Msg as N;
use tokio::sync::mpsc;

use farm_broker::grid::GridConfig;
use serde_json::{Value, json};

use crate::common::{self, FakeNode, TestBroker};

/// One request the fake slot received, body complete.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub slot_id: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body came whole in the request head (no body chunks).
    pub whole: bool,
}

/// How the fake slot answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// status, headers, body (sent in 3 chunks to exercise streaming).
    Http(u32, Vec<(String, String)>, Vec<u8>),
    /// status, headers, body, all in the head (how the node answers small bodies).
    Whole(u32, Vec<(String, String)>, Vec<u8>),
    /// An error head (the slot could not be reached).
    ErrorHead(String),
    /// Never answer.
    Hang,
}

pub type Behaviour = Arc<dyn Fn(&SeenRequest, u64) -> Reply + Send + Sync>;

/// The default behaviour: W3C-ish answers; new sessions get id `s<N>`.
pub fn w3c_slot() -> Behaviour {
    Arc::new(|req: &SeenRequest, n: u64| {
        let json = |v: serde_json::Value| {
            Reply::Whole(
                200,
                vec![(
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                )],
                v.to_string().into_bytes(),
            )
        };
        if req.method == "POST" && req.path == "/session" {
            json(
                serde_json::json!({"value": {"sessionId": format!("s{n}"), "capabilities": {"slot": req.slot_id}}}),
            )
        } else {
            json(serde_json::json!({"value": null}))
        }
    })
}

pub struct GridNode {
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tx: Option<mpsc::Sender<pb::NodeMessage>>,
}

impl Drop for GridNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn appium_slot(serial: &str) -> pb::Slot {
    pb::Slot {
        slot_id: format!("appium:{serial}"),
        kind: "appium".into(),
        device_serial: serial.into(),
        capabilities_json: serde_json::json!({"platformName":"Android","appium:automationName":"UiAutomator2","appium:udid":serial}).to_string(),
        max_sessions: 1,
    }
}

pub fn browser_slot(max: u32) -> pb::Slot {
    pb::Slot {
        slot_id: "browser".into(),
        kind: "browser".into(),
        device_serial: String::new(),
        capabilities_json:
            r#"{"browserName":"chrome","browserVersion":"120.0","platformName":"linux"}"#.into(),
        max_sessions: max,
    }
}

impl GridNode {
    /// Connects node "n1" at site "lab" with `devices` and `slots`, and waits until the grid sees every slot.
    pub async fn connect(
        b: &TestBroker,
        devices: Vec<pb::NodeDevice>,
        slots: Vec<pb::Slot>,
    ) -> GridNode {
        Self::connect_with(b, common::hello("n1", "lab"), devices, slots).await
    }

    /// `connect` with the node's own hello (e.g. an older node without protocol features).
    pub async fn connect_with(
        b: &TestBroker,
        hello: pb::NodeMessage,
        devices: Vec<pb::NodeDevice>,
        slots: Vec<pb::Slot>,
    ) -> GridNode {
        let n_slots = slots.len();
        let inventory = pb::NodeMessage {
            msg: Some(N::Slots(pb::SlotInventory { slots })),
        };
        let node = common::connect_node(
            &b.url,
            &b.node_token,
            vec![hello, common::snapshot(devices), inventory],
        )
        .await
        .expect("node accepted");
        let FakeNode { tx, mut inbound } = node;
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let behaviour = Arc::new(Mutex::new(w3c_slot()));
        let alive = tokio::spawn({
            let tx = tx.clone();
            async move {
                while tx.send(common::heartbeat()).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        });
        let reader = tokio::spawn({
            let (tx, seen, behaviour) = (tx.clone(), seen.clone(), behaviour.clone());
            async move {
                let mut open: HashMap<u64, SeenRequest> = HashMap::new();
                let mut count = 0u64;
                while let Ok(Some(m)) = inbound.message().await {
                    let Some(B::Command(pb::Command {
                        kind: Some(kind), ..
                    })) = m.msg
                    else {
                        continue;
                    };
                    let stream_id = match kind {
                        Kind::HttpRequest(h) => {
                            let req = SeenRequest {
                                slot_id: h.slot_id,
                                method: h.method,
                                path: h.path,
                                headers: h.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                                body: h.body,
                                whole: h.end,
                            };
                            open.insert(h.stream_id, req);
                            if !h.end {
                                continue;
                            }
                            h.stream_id
                        }
                        Kind::HttpBody(c) if c.cancel => {
                            open.remove(&c.stream_id);
                            continue;
                        }
                        Kind::HttpBody(c) => {
                            let Some(req) = open.get_mut(&c.stream_id) else {
                                continue;
                            };
                            req.body.extend_from_slice(&c.data);
                            if !c.end {
                                continue;
                            }
                            c.stream_id
                        }
                        _ => continue,
                    };
                    let Some(req) = open.remove(&stream_id) else {
                        continue;
                    };
                    count += 1;
                    let reply = {
                        let f = behaviour.lock().expect("behaviour lock").clone();
                        f(&req, count)
                    };
                    seen.lock().expect("seen lock").push(req);
                    answer(&tx, stream_id, reply).await;
                }
            }
        });
        let node = GridNode {
            seen,
            behaviour,
            tasks: vec![alive, reader],
            tx: Some(tx),
        };
        common::eventually(Duration::from_secs(5), "slots in /status", || async {
            let (_, body) = common::http_get(&b.url, "/status", Some(&b.admin)).await;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let n: usize = v["value"]["nodes"]
                .as_array()?
                .iter()
                .map(|n| n["slots"].as_array().map_or(0, |s| s.len()))
                .sum();
            (n >= n_slots && n_slots > 0 || n_slots == 0).then_some(())
        })
        .await;
        node
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("behaviour lock") = behaviour;
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The node process dies: its stream ends, no goodbye.
    pub fn kill(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.tx = None;
    }
}

async fn answer(tx: &mpsc::Sender<pb::NodeMessage>, stream_id: u64, reply: Reply) {
    let send = |m: N| async move {
        let _ = tx.send(pb::NodeMessage { msg: Some(m) }).await;
    };
    match reply {
        Reply::Hang => {}
        Reply::ErrorHead(why) => {
            send(N::HttpResponse(pb::HttpResponseHead {
                stream_id,
                error: why,
                ..Default::default()
            }))
            .await
        }
        Reply::Whole(status, headers, body) => {
            let headers = headers
                .into_iter()
                .map(|(name, value)| pb::HttpHeader { name, value })
                .collect();
            send(N::HttpResponse(pb::HttpResponseHead {
                stream_id,
                status,
                headers,
                body,
                end: true,
                ..Default::default()
            }))
            .await;
        }
        Reply::Http(status, headers, body) => {
            let headers = headers
                .into_iter()
                .map(|(name, value)| pb::HttpHeader { name, value })
                .collect();
            send(N::HttpResponse(pb::HttpResponseHead {
                stream_id,
                status,
                headers,
                ..Default::default()
            }))
            .await;
            let third = body.len().div_ceil(3).max(1);
            for piece in body.chunks(third) {
                send(N::HttpBody(pb::HttpBodyChunk {
                    stream_id,
                    data: piece.to_vec(),
                    end: false,
                    cancel: false,
                }))
                .await;
            }
            send(N::HttpBody(pb::HttpBodyChunk {
                stream_id,
                data: vec![],
                end: true,
                cancel: false,
            }))
            .await;
        }
    }
}

// ------------------------------------------------------------ test helpers

pub async fn grid_broker(grid: GridConfig) -> TestBroker {
    crate::common::start_all(crate::common::fast_config(), Default::default(), grid).await
}

/// Two Android devices (e1: 14, e2: 13) with Appium slots, and a browser slot.
pub async fn farm(grid: GridConfig) -> (TestBroker, GridNode) {
    let b = grid_broker(grid).await;
    let mut old = crate::common::device("e2", "Pixel 6");
    old.android_version = "13".into();
    let node = GridNode::connect(
        &b,
        vec![crate::common::device("e1", "Pixel 7"), old],
        vec![appium_slot("e1"), appium_slot("e2"), browser_slot(2)],
    )
    .await;
    (b, node)
}

pub async fn post_session(url: &str, user: &str, token: &str, always: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/session"))
        .basic_auth(user, Some(token))
        .json(&json!({"capabilities": {"alwaysMatch": always}}))
        .send()
        .await
        .expect("http");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub fn w3c_error(body: &Value) -> (&str, &str) {
    (
        body["value"]["error"].as_str().unwrap_or("<none>"),
        body["value"]["message"].as_str().unwrap_or("<none>"),
    )
}

pub async fn leases(b: &TestBroker) -> Vec<pb::Lease> {
    let (_, mut r) = crate::common::clients(&b.url, &b.admin).await;
    r.list_reservations(pb::ListReservationsRequest {
        include_ended: true,
        ..Default::default()
    })
    .await
    .expect("list")
    .into_inner()
    .leases
}

pub async fn send(
    b: &TestBroker,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", b.url))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req.send().await.expect("http");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Sends `chunks` x 64 KiB with chunked transfer encoding (no content-length) and returns the response head.
pub async fn raw_chunked_upload(b: &TestBroker, token: &str, path: &str, chunks: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = b.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let piece = vec![b'y'; 64 * 1024];
    for _ in 0..chunks {
        let frame = [
            format!("{:x}\r\n", piece.len()).into_bytes(),
            piece.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        if s.write_all(&frame).await.is_err() {
            break; // the broker refused mid-body and closed: fine
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("answer in time")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// New-session requests waiting in the grid's queue, from `/status`.
pub async fn queued(b: &TestBroker) -> u64 {
    let (_, body) = crate::common::http_get(&b.url, "/status", Some(&b.admin)).await;
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["value"]["farm:queued"].as_u64())
        .unwrap_or(u64::MAX)
}

pub async fn wait_queued(b: &TestBroker, n: u64) {
    crate::common::eventually(
        std::time::Duration::from_secs(5),
        &format!("{n} queued"),
        || async { (queued(b).await == n).then_some(()) },
    )
    .await;
}
