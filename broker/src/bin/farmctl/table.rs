//! farmctl's human output: aligned tables of devices and leases, and one device in detail (pure).

use farm_proto::v1::{Device, Lease, LeaseState};
use prost_types::Timestamp;

use crate::output::{
    device_state_name, end_reason_name, lease_state_name, relative, rfc3339_seconds,
};

const DEVICE_COLUMNS: [&str; 9] = [
    "ID", "SERIAL", "STATE", "MODEL", "ANDROID", "SCREEN", "SITE", "NODE", "HOLDER",
];
const LEASE_COLUMNS: [&str; 6] = ["LEASE", "DEVICE", "HOLDER", "STATE", "EXPIRES", "REASON"];

/// `devices`: one row per device, header first.
pub fn devices_table(devices: &[Device]) -> String {
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.serial.clone(),
                device_state_name(d.state).to_string(),
                d.model.clone(),
                d.android_version.clone(),
                screen(d),
                d.site.clone(),
                d.node_id.clone(),
                d.holder.clone().unwrap_or_default(),
            ]
        })
        .collect();
    render(&DEVICE_COLUMNS, &rows)
}

/// `reserve`, `renew`, `release`, `reservations`: one row per lease, header first.
/// `now` is Unix seconds, for "in 4m 59s".
pub fn leases_table(leases: &[Lease], now: i64) -> String {
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|lease| {
            vec![
                lease.lease_id.clone(),
                lease.device_id.clone(),
                lease.holder.clone(),
                lease_state_name(lease.state).to_string(),
                expires(lease, now),
                end_reason_name(lease.end_reason)
                    .unwrap_or_default()
                    .to_string(),
            ]
        })
        .collect();
    render(&LEASE_COLUMNS, &rows)
}

/// `device ID`: every field, one per line.
pub fn device_details(d: &Device, now: i64) -> String {
    let mut lines = vec![
        ("ID", d.id.clone()),
        ("SERIAL", d.serial.clone()),
        (
            "STATE",
            match &d.state_since {
                Some(since) => format!("{} since {}", device_state_name(d.state), when(since, now)),
                None => device_state_name(d.state).to_string(),
            },
        ),
        ("PLATFORM", d.platform.clone()),
        ("MODEL", join_nonempty(&d.manufacturer, &d.model)),
        (
            "ANDROID",
            match d.sdk {
                0 => d.android_version.clone(),
                sdk => format!("{} (sdk {sdk})", d.android_version),
            },
        ),
        (
            "SCREEN",
            match d.density {
                0 => screen(d),
                dpi => format!("{} @ {dpi} dpi", screen(d)),
            },
        ),
        (
            "BATTERY",
            if d.battery_level >= 0 {
                format!("{}%", d.battery_level)
            } else {
                String::new()
            },
        ),
        ("SITE", d.site.clone()),
        ("NODE", d.node_id.clone()),
        ("TAGS", d.tags.join(", ")),
    ];
    if let Some(lease_id) = &d.lease_id {
        lines.push(("LEASE", lease_id.clone()));
    }
    if let Some(holder) = &d.holder {
        lines.push(("HOLDER", holder.clone()));
    }
    let rows: Vec<Vec<String>> = lines
        .into_iter()
        .map(|(key, value)| vec![key.to_string(), value])
        .collect();
    render_rows(&rows)
}

/// Columns padded to their widest cell, two spaces apart, no trailing spaces.
/// Empty cells show as "-" so columns stay countable with `awk`.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut all = Vec::with_capacity(rows.len() + 1);
    all.push(header.iter().map(|h| h.to_string()).collect());
    all.extend(rows.iter().cloned());
    render_rows(&all)
}

