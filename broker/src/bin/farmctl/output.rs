//! Wire types to farmctl's `--json` objects, and the names and time formats shared with the tables (pure).

use farm_proto::v1::{Device, DeviceState, EndReason, Lease, LeaseState};
use prost_types::Timestamp;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A device in `--json` output. The keys are a contract with scripts: add, never rename.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceJson {
    pub id: String,
    pub serial: String,
    /// available | reserved | offline | unauthorized (unspecified | unknown from a newer broker).
    pub state: &'static str,
    pub platform: String,
    pub model: String,
    pub manufacturer: String,
    pub android_version: String,
    pub sdk: u32,
    pub screen_width: u32,
    pub screen_height: u32,
    pub density: u32,
    /// Percent; null when the node could not read it (-1 on the wire).
    pub battery_level: Option<i32>,
    pub site: String,
    pub node: String,
    pub tags: Vec<String>,
    pub lease_id: Option<String>,
    pub holder: Option<String>,
    /// RFC 3339 UTC; null when the broker did not say.
    pub state_since: Option<String>,
}

impl From<&Device> for DeviceJson {
    fn from(device: &Device) -> Self {
        DeviceJson {
            id: device.id.clone(),
            serial: device.serial.clone(),
            state: device_state_name(device.state),
            platform: device.platform.clone(),
            model: device.model.clone(),
            manufacturer: device.manufacturer.clone(),
            android_version: device.android_version.clone(),
            sdk: device.sdk,
            screen_width: device.screen_width,
            screen_height: device.screen_height,
            density: device.density,
            battery_level: (device.battery_level >= 0).then_some(device.battery_level),
            site: device.site.clone(),
            node: device.node_id.clone(),
            tags: device.tags.clone(),
            lease_id: device.lease_id.clone(),
            holder: device.holder.clone(),
            state_since: device.state_since.as_ref().and_then(rfc3339),
        }
    }
}

/// A lease in `--json` output. The keys are a contract with scripts: add, never rename.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseJson {
    pub lease_id: String,
    pub device_id: String,
    pub holder: String,
    /// active | ended.
    pub state: &'static str,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub ttl_seconds: u32,
    pub fencing_token: u64,
    /// released | expired | device_lost | node_lost | admin | idle; null while active.
    pub end_reason: Option<&'static str>,
    pub ended_at: Option<String>,
}

impl From<&Lease> for LeaseJson {
    fn from(lease: &Lease) -> Self {
        LeaseJson {
            lease_id: lease.lease_id.clone(),
            device_id: lease.device_id.clone(),
            holder: lease.holder.clone(),
            state: lease_state_name(lease.state),
            created_at: lease.created_at.as_ref().and_then(rfc3339),
            expires_at: lease.expires_at.as_ref().and_then(rfc3339),
            ttl_seconds: lease.ttl_seconds,
            fencing_token: lease.fencing_token,
            end_reason: end_reason_name(lease.end_reason),
            ended_at: lease.ended_at.as_ref().and_then(rfc3339),
        }
    }
}

/// `devices` in `--json`: an array, `[]` when nothing matches.
pub fn devices_json(devices: &[Device]) -> String {
    to_json(&devices.iter().map(DeviceJson::from).collect::<Vec<_>>())
}

/// `device` in `--json`: one object.
pub fn device_json(device: &Device) -> String {
    to_json(&DeviceJson::from(device))
}

/// `reserve`, `renew` and `release` in `--json`: one object.
pub fn lease_json(lease: &Lease) -> String {
    to_json(&LeaseJson::from(lease))
}

/// `reservations` in `--json`: an array.
pub fn leases_json(leases: &[Lease]) -> String {
    to_json(&leases.iter().map(LeaseJson::from).collect::<Vec<_>>())
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Plain structs of strings and numbers with derived Serialize cannot fail to serialize.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_string());
    text.push('\n');
    text
}

/// The lowercase name scripts see for a device state.
pub fn device_state_name(state: i32) -> &'static str {
    match DeviceState::try_from(state) {
        Ok(DeviceState::Available) => "available",
        Ok(DeviceState::Reserved) => "reserved",
        Ok(DeviceState::Offline) => "offline",
        Ok(DeviceState::Unauthorized) => "unauthorized",
        Ok(DeviceState::Unspecified) => "unspecified",
        Err(_) => "unknown",
    }
}

