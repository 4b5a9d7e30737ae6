//! The broker link against an in-process NodeService server and a fake adb server on
//! loopback: hello, snapshot, changes, heartbeats, commands, reconnect, refusal, shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use farm_node::Config;
use farm_proto::v1::node_service_server::{NodeService, NodeServiceServer};
use farm_proto::v1::{
    BrokerMessage, Command, HelloAck, LeaseUpdate, NodeDevice, NodeDeviceState, NodeMessage,
    broker_message::Msg as BrokerMsg, command::Kind, device_change::Change, node_message::Msg,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const TOKEN: &str = "secret-node-token";
const DEADLINE: Duration = Duration::from_secs(10);

/// One accepted `Connect` stream, as the test sees it.
struct Connection {
    from_node: mpsc::UnboundedReceiver<NodeMessage>,
    to_node: mpsc::Sender<Result<BrokerMessage, Status>>,
}

struct FakeBroker {
    connections: mpsc::UnboundedSender<Connection>,
    refused: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl NodeService for FakeBroker {
    type ConnectStream = ReceiverStream<Result<BrokerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unauthenticated("unknown token"));
        }
        let mut inbound = request.into_inner();
        let (from_node_tx, from_node) = mpsc::unbounded_channel();
        let (to_node, to_node_rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if from_node_tx.send(message).is_err() {
                    break;
                }
            }
        });
        let _ = self.connections.send(Connection { from_node, to_node });
        Ok(Response::new(ReceiverStream::new(to_node_rx)))
    }
}

/// Starts the fake broker on 127.0.0.1:0.
async fn start_broker() -> Result<(
    String,
    mpsc::UnboundedReceiver<Connection>,
    Arc<AtomicUsize>,
)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (connections, accepted) = mpsc::unbounded_channel();
    let refused = Arc::new(AtomicUsize::new(0));
    let broker = FakeBroker {
        connections,
        refused: refused.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(broker))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok((url, accepted, refused))
}

/// A fake adb server answering `host:track-devices` with whatever list `lists` holds,
/// re-sending it whenever it changes (as the real server does).
async fn start_fake_adb(lists: watch::Receiver<String>) -> Result<SocketAddrV4> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let std::net::SocketAddr::V4(addr) = listener.local_addr()? else {
        bail!("bound an IPv6 address");
    };
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut lists = lists.clone();
            tokio::spawn(async move {
                let mut length = [0u8; 4];
                socket.read_exact(&mut length).await?;
                let length = usize::from_str_radix(std::str::from_utf8(&length)?, 16)?;
                let mut request = vec![0u8; length];
                socket.read_exact(&mut request).await?;
                if request != b"host:track-devices" {
                    socket.write_all(b"FAIL0007unknown").await?;
                    return anyhow::Ok(());
                }
                socket.write_all(b"OKAY").await?;
                loop {
                    let list = lists.borrow_and_update().clone();
                    socket
                        .write_all(format!("{:04x}{list}", list.len()).as_bytes())
                        .await?;
                    lists.changed().await?;
                }
            });
        }
    });
    Ok(addr)
}

/// An address where nothing listens (bound, then released).
async fn closed_port() -> Result<SocketAddrV4> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let std::net::SocketAddr::V4(addr) = listener.local_addr()? else {
        bail!("bound an IPv6 address");
    };
    Ok(addr)
}

fn config(broker_url: &str, token: &str, adb_server: SocketAddrV4) -> Config {
    Config {
        broker_url: broker_url.to_string(),
        token: token.to_string(),
        site: "test-site".to_string(),
        node_id: "node-under-test".to_string(),
        hostname: "test-host".to_string(),
        adb_server,
        heartbeat_interval: Duration::from_millis(100),
        device_props_timeout: Duration::from_secs(2),
        capture: Default::default(),
        webrtc_ip: None,
        webrtc_ports: None,
        webdriver: Default::default(),
        worker_threads: 1,
    }
}

/// Runs the node in-process; send on the returned sender to stop it.
fn start_node(
    config: Config,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), farm_node::NodeError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let node = tokio::spawn(farm_node::run(config, async {
        let _ = stopped.await;
    }));
    (stop, node)
}

