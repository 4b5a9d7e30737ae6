//! One simulated device as a task owning its listener, connections and records, and its handle.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::adb_host::{self, Wanted};
use crate::adb_session::SessionEvent;
use crate::capture::CaptureInput;
use crate::connection::{ConnectionId, serve_connection};
use crate::device_context::DeviceContext;
pub use crate::device_events::{AppSnapshot, DeviceEvent};
use crate::device_profile::DeviceProfile;
use crate::error::SimError;
use crate::input_command::InputEvent;
use crate::launcher_app::{LauncherApp, Layout};

/// How long replug, authorize and unauthorize wait for the adb server to agree.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a device tries to attach when it starts (servers can be slow on busy machines).
const INITIAL_ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// How devices make themselves known to the adb server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// `host:emulator:PORT`: shows as `emulator-(PORT-1)`, gone as soon as the socket closes.
    Emulator,
    /// `host:connect:127.0.0.1:PORT`: shows as `127.0.0.1:PORT`.
    Connect,
}

impl AttachMode {
    /// The serial the adb server lists for a device listening on `port`.
    pub fn adb_serial(self, port: u16) -> String {
        match self {
            AttachMode::Emulator => format!("emulator-{}", port.saturating_sub(1)),
            AttachMode::Connect => format!("127.0.0.1:{port}"),
        }
    }
}

/// A device's state as the control API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    Attached,
    Unplugged,
    Unauthorized,
    Offline,
}

/// A snapshot of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    pub serial: String,
    pub adb_serial: String,
    pub port: u16,
    pub model: String,
    pub android_version: String,
    pub state: DeviceState,
}

enum Command {
    Info(oneshot::Sender<DeviceInfo>),
    Unplug(oneshot::Sender<()>),
    Replug(oneshot::Sender<Result<(), SimError>>),
    SetAuthorized(bool, oneshot::Sender<Result<(), SimError>>),
    Input(oneshot::Sender<Vec<InputEvent>>),
    Commands(oneshot::Sender<Vec<String>>),
    App(oneshot::Sender<AppSnapshot>),
    Layout(oneshot::Sender<Layout>),
}

/// Talks to a device's task. Cheap to clone; the task stops when every handle is dropped.
#[derive(Clone)]
pub struct DeviceHandle {
    profile: Arc<DeviceProfile>,
    adb_serial: String,
    port: u16,
    commands: mpsc::Sender<Command>,
}

impl DeviceHandle {
    /// Starts a device serving on `listener` and announces it to the adb server at once.
    pub fn spawn(
        profile: DeviceProfile,
        listener: TcpListener,
        adb_server: SocketAddr,
        attach: AttachMode,
        fps: u32,
    ) -> Result<Self, SimError> {
        let port = listener
            .local_addr()
            .map_err(SimError::io("reading the device listener's address"))?
            .port();
        let profile = Arc::new(profile);
        let (commands, command_rx) = mpsc::channel(16);
        let (events_tx, events_rx) = mpsc::unbounded_channel::<DeviceEvent>();
        let app = LauncherApp::new(profile.screen_width, profile.screen_height);
        let task = DeviceTask {
            context: Arc::new(DeviceContext::new(profile.clone(), fps)),
            app: Arc::new(app),
            captures: HashMap::new(),
            profile: profile.clone(),
            adb_server,
            attach,
            port,
            adb_serial: attach.adb_serial(port),
            authorized: true,
            online: HashSet::new(),
            next_connection: 0,
            inputs: Vec::new(),
            commands: Vec::new(),
            events_tx,
        };
        let span = tracing::info_span!("device", serial = %profile.serial, port);
        tokio::spawn(task.run(listener, command_rx, events_rx).instrument(span));
        Ok(Self {
            adb_serial: attach.adb_serial(port),
            profile,
            port,
            commands,
        })
    }

