//! The node's device set: a pure model (adb lists and property reads in, device events out)
//! and the one task that owns it, reached through [`DeviceSetHandle`].

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::device_props::DeviceProps;

/// A device's connection state as the node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// adb state `device`: usable.
    Online,
    /// Known but not usable (`offline`, `connecting`, `recovery`, `bootloader`, ...).
    Offline,
    /// The USB debugging prompt was not accepted (`unauthorized`, `authorizing`).
    Unauthorized,
}

impl ConnState {
    /// Maps an adb state word (as printed by `adb devices`) to a [`ConnState`].
    pub fn from_adb(state: &str) -> Self {
        match state.trim() {
            "device" => ConnState::Online,
            "unauthorized" | "authorizing" => ConnState::Unauthorized,
            _ => ConnState::Offline,
        }
    }
}

/// One line of an adb device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdbEntry {
    pub serial: String,
    pub state: ConnState,
}

/// A device as the node reports it to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// The adb serial.
    pub serial: String,
    pub state: ConnState,
    /// Unknown (empty) until read; the last read values are kept while a device is offline.
    pub props: DeviceProps,
}

/// A change in what the node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A device appeared or changed (state or properties).
    Upsert(DeviceView),
    /// A device left the node; carries its adb serial.
    Removed(String),
}

/// A request to read a device's properties, tagged so a stale answer can be ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropsRequest {
    pub serial: String,
    pub generation: u64,
}

#[derive(Debug, Clone)]
struct Tracked {
    state: ConnState,
    props: Option<DeviceProps>,
    /// The generation of the property read in flight, if any.
    fetching: Option<u64>,
}

impl Tracked {
    /// What is reported: nothing for an online device whose properties were never read
    /// (so the broker learns its hardware serial with its first report).
    fn view(&self, serial: &str) -> Option<DeviceView> {
        if self.state == ConnState::Online && self.props.is_none() {
            return None;
        }
        Some(DeviceView {
            serial: serial.to_string(),
            state: self.state,
            props: self.props.clone().unwrap_or_default(),
        })
    }
}

/// The pure device-set model: no IO, no clock.
#[derive(Debug, Default)]
pub struct DeviceSet {
    devices: BTreeMap<String, Tracked>,
    next_generation: u64,
}

impl DeviceSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every reported device, ordered by serial.
    pub fn snapshot(&self) -> Vec<DeviceView> {
        self.views().into_values().collect()
    }

    /// Replaces the adb view with a full list (as `host:track-devices` sends it).
    /// Returns the events to report and the property reads to start.
    pub fn apply_adb_list(&mut self, list: &[AdbEntry]) -> (Vec<DeviceEvent>, Vec<PropsRequest>) {
        let before = self.views();
        let mut requests = Vec::new();
        let listed: BTreeMap<&str, ConnState> = list
            .iter()
            .map(|entry| (entry.serial.as_str(), entry.state))
            .collect();
        self.devices
            .retain(|serial, _| listed.contains_key(serial.as_str()));
        for (serial, state) in listed {
            let (tracked, was_online) = match self.devices.entry(serial.to_string()) {
                std::collections::btree_map::Entry::Vacant(vacant) => (
                    vacant.insert(Tracked {
                        state,
                        props: None,
                        fetching: None,
                    }),
                    false,
                ),
                std::collections::btree_map::Entry::Occupied(occupied) => {
                    let was_online = occupied.get().state == ConnState::Online;
                    (occupied.into_mut(), was_online)
                }
            };
            tracked.state = state;
            if state != ConnState::Online {
                tracked.fetching = None;
            } else if !was_online {
                self.next_generation += 1;
                tracked.fetching = Some(self.next_generation);
                requests.push(PropsRequest {
                    serial: serial.to_string(),
                    generation: self.next_generation,
                });
            }
        }
        (diff(&before, &self.views()), requests)
    }

    /// Records the result of a property read; `None` means the read failed (the device keeps
    /// what was known before, or is reported with unknown properties). Stale answers are ignored.
    pub fn apply_props(
        &mut self,
        request: &PropsRequest,
        props: Option<DeviceProps>,
    ) -> Vec<DeviceEvent> {
        let before = self.views();
        if let Some(tracked) = self.devices.get_mut(&request.serial)
            && tracked.fetching == Some(request.generation)
        {
            tracked.fetching = None;
            match props {
                Some(props) => tracked.props = Some(props),
                None => {
                    tracked.props.get_or_insert_with(DeviceProps::unknown);
                }
            }
        }
        diff(&before, &self.views())
    }

    /// Forgets every device (the adb server went away).
    pub fn clear(&mut self) -> Vec<DeviceEvent> {
        self.apply_adb_list(&[]).0
    }

    fn views(&self) -> BTreeMap<String, DeviceView> {
        self.devices
            .iter()
            .filter_map(|(serial, tracked)| tracked.view(serial).map(|v| (serial.clone(), v)))
            .collect()
    }
}