fn render_rows(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| printable(cell)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i] - cell.chars().count();
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A cell as it may reach a terminal: device properties come from the device, so
/// control characters (escape sequences, newlines) are replaced; empty becomes "-".
fn printable(cell: &str) -> String {
    if cell.is_empty() {
        return "-".to_string();
    }
    cell.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn screen(d: &Device) -> String {
    if d.screen_width == 0 || d.screen_height == 0 {
        String::new()
    } else {
        format!("{}x{}", d.screen_width, d.screen_height)
    }
}

fn expires(lease: &Lease, now: i64) -> String {
    if lease.state == LeaseState::Ended as i32 {
        return match &lease.ended_at {
            Some(ended) => format!("ended {}", relative(ended.seconds, now)),
            None => "ended".to_string(),
        };
    }
    lease
        .expires_at
        .as_ref()
        .map(|at| when(at, now))
        .unwrap_or_default()
}

/// "2025-12-04T16:05:00Z (in 4m 59s)".
fn when(at: &Timestamp, now: i64) -> String {
    match rfc3339_seconds(at) {
        Some(text) => format!("{text} ({})", relative(at.seconds, now)),
        None => "?".to_string(),
    }
}

fn join_nonempty(first: &str, second: &str) -> String {
    match (first.is_empty(), second.is_empty()) {
        (true, _) => second.to_string(),
        (_, true) => first.to_string(),
        _ => format!("{first} {second}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::{T0, sample_device, sample_lease};
    use farm_proto::v1::{DeviceState, EndReason};

    #[test]
    fn device_rows_line_up_under_the_header() {
        let free = Device {
            id: "emulator-5554".into(),
            serial: "emulator-5554".into(),
            state: DeviceState::Available as i32,
            model: "sdk_gphone64".into(),
            lease_id: None,
            holder: None,
            ..sample_device()
        };
        let table = devices_table(&[sample_device(), free]);
        let expected = "\
ID             SERIAL         STATE      MODEL         ANDROID  SCREEN     SITE   NODE    HOLDER
R58M1234ABC    R58M1234ABC    reserved   Pixel 7       14       1080x2400  lab-1  node-a  ci
emulator-5554  emulator-5554  available  sdk_gphone64  14       1080x2400  lab-1  node-a  -
";
        assert_eq!(table, expected);
    }

    #[test]
    fn an_empty_list_is_just_the_header() {
        assert_eq!(
            devices_table(&[]),
            "ID  SERIAL  STATE  MODEL  ANDROID  SCREEN  SITE  NODE  HOLDER\n"
        );
    }

    #[test]
    fn lease_rows_show_expiry_as_time_and_countdown() {
        let ended = Lease {
            lease_id: "l-2".into(),
            state: LeaseState::Ended as i32,
            end_reason: EndReason::Released as i32,
            ended_at: Some(Timestamp {
                seconds: T0 - 120,
                nanos: 0,
            }),
            ..sample_lease()
        };
        let table = leases_table(&[sample_lease(), ended], T0 + 1);
        let expected = "\
LEASE  DEVICE       HOLDER  STATE   EXPIRES                           REASON
l-1    R58M1234ABC  ci      active  2025-12-04T16:05:00Z (in 4m 59s)  -
l-2    R58M1234ABC  ci      ended   ended 2m 1s ago                   released
";
        assert_eq!(table, expected);
    }

    #[test]
    fn alignment_counts_characters_not_bytes() {
        let table = render(&["A", "B"], &[vec!["é".into(), "x".into()]]);
        assert_eq!(table, "A  B\né  x\n");
    }

    #[test]
    fn control_characters_from_a_device_never_reach_the_terminal() {
        let table = render(&["MODEL"], &[vec!["evil\u{1b}[2J\nmodel".into()]]);
        assert_eq!(table, "MODEL\nevil?[2J?model\n");
    }

    #[test]
    fn one_device_is_shown_field_by_field() {
        let text = device_details(&sample_device(), T0 + 60);
        let expected = "\
ID        R58M1234ABC
SERIAL    R58M1234ABC
STATE     reserved since 2025-12-04T16:00:00Z (1m 0s ago)
PLATFORM  android
MODEL     Google Pixel 7
ANDROID   14 (sdk 34)
SCREEN    1080x2400 @ 420 dpi
BATTERY   87%
SITE      lab-1
NODE      node-a
TAGS      usb3, camera
LEASE     l-1
HOLDER    ci
";
        assert_eq!(text, expected);
    }
}
