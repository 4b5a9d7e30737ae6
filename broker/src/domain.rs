//! The broker's domain types: devices, nodes, leases, selectors and callers. No protobuf here.

use std::fmt;

/// Milliseconds since the Unix epoch, the one time unit the broker stores.
pub type Millis = i64;

/// The wall clock, read only in IO shells; protocol and state logic take `now` as input.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats a millisecond instant as RFC 3339 UTC (for messages people read).
pub fn format_millis(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// How a device is connected, as its node last reported it (or as the broker concluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    Online,
    Offline,
    Unauthorized,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Offline => "offline",
            Presence::Unauthorized => "unauthorized",
        }
    }

    pub fn parse(s: &str) -> Option<Presence> {
        match s {
            "online" => Some(Presence::Online),
            "offline" => Some(Presence::Offline),
            "unauthorized" => Some(Presence::Unauthorized),
            _ => None,
        }
    }
}

/// What a client sees: presence combined with the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    Available,
    Reserved,
    Offline,
    Unauthorized,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Available => "available",
            DeviceState::Reserved => "reserved",
            DeviceState::Offline => "offline",
            DeviceState::Unauthorized => "unauthorized",
        }
    }
}

/// A device as the broker keeps it (one row of `devices`).
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: String,
    pub serial: String,
    pub node_id: String,
    pub site: String,
    pub platform: String,
    pub model: String,
    pub manufacturer: String,
    pub android_version: String,
    pub sdk: u32,
    pub screen_width: u32,
    pub screen_height: u32,
    pub density: u32,
    pub battery_level: i32,
    pub tags: Vec<String>,
    pub presence: Presence,
    pub state_since: Millis,
}

/// A device as a node reports it, before the broker gives it an id and a site.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedDevice {
    pub serial: String,
    pub hardware_serial: String,
    pub presence: Presence,
    pub platform: String,
    pub model: String,
    pub manufacturer: String,
    pub android_version: String,
    pub sdk: u32,
    pub screen_width: u32,
    pub screen_height: u32,
    pub density: u32,
    pub battery_level: i32,
}

impl ReportedDevice {
    /// The broker-wide id: the hardware serial when the node could read it, else the adb serial.
    pub fn device_id(&self) -> &str {
        if self.hardware_serial.is_empty() {
            &self.serial
        } else {
            &self.hardware_serial
        }
    }
}

/// A connected (or remembered) controller node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub site: String,
    pub version: String,
    pub hostname: String,
    /// Protocol features the node announced in its hello (`farm_proto::FEATURE_*`).
    pub features: Vec<String>,
}

/// A WebDriver slot a node offers: an Appium server in front of one device, or a browser driver.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub slot_id: String,
    /// "appium" or "browser".
    pub kind: String,
    /// For appium slots, the device's adb serial on its node.
    pub device_serial: String,
    pub capabilities: serde_json::Value,
    pub max_sessions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    Active,
    Ended,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Ended => "ended",
        }
    }
}

/// Why a lease ended; recorded on every ended lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    Released,
    Expired,
    DeviceLost,
    NodeLost,
    Admin,
    /// A WebDriver session saw no command for the grid's idle timeout.
    Idle,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Released => "released",
            EndReason::Expired => "expired",
            EndReason::DeviceLost => "device_lost",
            EndReason::NodeLost => "node_lost",
            EndReason::Admin => "admin",
            EndReason::Idle => "idle",
        }
    }

    pub fn parse(s: &str) -> Option<EndReason> {
        [
            EndReason::Released,
            EndReason::Expired,
            EndReason::DeviceLost,
            EndReason::NodeLost,
            EndReason::Admin,
            EndReason::Idle,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exclusive lease on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub id: String,
    pub device_id: String,
    pub holder: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub ttl_ms: i64,
    pub fencing_token: u64,
    pub state: LeaseState,
    pub end_reason: Option<EndReason>,
    pub ended_at: Option<Millis>,
}

/// What kind of use a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// A person on the live screen (WebRTC).
    Live,
    /// An automation session through the WebDriver grid.
    WebDriver,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Live => "live",
            SessionKind::WebDriver => "webdriver",
        }
    }
}

/// The record of one session on a device: who, what, when, and why it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub kind: SessionKind,
    pub device_id: String,
    pub holder: String,
    /// Live: "control" or "observe".
    pub mode: String,
    /// WebDriver: the requested capabilities (JSON).
    pub capabilities: String,
    pub lease_id: Option<String>,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    pub end_reason: Option<String>,
}

/// Which devices a reservation or a listing may pick. Empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub site: String,
    pub platform: String,
    pub model: String,
    pub tags: Vec<String>,
}

impl Selector {
    pub fn matches(&self, d: &Device) -> bool {
        (self.site.is_empty() || self.site == d.site)
            && (self.platform.is_empty() || self.platform.eq_ignore_ascii_case(&d.platform))
            && (self.model.is_empty() || self.model.eq_ignore_ascii_case(&d.model))
            && self.tags.iter().all(|t| d.tags.contains(t))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (k, v) in [
            ("site", &self.site),
            ("platform", &self.platform),
            ("model", &self.model),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={v}"));
            }
        }
        for t in &self.tags {
            parts.push(format!("tag={t}"));
        }
        if parts.is_empty() {
            f.write_str("any device")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// What a reservation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Device(String),
    Selector(Selector),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Node,
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "node" => Some(Role::Node),
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An authenticated caller: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_round_trip_through_their_names() {
        for r in [
            EndReason::Released,
            EndReason::Expired,
            EndReason::DeviceLost,
            EndReason::NodeLost,
            EndReason::Admin,
            EndReason::Idle,
        ] {
            assert_eq!(EndReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(EndReason::parse("bogus"), None);
    }

    #[test]
    fn selector_display_names_what_it_asks_for() {
        let s = Selector {
            site: "lab".into(),
            model: "Pixel 7".into(),
            ..Default::default()
        };
        assert_eq!(s.to_string(), "site=lab model=Pixel 7");
        assert_eq!(Selector::default().to_string(), "any device");
    }

    #[test]
    fn format_millis_is_rfc3339_utc() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00Z");
    }
}