/// The events that turn `before` into `after`: upserts for new or changed views, then removals.
pub fn diff(
    before: &BTreeMap<String, DeviceView>,
    after: &BTreeMap<String, DeviceView>,
) -> Vec<DeviceEvent> {
    let mut events: Vec<DeviceEvent> = after
        .iter()
        .filter(|(serial, view)| before.get(*serial) != Some(view))
        .map(|(_, view)| DeviceEvent::Upsert(view.clone()))
        .collect();
    events.extend(
        before
            .keys()
            .filter(|serial| !after.contains_key(*serial))
            .map(|serial| DeviceEvent::Removed(serial.clone())),
    );
    events
}

/// Reads a device's properties (the adb implementation lives in `adb_tracker`).
pub trait PropsFetcher: Send + Sync + 'static {
    /// Reads the properties of the device with adb serial `serial`; errors are described
    /// in the returned string (they are logged, not propagated).
    fn fetch(&self, serial: String) -> BoxFuture<'static, Result<DeviceProps, String>>;
}

/// A consistent view for a new reader: the devices now, then every later change.
#[derive(Debug)]
pub struct Subscription {
    pub snapshot: Vec<DeviceView>,
    /// Closed when the reader fell too far behind: subscribe again for a fresh snapshot.
    pub changes: mpsc::Receiver<DeviceEvent>,
}

enum Request {
    AdbList(Vec<AdbEntry>),
    AdbLost,
    Subscribe(oneshot::Sender<Subscription>),
}

/// How many unread events a subscriber may have before it is dropped (and must resubscribe).
const SUBSCRIBER_BUFFER: usize = 1024;

/// The handle to the device-set task. Cloneable; the task ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct DeviceSetHandle {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::AdbList(list) => f.debug_tuple("AdbList").field(list).finish(),
            Request::AdbLost => f.write_str("AdbLost"),
            Request::Subscribe(_) => f.write_str("Subscribe"),
        }
    }
}

/// Errors from talking to the device-set task.
#[derive(Debug, thiserror::Error)]
pub enum DeviceSetError {
    #[error("the device-set task has stopped")]
    Stopped,
}

impl DeviceSetHandle {
    /// Reports the full device list from adb.
    pub async fn adb_list(&self, list: Vec<AdbEntry>) -> Result<(), DeviceSetError> {
        self.send(Request::AdbList(list)).await
    }

    /// Reports that the adb server is gone: every device leaves.
    pub async fn adb_lost(&self) -> Result<(), DeviceSetError> {
        self.send(Request::AdbLost).await
    }

    /// The current devices and a receiver for every later change, with nothing lost between.
    pub async fn subscribe(&self) -> Result<Subscription, DeviceSetError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Subscribe(reply)).await?;
        answer.await.map_err(|_| DeviceSetError::Stopped)
    }

    async fn send(&self, request: Request) -> Result<(), DeviceSetError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| DeviceSetError::Stopped)
    }
}

/// Starts the task that owns the device set. It also publishes the number of reported
/// devices on the returned watch (handy for logs and tests).
pub fn spawn_device_set(
    fetcher: Arc<dyn PropsFetcher>,
) -> (
    DeviceSetHandle,
    watch::Receiver<usize>,
    tokio::task::JoinHandle<()>,
) {
    let (requests, inbox) = mpsc::channel(64);
    let (count_tx, count_rx) = watch::channel(0);
    let task = tokio::spawn(
        device_set_task(inbox, fetcher, count_tx).instrument(tracing::Span::current()),
    );
    (DeviceSetHandle { requests }, count_rx, task)
}

