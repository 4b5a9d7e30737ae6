//! The slot table (sans-IO): which WebDriver slots the node offers, built from the online
//! devices and the configuration, with a stable per-device index for Appium's ports.

use std::collections::BTreeMap;

use farm_proto::v1::{Slot, SlotInventory};
use serde_json::{Map, Value, json};

use crate::devices::{ConnState, DeviceEvent, DeviceView};

use super::config::AppiumConfig;

/// The browser slot's id.
pub const BROWSER_SLOT_ID: &str = "browser";
/// The prefix of a device slot's id (followed by the adb serial).
pub const APPIUM_SLOT_PREFIX: &str = "appium:";
/// `appium:systemPort` of the device with index i is `SYSTEM_PORT_BASE + i`.
pub const SYSTEM_PORT_BASE: u16 = 8200;
/// `appium:mjpegServerPort` of the device with index i is `MJPEG_PORT_BASE + i`.
pub const MJPEG_PORT_BASE: u16 = 9200;
/// How many device indices exist; keeps the two port ranges disjoint (8200..9199, 9200..10199).
pub const MAX_DEVICE_INDICES: u16 = 1000;

/// The ports a device's Appium sessions use, so parallel sessions do not collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePorts {
    pub system_port: u16,
    pub mjpeg_server_port: u16,
}

impl DevicePorts {
    pub fn for_index(index: u16) -> Self {
        Self {
            system_port: SYSTEM_PORT_BASE + index,
            mjpeg_server_port: MJPEG_PORT_BASE + index,
        }
    }
}

/// What a device slot advertises beyond its serial.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OnlineDevice {
    android_version: String,
    model: String,
}

/// The browser slot as announced: chromedriver's version and the session limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserSlot {
    pub version: String,
    pub max_sessions: u32,
}

/// Online devices and their indices. Indices stay with a serial while the node runs (an
/// unplugged device gets its ports back on replug); only when all are taken does an offline
/// device's index go to a new one.
#[derive(Debug, Default)]
pub struct SlotTable {
    indices: BTreeMap<String, u16>,
    online: BTreeMap<String, OnlineDevice>,
}

impl SlotTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces what is known with a full snapshot (indices are kept).
    pub fn reset(&mut self, snapshot: &[DeviceView]) {
        self.online.clear();
        for view in snapshot {
            self.upsert(view);
        }
    }

    /// Applies one device change.
    pub fn apply(&mut self, event: &DeviceEvent) {
        match event {
            DeviceEvent::Upsert(view) => self.upsert(view),
            DeviceEvent::Removed(serial) => {
                self.online.remove(serial);
            }
        }
    }

    /// The ports of an online device with an index.
    pub fn ports(&self, serial: &str) -> Option<DevicePorts> {
        if !self.online.contains_key(serial) {
            return None;
        }
        self.indices
            .get(serial)
            .copied()
            .map(DevicePorts::for_index)
    }

    /// The inventory to announce: a slot per online device with an index (with Appium
    /// configured), and the browser slot; ordered by slot id.
    pub fn inventory(
        &self,
        appium: Option<&AppiumConfig>,
        browser: Option<&BrowserSlot>,
    ) -> SlotInventory {
        let mut slots = Vec::new();
        if let Some(appium) = appium {
            for (serial, device) in &self.online {
                if !self.indices.contains_key(serial) {
                    continue;
                }
                let mut caps = device_capabilities(serial, device);
                for (key, value) in &appium.extra_capabilities {
                    caps.insert(key.clone(), value.clone());
                }
                slots.push(Slot {
                    slot_id: format!("{APPIUM_SLOT_PREFIX}{serial}"),
                    kind: "appium".into(),
                    device_serial: serial.clone(),
                    capabilities_json: Value::Object(caps).to_string(),
                    max_sessions: 1,
                });
            }
        }
        if let Some(browser) = browser {
            slots.push(Slot {
                slot_id: BROWSER_SLOT_ID.into(),
                kind: "browser".into(),
                device_serial: String::new(),
                capabilities_json: json!({
                    "browserName": "chrome",
                    "browserVersion": browser.version,
                    "platformName": "linux",
                })
                .to_string(),
                max_sessions: browser.max_sessions,
            });
        }
        slots.sort_by(|a, b| a.slot_id.cmp(&b.slot_id));
        SlotInventory { slots }
    }

    fn upsert(&mut self, view: &DeviceView) {
        if view.state != ConnState::Online {
            self.online.remove(&view.serial);
            return;
        }
        if !self.indices.contains_key(&view.serial) {
            match self.free_index() {
                Some(index) => {
                    self.indices.insert(view.serial.clone(), index);
                }
                None => tracing::warn!(
                    serial = %view.serial,
                    "no Appium port index left ({MAX_DEVICE_INDICES} online devices): no slot for this device"
                ),
            }
        }
        self.online.insert(
            view.serial.clone(),
            OnlineDevice {
                android_version: view.props.android_version.clone(),
                model: view.props.model.clone(),
            },
        );
    }

    /// The lowest index no serial holds; else the lowest one an offline serial holds (taken from it).
    fn free_index(&mut self) -> Option<u16> {
        let used: std::collections::BTreeSet<u16> = self.indices.values().copied().collect();
        if let Some(index) = (0..MAX_DEVICE_INDICES).find(|i| !used.contains(i)) {
            return Some(index);
        }
        let (serial, index) = self
            .indices
            .iter()
            .filter(|(serial, _)| !self.online.contains_key(*serial))
            .min_by_key(|(_, index)| **index)
            .map(|(serial, index)| (serial.clone(), *index))?;
        self.indices.remove(&serial);
        Some(index)
    }
}

