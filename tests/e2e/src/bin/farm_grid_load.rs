//! `farm-grid-load`: the WebDriver grid load benchmark; fake nodes with fake-driver slots over real gRPC plus concurrent W3C clients.
//!
//! What it does, against a running broker (see `scripts/bench-grid-load`):
//! 1. connects `--nodes` fake controller nodes, each on its OWN gRPC connection,
//!    each sending `hello`, a snapshot of `--devices-per-node` online devices and
//!    one Appium-style slot per device (`platformName: Fake`,
//!    `appium:automationName: Fake`), then a heartbeat every second; every node
//!    answers lease updates with a `CommandResult` (as farm-node does) and
//!    answers proxied WebDriver requests with an in-process fake driver, over the
//!    node stream exactly as a real node does (a small answer whole in its
//!    `http_response`, a larger one as `http_body` chunks of at most 64 KiB, then
//!    an empty `end`; proto/WEBDRIVER_LINK.md);
//! 2. waits until the broker's `/status` lists every slot;
//! 3. runs `--clients` W3C clients (plain HTTP, one keep-alive connection each,
//!    HTTP basic auth `NAME:TOKEN` as Selenium suites do) that loop: `POST /session`,
//!    `--commands` commands (cycling `GET title`, `POST element`, `GET screenshot`),
//!    `DELETE /session/ID`, for `--warmup-secs` (not measured) + `--duration-secs`;
//! 4. checks nothing leaked: every slot free, no request queued, no lease active,
//!    no session left on the fake drivers (waiting up to `--leak-wait-secs`);
//! 5. reports sessions/s, command / new-session / delete latency percentiles,
//!    errors, and the broker's resident memory (from /proc/PID/status).
//!
//! The fake driver: `POST /session` -> W3C new-session answer with a fresh id;
//! `GET /session/ID/title`; `POST /session/ID/element`; `GET /session/ID/screenshot`
//! (a small PNG, base64); `DELETE /session/ID`; anything else on a known session
//! -> `{"value":null}`; an unknown session -> 404 `invalid session id`.
//! Latencies are measured by the client around each HTTP exchange, so they
//! include loopback HTTP, gRPC to the fake node and back, and this process's own
//! scheduling on the same (shared) CPU.

use farm_e2e::measure::{Latency, mb, micros, proc_cpu_secs, proc_memory, spawn_rss_sampler};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use farm_e2e::BearerToken;
use farm_proto::v1 as pb;
use futures::StreamExt;
use pb::command::Kind;
use pb::node_message::Msg as N;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tonic::transport::Endpoint;

#[derive(Debug, Parser)]
#[command(
    name = "farm-grid-load",
    about = "WebDriver grid load benchmark: fake nodes with fake-driver slots over real gRPC and concurrent W3C clients",
    after_help = "Usually run through scripts/bench-grid-load, which starts a fresh broker and prints medians."
)]
struct Args {
    /// The broker's URL.
    #[arg(long, default_value = "http://127.0.0.1:4444")]
    broker: String,
    /// Token the W3C clients use (role user or admin).
    #[arg(long, env = "FARM_USER_TOKEN", hide_env_values = true)]
    user_token: String,
    /// The token's name, sent as the basic-auth user name (empty: `Authorization: Bearer`).
    #[arg(long, default_value = "")]
    user_name: String,
    /// Token the fake nodes connect with (role node).
    #[arg(long, env = "FARM_NODE_TOKEN", hide_env_values = true)]
    node_token: String,
    /// Fake nodes, one gRPC connection each.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    nodes: u32,
    /// Devices (each with one fake-driver slot) per node.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    devices_per_node: u32,
    /// Concurrent W3C clients, one HTTP connection each.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,
    /// Commands per session between new session and delete.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    commands: u32,
    /// Measured time, after the warm-up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_secs: u64,
    /// Unmeasured time before the measurement (the clients already run).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup_secs: u64,
    /// `farm:queueTimeout` of each new-session request, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    queue_timeout_secs: u64,
    /// The broker's process id, to read its resident memory and CPU from /proc.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// How long the leak check waits for slots, leases and driver sessions to be free.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
    leak_wait_secs: u64,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Prefix of node ids, site and device serials (change it to run twice against one broker).
    #[arg(long, default_value = "gl")]
    id_prefix: String,
    /// Give up when the slots are not listed within this time.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    setup_timeout_secs: u64,
}