async fn next_connection(accepted: &mut mpsc::UnboundedReceiver<Connection>) -> Result<Connection> {
    tokio::time::timeout(DEADLINE, accepted.recv())
        .await
        .context("no connection from the node before the deadline")?
        .context("broker stopped")
}

async fn next_message(connection: &mut Connection) -> Result<Msg> {
    let message = tokio::time::timeout(DEADLINE, connection.from_node.recv())
        .await
        .context("no message from the node before the deadline")?
        .context("the node's stream ended")?;
    message.msg.context("a message without content")
}

/// The devices the broker would believe in, built from one connection's snapshot and changes.
#[derive(Default)]
struct BrokerView {
    devices: BTreeMap<String, NodeDevice>,
    heartbeats: usize,
    results: Vec<farm_proto::v1::CommandResult>,
}

impl BrokerView {
    fn apply(&mut self, message: Msg) -> Result<()> {
        match message {
            Msg::Hello(hello) => bail!("a second hello on one stream: {hello:?}"),
            Msg::Snapshot(snapshot) => {
                self.devices = snapshot
                    .devices
                    .into_iter()
                    .map(|device| (device.serial.clone(), device))
                    .collect();
            }
            Msg::Change(change) => match change.change.context("an empty change")? {
                Change::Upsert(device) => {
                    self.devices.insert(device.serial.clone(), device);
                }
                Change::Removed(serial) => {
                    self.devices.remove(&serial);
                }
            },
            Msg::Heartbeat(heartbeat) => {
                let host = heartbeat.host.context("a heartbeat without host metrics")?;
                if host.memory_total_bytes > 0 && host.memory_used_bytes > host.memory_total_bytes {
                    bail!("implausible memory figures: {host:?}");
                }
                self.heartbeats += 1;
            }
            Msg::Result(result) => self.results.push(result),
            // Slots are announced after the snapshot; this node has none configured.
            Msg::Slots(slots) => {
                if !slots.slots.is_empty() {
                    bail!("slots from a node without any configured: {slots:?}");
                }
            }
            other @ (Msg::Live(_) | Msg::HttpResponse(_) | Msg::HttpBody(_)) => {
                bail!("unsolicited service message {other:?}")
            }
        }
        Ok(())
    }

    fn states(&self) -> Vec<(String, i32)> {
        self.devices
            .values()
            .map(|device| (device.serial.clone(), device.state))
            .collect()
    }
}

/// Checks the opening of a connection (hello, then snapshot) and returns the view so far.
async fn expect_hello_and_snapshot(connection: &mut Connection) -> Result<BrokerView> {
    match next_message(connection).await? {
        Msg::Hello(hello) => {
            assert_eq!(hello.node_id, "node-under-test");
            assert_eq!(hello.site, "test-site");
            assert_eq!(hello.hostname, "test-host");
            assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
        }
        other => bail!("first message is not hello: {other:?}"),
    }
    let mut view = BrokerView::default();
    match next_message(connection).await? {
        snapshot @ Msg::Snapshot(_) => view.apply(snapshot)?,
        other => bail!("second message is not a snapshot: {other:?}"),
    }
    Ok(view)
}

/// Reads messages until `done(view)` holds, or fails at the deadline.
async fn read_until(
    connection: &mut Connection,
    view: &mut BrokerView,
    what: &str,
    done: impl Fn(&BrokerView) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(view) {
        let message = tokio::time::timeout_at(deadline, next_message(connection))
            .await
            .with_context(|| format!("deadline passed waiting for {what}"))??;
        view.apply(message)?;
    }
    Ok(())
}

const UNAUTHORIZED: i32 = NodeDeviceState::Unauthorized as i32;
const OFFLINE: i32 = NodeDeviceState::Offline as i32;

