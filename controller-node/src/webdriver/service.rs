//! The WebDriver service task: keeps the slot inventory in step with the devices, and routes
//! the broker's `http_request` / `http_body` commands to one proxy task per stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use farm_proto::v1::{HttpBodyChunk, HttpRequestHead, NodeMessage, SlotInventory};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use crate::devices::{DeviceEvent, DeviceSetHandle};

use super::browser::{Chromedriver, probe_version};
use super::config::{AppiumServer, SlotEndpoint, WebDriverConfig};
use super::proxy::{BodyPiece, StreamContext, Target, error_head, new_client, run_stream};
use super::slots::{APPIUM_SLOT_PREFIX, BROWSER_SLOT_ID, BrowserSlot, SlotTable};

/// Request chunks buffered per stream before the broker's chunks wait for the slot.
const STREAM_BUFFER: usize = 16;
/// How long one request chunk may wait for a slot that does not read: longer would stall
/// every other stream and the link behind it (heartbeats included), so the stream is cancelled.
const BODY_STALL: Duration = Duration::from_secs(2);
/// Commands waiting for the service.
const INBOX: usize = 256;

/// A broker command for the WebDriver service.
#[derive(Debug)]
pub enum WebDriverCommand {
    Request(HttpRequestHead),
    Body(HttpBodyChunk),
}

/// The handle to the WebDriver service task.
#[derive(Debug, Clone)]
pub struct WebDriverHandle {
    commands: mpsc::Sender<WebDriverCommand>,
}