/// A device slot's own capabilities; unknown version or model are left out rather than "".
fn device_capabilities(serial: &str, device: &OnlineDevice) -> Map<String, Value> {
    let mut caps = Map::new();
    caps.insert("platformName".into(), "Android".into());
    caps.insert("appium:automationName".into(), "UiAutomator2".into());
    if !device.android_version.is_empty() {
        caps.insert(
            "appium:platformVersion".into(),
            device.android_version.clone().into(),
        );
    }
    if !device.model.is_empty() {
        caps.insert("appium:deviceName".into(), device.model.clone().into());
    }
    caps.insert("appium:udid".into(), serial.into());
    caps
}

/// `major.minor` from `chromedriver --version` output, e.g. "ChromeDriver 156.0.8078.114 (...)".
pub fn chromedriver_version(output: &str) -> Option<String> {
    let version = output
        .split_whitespace()
        .skip_while(|word| !word.eq_ignore_ascii_case("chromedriver"))
        .nth(1)?;
    let mut parts = version.split('.');
    let major = parts.next().filter(|p| is_number(p))?;
    let minor = parts.next().filter(|p| is_number(p))?;
    Some(format!("{major}.{minor}"))
}

fn is_number(part: &str) -> bool {
    !part.is_empty() && part.len() <= 9 && part.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_props::DeviceProps;
    use crate::webdriver::config::{AppiumServer, SlotEndpoint};

    fn view(serial: &str, state: ConnState, version: &str, model: &str) -> DeviceView {
        DeviceView {
            serial: serial.into(),
            state,
            props: DeviceProps {
                android_version: version.into(),
                model: model.into(),
                ..DeviceProps::unknown()
            },
        }
    }

    fn appium(extra: Value) -> AppiumConfig {
        AppiumConfig {
            server: AppiumServer::Remote(SlotEndpoint {
                authority: "127.0.0.1:4723".into(),
                prefix: String::new(),
            }),
            extra_capabilities: extra.as_object().cloned().unwrap_or_default(),
        }
    }

    fn caps(slot: &Slot) -> Value {
        serde_json::from_str(&slot.capabilities_json).expect("slot caps are JSON")
    }

    #[test]
    fn online_devices_get_appium_slots_with_merged_capabilities() {
        let mut table = SlotTable::new();
        table.reset(&[
            view("emulator-5556", ConnState::Online, "14", "Pixel 8"),
            view("emulator-5554", ConnState::Online, "", ""),
            view("gone", ConnState::Offline, "13", "X"),
            view("locked", ConnState::Unauthorized, "13", "X"),
        ]);
        let config = appium(json!({"platformName": "Fake", "appium:automationName": "Fake"}));
        let inventory = table.inventory(Some(&config), None);
        let ids: Vec<&str> = inventory.slots.iter().map(|s| s.slot_id.as_str()).collect();
        assert_eq!(ids, ["appium:emulator-5554", "appium:emulator-5556"]);
        let slot = &inventory.slots[1];
        assert_eq!(
            (
                slot.kind.as_str(),
                slot.device_serial.as_str(),
                slot.max_sessions
            ),
            ("appium", "emulator-5556", 1)
        );
        assert_eq!(
            caps(slot),
            json!({"platformName": "Fake", "appium:automationName": "Fake",
                   "appium:platformVersion": "14", "appium:deviceName": "Pixel 8",
                   "appium:udid": "emulator-5556"})
        );
        // Unknown properties are left out, not advertised as "".
        assert_eq!(
            caps(&inventory.slots[0]),
            json!({"platformName": "Fake", "appium:automationName": "Fake",
                   "appium:udid": "emulator-5554"})
        );
        assert!(table.inventory(None, None).slots.is_empty());
    }

    #[test]
    fn browser_slot() {
        let table = SlotTable::new();
        let browser = BrowserSlot {
            version: "156.0".into(),
            max_sessions: 3,
        };
        let inventory = table.inventory(Some(&appium(json!({}))), Some(&browser));
        assert_eq!(inventory.slots.len(), 1);
        let slot = &inventory.slots[0];
        assert_eq!(
            (slot.slot_id.as_str(), slot.kind.as_str()),
            ("browser", "browser")
        );
        assert_eq!(slot.max_sessions, 3);
        assert_eq!(
            caps(slot),
            json!({"browserName": "chrome", "browserVersion": "156.0", "platformName": "linux"})
        );
    }

    #[test]
    fn indices_are_stable_per_serial_and_reused_only_when_exhausted() {
        let mut table = SlotTable::new();
        table.apply(&DeviceEvent::Upsert(view("a", ConnState::Online, "", "")));
        table.apply(&DeviceEvent::Upsert(view("b", ConnState::Online, "", "")));
        assert_eq!(table.ports("a"), Some(DevicePorts::for_index(0)));
        assert_eq!(
            table.ports("b"),
            Some(DevicePorts {
                system_port: 8201,
                mjpeg_server_port: 9201
            })
        );
        table.apply(&DeviceEvent::Removed("a".into()));
        assert_eq!(table.ports("a"), None);
        table.apply(&DeviceEvent::Upsert(view("c", ConnState::Online, "", "")));
        assert_eq!(table.ports("c"), Some(DevicePorts::for_index(2)));
        table.apply(&DeviceEvent::Upsert(view("a", ConnState::Online, "", "")));
        assert_eq!(table.ports("a"), Some(DevicePorts::for_index(0)));
        table.apply(&DeviceEvent::Upsert(view("a", ConnState::Offline, "", "")));
        assert_eq!(table.ports("a"), None);
        for i in 3..MAX_DEVICE_INDICES {
            table.apply(&DeviceEvent::Upsert(view(
                &format!("d{i}"),
                ConnState::Online,
                "",
                "",
            )));
        }
        // Every index is taken: the offline device "a" gives its index up.
        table.apply(&DeviceEvent::Upsert(view("new", ConnState::Online, "", "")));
        assert_eq!(table.ports("new"), Some(DevicePorts::for_index(0)));
        // Nothing left at all: no slot, no panic.
        table.apply(&DeviceEvent::Upsert(view(
            "extra",
            ConnState::Online,
            "",
            "",
        )));
        assert_eq!(table.ports("extra"), None);
        let inventory = table.inventory(Some(&appium(json!({}))), None);
        assert_eq!(inventory.slots.len(), usize::from(MAX_DEVICE_INDICES));
    }

    #[test]
    fn chromedriver_versions() {
        let cases = [
            (
                "ChromeDriver 156.0.8078.114 (ea19f97-refs/branch-heads/8078_108@{#5})\n",
                Some("156.0"),
            ),
            ("ChromeDriver 120.1.2", Some("120.1")),
            ("Starting... ChromeDriver 99.0", Some("99.0")),
            ("ChromeDriver", None),
            ("ChromeDriver abc.def", None),
            ("", None),
            ("something else 1.2.3", None),
        ];
        for (output, expected) in cases {
            assert_eq!(
                chromedriver_version(output).as_deref(),
                expected,
                "{output:?}"
            );
        }
    }
}
