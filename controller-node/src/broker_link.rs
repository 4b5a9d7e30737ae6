//! The broker link: one outbound `NodeService.Connect` stream carrying hello, the device
//! snapshot, device changes and heartbeats; answers broker commands; reconnects with backoff.
//!
//! Message order on every connection: `hello`, `snapshot` (every device the node reports
//! now), then `change`s and `heartbeat`s interleaved as they happen, and a `result` for
//! each broker `command`. After any disconnect the node starts over with hello + snapshot,
//! so changes made while disconnected are never lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use farm_proto::v1::{
    BrokerMessage, CommandResult, DeviceChange, DeviceSnapshot, Heartbeat, HttpBodyChunk,
    HttpRequestHead, LiveSignal, NodeDevice, NodeDeviceState, NodeHello, NodeMessage,
    SlotInventory, UsbDevice, broker_message::Msg as BrokerMsg, command::Kind,
    device_change::Change, node_message::Msg, node_service_client::NodeServiceClient,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::backoff::{Backoff, random_jitter};
use crate::config::Config;
use crate::devices::{ConnState, DeviceEvent, DeviceSetHandle, DeviceView, Subscription};
use crate::host_metrics::HeartbeatData;
use crate::webdriver::{WebDriverCommand, WebDriverHandle};

/// How many messages may wait for the broker before the link counts as stuck and reconnects.
const OUTBOUND_BUFFER: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful shutdown waits for the broker to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the link needs from the configuration.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub broker_url: String,
    pub token: String,
    pub node_id: String,
    pub site: String,
    pub hostname: String,
    pub heartbeat_interval: Duration,
}

impl From<&Config> for LinkConfig {
    fn from(config: &Config) -> Self {
        Self {
            broker_url: config.broker_url.clone(),
            token: config.token.clone(),
            node_id: config.node_id.clone(),
            site: config.site.clone(),
            hostname: config.hostname.clone(),
            heartbeat_interval: config.heartbeat_interval,
        }
    }
}

/// Why one connection to the broker ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("broker not reachable at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("broker URL {0:?} is invalid")]
    BadUrl(String),
    #[error("token is not a valid header value")]
    BadToken,
    #[error("broker stream failed: {0}")]
    Status(#[from] Status),
    #[error("broker closed the stream")]
    Closed,
    #[error("broker is not reading the stream (outbound queue full)")]
    Stuck,
    #[error("the device set stopped")]
    DevicesStopped,
}

/// The latest fencing token seen per device; a smaller one is refused.
#[derive(Debug, Default, Clone)]
pub struct LeaseTable {
    tokens: HashMap<String, u64>,
}

impl LeaseTable {
    /// Records a lease update for `device` (serial, else id); refuses a stale token.
    pub fn apply(&mut self, device: &str, fencing_token: u64) -> Result<(), String> {
        match self.tokens.get(device) {
            Some(&last) if fencing_token < last => Err(format!(
                "stale fencing token {fencing_token} for device {device}: already saw {last}"
            )),
            _ => {
                self.tokens.insert(device.to_string(), fencing_token);
                Ok(())
            }
        }
    }

    /// The latest fencing token seen for `device`.
    pub fn fencing_token(&self, device: &str) -> Option<u64> {
        self.tokens.get(device).copied()
    }
}

/// A broker command for one of the node's services (not answered with a `CommandResult`:
/// the service answers with its own messages).
#[derive(Debug)]
pub enum ServiceCommand {
    Live(LiveSignal),
    HttpRequest(HttpRequestHead),
    HttpBody(HttpBodyChunk),
}

/// What the link carries for the node's other services (live sessions, WebDriver slots).
#[derive(Debug)]
pub struct LinkServices {
    /// Live-session signals (dropped with a warning when the live service falls behind).
    pub live: mpsc::Sender<LiveSignal>,
    /// WebDriver requests and bodies (awaited: request bodies get backpressure from the slot).
    pub webdriver: WebDriverHandle,
    /// Messages from the services to the broker (sent while connected; a service's
    /// sessions end when the connection does, see `connection`).
    pub messages: mpsc::Receiver<NodeMessage>,
    /// The slots to announce after every hello, and again whenever they change.
    pub slots: watch::Receiver<SlotInventory>,
    /// The number of the current broker connection, 0 while disconnected.
    pub connection: watch::Sender<u64>,
}

