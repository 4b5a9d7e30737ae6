//! Decoding rows of `devices` and `leases` into domain types, with errors instead of panics on bad data.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domain::{Device, EndReason, Lease, LeaseState, Presence};
use crate::error::{Error, Result};

fn u32_col(row: &AnyRow, col: &str) -> Result<u32> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| Error::internal(format!("column {col} out of range: {v}")))
}

pub(super) fn device_from_row(row: &AnyRow) -> Result<Device> {
    let presence: String = row.try_get("presence")?;
    let tags: String = row.try_get("tags")?;
    let battery: i64 = row.try_get("battery_level")?;
    Ok(Device {
        id: row.try_get("id")?,
        serial: row.try_get("serial")?,
        node_id: row.try_get("node_id")?,
        site: row.try_get("site")?,
        platform: row.try_get("platform")?,
        model: row.try_get("model")?,
        manufacturer: row.try_get("manufacturer")?,
        android_version: row.try_get("android_version")?,
        sdk: u32_col(row, "sdk")?,
        screen_width: u32_col(row, "screen_width")?,
        screen_height: u32_col(row, "screen_height")?,
        density: u32_col(row, "density")?,
        battery_level: i32::try_from(battery).unwrap_or(-1),
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        presence: Presence::parse(&presence)
            .ok_or_else(|| Error::internal(format!("bad presence {presence:?} in devices")))?,
        state_since: row.try_get("state_since")?,
    })
}

pub(super) fn lease_from_row(row: &AnyRow) -> Result<Lease> {
    let state: String = row.try_get("state")?;
    let reason: Option<String> = row.try_get("end_reason")?;
    let fencing: i64 = row.try_get("fencing_token")?;
    Ok(Lease {
        id: row.try_get("id")?,
        device_id: row.try_get("device_id")?,
        holder: row.try_get("holder")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        ttl_ms: row.try_get("ttl_ms")?,
        fencing_token: u64::try_from(fencing).unwrap_or(0),
        state: if state == "active" {
            LeaseState::Active
        } else {
            LeaseState::Ended
        },
        end_reason: reason.as_deref().and_then(EndReason::parse),
        ended_at: row.try_get("ended_at")?,
    })
}