// -------------------------------------------------------------- fake driver

/// A 1x1 PNG, as a real driver's screenshot answer carries it (base64).
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
/// Largest body chunk a node sends (proto/WEBDRIVER_LINK.md).
const CHUNK: usize = 64 * 1024;

/// The W3C answer of the fake driver: status and JSON body.
fn fake_driver(
    sessions: &mut HashSet<String>,
    next_id: &mut u64,
    node: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u32, Value) {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let no_session = |id: &str| {
        (
            404,
            json!({"value": {"error": "invalid session id", "message": format!("no session {id} on the fake driver"), "stacktrace": ""}}),
        )
    };
    match (method, parts.as_slice()) {
        ("POST", ["session"]) => {
            let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let mut caps = request
                .pointer("/capabilities/alwaysMatch")
                .cloned()
                .unwrap_or_else(|| json!({}));
            *next_id += 1;
            let id = format!("{node}-{:08x}-{:08x}", *next_id, rand::random::<u32>());
            if let Some(c) = caps.as_object_mut() {
                c.insert("farm:fakeSession".into(), json!(true));
            }
            sessions.insert(id.clone());
            (
                200,
                json!({"value": {"sessionId": id, "capabilities": caps}}),
            )
        }
        ("DELETE", ["session", id]) => {
            if sessions.remove(*id) {
                (200, json!({"value": null}))
            } else {
                no_session(id)
            }
        }
        (_, ["session", id, rest @ ..]) => {
            if !sessions.contains(*id) {
                return no_session(id);
            }
            match (method, rest) {
                ("GET", ["title"]) => (200, json!({"value": "Fake app"})),
                ("POST", ["element"]) => (
                    200,
                    json!({"value": {"element-6066-11e4-a52e-4f735466cecf": "el-go"}}),
                ),
                ("GET", ["screenshot"]) => (200, json!({"value": PNG_BASE64})),
                _ => (200, json!({"value": null})),
            }
        }
        _ => (
            404,
            json!({"value": {"error": "unknown command", "message": format!("{method} {path}"), "stacktrace": ""}}),
        ),
    }
}

// ------------------------------------------------------------------- nodes

fn node_id(prefix: &str, i: u32) -> String {
    format!("{prefix}-node-{i:04}")
}

fn serial(dev: u32) -> String {
    format!("emulator-{}", 5554 + 2 * dev)
}

fn node_device(prefix: &str, node: u32, dev: u32) -> pb::NodeDevice {
    pb::NodeDevice {
        serial: serial(dev),
        hardware_serial: format!("{prefix}-hw-{node:04}-{dev:03}"),
        state: pb::NodeDeviceState::Online as i32,
        model: "Fake Phone".into(),
        manufacturer: "Farm".into(),
        android_version: "14".into(),
        sdk: 34,
        screen_width: 720,
        screen_height: 1280,
        density: 320,
        battery_level: 90,
        platform: "android".into(),
    }
}

/// The slot farm-node advertises for a device with `--appium-caps '{"platformName":"Fake","appium:automationName":"Fake"}'`.
fn fake_slot(dev: u32) -> pb::Slot {
    let serial = serial(dev);
    pb::Slot {
        slot_id: format!("appium:{serial}"),
        kind: "appium".into(),
        device_serial: serial.clone(),
        capabilities_json: json!({
            "platformName": "Fake",
            "appium:automationName": "Fake",
            "appium:platformVersion": "14",
            "appium:deviceName": "Fake Phone",
            "appium:udid": serial,
        })
        .to_string(),
        max_sessions: 1,
    }
}

fn msg(m: N) -> pb::NodeMessage {
    pb::NodeMessage { msg: Some(m) }
}

/// What the node tasks count, shared.
#[derive(Debug, Default)]
struct NodeCounters {
    requests: AtomicU64,
    cancels: AtomicU64,
    lease_updates: AtomicU64,
    broker_errors: AtomicU64,
    /// Streams that ended before the run did (the broker dropped the node).
    dropped: AtomicU64,
    /// Sessions open on the fake drivers (created - deleted).
    driver_sessions: AtomicU64,
}