async fn device_set_task(
    mut inbox: mpsc::Receiver<Request>,
    fetcher: Arc<dyn PropsFetcher>,
    count: watch::Sender<usize>,
) {
    let mut set = DeviceSet::new();
    let mut subscribers: Vec<mpsc::Sender<DeviceEvent>> = Vec::new();
    let mut reads: JoinSet<(PropsRequest, Result<DeviceProps, String>)> = JoinSet::new();
    loop {
        let events = tokio::select! {
            request = inbox.recv() => match request {
                None => break,
                Some(Request::AdbList(list)) => {
                    let (events, requests) = set.apply_adb_list(&list);
                    for request in requests {
                        tracing::debug!(serial = %request.serial, "reading device properties");
                        let read = fetcher.fetch(request.serial.clone());
                        reads.spawn(async move { (request, read.await) });
                    }
                    events
                }
                Some(Request::AdbLost) => set.clear(),
                Some(Request::Subscribe(reply)) => {
                    let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
                    let subscription = Subscription { snapshot: set.snapshot(), changes: rx };
                    if reply.send(subscription).is_ok() {
                        subscribers.push(tx);
                    }
                    Vec::new()
                }
            },
            Some(done) = reads.join_next(), if !reads.is_empty() => match done {
                Ok((request, Ok(props))) => set.apply_props(&request, Some(props)),
                Ok((request, Err(error))) => {
                    tracing::warn!(serial = %request.serial, %error, "could not read device properties");
                    set.apply_props(&request, None)
                }
                Err(error) => {
                    tracing::error!(%error, "a device property read panicked");
                    Vec::new()
                }
            },
        };
        for event in &events {
            log_event(event);
        }
        // A subscriber that is gone or too far behind is dropped; it resubscribes for a snapshot.
        subscribers.retain(|subscriber| {
            events
                .iter()
                .all(|event| subscriber.try_send(event.clone()).is_ok())
        });
        count.send_if_modified(|n| {
            let now = set.snapshot().len();
            std::mem::replace(n, now) != now
        });
    }
}