#[tokio::test]
async fn announces_streams_answers_and_reannounces_after_reconnect() -> Result<()> {
    let (lists_tx, lists) = watch::channel("emulator-5554\tunauthorized\n".to_string());
    let adb = start_fake_adb(lists).await?;
    let (url, mut accepted, _) = start_broker().await?;
    let (stop, node) = start_node(config(&url, TOKEN, adb));

    // First connection: hello, snapshot, the device, heartbeats.
    let mut first = next_connection(&mut accepted).await?;
    let mut view = expect_hello_and_snapshot(&mut first).await?;
    read_until(&mut first, &mut view, "the unauthorized device", |v| {
        v.states() == [("emulator-5554".to_string(), UNAUTHORIZED)]
    })
    .await?;
    let unauthorized = &view.devices["emulator-5554"];
    assert_eq!(
        (
            unauthorized.battery_level,
            unauthorized.hardware_serial.as_str()
        ),
        (-1, "")
    );
    let seen = view.heartbeats;
    read_until(&mut first, &mut view, "two more heartbeats", |v| {
        v.heartbeats >= seen + 2
    })
    .await?;

    // Commands: a lease update is answered ok; a stale fencing token is refused.
    first
        .to_node
        .send(Ok(BrokerMessage {
            msg: Some(BrokerMsg::HelloAck(HelloAck {
                node_id: "node-under-test".into(),
                heartbeat_interval_ms: 1000,
            })),
        }))
        .await?;
    for (id, token) in [(7, 3), (8, 2)] {
        first
            .to_node
            .send(Ok(BrokerMessage {
                msg: Some(BrokerMsg::Command(Command {
                    id,
                    kind: Some(Kind::LeaseUpdate(LeaseUpdate {
                        device_serial: "emulator-5554".into(),
                        device_id: "emulator-5554".into(),
                        active: true,
                        fencing_token: token,
                        holder: "ci".into(),
                    })),
                })),
            }))
            .await?;
    }
    read_until(&mut first, &mut view, "two command results", |v| {
        v.results.len() >= 2
    })
    .await?;
    assert_eq!((view.results[0].id, view.results[0].ok), (7, true));
    assert_eq!((view.results[1].id, view.results[1].ok), (8, false));
    assert!(
        view.results[1].error.contains("stale"),
        "{:?}",
        view.results[1]
    );

    // A change while connected arrives as a change.
    lists_tx.send_replace("emulator-5554\tunauthorized\n127.0.0.1:5557\toffline\n".into());
    read_until(&mut first, &mut view, "the offline device", |v| {
        v.devices.len() == 2
    })
    .await?;

    // The broker drops the stream; the device list changes while the node is away.
    drop(first);
    lists_tx.send_replace("127.0.0.1:5557\toffline\n".into());

    // Second connection: hello and snapshot again, and the broker's view converges on the truth.
    let mut second = next_connection(&mut accepted).await?;
    let mut view = expect_hello_and_snapshot(&mut second).await?;
    read_until(
        &mut second,
        &mut view,
        "the device list after reconnect",
        |v| v.states() == [("127.0.0.1:5557".to_string(), OFFLINE)],
    )
    .await?;
    read_until(&mut second, &mut view, "heartbeats after reconnect", |v| {
        v.heartbeats >= 2
    })
    .await?;

    // Graceful shutdown: the node ends its stream and returns.
    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, node)
        .await
        .context("the node did not stop before the deadline")???;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::timeout_at(deadline, second.from_node.recv())
        .await
        .context("the node's stream did not end after shutdown")?
        .is_some()
    {}
    Ok(())
}

#[tokio::test]
async fn without_an_adb_server_reports_no_devices_and_keeps_heartbeating() -> Result<()> {
    let (url, mut accepted, _) = start_broker().await?;
    let (stop, node) = start_node(config(&url, TOKEN, closed_port().await?));
    let mut connection = next_connection(&mut accepted).await?;
    let mut view = expect_hello_and_snapshot(&mut connection).await?;
    read_until(&mut connection, &mut view, "three heartbeats", |v| {
        v.heartbeats >= 3
    })
    .await?;
    assert!(view.devices.is_empty());
    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, node).await???;
    Ok(())
}

#[tokio::test]
async fn a_refused_token_is_retried_and_the_node_keeps_running() -> Result<()> {
    let (url, _accepted, refused) = start_broker().await?;
    let (stop, node) = start_node(config(&url, "wrong-token", closed_port().await?));
    // Poll with a deadline: the first refusal is immediate, the retry comes at the cap (<= 3 s).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while refused.load(Ordering::SeqCst) < 2 {
        if tokio::time::Instant::now() > deadline {
            bail!("the node did not retry after UNAUTHENTICATED");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!node.is_finished());
    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, node).await???;
    Ok(())
}
