//! Conversions between farm.v1 wire types and domain types, with input validation at the edge.

use farm_proto::timestamp_from_millis;
use farm_proto::v1 as pb;

use crate::domain::{
    DeviceState, EndReason, Lease, LeaseState, Presence, ReportedDevice, Selector, Slot,
};
use crate::error::{Error, Result};
use crate::fleet::{DeviceView, NodeHealth};

/// Longest id, name or filter string accepted from any client or node.
pub const MAX_STRING: usize = 256;
/// Most tags in one selector or filter.
pub const MAX_TAGS: usize = 32;

/// Checks a client string: at most `MAX_STRING` bytes and no control characters.
pub fn check_string(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_STRING {
        return Err(Error::invalid_argument(format!(
            "{field} is {} bytes long; the limit is {MAX_STRING}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid_argument(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// Like `check_string`, and not empty.
pub fn check_required(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid_argument(format!("{field} is required")));
    }
    check_string(field, value)
}

fn check_tags(tags: &[String]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid_argument(format!("at most {MAX_TAGS} tags")));
    }
    tags.iter().try_for_each(|t| check_required("tag", t))
}

pub fn selector(s: pb::Selector) -> Result<Selector> {
    check_string("selector.site", &s.site)?;
    check_string("selector.platform", &s.platform)?;
    check_string("selector.model", &s.model)?;
    check_tags(&s.tags)?;
    Ok(Selector {
        site: s.site,
        platform: s.platform,
        model: s.model,
        tags: s.tags,
    })
}

/// A validated device filter: a selector plus an optional state.
pub fn filter(f: Option<pb::DeviceFilter>) -> Result<(Selector, Option<DeviceState>)> {
    let f = f.unwrap_or_default();
    let state = match pb::DeviceState::try_from(f.state) {
        Ok(pb::DeviceState::Unspecified) => None,
        Ok(pb::DeviceState::Available) => Some(DeviceState::Available),
        Ok(pb::DeviceState::Reserved) => Some(DeviceState::Reserved),
        Ok(pb::DeviceState::Offline) => Some(DeviceState::Offline),
        Ok(pb::DeviceState::Unauthorized) => Some(DeviceState::Unauthorized),
        Err(_) => {
            return Err(Error::invalid_argument(format!(
                "unknown device state {}",
                f.state
            )));
        }
    };
    let sel = selector(pb::Selector {
        site: f.site,
        platform: f.platform,
        model: f.model,
        tags: f.tags,
    })?;
    Ok((sel, state))
}

fn state_to_pb(s: DeviceState) -> pb::DeviceState {
    match s {
        DeviceState::Available => pb::DeviceState::Available,
        DeviceState::Reserved => pb::DeviceState::Reserved,
        DeviceState::Offline => pb::DeviceState::Offline,
        DeviceState::Unauthorized => pb::DeviceState::Unauthorized,
    }
}

pub fn device_to_pb(v: &DeviceView) -> pb::Device {
    let d = &v.device;
    pb::Device {
        id: d.id.clone(),
        serial: d.serial.clone(),
        state: state_to_pb(v.state()) as i32,
        platform: d.platform.clone(),
        model: d.model.clone(),
        manufacturer: d.manufacturer.clone(),
        android_version: d.android_version.clone(),
        sdk: d.sdk,
        screen_width: d.screen_width,
        screen_height: d.screen_height,
        density: d.density,
        battery_level: d.battery_level,
        site: d.site.clone(),
        node_id: d.node_id.clone(),
        tags: d.tags.clone(),
        lease_id: v.lease.as_ref().map(|l| l.id.clone()),
        holder: v.lease.as_ref().map(|l| l.holder.clone()),
        state_since: Some(timestamp_from_millis(d.state_since)),
    }
}

pub fn lease_to_pb(l: &Lease) -> pb::Lease {
    pb::Lease {
        lease_id: l.id.clone(),
        device_id: l.device_id.clone(),
        holder: l.holder.clone(),
        created_at: Some(timestamp_from_millis(l.created_at)),
        expires_at: Some(timestamp_from_millis(l.expires_at)),
        fencing_token: l.fencing_token,
        state: match l.state {
            LeaseState::Active => pb::LeaseState::Active,
            LeaseState::Ended => pb::LeaseState::Ended,
        } as i32,
        end_reason: match l.end_reason {
            None => pb::EndReason::Unspecified,
            Some(EndReason::Released) => pb::EndReason::Released,
            Some(EndReason::Expired) => pb::EndReason::Expired,
            Some(EndReason::DeviceLost) => pb::EndReason::DeviceLost,
            Some(EndReason::NodeLost) => pb::EndReason::NodeLost,
            Some(EndReason::Admin) => pb::EndReason::Admin,
            Some(EndReason::Idle) => pb::EndReason::Idle,
        } as i32,
        ended_at: l.ended_at.map(timestamp_from_millis),
        ttl_seconds: (l.ttl_ms / 1000) as u32,
    }
}

pub fn session_to_pb(s: &crate::domain::SessionRecord) -> pb::SessionInfo {
    pb::SessionInfo {
        session_id: s.id.clone(),
        kind: s.kind.as_str().to_string(),
        device_id: s.device_id.clone(),
        holder: s.holder.clone(),
        mode: s.mode.clone(),
        capabilities_json: s.capabilities.clone(),
        lease_id: s.lease_id.clone().unwrap_or_default(),
        started_at: Some(timestamp_from_millis(s.started_at)),
        ended_at: s.ended_at.map(timestamp_from_millis),
        end_reason: s.end_reason.clone().unwrap_or_default(),
    }
}

/// A device as a node reported it; rejects reports no real device could produce.
pub fn reported_device(d: pb::NodeDevice) -> Result<ReportedDevice> {
    check_required("device serial", &d.serial)?;
    check_string("hardware serial", &d.hardware_serial)?;
    for (field, value) in [
        ("model", &d.model),
        ("manufacturer", &d.manufacturer),
        ("android_version", &d.android_version),
        ("platform", &d.platform),
    ] {
        check_string(field, value)?;
    }
    if d.screen_width > 100_000 || d.screen_height > 100_000 || d.density > 10_000 {
        return Err(Error::invalid_argument(format!(
            "device {}: implausible screen {}x{} at {} dpi",
            d.serial, d.screen_width, d.screen_height, d.density
        )));
    }
    let presence = match pb::NodeDeviceState::try_from(d.state) {
        Ok(pb::NodeDeviceState::Online) => Presence::Online,
        Ok(pb::NodeDeviceState::Offline) => Presence::Offline,
        Ok(pb::NodeDeviceState::Unauthorized) => Presence::Unauthorized,
        _ => {
            return Err(Error::invalid_argument(format!(
                "device {}: unknown state {}",
                d.serial, d.state
            )));
        }
    };
    Ok(ReportedDevice {
        serial: d.serial,
        hardware_serial: d.hardware_serial.trim().to_string(),
        presence,
        platform: if d.platform.is_empty() {
            "android".into()
        } else {
            d.platform
        },
        model: d.model,
        manufacturer: d.manufacturer,
        android_version: d.android_version,
        sdk: d.sdk,
        screen_width: d.screen_width,
        screen_height: d.screen_height,
        density: d.density,
        battery_level: d.battery_level.clamp(-1, 100),
    })
}

/// A WebDriver slot a node offers; its capabilities must be a JSON object.
pub fn slot(s: pb::Slot) -> Result<Slot> {
    check_required("slot_id", &s.slot_id)?;
    check_required("slot kind", &s.kind)?;
    check_string("slot device_serial", &s.device_serial)?;
    if s.capabilities_json.len() > 64 * 1024 {
        return Err(Error::invalid_argument("slot capabilities are over 64 KiB"));
    }
    let capabilities: serde_json::Value = if s.capabilities_json.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&s.capabilities_json).map_err(|e| {
            Error::invalid_argument(format!("slot {} capabilities are not JSON: {e}", s.slot_id))
        })?
    };
    if !capabilities.is_object() {
        return Err(Error::invalid_argument(format!(
            "slot {} capabilities must be a JSON object",
            s.slot_id
        )));
    }
    Ok(Slot {
        slot_id: s.slot_id,
        kind: s.kind,
        device_serial: s.device_serial,
        capabilities,
        max_sessions: s.max_sessions.max(1),
    })
}