    pub fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    /// `ro.serialno`.
    pub fn serial(&self) -> &str {
        &self.profile.serial
    }

    /// The serial the adb server lists this device under.
    pub fn adb_serial(&self) -> &str {
        &self.adb_serial
    }

    /// The device's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SimError> {
        let gone = || SimError::DeviceGone(self.profile.serial.clone());
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    pub async fn info(&self) -> Result<DeviceInfo, SimError> {
        self.ask(Command::Info).await
    }

    /// Closes the transport and stops listening: the adb server drops the device.
    pub async fn unplug(&self) -> Result<(), SimError> {
        self.ask(Command::Unplug).await
    }

    /// Listens again and re-attaches; returns once adb lists the device as `device`.
    pub async fn replug(&self) -> Result<(), SimError> {
        self.ask(Command::Replug).await?
    }

    /// Reconnects answering CNXN with AUTH only; returns once adb shows `unauthorized`.
    pub async fn unauthorize(&self) -> Result<(), SimError> {
        self.ask(|reply| Command::SetAuthorized(false, reply))
            .await?
    }

    /// Reconnects normally; returns once adb shows `device`.
    pub async fn authorize(&self) -> Result<(), SimError> {
        self.ask(|reply| Command::SetAuthorized(true, reply))
            .await?
    }

    /// Input events recorded so far, oldest first.
    pub async fn input_events(&self) -> Result<Vec<InputEvent>, SimError> {
        self.ask(Command::Input).await
    }

    /// Shell and exec commands received so far, oldest first.
    pub async fn shell_commands(&self) -> Result<Vec<String>, SimError> {
        self.ask(Command::Commands).await
    }

    /// The launcher app's state.
    pub async fn app(&self) -> Result<AppSnapshot, SimError> {
        self.ask(Command::App).await
    }

    /// Where the app's buttons, text field and list are now.
    pub async fn app_layout(&self) -> Result<Layout, SimError> {
        self.ask(Command::Layout).await
    }
}

struct DeviceTask {
    context: Arc<DeviceContext>,
    /// The app; captures get a snapshot after every change.
    app: Arc<LauncherApp>,
    captures: HashMap<u64, std::sync::mpsc::Sender<CaptureInput>>,
    profile: Arc<DeviceProfile>,
    adb_server: SocketAddr,
    attach: AttachMode,
    port: u16,
    adb_serial: String,
    authorized: bool,
    /// Connections whose handshake completed.
    online: HashSet<ConnectionId>,
    next_connection: ConnectionId,
    inputs: Vec<InputEvent>,
    commands: Vec<String>,
    events_tx: mpsc::UnboundedSender<DeviceEvent>,
}

impl DeviceTask {
    async fn run(
        mut self,
        listener: TcpListener,
        mut command_rx: mpsc::Receiver<Command>,
        mut events_rx: mpsc::UnboundedReceiver<DeviceEvent>,
    ) {
        let mut listener = Some(listener);
        let mut connections: JoinSet<ConnectionId> = JoinSet::new();
        tokio::spawn(self.reattach(Wanted::State("device"), INITIAL_ATTACH_TIMEOUT, None));
        loop {
            tokio::select! {
                command = command_rx.recv() => match command {
                    Some(command) => self.handle(command, &mut listener, &mut connections).await,
                    None => break,
                },
                accepted = accept(listener.as_ref()) => match accepted {
                    Ok((stream, peer)) => {
                        let id = self.next_connection;
                        self.next_connection += 1;
                        tracing::info!(%peer, connection = id, authorized = self.authorized, "host connected");
                        connections.spawn(serve_connection(
                            stream, id, self.context.clone(), self.authorized, self.events_tx.clone(),
                        ));
                    }
                    Err(error) => tracing::warn!(%error, "accept failed"),
                },
                Some(event) = events_rx.recv() => self.on_event(event),
                Some(ended) = connections.join_next(), if !connections.is_empty() => {
                    if let Ok(id) = ended {
                        self.online.remove(&id);
                    }
                }
            }
        }
        tracing::debug!("device task stopped");
    }

