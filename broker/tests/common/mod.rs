//! In-process broker for tests: a temp SQLite store, a listener on 127.0.0.1:0, tokens, and a fake node.
#![allow(dead_code)]

use std::time::Duration;

use farm_broker::auth::Authenticator;
use farm_broker::domain::{Role, now_millis};
use farm_broker::fleet::FleetConfig;
use farm_broker::live::LiveConfig;
use farm_broker::store::Store;
use farm_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;

pub struct TestBroker {
    pub url: String,
    pub db_url: String,
    pub admin: String,
    pub alice: String,
    pub bob: String,
    pub node_token: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

pub fn fast_config() -> FleetConfig {
    FleetConfig {
        tick: Duration::from_millis(20),
        heartbeat_timeout: Duration::from_millis(1500),
        reconnect_grace: Duration::from_millis(500),
        ..FleetConfig::default()
    }
}

pub async fn start() -> TestBroker {
    start_with(fast_config()).await
}

pub async fn start_with(config: FleetConfig) -> TestBroker {
    start_full(config, LiveConfig::default()).await
}

pub async fn start_full(config: FleetConfig, live: LiveConfig) -> TestBroker {
    start_all(config, live, farm_broker::grid::GridConfig::default()).await
}

/// A broker with every part's settings given (fleet, live, grid).
pub async fn start_all(
    config: FleetConfig,
    live: LiveConfig,
    grid: farm_broker::grid::GridConfig,
) -> TestBroker {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = Store::sqlite_url(dir.path());
    let store = Store::open(&db_url).await.expect("store opens");
    let now = now_millis();
    let admin = Authenticator::create(&store, Role::Admin, "admin", now)
        .await
        .expect("token");
    let alice = Authenticator::create(&store, Role::User, "alice", now)
        .await
        .expect("token");
    let bob = Authenticator::create(&store, Role::User, "bob", now)
        .await
        .expect("token");
    let node_token = Authenticator::create(&store, Role::Node, "node-1", now)
        .await
        .expect("token");
    store.close().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let db = db_url.clone();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(e) =
            farm_broker::app::serve_with(listener, &db, (config, live, grid), shutdown).await
        {
            panic!("broker failed: {e}");
        }
    });
    TestBroker {
        url,
        db_url,
        admin,
        alice,
        bob,
        node_token,
        shutdown: Some(tx),
        task,
        _dir: dir,
    }
}

#[derive(Clone)]
pub struct Bearer(pub MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub fn bearer(token: &str) -> Bearer {
    Bearer(format!("Bearer {token}").parse().expect("ascii token"))
}

pub async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

pub type Devices = pb::device_service_client::DeviceServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;
pub type Reservations = pb::reservation_service_client::ReservationServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;

pub async fn clients(url: &str, token: &str) -> (Devices, Reservations) {
    let ch = channel(url).await;
    (
        pb::device_service_client::DeviceServiceClient::with_interceptor(ch.clone(), bearer(token)),
        pb::reservation_service_client::ReservationServiceClient::with_interceptor(
            ch,
            bearer(token),
        ),
    )
}

pub fn device(serial: &str, model: &str) -> pb::NodeDevice {
    pb::NodeDevice {
        serial: serial.into(),
        hardware_serial: format!("HW-{serial}"),
        state: pb::NodeDeviceState::Online as i32,
        model: model.into(),
        manufacturer: "Google".into(),
        android_version: "14".into(),
        sdk: 34,
        screen_width: 1080,
        screen_height: 2400,
        density: 420,
        battery_level: 90,
        platform: "android".into(),
    }
}

/// A node speaking the link protocol by hand: the test decides every message.
pub struct FakeNode {
    pub tx: mpsc::Sender<pb::NodeMessage>,
    pub inbound: tonic::Streaming<pb::BrokerMessage>,
}

pub fn hello(node_id: &str, site: &str) -> pb::NodeMessage {
    pb::NodeMessage {
        msg: Some(pb::node_message::Msg::Hello(pb::NodeHello {
            node_id: node_id.into(),
            site: site.into(),
            version: "test".into(),
            hostname: "localhost".into(),
            features: vec![farm_proto::FEATURE_HTTP_WHOLE.into()],
        })),
    }
}

pub fn snapshot(devices: Vec<pb::NodeDevice>) -> pb::NodeMessage {
    pb::NodeMessage {
        msg: Some(pb::node_message::Msg::Snapshot(pb::DeviceSnapshot {
            devices,
        })),
    }
}

pub fn heartbeat() -> pb::NodeMessage {
    pb::NodeMessage {
        msg: Some(pb::node_message::Msg::Heartbeat(pb::Heartbeat::default())),
    }
}

/// Opens a node stream and sends `first` messages; returns once the broker answered (or refused).
pub async fn connect_node(
    url: &str,
    token: &str,
    first: Vec<pb::NodeMessage>,
) -> Result<FakeNode, tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    for m in first {
        tx.send(m).await.expect("queue");
    }
    let mut client = pb::node_service_client::NodeServiceClient::with_interceptor(
        channel(url).await,
        bearer(token),
    );
    let inbound = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(FakeNode { tx, inbound })
}

impl FakeNode {
    /// Next message from the broker, within 5 s.
    pub async fn next(&mut self) -> Option<pb::BrokerMessage> {
        tokio::time::timeout(Duration::from_secs(5), self.inbound.message())
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten()
    }

    /// Keeps sending heartbeats in the background until the returned guard drops.
    pub fn keep_alive(&self) -> tokio::task::JoinHandle<()> {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while tx.send(heartbeat()).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    }
}

/// Polls `f` until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a broker with one node "n1" at site "lab" holding the given devices (kept alive).
pub async fn broker_with_devices(
    devices: Vec<pb::NodeDevice>,
) -> (TestBroker, FakeNode, tokio::task::JoinHandle<()>) {
    let b = start().await;
    let n = devices.len();
    let mut node = connect_node(
        &b.url,
        &b.node_token,
        vec![hello("n1", "lab"), snapshot(devices)],
    )
    .await
    .expect("node accepted");
    assert!(node.next().await.is_some(), "hello_ack");
    let alive = node.keep_alive();
    let (mut d, _) = clients(&b.url, &b.admin).await;
    eventually(Duration::from_secs(5), "devices registered", || {
        let mut d = d.clone();
        async move {
            let list = d
                .list_devices(pb::ListDevicesRequest::default())
                .await
                .ok()?
                .into_inner();
            (list.devices.len() == n).then_some(())
        }
    })
    .await;
    let _ = &mut d;
    (b, node, alive)
}

/// GET a broker HTTP path with an optional token; returns (status, body).
pub async fn http_get(url: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("http request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Waits until the broker reports `n` queued reservations in /metrics.
pub async fn wait_for_queue(b: &TestBroker, n: usize) {
    let line = format!("farm_reservations_waiting {n}");
    eventually(Duration::from_secs(5), &line, || async {
        let (_, body) = http_get(&b.url, "/metrics", Some(&b.admin)).await;
        body.lines().any(|l| l == line).then_some(())
    })
    .await;
}