pub fn node_health(h: pb::Heartbeat) -> NodeHealth {
    let host = h.host.unwrap_or_default();
    NodeHealth {
        cpu_percent: if host.cpu_percent.is_finite() {
            host.cpu_percent
        } else {
            0.0
        },
        memory_used_bytes: host.memory_used_bytes,
        memory_total_bytes: host.memory_total_bytes,
        disk_free_bytes: host.disk_free_bytes,
        disk_total_bytes: host.disk_total_bytes,
        usb_devices: h.usb.len().min(u32::MAX as usize) as u32,
        cameras: h.usb.iter().filter(|u| u.camera).count() as u32,
        usb_status: h.usb_status.chars().take(MAX_STRING).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_bounded_and_printable() {
        assert!(check_string("x", "hello").is_ok());
        assert!(check_string("x", &"a".repeat(MAX_STRING + 1)).is_err());
        assert!(check_string("x", "a\u{0}b").is_err());
        assert!(check_required("x", "  ").is_err());
    }

    #[test]
    fn node_reports_are_validated() {
        let good = pb::NodeDevice {
            serial: "emulator-5554".into(),
            state: pb::NodeDeviceState::Online as i32,
            battery_level: 250,
            ..Default::default()
        };
        let r = reported_device(good.clone()).expect("valid report");
        assert_eq!(r.battery_level, 100);
        assert_eq!(r.platform, "android");
        assert_eq!(r.device_id(), "emulator-5554");
        assert!(
            reported_device(pb::NodeDevice {
                serial: String::new(),
                ..good.clone()
            })
            .is_err()
        );
        assert!(
            reported_device(pb::NodeDevice {
                state: 99,
                ..good.clone()
            })
            .is_err()
        );
        assert!(
            reported_device(pb::NodeDevice {
                screen_width: 1 << 30,
                ..good
            })
            .is_err()
        );
    }

    #[test]
    fn unknown_filter_state_is_rejected() {
        assert!(
            filter(Some(pb::DeviceFilter {
                state: 42,
                ..Default::default()
            }))
            .is_err()
        );
        assert_eq!(filter(None), Ok((Selector::default(), None)));
    }
}