    fn on_event(&mut self, event: DeviceEvent) {
        match event {
            DeviceEvent::Session(id, SessionEvent::Online) => {
                self.online.insert(id);
            }
            DeviceEvent::Session(_, SessionEvent::CommandRan { command, input }) => {
                tracing::info!(%command, "command");
                self.commands.push(command);
                for event in input {
                    self.input(event);
                }
            }
            DeviceEvent::Session(..) => {}
            DeviceEvent::Input(event) => self.input(event),
            DeviceEvent::CaptureOpened { id, inputs } => {
                if inputs.send(CaptureInput::App(self.app.clone())).is_ok() {
                    self.captures.insert(id, inputs);
                }
            }
            DeviceEvent::CaptureClosed { id } => {
                self.captures.remove(&id);
            }
        }
    }

    /// Records an input event and lets the app act on it.
    fn input(&mut self, event: InputEvent) {
        tracing::debug!(?event, "input");
        let changed = Arc::make_mut(&mut self.app).apply(&event);
        self.inputs.push(event);
        if changed {
            let app = self.app.clone();
            self.captures
                .retain(|_, capture| capture.send(CaptureInput::App(app.clone())).is_ok());
        }
    }

    fn app_snapshot(&self) -> AppSnapshot {
        let frames = self
            .context
            .frames
            .load(std::sync::atomic::Ordering::Relaxed);
        let busy_us = self
            .context
            .render_encode_us
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut snapshot = AppSnapshot::new(&self.app, frames, self.captures.len());
        snapshot.render_encode_ms_avg = if frames == 0 {
            0.0
        } else {
            busy_us as f64 / 1000.0 / frames as f64
        };
        snapshot
    }

    fn state(&self, listening: bool) -> DeviceState {
        if !listening {
            DeviceState::Unplugged
        } else if !self.online.is_empty() {
            DeviceState::Attached
        } else if !self.authorized {
            DeviceState::Unauthorized
        } else {
            DeviceState::Offline
        }
    }