fn log_event(event: &DeviceEvent) {
    match event {
        DeviceEvent::Upsert(view) => tracing::info!(
            serial = %view.serial,
            state = ?view.state,
            hardware_serial = %view.props.hardware_serial,
            model = %view.props.model,
            android = %view.props.android_version,
            sdk = view.props.sdk,
            screen = %format_args!("{}x{}", view.props.screen_width, view.props.screen_height),
            density = view.props.density,
            battery = view.props.battery_level,
            "device updated"
        ),
        DeviceEvent::Removed(serial) => tracing::info!(serial = %serial, "device removed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: &str, state: ConnState) -> AdbEntry {
        AdbEntry {
            serial: serial.into(),
            state,
        }
    }

    fn props(hardware_serial: &str) -> DeviceProps {
        DeviceProps {
            hardware_serial: hardware_serial.into(),
            model: "Pixel 7".into(),
            ..DeviceProps::unknown()
        }
    }

    fn upserted(events: &[DeviceEvent]) -> Vec<(String, ConnState, String)> {
        events
            .iter()
            .filter_map(|e| match e {
                DeviceEvent::Upsert(v) => {
                    Some((v.serial.clone(), v.state, v.props.hardware_serial.clone()))
                }
                DeviceEvent::Removed(_) => None,
            })
            .collect()
    }

    #[test]
    fn adb_state_words_map_to_states() {
        assert_eq!(ConnState::from_adb("device"), ConnState::Online);
        assert_eq!(ConnState::from_adb("unauthorized"), ConnState::Unauthorized);
        assert_eq!(ConnState::from_adb("authorizing"), ConnState::Unauthorized);
        assert_eq!(ConnState::from_adb("offline"), ConnState::Offline);
        assert_eq!(
            ConnState::from_adb("no permissions (udev)"),
            ConnState::Offline
        );
        assert_eq!(ConnState::from_adb(""), ConnState::Offline);
    }

    #[test]
    fn an_online_device_is_reported_once_its_properties_are_read() {
        let mut set = DeviceSet::new();
        let (events, requests) = set.apply_adb_list(&[entry("emulator-5554", ConnState::Online)]);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(requests.len(), 1);
        assert!(set.snapshot().is_empty());

        let events = set.apply_props(&requests[0], Some(props("SIM0001")));
        assert_eq!(
            upserted(&events),
            [("emulator-5554".into(), ConnState::Online, "SIM0001".into())]
        );
        assert_eq!(set.snapshot().len(), 1);

        // The same list again changes nothing and reads nothing.
        let (events, requests) = set.apply_adb_list(&[entry("emulator-5554", ConnState::Online)]);
        assert!(events.is_empty() && requests.is_empty());
    }

    #[test]
    fn unauthorized_and_offline_devices_are_reported_at_once_without_properties() {
        let mut set = DeviceSet::new();
        let (events, requests) = set.apply_adb_list(&[
            entry("A", ConnState::Unauthorized),
            entry("B", ConnState::Offline),
        ]);
        assert!(requests.is_empty());
        assert_eq!(
            upserted(&events),
            [
                ("A".into(), ConnState::Unauthorized, String::new()),
                ("B".into(), ConnState::Offline, String::new())
            ]
        );
        assert_eq!(set.snapshot()[0].props.battery_level, -1);
    }

    #[test]
    fn state_changes_and_removals_are_reported_and_known_properties_kept() {
        let mut set = DeviceSet::new();
        let (_, requests) = set.apply_adb_list(&[entry("A", ConnState::Online)]);
        set.apply_props(&requests[0], Some(props("HW-A")));

        let (events, requests) = set.apply_adb_list(&[entry("A", ConnState::Offline)]);
        assert!(requests.is_empty());
        assert_eq!(
            upserted(&events),
            [("A".into(), ConnState::Offline, "HW-A".into())]
        );

        // Back online: reported online at once (props known), and re-read.
        let (events, requests) = set.apply_adb_list(&[entry("A", ConnState::Online)]);
        assert_eq!(
            upserted(&events),
            [("A".into(), ConnState::Online, "HW-A".into())]
        );
        assert_eq!(requests.len(), 1);

        let (events, _) = set.apply_adb_list(&[]);
        assert_eq!(events, [DeviceEvent::Removed("A".into())]);
        assert!(set.snapshot().is_empty());
    }

    #[test]
    fn stale_property_reads_are_ignored() {
        let mut set = DeviceSet::new();
        let (_, first) = set.apply_adb_list(&[entry("A", ConnState::Online)]);
        set.apply_adb_list(&[entry("A", ConnState::Offline)]);
        let (_, second) = set.apply_adb_list(&[entry("A", ConnState::Online)]);
        assert_ne!(first[0].generation, second[0].generation);
        assert!(set.apply_props(&first[0], Some(props("OLD"))).is_empty());
        let events = set.apply_props(&second[0], Some(props("NEW")));
        assert_eq!(
            upserted(&events),
            [("A".into(), ConnState::Online, "NEW".into())]
        );
        // A read for a device that left is ignored too.
        let (_, third) = set.apply_adb_list(&[entry("B", ConnState::Online)]);
        set.apply_adb_list(&[]);
        assert!(set.apply_props(&third[0], Some(props("B"))).is_empty());
    }

    #[test]
    fn a_failed_read_reports_the_device_with_unknown_properties() {
        let mut set = DeviceSet::new();
        let (_, requests) = set.apply_adb_list(&[entry("A", ConnState::Online)]);
        let events = set.apply_props(&requests[0], None);
        assert_eq!(
            upserted(&events),
            [("A".into(), ConnState::Online, String::new())]
        );
    }

    #[test]
    fn a_device_that_leaves_before_its_first_read_is_never_reported() {
        let mut set = DeviceSet::new();
        set.apply_adb_list(&[entry("A", ConnState::Online)]);
        let (events, _) = set.apply_adb_list(&[]);
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn clear_removes_everything_reported() {
        let mut set = DeviceSet::new();
        set.apply_adb_list(&[
            entry("A", ConnState::Offline),
            entry("B", ConnState::Online),
        ]);
        assert_eq!(set.clear(), [DeviceEvent::Removed("A".into())]);
    }

    #[test]
    fn diff_orders_upserts_before_removals() {
        let view = |serial: &str, state| DeviceView {
            serial: serial.into(),
            state,
            props: DeviceProps::unknown(),
        };
        let before: BTreeMap<_, _> = [
            ("A".to_string(), view("A", ConnState::Online)),
            ("B".to_string(), view("B", ConnState::Online)),
        ]
        .into();
        let after: BTreeMap<_, _> = [
            ("B".to_string(), view("B", ConnState::Offline)),
            ("C".to_string(), view("C", ConnState::Unauthorized)),
        ]
        .into();
        assert_eq!(
            diff(&before, &after),
            [
                DeviceEvent::Upsert(view("B", ConnState::Offline)),
                DeviceEvent::Upsert(view("C", ConnState::Unauthorized)),
                DeviceEvent::Removed("A".into()),
            ]
        );
    }
}