/// Runs the link until `shutdown` turns true: connect, announce, stream, reconnect.
pub async fn run_link(
    config: LinkConfig,
    devices: DeviceSetHandle,
    heartbeat: watch::Receiver<HeartbeatData>,
    mut services: LinkServices,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = 0u64;
    let mut backoff = Backoff::for_broker_link();
    let mut leases = LeaseTable::default();
    loop {
        let mut connected_at = None;
        connections += 1;
        let outcome = session(
            &config,
            &devices,
            &heartbeat,
            &mut services,
            connections,
            &mut leases,
            &mut shutdown,
            &mut connected_at,
        )
        .await;
        services.connection.send_replace(0);
        let error = match outcome {
            Ok(()) => return,
            Err(LinkError::DevicesStopped) => return,
            Err(error) => error,
        };
        if let Some(connected_at) = connected_at {
            backoff.connection_ended(Instant::now().saturating_duration_since(connected_at));
        }
        let delay = match refusal_message(&error, &config.node_id) {
            Some(message) => {
                let delay = backoff.capped_delay(random_jitter());
                tracing::error!(retry_in_ms = delay.as_millis() as u64, "{message}");
                delay
            }
            None => {
                let delay = backoff.next_delay(random_jitter());
                tracing::warn!(broker = %config.broker_url, retry_in_ms = delay.as_millis() as u64, "{error}");
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = crate::wait_for_shutdown(&mut shutdown) => return,
        }
    }
}

/// A clear, actionable line for refusals that retrying soon will not fix.
pub fn refusal_message(error: &LinkError, node_id: &str) -> Option<String> {
    let LinkError::Status(status) = error else {
        return None;
    };
    let detail = status.message();
    match status.code() {
        Code::Unauthenticated => Some(format!(
            "broker refused the node token (UNAUTHENTICATED: {detail}): check --token / FARM_NODE_TOKEN, or create one with `farm-broker token create --role node --name NAME`"
        )),
        Code::PermissionDenied => Some(format!(
            "broker refused this token for a node link (PERMISSION_DENIED: {detail}): use a token created with `--role node`"
        )),
        Code::AlreadyExists => Some(format!(
            "broker already has a node connected as {node_id:?} (ALREADY_EXISTS: {detail}): give every node a unique --node-id"
        )),
        _ => None,
    }
}

/// Adds `authorization: Bearer TOKEN` to every request.
#[derive(Debug, Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    pub fn new(token: &str) -> Result<Self, LinkError> {
        format!("Bearer {token}")
            .parse()
            .map(Self)
            .map_err(|_| LinkError::BadToken)
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// One connection: returns `Ok(())` on shutdown, an error when the connection ended.
/// Sets `connected_at` once the broker accepted the stream.
#[allow(clippy::too_many_arguments)]
async fn session(
    config: &LinkConfig,
    devices: &DeviceSetHandle,
    heartbeat: &watch::Receiver<HeartbeatData>,
    services: &mut LinkServices,
    connection: u64,
    leases: &mut LeaseTable,
    shutdown: &mut watch::Receiver<bool>,
    connected_at: &mut Option<Instant>,
) -> Result<(), LinkError> {
    let endpoint = Endpoint::from_shared(config.broker_url.clone())
        .map_err(|_| LinkError::BadUrl(config.broker_url.clone()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel: Channel = tokio::select! {
        connected = endpoint.connect() => connected.map_err(|error| LinkError::Connect {
            url: config.broker_url.clone(),
            reason: error_chain(&error),
        })?,
        () = crate::wait_for_shutdown(shutdown) => return Ok(()),
    };
    let mut client = NodeServiceClient::with_interceptor(channel, BearerToken::new(&config.token)?);

    // Subscribe first: the snapshot and the changes after it come from the device-set task
    // in one step, so nothing falls between them.
    let Subscription {
        snapshot,
        mut changes,
    } = devices
        .subscribe()
        .await
        .map_err(|_| LinkError::DevicesStopped)?;
    let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_BUFFER);
    let outbound = Outbound(outbound);
    outbound.send(hello_message(config))?;
    outbound.send(snapshot_message(&snapshot))?;
    outbound.send(slots_message(services.slots.borrow_and_update().clone()))?;
    let device_count = snapshot.len();

    let response = tokio::select! {
        response = client.connect(ReceiverStream::new(outbound_rx)) => response?,
        () = crate::wait_for_shutdown(shutdown) => return Ok(()),
    };
    *connected_at = Some(Instant::now());
    services.connection.send_replace(connection);
    tracing::info!(broker = %config.broker_url, devices = device_count, "connected to the broker; sent hello and snapshot");
    let mut inbound = response.into_inner();

    let mut interval = config.heartbeat_interval;
    let mut ticker = heartbeat_ticker(interval);
    loop {
        tokio::select! {
            () = crate::wait_for_shutdown(shutdown) => {
                // End our half of the stream and give the broker a moment to end its own.
                drop(outbound);
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                tracing::info!("closed the broker link");
                return Ok(());
            }
            message = inbound.message() => match message? {
                None => return Err(LinkError::Closed),
                Some(message) => {
                    match route_service_command(message) {
                        // Straight to the service: no task in between on the command path.
                        Ok(ServiceCommand::Live(signal)) => {
                            if services.live.try_send(signal).is_err() {
                                tracing::warn!("live-session manager is not keeping up; dropped a signal");
                            }
                        }
                        Ok(ServiceCommand::HttpRequest(head)) => {
                            // Fails only while the node stops; the stream is void then.
                            let _ = services.webdriver.send(WebDriverCommand::Request(head)).await;
                        }
                        Ok(ServiceCommand::HttpBody(chunk)) => {
                            let _ = services.webdriver.send(WebDriverCommand::Body(chunk)).await;
                        }
                        Err(message) => {
                            if let Some(reply) = handle_broker_message(*message, leases, &mut interval, config) {
                                outbound.send(reply)?;
                            }
                        }
                    }
                    if interval != ticker.period() {
                        ticker = heartbeat_ticker(interval);
                    }
                }
            },
            change = changes.recv() => match change {
                Some(event) => outbound.send(change_message(&event))?,
                None => {
                    // We fell behind the device set: take a fresh snapshot.
                    let subscription = devices.subscribe().await.map_err(|_| LinkError::DevicesStopped)?;
                    changes = subscription.changes;
                    outbound.send(snapshot_message(&subscription.snapshot))?;
                }
            },
            Some(message) = services.messages.recv() => outbound.send(message)?,
            Ok(()) = services.slots.changed() => {
                outbound.send(slots_message(services.slots.borrow_and_update().clone()))?;
            }
            _ = ticker.tick() => {
                let data = heartbeat.borrow().clone();
                outbound.send(heartbeat_message(&data))?;
            }
        }
    }
}

/// An error and its sources, joined with ": " (tonic's transport error alone says only "transport error").
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

struct Outbound(mpsc::Sender<NodeMessage>);

impl Outbound {
    fn send(&self, message: NodeMessage) -> Result<(), LinkError> {
        self.0.try_send(message).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => LinkError::Stuck,
            mpsc::error::TrySendError::Closed(_) => LinkError::Closed,
        })
    }
}