pub fn lease_state_name(state: i32) -> &'static str {
    match LeaseState::try_from(state) {
        Ok(LeaseState::Active) => "active",
        Ok(LeaseState::Ended) => "ended",
        Ok(LeaseState::Unspecified) => "unspecified",
        Err(_) => "unknown",
    }
}

/// None while the lease is active (END_REASON_UNSPECIFIED).
pub fn end_reason_name(reason: i32) -> Option<&'static str> {
    match EndReason::try_from(reason) {
        Ok(EndReason::Unspecified) => None,
        Ok(EndReason::Released) => Some("released"),
        Ok(EndReason::Expired) => Some("expired"),
        Ok(EndReason::DeviceLost) => Some("device_lost"),
        Ok(EndReason::NodeLost) => Some("node_lost"),
        Ok(EndReason::Admin) => Some("admin"),
        Ok(EndReason::Idle) => Some("idle"),
        Err(_) => Some("unknown"),
    }
}

/// RFC 3339 in UTC with the sub-second digits the broker sent (none when zero);
/// None for a timestamp outside years 0..=9999 or with invalid nanos.
pub fn rfc3339(timestamp: &Timestamp) -> Option<String> {
    let nanos = i128::from(timestamp.seconds) * 1_000_000_000 + i128::from(timestamp.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// RFC 3339 in UTC to the second, for tables.
pub fn rfc3339_seconds(timestamp: &Timestamp) -> Option<String> {
    rfc3339(&Timestamp {
        seconds: timestamp.seconds,
        nanos: 0,
    })
}

/// "in 4m 59s", "2h 5m ago", "now": how far `at` is from `now` (both Unix seconds).
pub fn relative(at_seconds: i64, now_seconds: i64) -> String {
    let delta = at_seconds.saturating_sub(now_seconds);
    if delta == 0 {
        return "now".to_string();
    }
    let span = span(delta.unsigned_abs());
    if delta > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// The two largest units of a duration: "59s", "4m 59s", "2h 5m", "3d 4h".
fn span(seconds: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match seconds {
        s if s < MINUTE => format!("{s}s"),
        s if s < HOUR => format!("{}m {}s", s / MINUTE, s % MINUTE),
        s if s < DAY => format!("{}h {}m", s / HOUR, s % HOUR / MINUTE),
        s => format!("{}d {}h", s / DAY, s % DAY / HOUR),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// 2025-12-04T16:00:00Z
    pub const T0: i64 = 1_764_864_000;

    pub fn sample_device() -> Device {
        Device {
            id: "R58M1234ABC".into(),
            serial: "R58M1234ABC".into(),
            state: DeviceState::Reserved as i32,
            platform: "android".into(),
            model: "Pixel 7".into(),
            manufacturer: "Google".into(),
            android_version: "14".into(),
            sdk: 34,
            screen_width: 1080,
            screen_height: 2400,
            density: 420,
            battery_level: 87,
            site: "lab-1".into(),
            node_id: "node-a".into(),
            tags: vec!["usb3".into(), "camera".into()],
            lease_id: Some("l-1".into()),
            holder: Some("ci".into()),
            state_since: Some(Timestamp {
                seconds: T0,
                nanos: 0,
            }),
        }
    }

    pub fn sample_lease() -> Lease {
        Lease {
            lease_id: "l-1".into(),
            device_id: "R58M1234ABC".into(),
            holder: "ci".into(),
            created_at: Some(Timestamp {
                seconds: T0,
                nanos: 123_000_000,
            }),
            expires_at: Some(Timestamp {
                seconds: T0 + 300,
                nanos: 0,
            }),
            fencing_token: 7,
            state: LeaseState::Active as i32,
            end_reason: EndReason::Unspecified as i32,
            ended_at: None,
            ttl_seconds: 300,
        }
    }

    #[test]
    fn a_device_becomes_the_documented_json_object() {
        let value: serde_json::Value =
            serde_json::from_str(&device_json(&sample_device())).expect("valid JSON");
        assert_eq!(
            value,
            json!({
                "id": "R58M1234ABC",
                "serial": "R58M1234ABC",
                "state": "reserved",
                "platform": "android",
                "model": "Pixel 7",
                "manufacturer": "Google",
                "android_version": "14",
                "sdk": 34,
                "screen_width": 1080,
                "screen_height": 2400,
                "density": 420,
                "battery_level": 87,
                "site": "lab-1",
                "node": "node-a",
                "tags": ["usb3", "camera"],
                "lease_id": "l-1",
                "holder": "ci",
                "state_since": "2025-12-04T16:00:00Z",
            })
        );
    }

    #[test]
    fn unknown_battery_and_missing_lease_are_null() {
        let device = Device {
            battery_level: -1,
            lease_id: None,
            holder: None,
            state_since: None,
            state: DeviceState::Available as i32,
            ..sample_device()
        };
        let json = DeviceJson::from(&device);
        assert_eq!(json.battery_level, None);
        assert_eq!(json.lease_id, None);
        assert_eq!(json.state, "available");
        let value = serde_json::to_value(&json).expect("serializable");
        assert!(value["lease_id"].is_null() && value["holder"].is_null());
        assert!(value["state_since"].is_null());
    }

    #[test]
    fn a_lease_becomes_the_documented_json_object() {
        let value: serde_json::Value =
            serde_json::from_str(&lease_json(&sample_lease())).expect("valid JSON");
        assert_eq!(
            value,
            json!({
                "lease_id": "l-1",
                "device_id": "R58M1234ABC",
                "holder": "ci",
                "state": "active",
                "created_at": "2025-12-04T16:00:00.123Z",
                "expires_at": "2025-12-04T16:05:00Z",
                "ttl_seconds": 300,
                "fencing_token": 7,
                "end_reason": null,
                "ended_at": null,
            })
        );
    }

    #[test]
    fn an_ended_lease_names_its_reason() {
        let lease = Lease {
            state: LeaseState::Ended as i32,
            end_reason: EndReason::DeviceLost as i32,
            ended_at: Some(Timestamp {
                seconds: T0 + 60,
                nanos: 0,
            }),
            ..sample_lease()
        };
        let json = LeaseJson::from(&lease);
        assert_eq!(json.state, "ended");
        assert_eq!(json.end_reason, Some("device_lost"));
        assert_eq!(json.ended_at.as_deref(), Some("2025-12-04T16:01:00Z"));
    }

    #[test]
    fn lists_are_arrays_even_when_empty() {
        assert_eq!(devices_json(&[]).trim(), "[]");
        assert_eq!(leases_json(&[]).trim(), "[]");
        let value: serde_json::Value =
            serde_json::from_str(&leases_json(&[sample_lease()])).expect("valid JSON");
        assert_eq!(value.as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn enum_names_cover_every_value_and_unknown_ones() {
        let names: Vec<_> = (0..=5).map(device_state_name).collect();
        assert_eq!(
            names,
            [
                "unspecified",
                "available",
                "reserved",
                "offline",
                "unauthorized",
                "unknown"
            ]
        );
        let reasons: Vec<_> = (0..=7).map(end_reason_name).collect();
        assert_eq!(
            reasons,
            [
                None,
                Some("released"),
                Some("expired"),
                Some("device_lost"),
                Some("node_lost"),
                Some("admin"),
                Some("idle"),
                Some("unknown")
            ]
        );
        assert_eq!(lease_state_name(1), "active");
        assert_eq!(lease_state_name(2), "ended");
        assert_eq!(lease_state_name(9), "unknown");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_and_out_of_range_ones_are_none() {
        let at = |seconds, nanos| rfc3339(&Timestamp { seconds, nanos });
        assert_eq!(at(0, 0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            at(T0, 500_000_000).as_deref(),
            Some("2025-12-04T16:00:00.5Z")
        );
        assert_eq!(at(i64::MAX, 0), None);
        assert_eq!(at(i64::MIN, -1), None);
        assert_eq!(
            rfc3339_seconds(&Timestamp {
                seconds: T0,
                nanos: 999_999_999
            })
            .as_deref(),
            Some("2025-12-04T16:00:00Z")
        );
    }

    #[test]
    fn relative_times_read_like_speech() {
        assert_eq!(relative(T0 + 299, T0), "in 4m 59s");
        assert_eq!(relative(T0, T0 + 42), "42s ago");
        assert_eq!(relative(T0, T0), "now");
        assert_eq!(relative(T0 + 7500, T0), "in 2h 5m");
        assert_eq!(relative(T0 + 3 * 86_400 + 4 * 3600, T0), "in 3d 4h");
        // Garbage from the wire must not overflow.
        assert!(relative(i64::MIN, i64::MAX).ends_with(" ago"));
    }
}