struct OpenStream {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Sends one answer as a node does: a small body whole in the head; else head, body chunks
/// (<= 64 KiB), empty `end`.
async fn answer(
    tx: &mpsc::Sender<pb::NodeMessage>,
    stream_id: u64,
    status: u32,
    body: Vec<u8>,
) -> bool {
    let headers = vec![
        pb::HttpHeader {
            name: "content-type".into(),
            value: "application/json; charset=utf-8".into(),
        },
        pb::HttpHeader {
            name: "content-length".into(),
            value: body.len().to_string(),
        },
    ];
    if body.len() <= CHUNK {
        let whole = N::HttpResponse(pb::HttpResponseHead {
            stream_id,
            status,
            headers,
            body,
            end: true,
            ..Default::default()
        });
        return tx.send(msg(whole)).await.is_ok();
    }
    let head = N::HttpResponse(pb::HttpResponseHead {
        stream_id,
        status,
        headers,
        ..Default::default()
    });
    if tx.send(msg(head)).await.is_err() {
        return false;
    }
    for piece in body.chunks(CHUNK) {
        let chunk = N::HttpBody(pb::HttpBodyChunk {
            stream_id,
            data: piece.to_vec(),
            end: false,
            cancel: false,
        });
        if tx.send(msg(chunk)).await.is_err() {
            return false;
        }
    }
    let end = N::HttpBody(pb::HttpBodyChunk {
        stream_id,
        data: Vec::new(),
        end: true,
        cancel: false,
    });
    tx.send(msg(end)).await.is_ok()
}

/// Connects one node on its own channel, then heartbeats and serves until `stop`.
async fn connect_node(
    args: Arc<Args>,
    index: u32,
    counters: Arc<NodeCounters>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let channel = Endpoint::from_shared(args.broker.clone())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("node {index}: cannot connect to {}", args.broker))?;
    let mut client = pb::node_service_client::NodeServiceClient::with_interceptor(
        channel,
        BearerToken::new(&args.node_token),
    );
    let (tx, rx) = mpsc::channel::<pb::NodeMessage>(1024);
    let id = node_id(&args.id_prefix, index);
    tx.send(msg(N::Hello(pb::NodeHello {
        node_id: id.clone(),
        site: format!("{}-site", args.id_prefix),
        version: "farm-grid-load".into(),
        hostname: "grid-load".into(),
        features: vec![farm_proto::FEATURE_HTTP_WHOLE.into()],
    })))
    .await?;
    let devices = (0..args.devices_per_node)
        .map(|d| node_device(&args.id_prefix, index, d))
        .collect();
    tx.send(msg(N::Snapshot(pb::DeviceSnapshot { devices })))
        .await?;
    let slots = (0..args.devices_per_node).map(fake_slot).collect();
    tx.send(msg(N::Slots(pb::SlotInventory { slots }))).await?;
    let mut inbound = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .with_context(|| format!("node {id}: Connect refused"))?
        .into_inner();
    let mut stop = stop;
    Ok(tokio::spawn(async move {
        let phase = Duration::from_millis(u64::from(index) * 37 % 1000);
        let mut beat =
            tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_secs(1));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open: HashMap<u64, OpenStream> = HashMap::new();
        let mut sessions: HashSet<String> = HashSet::new();
        let mut next_id = 0u64;
        let dropped = |counters: &NodeCounters| {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        };
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    let hb = msg(N::Heartbeat(pb::Heartbeat::default()));
                    if tx.send(hb).await.is_err() {
                        dropped(&counters);
                        break;
                    }
                }
                m = inbound.message() => {
                    let command = match m {
                        Ok(Some(pb::BrokerMessage { msg: Some(pb::broker_message::Msg::Command(c)) })) => c,
                        Ok(Some(pb::BrokerMessage { msg: Some(pb::broker_message::Msg::Error(_)) })) => {
                            counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => {
                            if !*stop.borrow() {
                                dropped(&counters);
                            }
                            break;
                        }
                    };
                    // A request is complete when its head says `end` or its last chunk comes.
                    let complete = match command.kind {
                        Some(Kind::HttpRequest(h)) => {
                            counters.requests.fetch_add(1, Ordering::Relaxed);
                            open.insert(h.stream_id, OpenStream { method: h.method, path: h.path, body: h.body });
                            h.end.then_some(h.stream_id)
                        }
                        Some(Kind::HttpBody(c)) if c.cancel => {
                            counters.cancels.fetch_add(1, Ordering::Relaxed);
                            open.remove(&c.stream_id);
                            None
                        }
                        Some(Kind::HttpBody(c)) => {
                            let Some(s) = open.get_mut(&c.stream_id) else { continue };
                            s.body.extend_from_slice(&c.data);
                            c.end.then_some(c.stream_id)
                        }
                        Some(Kind::LeaseUpdate(_)) | Some(Kind::Live(_)) | None => {
                            counters.lease_updates.fetch_add(1, Ordering::Relaxed);
                            // A real node answers every command with an id (farm-node's broker_link does).
                            let ok = command.id == 0 || tx.send(msg(N::Result(pb::CommandResult {
                                id: command.id,
                                ok: true,
                                ..Default::default()
                            }))).await.is_ok();
                            if !ok {
                                dropped(&counters);
                                break;
                            }
                            None
                        }
                    };
                    let Some(stream_id) = complete else { continue };
                    let Some(s) = open.remove(&stream_id) else { continue };
                    let before = sessions.len();
                    let (status, value) = fake_driver(&mut sessions, &mut next_id, &id, &s.method, &s.path, &s.body);
                    match sessions.len().cmp(&before) {
                        std::cmp::Ordering::Greater => { counters.driver_sessions.fetch_add(1, Ordering::Relaxed); }
                        std::cmp::Ordering::Less => { counters.driver_sessions.fetch_sub(1, Ordering::Relaxed); }
                        std::cmp::Ordering::Equal => {}
                    }
                    let ok = answer(&tx, stream_id, status, value.to_string().into_bytes()).await;
                    if !ok {
                        dropped(&counters);
                        break;
                    }
                }
                _ = stop.changed() => break,
            }
        }
        // Dropping `tx` ends the node's stream: the broker sees the node leave.
    }))
}