fn heartbeat_ticker(period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Handles one broker message; returns the reply to send, if any.
fn handle_broker_message(
    message: BrokerMessage,
    leases: &mut LeaseTable,
    heartbeat_interval: &mut Duration,
    config: &LinkConfig,
) -> Option<NodeMessage> {
    match message.msg? {
        BrokerMsg::HelloAck(ack) => {
            let expected = Duration::from_millis(u64::from(ack.heartbeat_interval_ms));
            // Never slower than the broker expects, never faster than 100 ms.
            if !expected.is_zero() && expected < config.heartbeat_interval {
                *heartbeat_interval = expected.max(Duration::from_millis(100));
            } else {
                *heartbeat_interval = config.heartbeat_interval;
            }
            tracing::info!(
                acked_node_id = %ack.node_id,
                heartbeat_ms = heartbeat_interval.as_millis() as u64,
                "broker accepted the node"
            );
            None
        }
        BrokerMsg::Error(error) => {
            tracing::warn!(message = %error.message, "broker refused something the node sent");
            None
        }
        BrokerMsg::Command(command) => {
            let outcome = match command.kind {
                Some(Kind::LeaseUpdate(update)) => {
                    let device = if update.device_serial.is_empty() {
                        &update.device_id
                    } else {
                        &update.device_serial
                    };
                    let outcome = leases.apply(device, update.fencing_token);
                    tracing::info!(
                        serial = %update.device_serial,
                        device_id = %update.device_id,
                        active = update.active,
                        fencing_token = update.fencing_token,
                        holder = %update.holder,
                        accepted = outcome.is_ok(),
                        "lease update"
                    );
                    outcome
                }
                // Routed to the services before this point.
                Some(Kind::Live(_) | Kind::HttpRequest(_) | Kind::HttpBody(_)) | None => {
                    Err("unsupported command (this node is older than the broker?)".to_string())
                }
            };
            Some(NodeMessage {
                msg: Some(Msg::Result(CommandResult {
                    id: command.id,
                    ok: outcome.is_ok(),
                    error: outcome.err().unwrap_or_default(),
                })),
            })
        }
    }
}

/// Takes out the commands that belong to a service; gives every other message back.
fn route_service_command(message: BrokerMessage) -> Result<ServiceCommand, Box<BrokerMessage>> {
    match message.msg {
        Some(BrokerMsg::Command(command)) => match command.kind {
            Some(Kind::Live(signal)) => Ok(ServiceCommand::Live(signal)),
            Some(Kind::HttpRequest(head)) => Ok(ServiceCommand::HttpRequest(head)),
            Some(Kind::HttpBody(chunk)) => Ok(ServiceCommand::HttpBody(chunk)),
            kind => Err(Box::new(BrokerMessage {
                msg: Some(BrokerMsg::Command(farm_proto::v1::Command {
                    id: command.id,
                    kind,
                })),
            })),
        },
        msg => Err(Box::new(BrokerMessage { msg })),
    }
}

// ---------------------------------------------------------------- wire conversions

fn slots_message(slots: SlotInventory) -> NodeMessage {
    NodeMessage {
        msg: Some(Msg::Slots(slots)),
    }
}

/// The first message of every connection.
pub fn hello_message(config: &LinkConfig) -> NodeMessage {
    NodeMessage {
        msg: Some(Msg::Hello(NodeHello {
            node_id: config.node_id.clone(),
            site: config.site.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: config.hostname.clone(),
            features: vec![farm_proto::FEATURE_HTTP_WHOLE.to_string()],
        })),
    }
}

/// A full snapshot.
pub fn snapshot_message(devices: &[DeviceView]) -> NodeMessage {
    NodeMessage {
        msg: Some(Msg::Snapshot(DeviceSnapshot {
            devices: devices.iter().map(node_device).collect(),
        })),
    }
}

/// One device change.
pub fn change_message(event: &DeviceEvent) -> NodeMessage {
    let change = match event {
        DeviceEvent::Upsert(view) => Change::Upsert(node_device(view)),
        DeviceEvent::Removed(serial) => Change::Removed(serial.clone()),
    };
    NodeMessage {
        msg: Some(Msg::Change(DeviceChange {
            change: Some(change),
        })),
    }
}

/// A heartbeat with host metrics and USB devices.
pub fn heartbeat_message(data: &HeartbeatData) -> NodeMessage {
    let host = &data.host;
    NodeMessage {
        msg: Some(Msg::Heartbeat(Heartbeat {
            host: Some(farm_proto::v1::HostMetrics {
                cpu_percent: host.cpu_percent,
                memory_used_bytes: host.memory_used_bytes,
                memory_total_bytes: host.memory_total_bytes,
                disk_free_bytes: host.disk_free_bytes,
                disk_total_bytes: host.disk_total_bytes,
                load_average_1m: host.load_average_1m,
            }),
            usb: data
                .usb
                .devices
                .iter()
                .map(|device| UsbDevice {
                    vendor_id: u32::from(device.vendor_id),
                    product_id: u32::from(device.product_id),
                    bus: u32::from(device.bus),
                    address: u32::from(device.address),
                    class_code: u32::from(device.class_code),
                    camera: device.camera,
                    description: device.description.clone(),
                })
                .collect(),
            usb_status: data.usb.status.clone(),
        })),
    }
}

fn node_device(view: &DeviceView) -> NodeDevice {
    let state = match view.state {
        ConnState::Online => NodeDeviceState::Online,
        ConnState::Offline => NodeDeviceState::Offline,
        ConnState::Unauthorized => NodeDeviceState::Unauthorized,
    };
    let props = &view.props;
    NodeDevice {
        serial: view.serial.clone(),
        hardware_serial: props.hardware_serial.clone(),
        state: state as i32,
        model: props.model.clone(),
        manufacturer: props.manufacturer.clone(),
        android_version: props.android_version.clone(),
        sdk: props.sdk,
        screen_width: props.screen_width,
        screen_height: props.screen_height,
        density: props.density,
        battery_level: props.battery_level,
        platform: "android".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_props::DeviceProps;
    use farm_proto::v1::{Command, HelloAck, LeaseUpdate, NodeError};

    fn config() -> LinkConfig {
        LinkConfig {
            broker_url: "http://127.0.0.1:1".into(),
            token: "t".into(),
            node_id: "n1".into(),
            site: "s".into(),
            hostname: "h".into(),
            heartbeat_interval: Duration::from_secs(1),
        }
    }

    fn lease_command(id: u64, serial: &str, token: u64) -> BrokerMessage {
        BrokerMessage {
            msg: Some(BrokerMsg::Command(Command {
                id,
                kind: Some(Kind::LeaseUpdate(LeaseUpdate {
                    device_serial: serial.into(),
                    device_id: format!("id-{serial}"),
                    active: true,
                    fencing_token: token,
                    holder: "ci".into(),
                })),
            })),
        }
    }

    fn result_of(reply: Option<NodeMessage>) -> CommandResult {
        match reply.and_then(|m| m.msg) {
            Some(Msg::Result(result)) => result,
            other => panic!("expected a result, got {other:?}"),
        }
    }

    #[test]
    fn lease_updates_keep_the_latest_fencing_token_and_refuse_stale_ones() {
        let mut leases = LeaseTable::default();
        let mut interval = Duration::from_secs(1);
        let reply = handle_broker_message(
            lease_command(1, "A", 5),
            &mut leases,
            &mut interval,
            &config(),
        );
        assert_eq!(
            result_of(reply),
            CommandResult {
                id: 1,
                ok: true,
                error: String::new()
            }
        );
        let reply = handle_broker_message(
            lease_command(2, "A", 5),
            &mut leases,
            &mut interval,
            &config(),
        );
        assert!(result_of(reply).ok, "an equal token is the same lease");
        let reply = handle_broker_message(
            lease_command(3, "A", 4),
            &mut leases,
            &mut interval,
            &config(),
        );
        let result = result_of(reply);
        assert!(!result.ok && result.error.contains("stale"), "{result:?}");
        assert_eq!(leases.fencing_token("A"), Some(5));
        let reply = handle_broker_message(
            lease_command(4, "B", 1),
            &mut leases,
            &mut interval,
            &config(),
        );
        assert!(result_of(reply).ok);
    }

    #[test]
    fn unknown_and_empty_broker_messages_do_not_panic() {
        let mut leases = LeaseTable::default();
        let mut interval = Duration::from_secs(1);
        assert!(
            handle_broker_message(
                BrokerMessage { msg: None },
                &mut leases,
                &mut interval,
                &config()
            )
            .is_none()
        );
        let empty = BrokerMessage {
            msg: Some(BrokerMsg::Command(Command { id: 9, kind: None })),
        };
        let result = result_of(handle_broker_message(
            empty,
            &mut leases,
            &mut interval,
            &config(),
        ));
        assert_eq!((result.id, result.ok), (9, false));
        let error = BrokerMessage {
            msg: Some(BrokerMsg::Error(NodeError {
                message: "x".into(),
            })),
        };
        assert!(handle_broker_message(error, &mut leases, &mut interval, &config()).is_none());
    }

    #[test]
    fn hello_ack_can_only_speed_heartbeats_up() {
        let mut leases = LeaseTable::default();
        let mut interval = Duration::from_secs(1);
        let ack = |ms| BrokerMessage {
            msg: Some(BrokerMsg::HelloAck(HelloAck {
                node_id: "n1".into(),
                heartbeat_interval_ms: ms,
            })),
        };
        handle_broker_message(ack(500), &mut leases, &mut interval, &config());
        assert_eq!(interval, Duration::from_millis(500));
        handle_broker_message(ack(5000), &mut leases, &mut interval, &config());
        assert_eq!(interval, Duration::from_secs(1));
        handle_broker_message(ack(1), &mut leases, &mut interval, &config());
        assert_eq!(interval, Duration::from_millis(100));
        handle_broker_message(ack(0), &mut leases, &mut interval, &config());
        assert_eq!(interval, Duration::from_secs(1));
    }

    #[test]
    fn refusals_get_actionable_messages() {
        let message = |code| refusal_message(&LinkError::Status(Status::new(code, "nope")), "n1");
        assert!(message(Code::Unauthenticated).is_some_and(|m| m.contains("--token")));
        assert!(message(Code::PermissionDenied).is_some_and(|m| m.contains("--role node")));
        assert!(message(Code::AlreadyExists).is_some_and(|m| m.contains("--node-id")));
        assert!(message(Code::Unavailable).is_none());
        assert!(refusal_message(&LinkError::Closed, "n1").is_none());
    }

    #[test]
    fn devices_convert_to_the_wire() {
        let view = DeviceView {
            serial: "emulator-5554".into(),
            state: ConnState::Unauthorized,
            props: DeviceProps::unknown(),
        };
        let device = node_device(&view);
        assert_eq!(device.state, NodeDeviceState::Unauthorized as i32);
        assert_eq!(device.battery_level, -1);
        assert_eq!(device.platform, "android");
        match change_message(&DeviceEvent::Removed("x".into())).msg {
            Some(Msg::Change(DeviceChange {
                change: Some(Change::Removed(serial)),
            })) => assert_eq!(serial, "x"),
            other => panic!("{other:?}"),
        }
    }
}