impl WebDriverHandle {
    /// Hands a command to the service; waits while it is busy (backpressure for bodies).
    /// Fails only when the service has stopped.
    pub async fn send(&self, command: WebDriverCommand) -> Result<(), WebDriverStopped> {
        self.commands
            .send(command)
            .await
            .map_err(|_| WebDriverStopped)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the WebDriver service has stopped")]
pub struct WebDriverStopped;

/// Starts the service. It announces its slots on `slots`, sends its answers on `messages`,
/// and ends every stream when `connection` changes (the broker forgot them) or on `shutdown`.
pub fn spawn_webdriver_service(
    config: WebDriverConfig,
    devices: DeviceSetHandle,
    messages: mpsc::Sender<NodeMessage>,
    slots: watch::Sender<SlotInventory>,
    connection: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
) -> (WebDriverHandle, tokio::task::JoinHandle<()>) {
    let (commands, inbox) = mpsc::channel(INBOX);
    let task = tokio::spawn(
        run(
            config, devices, messages, slots, inbox, connection, shutdown,
        )
        .instrument(tracing::info_span!("webdriver")),
    );
    (WebDriverHandle { commands }, task)
}

struct Stream {
    /// `None` once the last request chunk was passed on.
    body: Option<mpsc::Sender<BodyPiece>>,
    abort: AbortHandle,
    /// Whether the broker has the response head (else an aborted stream gets an error head).
    head_sent: Arc<AtomicBool>,
}

struct Service {
    config: WebDriverConfig,
    ctx: Arc<StreamContext>,
    table: SlotTable,
    browser_slot: Option<BrowserSlot>,
    chromedriver: Option<Chromedriver>,
    slots: watch::Sender<SlotInventory>,
    streams: HashMap<u64, Stream>,
    tasks: JoinSet<u64>,
    /// Which stream each task serves (to forget it when the task ends, even by abort).
    task_streams: HashMap<tokio::task::Id, u64>,
    /// Where the device slots' Appium listens (`None`: no device slots).
    appium_endpoint: Option<SlotEndpoint>,
    /// Whether that Appium answers (always, for one the node did not start).
    appium_ready: watch::Receiver<bool>,
    /// Keeps `appium_ready` open when nobody else sends on it.
    _appium_always: Option<watch::Sender<bool>>,
}

async fn run(
    config: WebDriverConfig,
    devices: DeviceSetHandle,
    messages: mpsc::Sender<NodeMessage>,
    slots: watch::Sender<SlotInventory>,
    mut inbox: mpsc::Receiver<WebDriverCommand>,
    mut connection: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = new_client();
    let mut browser_slot = None;
    let mut chromedriver = None;
    let mut supervisor = None;
    if let Some(browser) = &config.browser {
        match probe_version(&browser.chromedriver).await {
            Ok(version) => {
                tracing::info!(%version, max_sessions = browser.max_sessions, "browser slot ready");
                browser_slot = Some(BrowserSlot {
                    version,
                    max_sessions: browser.max_sessions,
                });
                let (driver, task) = Chromedriver::spawn(
                    browser.chromedriver.clone(),
                    browser.max_sessions,
                    client.clone(),
                    shutdown.clone(),
                );
                chromedriver = Some(driver);
                supervisor = Some(task);
            }
            Err(error) => tracing::error!(%error, "no browser slot: chromedriver is not usable"),
        }
    }
    let mut appium_supervisor = None;
    let mut appium_always = None;
    let (appium_endpoint, mut appium_ready) = match config.appium.as_ref().map(|a| &a.server) {
        Some(AppiumServer::Remote(endpoint)) => {
            let (always, ready) = watch::channel(true);
            appium_always = Some(always);
            (Some(endpoint.clone()), ready)
        }
        Some(AppiumServer::Start(path)) => {
            match super::appium::spawn(path.clone(), client.clone(), shutdown.clone()) {
                Ok((endpoint, ready, task)) => {
                    appium_supervisor = Some(task);
                    (Some(endpoint), ready)
                }
                Err(error) => {
                    tracing::error!(%error, "no device slots: Appium cannot start");
                    (None, watch::channel(false).1)
                }
            }
        }
        None => (None, watch::channel(false).1),
    };
    let mut service = Service {
        ctx: Arc::new(StreamContext {
            client,
            messages,
            new_session_timeout: config.new_session_timeout,
            command_timeout: config.command_timeout,
        }),
        config,
        table: SlotTable::new(),
        browser_slot,
        chromedriver,
        slots,
        streams: HashMap::new(),
        tasks: JoinSet::new(),
        task_streams: HashMap::new(),
        appium_endpoint,
        appium_ready: appium_ready.clone(),
        _appium_always: appium_always,
    };
    // Device slots follow the device set; without --appium there is nothing to follow.
    let mut changes = None;
    if service.config.appium.is_some() {
        changes = service.resubscribe(&devices).await;
    }
    service.announce();
    loop {
        tokio::select! {
            () = crate::wait_for_shutdown(&mut shutdown) => break,
            command = inbox.recv() => match command {
                Some(WebDriverCommand::Request(head)) => service.request(head),
                Some(WebDriverCommand::Body(chunk)) => service.body(chunk).await,
                None => break,
            },
            event = recv_change(&mut changes) => {
                match event {
                    Some(event) => service.table.apply(&event),
                    // Fell behind the device set: start over from a fresh snapshot.
                    None => changes = service.resubscribe(&devices).await,
                }
                service.announce();
            }
            Some(done) = service.tasks.join_next_with_id() => {
                let id = match done {
                    Ok((id, _)) => id,
                    Err(error) => error.id(),
                };
                service.forget_task(id);
            }
            // The node's own Appium came up or went down: device slots follow.
            Ok(()) = appium_ready.changed() => service.announce(),
            Ok(()) = connection.changed() => {
                let streams = service.streams.len();
                if streams > 0 {
                    tracing::info!(streams, "broker connection changed: ending every WebDriver stream");
                }
                service.abort_all();
            }
        }
    }
    service.abort_all();
    drop(service);
    if let Some(supervisor) = supervisor
        && let Err(error) = supervisor.await
    {
        tracing::error!(%error, "the chromedriver supervisor failed");
    }
    if let Some(supervisor) = appium_supervisor
        && let Err(error) = supervisor.await
    {
        tracing::error!(%error, "the Appium supervisor failed");
    }
}

async fn recv_change(changes: &mut Option<mpsc::Receiver<DeviceEvent>>) -> Option<DeviceEvent> {
    match changes {
        Some(changes) => changes.recv().await,
        None => std::future::pending().await,
    }
}

impl Service {
    /// Takes a fresh snapshot of the devices; `None` when the device set has stopped.
    async fn resubscribe(
        &mut self,
        devices: &DeviceSetHandle,
    ) -> Option<mpsc::Receiver<DeviceEvent>> {
        match devices.subscribe().await {
            Ok(subscription) => {
                self.table.reset(&subscription.snapshot);
                Some(subscription.changes)
            }
            Err(error) => {
                tracing::warn!(%error, "no device slots: the device set is gone");
                self.table.reset(&[]);
                None
            }
        }
    }

    /// Publishes the inventory if it changed (the link sends it).
    fn announce(&self) {
        // Device slots only while their Appium is there to answer.
        let appium = self
            .config
            .appium
            .as_ref()
            .filter(|_| self.appium_endpoint.is_some() && *self.appium_ready.borrow());
        let inventory = self.table.inventory(appium, self.browser_slot.as_ref());
        self.slots.send_if_modified(|current| {
            if *current == inventory {
                return false;
            }
            tracing::info!(slots = inventory.slots.len(), "WebDriver slots changed");
            *current = inventory;
            true
        });
    }

    fn request(&mut self, mut head: HttpRequestHead) {
        let stream_id = head.stream_id;
        if self.streams.contains_key(&stream_id) {
            tracing::warn!(stream_id, "the broker reused a live stream id; ignored");
            return;
        }
        let target = match self.target(&head.slot_id) {
            Ok(target) => target,
            Err(error) => {
                tracing::info!(stream_id, slot_id = %head.slot_id, %error, "request refused");
                self.send_later(error_head(stream_id, error));
                return;
            }
        };
        let (body_tx, body_rx) = mpsc::channel(STREAM_BUFFER);
        let body = if head.end {
            // The whole body came in the head: queue it as the stream's only piece.
            let whole = BodyPiece {
                data: Bytes::from(std::mem::take(&mut head.body)),
                end: true,
            };
            let _ = body_tx.try_send(whole);
            None
        } else {
            Some(body_tx)
        };
        let head_sent = Arc::new(AtomicBool::new(false));
        let span = tracing::info_span!(
            "stream",
            stream_id,
            slot_id = %head.slot_id,
            method = %head.method,
            path = %head.path
        );
        let handle = self.tasks.spawn(
            {
                let ctx = self.ctx.clone();
                let head_sent = head_sent.clone();
                async move {
                    run_stream(ctx, head, target, body_rx, head_sent).await;
                    stream_id
                }
            }
            .instrument(span),
        );
        self.task_streams.insert(handle.id(), stream_id);
        self.streams.insert(
            stream_id,
            Stream {
                body,
                abort: handle,
                head_sent,
            },
        );
    }

    fn target(&self, slot_id: &str) -> Result<Target, String> {
        if slot_id == BROWSER_SLOT_ID
            && let Some(driver) = &self.chromedriver
        {
            return Ok(Target::Browser(driver.clone()));
        }
        if let (Some(serial), Some(endpoint)) = (
            slot_id.strip_prefix(APPIUM_SLOT_PREFIX),
            &self.appium_endpoint,
        ) && let Some(ports) = self.table.ports(serial)
        {
            return Ok(Target::Appium {
                endpoint: endpoint.clone(),
                serial: serial.to_string(),
                ports,
            });
        }
        if self.config.appium.is_none() && self.chromedriver.is_none() {
            return Err(
                "this node has no WebDriver slots (start it with --appium, --appium-bin or --chromedriver)"
                    .into(),
            );
        }
        Err(format!(
            "slot {slot_id:?} is not on this node (its device may have gone offline)"
        ))
    }

    async fn body(&mut self, chunk: HttpBodyChunk) {
        let stream_id = chunk.stream_id;
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            // The stream already ended (e.g. refused or answered early): the rest is dropped.
            return;
        };
        if chunk.cancel {
            tracing::debug!(stream_id, "the broker cancelled the stream");
            stream.abort.abort();
            self.streams.remove(&stream_id);
            return;
        }
        let Some(body) = stream.body.clone() else {
            tracing::debug!(stream_id, "request chunk after the last one; ignored");
            return;
        };
        if chunk.end {
            stream.body = None;
        }
        let piece = BodyPiece {
            data: Bytes::from(chunk.data),
            end: chunk.end,
        };
        match tokio::time::timeout(BODY_STALL, body.send(piece)).await {
            Ok(Ok(())) => {}
            // The stream task ended (answered without reading everything): drop the rest.
            Ok(Err(_)) => {}
            Err(_) => {
                tracing::warn!(
                    stream_id,
                    "the slot did not read the request body for {} s; cancelling the stream",
                    BODY_STALL.as_secs()
                );
                if let Some(stream) = self.streams.remove(&stream_id) {
                    stream.abort.abort();
                    self.send_later(if stream.head_sent.load(Ordering::Acquire) {
                        super::proxy::cancel(stream_id)
                    } else {
                        let seconds = BODY_STALL.as_secs();
                        error_head(
                            stream_id,
                            format!("the slot did not read the request body for {seconds} s"),
                        )
                    });
                }
            }
        }
    }

    /// Sends from a task of its own: this task never waits for the link, which may itself be
    /// waiting to hand this task a command.
    fn send_later(&self, message: NodeMessage) {
        let messages = self.ctx.messages.clone();
        tokio::spawn(async move {
            let _ = messages.send(message).await;
        });
    }

    fn forget_task(&mut self, id: tokio::task::Id) {
        if let Some(stream_id) = self.task_streams.remove(&id)
            && self
                .streams
                .get(&stream_id)
                .is_some_and(|stream| stream.abort.id() == id)
        {
            self.streams.remove(&stream_id);
        }
    }

    fn abort_all(&mut self) {
        for stream in self.streams.values() {
            stream.abort.abort();
        }
        self.streams.clear();
    }
}