// ------------------------------------------------------------------ broker

async fn get_json(http: &reqwest::Client, args: &Args, path: &str) -> anyhow::Result<(u16, Value)> {
    let resp = http
        .get(format!("{}{path}", args.broker.trim_end_matches('/')))
        .bearer_auth(&args.user_token)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// From `/status`: (slots of our nodes, of which with a session, queued requests).
async fn grid_status(http: &reqwest::Client, args: &Args) -> anyhow::Result<(u64, u64, u64)> {
    let (code, v) = get_json(http, args, "/status").await?;
    if code != 200 {
        bail!("/status answered {code}: {v}");
    }
    let ours = format!("{}-node-", args.id_prefix);
    let (mut slots, mut busy) = (0, 0);
    for n in v["value"]["nodes"].as_array().into_iter().flatten() {
        if !n["id"].as_str().unwrap_or_default().starts_with(&ours) {
            continue;
        }
        for s in n["slots"].as_array().into_iter().flatten() {
            slots += 1;
            if !s["session"].is_null() {
                busy += 1;
            }
        }
    }
    Ok((slots, busy, v["value"]["farm:queued"].as_u64().unwrap_or(0)))
}

/// Active leases on our devices.
async fn active_leases(args: &Args) -> anyhow::Result<u64> {
    let (_, mut reservations) = farm_e2e::connect(&args.broker, &args.user_token).await;
    let leases = reservations
        .list_reservations(pb::ListReservationsRequest {
            include_ended: false,
            limit: 10_000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .leases;
    let ours = format!("{}-hw-", args.id_prefix);
    Ok(leases
        .iter()
        .filter(|l| l.device_id.starts_with(&ours) && l.state == pb::LeaseState::Active as i32)
        .count() as u64)
}

// ----------------------------------------------------------------- clients

/// One client's observations inside the measured window.
#[derive(Debug, Default)]
struct ClientStats {
    new_session_us: Vec<u32>,
    command_us: Vec<u32>,
    delete_us: Vec<u32>,
    /// Sessions created, driven and deleted inside the measured window.
    sessions: u64,
    /// Commands answered 2xx inside the window (also of sessions straddling its edges).
    commands: u64,
    errors: BTreeMap<String, u64>,
    error_samples: Vec<String>,
}

impl ClientStats {
    fn error(&mut self, what: &str, detail: String) {
        *self.errors.entry(what.to_string()).or_default() += 1;
        if self.error_samples.len() < 3 {
            self.error_samples.push(format!("{what}: {detail}"));
        }
    }
}

/// Sends one request and reads the whole answer; Err(what went wrong) unless 2xx.
async fn exchange(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let resp = request
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("body broke off: {e}"))?;
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
        return Err(format!("{status}: {text}"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{status} with a body that is not JSON: {e}"))
}

async fn client_loop(
    args: Arc<Args>,
    index: u32,
    measure_from: Instant,
    end: Instant,
) -> ClientStats {
    let base = args.broker.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(args.queue_timeout_secs + 60))
        .build()
        .unwrap_or_default();
    let auth = |r: reqwest::RequestBuilder| {
        if args.user_name.is_empty() {
            r.bearer_auth(&args.user_token)
        } else {
            r.basic_auth(&args.user_name, Some(&args.user_token))
        }
    };
    let caps = json!({"capabilities": {"alwaysMatch": {
        "platformName": "Fake",
        "appium:automationName": "Fake",
        "farm:queueTimeout": args.queue_timeout_secs,
    }}});
    let mut stats = ClientStats::default();
    let mut turn = index as usize;
    while Instant::now() < end {
        let started = Instant::now();
        let created = exchange(auth(http.post(format!("{base}/session")).json(&caps))).await;
        let created_at = Instant::now();
        let in_window = |t: Instant| t >= measure_from && t < end;
        let id = match created.map(|v| {
            v.pointer("/value/sessionId")
                .and_then(Value::as_str)
                .map(str::to_string)
        }) {
            Ok(Some(id)) => id,
            Ok(None) => {
                if in_window(started) {
                    stats.error("new session", "no value.sessionId in the answer".into());
                }
                continue;
            }
            Err(e) => {
                if in_window(started) {
                    stats.error("new session", e);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if in_window(started) && created_at < end {
            stats.new_session_us.push(micros(created_at - started));
        }
        let mut clean = true;
        for _ in 0..args.commands {
            turn += 1;
            let request = match turn % 3 {
                0 => http.get(format!("{base}/session/{id}/title")),
                1 => http
                    .post(format!("{base}/session/{id}/element"))
                    .json(&json!({"using": "id", "value": "go"})),
                _ => http.get(format!("{base}/session/{id}/screenshot")),
            };
            let t = Instant::now();
            let result = exchange(auth(request)).await;
            let done = Instant::now();
            match result {
                Ok(_) if in_window(t) && done < end => {
                    stats.command_us.push(micros(done - t));
                    stats.commands += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    clean = false;
                    if in_window(t) {
                        stats.error("command", e);
                    }
                    break;
                }
            }
        }
        let t = Instant::now();
        let deleted = exchange(auth(http.delete(format!("{base}/session/{id}")))).await;
        let done = Instant::now();
        match deleted {
            Ok(_) => {
                if in_window(t) && done < end {
                    stats.delete_us.push(micros(done - t));
                }
                if clean && started >= measure_from && done < end {
                    stats.sessions += 1;
                }
            }
            Err(e) => {
                if in_window(t) {
                    stats.error("delete", e);
                }
            }
        }
    }
    stats
}

// ------------------------------------------------------------------ memory

// ------------------------------------------------------------------ report

/// What is still held after the clients stopped (all zero when nothing leaked).
#[derive(Debug, Serialize)]
struct Leftovers {
    /// Seconds the check waited for everything to be free.
    waited_secs: f64,
    busy_slots: u64,
    queued: u64,
    active_leases: u64,
    driver_sessions: u64,
    /// Slots of our nodes /status listed at the end (should be nodes * devices).
    slots_listed: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    nodes: u32,
    devices_per_node: u32,
    clients: u32,
    commands_per_session: u32,
    warmup_secs: u64,
    duration_secs: f64,
    setup_secs: f64,
    sessions: u64,
    sessions_per_sec: f64,
    commands: u64,
    commands_per_sec: f64,
    new_session: Latency,
    command: Latency,
    delete: Latency,
    errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    leftovers: Leftovers,
    leaked: bool,
    proxied_requests: u64,
    cancels_received: u64,
    node_streams_dropped: u64,
    node_errors_received: u64,
    broker_rss_before_clients_mb: Option<f64>,
    broker_rss_end_mb: Option<f64>,
    broker_rss_peak_sampled_mb: Option<f64>,
    broker_rss_hwm_mb: Option<f64>,
    broker_cpu_cores: Option<f64>,
    loadgen_cpu_cores: Option<f64>,
}

impl Report {
    fn text(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1} MB"));
        let lat = |l: &Latency| {
            format!(
                "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}  (n={})",
                l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.mean_ms, l.count
            )
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "farm-grid-load: nodes={} devices/node={} clients={} commands/session={} warmup={}s measured={:.1}s (setup {:.1}s)",
            self.nodes,
            self.devices_per_node,
            self.clients,
            self.commands_per_session,
            self.warmup_secs,
            self.duration_secs,
            self.setup_secs
        );
        let _ = writeln!(
            s,
            "  sessions/s   {:.1}  ({} sessions)   commands/s {:.0}",
            self.sessions_per_sec, self.sessions, self.commands_per_sec
        );
        let _ = writeln!(s, "  command ms      {}", lat(&self.command));
        let _ = writeln!(s, "  new session ms  {}", lat(&self.new_session));
        let _ = writeln!(s, "  delete ms       {}", lat(&self.delete));
        let _ = writeln!(
            s,
            "  errors       {} {:?}{}",
            self.errors,
            self.errors_by_kind,
            if self.error_samples.is_empty() {
                String::new()
            } else {
                format!("  e.g. {}", self.error_samples.join(" | "))
            }
        );
        let l = &self.leftovers;
        let _ = writeln!(
            s,
            "  leftovers    {} (after {:.1} s: busy slots {}, queued {}, active leases {}, driver sessions {}; {} slots listed)",
            if self.leaked { "LEAKED" } else { "none" },
            l.waited_secs,
            l.busy_slots,
            l.queued,
            l.active_leases,
            l.driver_sessions,
            l.slots_listed
        );
        let _ = writeln!(
            s,
            "  broker RSS   before clients {}  end {}  peak sampled {}  peak (VmHWM) {}",
            opt(self.broker_rss_before_clients_mb),
            opt(self.broker_rss_end_mb),
            opt(self.broker_rss_peak_sampled_mb),
            opt(self.broker_rss_hwm_mb)
        );
        let _ = write!(
            s,
            "  CPU          broker {} cores, load generator {} cores (of 2); {} proxied requests, {} cancels, {} node streams dropped",
            self.broker_cpu_cores
                .map_or("n/a".to_string(), |v| format!("{v:.2}")),
            self.loadgen_cpu_cores
                .map_or("n/a".to_string(), |v| format!("{v:.2}")),
            self.proxied_requests,
            self.cancels_received,
            self.node_streams_dropped
        );
        s
    }
}

// -------------------------------------------------------------------- main

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(Arc::new(args)).await {
        eprintln!("farm-grid-load: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Arc<Args>) -> anyhow::Result<()> {
    let setup_started = Instant::now();
    let deadline = setup_started + Duration::from_secs(args.setup_timeout_secs);
    let counters = Arc::new(NodeCounters::default());
    let (stop_nodes, stop_rx) = watch::channel(false);
    let http = reqwest::Client::new();

    // 1. The nodes.
    let results: Vec<anyhow::Result<tokio::task::JoinHandle<()>>> =
        futures::stream::iter(0..args.nodes)
            .map(|i| connect_node(args.clone(), i, counters.clone(), stop_rx.clone()))
            .buffer_unordered(32)
            .collect()
            .await;
    let mut node_tasks = Vec::with_capacity(results.len());
    for r in results {
        node_tasks.push(r?);
    }

    // 2. Every slot listed.
    let want = u64::from(args.nodes) * u64::from(args.devices_per_node);
    loop {
        match grid_status(&http, &args).await {
            Ok((slots, _, _)) if slots >= want => break,
            Ok((slots, _, _)) if Instant::now() >= deadline => {
                bail!(
                    "only {slots} of {want} slots were listed in /status before the setup timeout"
                )
            }
            Err(e) if Instant::now() >= deadline => return Err(e.context("/status")),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let rss_before = args.broker_pid.and_then(proc_memory).map(|(rss, _)| rss);

    // 3. The clients.
    let (stop_sampler, sampler_rx) = watch::channel(false);
    let sampler = args
        .broker_pid
        .map(|pid| spawn_rss_sampler(pid, sampler_rx));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let end = measure_from + Duration::from_secs(args.duration_secs);
    let clients: Vec<_> = (0..args.clients)
        .map(|i| tokio::spawn(client_loop(args.clone(), i, measure_from, end)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let broker_cpu_0 = args.broker_pid.and_then(proc_cpu_secs);
    let self_cpu_0 = proc_cpu_secs(std::process::id());
    tokio::time::sleep_until(end.into()).await;
    let window = measure_from.elapsed().as_secs_f64();
    let broker_cpu_1 = args.broker_pid.and_then(proc_cpu_secs);
    let self_cpu_1 = proc_cpu_secs(std::process::id());

    let mut all = ClientStats::default();
    for c in clients {
        let s = c.await.context("a client task panicked")?;
        all.new_session_us.extend(s.new_session_us);
        all.command_us.extend(s.command_us);
        all.delete_us.extend(s.delete_us);
        all.sessions += s.sessions;
        all.commands += s.commands;
        for (k, n) in s.errors {
            *all.errors.entry(k).or_default() += n;
        }
        for e in s.error_samples {
            if all.error_samples.len() < 5 && !all.error_samples.contains(&e) {
                all.error_samples.push(e);
            }
        }
    }
    let _ = stop_sampler.send(true);
    let peak_sampled = match sampler {
        Some(task) => Some(task.await.unwrap_or(0)),
        None => None,
    };

    // 4. Nothing leaked: every client deleted its last session, so all must be free.
    let check_started = Instant::now();
    let check_deadline = check_started + Duration::from_secs(args.leak_wait_secs);
    let leftovers = loop {
        let (slots, busy, queued) = grid_status(&http, &args).await.unwrap_or((0, u64::MAX, 0));
        let leases = active_leases(&args).await.unwrap_or(u64::MAX);
        let driver = counters.driver_sessions.load(Ordering::Relaxed);
        let clean = busy == 0 && queued == 0 && leases == 0 && driver == 0;
        if clean || Instant::now() >= check_deadline {
            break Leftovers {
                waited_secs: (check_started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                busy_slots: busy,
                queued,
                active_leases: leases,
                driver_sessions: driver,
                slots_listed: slots,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let memory_end = args.broker_pid.and_then(proc_memory);

    // 5. The nodes leave.
    let _ = stop_nodes.send(true);
    for t in node_tasks {
        let _ = t.await;
    }

    let duration = args.duration_secs as f64;
    let per_core = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(((b - a) / window * 100.0).round() / 100.0),
        _ => None,
    };
    let leaked = leftovers.busy_slots != 0
        || leftovers.queued != 0
        || leftovers.active_leases != 0
        || leftovers.driver_sessions != 0
        || leftovers.slots_listed != want;
    let report = Report {
        nodes: args.nodes,
        devices_per_node: args.devices_per_node,
        clients: args.clients,
        commands_per_session: args.commands,
        warmup_secs: args.warmup_secs,
        duration_secs: duration,
        setup_secs: (setup_secs * 10.0).round() / 10.0,
        sessions: all.sessions,
        sessions_per_sec: (all.sessions as f64 / duration * 10.0).round() / 10.0,
        commands: all.commands,
        commands_per_sec: (all.commands as f64 / duration).round(),
        new_session: Latency::of(all.new_session_us),
        command: Latency::of(all.command_us),
        delete: Latency::of(all.delete_us),
        errors: all.errors.values().sum(),
        errors_by_kind: all.errors,
        error_samples: all.error_samples,
        leftovers,
        leaked,
        proxied_requests: counters.requests.load(Ordering::Relaxed),
        cancels_received: counters.cancels.load(Ordering::Relaxed),
        node_streams_dropped: counters.dropped.load(Ordering::Relaxed),
        node_errors_received: counters.broker_errors.load(Ordering::Relaxed),
        broker_rss_before_clients_mb: rss_before.map(mb),
        broker_rss_end_mb: memory_end.map(|(rss, _)| mb(rss)),
        broker_rss_peak_sampled_mb: peak_sampled.filter(|&p| p > 0).map(mb),
        broker_rss_hwm_mb: memory_end.map(|(_, hwm)| mb(hwm)),
        broker_cpu_cores: per_core(broker_cpu_0, broker_cpu_1),
        loadgen_cpu_cores: per_core(self_cpu_0, self_cpu_1),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.text());
    }
    Ok(())
}