    fn wanted(&self) -> Wanted<'static> {
        Wanted::State(if self.authorized {
            "device"
        } else {
            "unauthorized"
        })
    }

    async fn handle(
        &mut self,
        command: Command,
        listener: &mut Option<TcpListener>,
        connections: &mut JoinSet<ConnectionId>,
    ) {
        match command {
            Command::Info(reply) => {
                let _ = reply.send(DeviceInfo {
                    serial: self.profile.serial.clone(),
                    adb_serial: self.adb_serial.clone(),
                    port: self.port,
                    model: self.profile.model.clone(),
                    android_version: self.profile.android_version.clone(),
                    state: self.state(listener.is_some()),
                });
            }
            Command::Input(reply) => {
                let _ = reply.send(self.inputs.clone());
            }
            Command::Commands(reply) => {
                let _ = reply.send(self.commands.clone());
            }
            Command::App(reply) => {
                let _ = reply.send(self.app_snapshot());
            }
            Command::Layout(reply) => {
                let _ = reply.send(self.app.layout().clone());
            }
            Command::Unplug(reply) => {
                tracing::info!("unplug");
                *listener = None;
                self.drop_connections(connections).await;
                // Reply once the adb server has forgotten the device (a fraction of a second),
                // so callers can rely on it being gone.
                let (server, serials) = (self.adb_server, [self.adb_serial.clone()]);
                tokio::spawn(async move {
                    let gone =
                        adb_host::wait_for_state(server, &serials, Wanted::Absent, ATTACH_TIMEOUT)
                            .await;
                    if let Err(error) = gone {
                        tracing::warn!(%error, "adb server still lists the unplugged device");
                    }
                    let _ = reply.send(());
                });
            }
            Command::Replug(reply) => {
                tracing::info!("replug");
                if listener.is_none() {
                    match self.bind().await {
                        Ok(bound) => *listener = Some(bound),
                        Err(error) => {
                            let _ = reply.send(Err(error));
                            return;
                        }
                    }
                } else if !self.online.is_empty() {
                    let _ = reply.send(Ok(()));
                    return;
                }
                tokio::spawn(self.reattach(self.wanted(), ATTACH_TIMEOUT, Some(reply)));
            }
            Command::SetAuthorized(authorized, reply) => {
                tracing::info!(authorized, "reconnecting with new authorization");
                self.authorized = authorized;
                self.drop_connections(connections).await;
                if listener.is_none() {
                    match self.bind().await {
                        Ok(bound) => *listener = Some(bound),
                        Err(error) => {
                            let _ = reply.send(Err(error));
                            return;
                        }
                    }
                }
                tokio::spawn(self.reattach(self.wanted(), ATTACH_TIMEOUT, Some(reply)));
            }
        }
    }

    /// Listens on the device's port again, so its adb serial stays the same.
    async fn bind(&self) -> Result<TcpListener, SimError> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        TcpListener::bind(address)
            .await
            .map_err(SimError::io(format!("listening again on {address}")))
    }

    /// Closes every transport connection and waits until their sockets are gone.
    async fn drop_connections(&mut self, connections: &mut JoinSet<ConnectionId>) {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        self.online.clear();
        if self.attach == AttachMode::Connect {
            // A connected device would otherwise stay listed as `offline` while adb retries.
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
            if let Err(error) = adb_host::disconnect(self.adb_server, address).await {
                tracing::warn!(%error, "adb disconnect failed");
            }
        }
    }

    /// A task that announces the device to the adb server and waits until it shows `wanted`.
    fn reattach(
        &self,
        wanted: Wanted<'static>,
        limit: Duration,
        reply: Option<oneshot::Sender<Result<(), SimError>>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (server, attach, port) = (self.adb_server, self.attach, self.port);
        let serial = self.adb_serial.clone();
        let span = tracing::info_span!("attach", adb_serial = %serial);
        async move {
            let result = attach_and_wait(server, attach, port, serial, wanted, limit).await;
            match &result {
                Ok(()) => tracing::info!(?wanted, "adb server agrees"),
                Err(error) => tracing::warn!(%error, "attach failed"),
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
        .instrument(span)
    }
}

/// Announces the device until the adb server lists it as `wanted` or `limit` passes.
async fn attach_and_wait(
    server: SocketAddr,
    attach: AttachMode,
    port: u16,
    serial: String,
    wanted: Wanted<'static>,
    limit: Duration,
) -> Result<(), SimError> {
    let deadline = Instant::now() + limit;
    let serials = [serial];
    if attach == AttachMode::Emulator {
        // The server ignores `host:emulator` for a port it still lists: let the old
        // transport go first (it goes as soon as the server sees the socket close).
        let _ = adb_host::wait_for_state(server, &serials, Wanted::Absent, Duration::from_secs(2))
            .await;
    }
    loop {
        let announced = match attach {
            AttachMode::Emulator => adb_host::announce_emulator(server, port).await,
            AttachMode::Connect => {
                adb_host::connect(server, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
            }
        };
        match announced {
            Ok(()) => {}
            // e.g. "failed to authenticate" while unauthorized: the listing decides.
            Err(SimError::AdbServer { message, .. }) => {
                tracing::debug!(%message, "adb server said")
            }
            Err(error) => return Err(error),
        }
        let step = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        match adb_host::wait_for_state(server, &serials, wanted, step).await {
            Ok(()) => return Ok(()),
            Err(error @ SimError::Timeout { .. }) if Instant::now() >= deadline => {
                return Err(error);
            }
            Err(SimError::Timeout { .. }) => continue,
            Err(error) => return Err(error),
        }
    }
}

async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}
