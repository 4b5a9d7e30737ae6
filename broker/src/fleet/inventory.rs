//! The in-memory fleet: devices, active leases and node presence, with the pure rules that change them.
//!
//! Sans-IO: every function takes `now` and returns what changed; the actor in
//! `fleet/mod.rs` writes those changes to the store and tells the watchers.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::domain::{
    Device, DeviceState, Lease, Millis, Presence, ReportedDevice, Selector, Target,
};
use crate::store::HistoryEntry;

/// A device together with its active lease: what clients see.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceView {
    pub device: Device,
    pub lease: Option<Lease>,
}

impl DeviceView {
    pub fn state(&self) -> DeviceState {
        match (self.device.presence, &self.lease) {
            (Presence::Online, Some(_)) => DeviceState::Reserved,
            (Presence::Online, None) => DeviceState::Available,
            (Presence::Offline, _) => DeviceState::Offline,
            (Presence::Unauthorized, _) => DeviceState::Unauthorized,
        }
    }
}

/// What one report changed.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Devices whose row must be written.
    pub updated: Vec<Device>,
    /// Presence changes to record.
    pub history: Vec<HistoryEntry>,
    /// Devices that were online and no longer are (their lease must end).
    pub lost: Vec<String>,
    /// Devices that came online (waiters may get them).
    pub came_online: Vec<String>,
}

/// Devices and active leases.
#[derive(Debug, Default)]
pub struct Inventory {
    devices: BTreeMap<String, Device>,
    leases: HashMap<String, Lease>,
    lease_by_device: HashMap<String, String>,
}

impl Inventory {
    pub fn new(devices: Vec<Device>, leases: Vec<Lease>) -> Inventory {
        let mut inv = Inventory::default();
        for d in devices {
            inv.devices.insert(d.id.clone(), d);
        }
        for l in leases {
            inv.insert_lease(l);
        }
        inv
    }

    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
    }

    pub fn view(&self, id: &str) -> Option<DeviceView> {
        self.devices.get(id).map(|d| DeviceView {
            device: d.clone(),
            lease: self.lease_of_device(id).cloned(),
        })
    }

    pub fn views(&self) -> impl Iterator<Item = DeviceView> + '_ {
        self.devices.keys().filter_map(|id| self.view(id))
    }

    pub fn lease(&self, lease_id: &str) -> Option<&Lease> {
        self.leases.get(lease_id)
    }

    pub fn lease_of_device(&self, device_id: &str) -> Option<&Lease> {
        self.lease_by_device
            .get(device_id)
            .and_then(|l| self.leases.get(l))
    }

    pub fn active_leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub fn insert_lease(&mut self, lease: Lease) {
        self.lease_by_device
            .insert(lease.device_id.clone(), lease.id.clone());
        self.leases.insert(lease.id.clone(), lease);
    }

    /// Forgets an active lease (it ended); returns it.
    pub fn remove_lease(&mut self, lease_id: &str) -> Option<Lease> {
        let lease = self.leases.remove(lease_id)?;
        if self.lease_by_device.get(&lease.device_id) == Some(&lease.id) {
            self.lease_by_device.remove(&lease.device_id);
        }
        Some(lease)
    }

    /// Leases whose expiry is at or before `now`.
    pub fn expired_leases(&self, now: Millis) -> Vec<String> {
        self.leases
            .values()
            .filter(|l| l.expires_at <= now)
            .map(|l| l.id.clone())
            .collect()
    }

    /// True when the device is online and holds no lease.
    pub fn is_free(&self, device_id: &str) -> bool {
        self.devices.get(device_id).is_some_and(|d| {
            d.presence == Presence::Online && !self.lease_by_device.contains_key(device_id)
        })
    }

    /// The device a reservation for `target` would get now, if any.
    pub fn pick(&self, target: &Target) -> Option<String> {
        match target {
            Target::Device(id) => self.is_free(id).then(|| id.clone()),
            Target::Selector(sel) => self
                .devices
                .values()
                .find(|d| sel.matches(d) && self.is_free(&d.id))
                .map(|d| d.id.clone()),
        }
    }

    /// Devices that could ever satisfy the selector (any state).
    pub fn matching<'a>(&'a self, sel: &'a Selector) -> impl Iterator<Item = &'a Device> + 'a {
        self.devices.values().filter(move |d| sel.matches(d))
    }

    /// Applies a node's report. With `full_snapshot`, the node's devices missing
    /// from `reports` go offline.
    pub fn apply_report(
        &mut self,
        node_id: &str,
        site: &str,
        reports: &[ReportedDevice],
        full_snapshot: bool,
        now: Millis,
    ) -> Changes {
        let mut changes = Changes::default();
        let mut seen = HashSet::new();
        for r in reports {
            let id = self.id_for(node_id, r);
            seen.insert(id.clone());
            let previous = self.devices.get(&id);
            let mut device = match previous {
                Some(d) => d.clone(),
                None => Device {
                    id: id.clone(),
                    serial: String::new(),
                    node_id: String::new(),
                    site: String::new(),
                    platform: String::new(),
                    model: String::new(),
                    manufacturer: String::new(),
                    android_version: String::new(),
                    sdk: 0,
                    screen_width: 0,
                    screen_height: 0,
                    density: 0,
                    battery_level: -1,
                    tags: Vec::new(),
                    presence: Presence::Offline,
                    state_since: now,
                },
            };
            let old_presence = previous.map(|d| d.presence);
            device.serial = r.serial.clone();
            device.node_id = node_id.to_string();
            device.site = site.to_string();
            // An unauthorized or offline device reports no properties: keep what we knew.
            if r.presence == Presence::Online || previous.is_none() {
                device.platform = r.platform.clone();
                device.model = r.model.clone();
                device.manufacturer = r.manufacturer.clone();
                device.android_version = r.android_version.clone();
                device.sdk = r.sdk;
                device.screen_width = r.screen_width;
                device.screen_height = r.screen_height;
                device.density = r.density;
                device.battery_level = r.battery_level;
            }
            device.presence = r.presence;
            if old_presence != Some(r.presence) {
                device.state_since = now;
                changes.history.push(HistoryEntry {
                    device_id: id.clone(),
                    presence: r.presence,
                    at: now,
                    node_id: node_id.to_string(),
                });
                if old_presence == Some(Presence::Online) {
                    changes.lost.push(id.clone());
                }
                if r.presence == Presence::Online {
                    changes.came_online.push(id.clone());
                }
            }
            if previous != Some(&device) {
                self.devices.insert(id.clone(), device.clone());
                changes.updated.push(device);
            }
        }
        if full_snapshot {
            let missing: Vec<String> = self
                .devices
                .values()
                .filter(|d| d.node_id == node_id && !seen.contains(&d.id))
                .map(|d| d.id.clone())
                .collect();
            for id in missing {
                self.set_presence(&id, Presence::Offline, now, &mut changes);
            }
        }
        changes
    }

    /// The broker-wide id of a reported device. A device that cannot be read
    /// (offline, unauthorized) reports no hardware serial: it keeps the id it has
    /// on this node under the same adb serial.
    fn id_for(&self, node_id: &str, r: &ReportedDevice) -> String {
        if r.hardware_serial.is_empty()
            && let Some(known) = self
                .devices
                .values()
                .find(|d| d.node_id == node_id && d.serial == r.serial)
        {
            return known.id.clone();
        }
        r.device_id().to_string()
    }

    /// A device left its node (unplugged).
    pub fn device_removed(&mut self, node_id: &str, serial: &str, now: Millis) -> Changes {
        let mut changes = Changes::default();
        let ids: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.node_id == node_id && d.serial == serial)
            .map(|d| d.id.clone())
            .collect();
        for id in ids {
            self.set_presence(&id, Presence::Offline, now, &mut changes);
        }
        changes
    }

    /// Every device of the node goes offline (the node is gone).
    pub fn node_lost(&mut self, node_id: &str, now: Millis) -> Changes {
        let mut changes = Changes::default();
        let ids: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.node_id == node_id)
            .map(|d| d.id.clone())
            .collect();
        for id in ids {
            self.set_presence(&id, Presence::Offline, now, &mut changes);
        }
        changes
    }

    fn set_presence(&mut self, id: &str, presence: Presence, now: Millis, changes: &mut Changes) {
        let Some(device) = self.devices.get_mut(id) else {
            return;
        };
        if device.presence == presence {
            return;
        }
        if device.presence == Presence::Online {
            changes.lost.push(id.to_string());
        }
        if presence == Presence::Online {
            changes.came_online.push(id.to_string());
        }
        device.presence = presence;
        device.state_since = now;
        changes.history.push(HistoryEntry {
            device_id: id.to_string(),
            presence,
            at: now,
            node_id: device.node_id.clone(),
        });
        changes.updated.push(device.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LeaseState;

    fn report(serial: &str, presence: Presence) -> ReportedDevice {
        ReportedDevice {
            serial: serial.into(),
            hardware_serial: format!("HW-{serial}"),
            presence,
            platform: "android".into(),
            model: "Pixel 7".into(),
            manufacturer: "Google".into(),
            android_version: "14".into(),
            sdk: 34,
            screen_width: 1080,
            screen_height: 2400,
            density: 420,
            battery_level: 80,
        }
    }

    fn lease(id: &str, device: &str, expires_at: Millis) -> Lease {
        Lease {
            id: id.into(),
            device_id: device.into(),
            holder: "alice".into(),
            created_at: 0,
            expires_at,
            ttl_ms: expires_at,
            fencing_token: 1,
            state: LeaseState::Active,
            end_reason: None,
            ended_at: None,
        }
    }

    #[test]
    fn a_new_online_device_is_recorded_and_free() {
        let mut inv = Inventory::default();
        let c = inv.apply_report("n1", "lab", &[report("s1", Presence::Online)], true, 10);
        assert_eq!(c.updated.len(), 1);
        assert_eq!(c.came_online, vec!["HW-s1".to_string()]);
        assert!(c.lost.is_empty());
        assert_eq!(c.history.len(), 1);
        assert!(inv.is_free("HW-s1"));
        assert_eq!(inv.device("HW-s1").map(|d| d.site.as_str()), Some("lab"));
    }

    #[test]
    fn the_same_report_twice_changes_nothing() {
        let mut inv = Inventory::default();
        inv.apply_report("n1", "lab", &[report("s1", Presence::Online)], true, 10);
        let c = inv.apply_report("n1", "lab", &[report("s1", Presence::Online)], true, 20);
        assert_eq!(c, Changes::default());
    }

    #[test]
    fn a_device_missing_from_a_snapshot_goes_offline_and_is_lost() {
        let mut inv = Inventory::default();
        inv.apply_report(
            "n1",
            "lab",
            &[
                report("s1", Presence::Online),
                report("s2", Presence::Online),
            ],
            true,
            10,
        );
        let c = inv.apply_report("n1", "lab", &[report("s1", Presence::Online)], true, 20);
        assert_eq!(c.lost, vec!["HW-s2".to_string()]);
        assert_eq!(
            inv.device("HW-s2").map(|d| d.presence),
            Some(Presence::Offline)
        );
        assert_eq!(inv.device("HW-s2").map(|d| d.state_since), Some(20));
    }

    #[test]
    fn unauthorized_keeps_known_properties_and_counts_as_lost() {
        let mut inv = Inventory::default();
        inv.apply_report("n1", "lab", &[report("s1", Presence::Online)], true, 10);
        let mut r = report("s1", Presence::Unauthorized);
        r.model = String::new();
        let c = inv.apply_report("n1", "lab", &[r], false, 20);
        assert_eq!(c.lost, vec!["HW-s1".to_string()]);
        let d = inv.device("HW-s1").cloned();
        assert_eq!(d.as_ref().map(|d| d.model.as_str()), Some("Pixel 7"));
        assert_eq!(d.map(|d| d.presence), Some(Presence::Unauthorized));
    }

    #[test]
    fn an_unreadable_device_keeps_the_id_it_has_under_its_adb_serial() {
        let mut inv = Inventory::default();
        inv.apply_report("n1", "lab", &[report("s1", Presence::Online)], true, 10);
        let mut r = report("s1", Presence::Unauthorized);
        r.hardware_serial = String::new();
        inv.apply_report("n1", "lab", &[r.clone()], true, 20);
        assert_eq!(inv.devices().count(), 1);
        assert_eq!(
            inv.device("HW-s1").map(|d| d.presence),
            Some(Presence::Unauthorized)
        );
        // On another node the same adb serial is another device.
        inv.apply_report("n2", "lab", &[r], true, 30);
        assert_eq!(inv.devices().count(), 2);
    }

    #[test]
    fn node_lost_takes_all_its_devices_offline_only() {
        let mut inv = Inventory::default();
        inv.apply_report("n1", "lab", &[report("a", Presence::Online)], true, 1);
        inv.apply_report("n2", "lab", &[report("b", Presence::Online)], true, 1);
        let c = inv.node_lost("n1", 5);
        assert_eq!(c.lost, vec!["HW-a".to_string()]);
        assert!(inv.is_free("HW-b"));
        assert!(!inv.is_free("HW-a"));
        let c = inv.device_removed("n2", "b", 6);
        assert_eq!(c.lost, vec!["HW-b".to_string()]);
    }

    #[test]
    fn pick_skips_held_and_offline_devices() {
        let mut inv = Inventory::default();
        inv.apply_report(
            "n1",
            "lab",
            &[
                report("a", Presence::Online),
                report("b", Presence::Online),
                report("c", Presence::Offline),
            ],
            true,
            1,
        );
        inv.insert_lease(lease("l1", "HW-a", 100));
        let any = Target::Selector(Selector::default());
        assert_eq!(inv.pick(&any), Some("HW-b".to_string()));
        assert_eq!(inv.pick(&Target::Device("HW-a".into())), None);
        assert_eq!(inv.pick(&Target::Device("HW-c".into())), None);
        let other_site = Target::Selector(Selector {
            site: "elsewhere".into(),
            ..Default::default()
        });
        assert_eq!(inv.pick(&other_site), None);
        assert_eq!(
            inv.view("HW-a").map(|v| v.state()),
            Some(DeviceState::Reserved)
        );
        assert_eq!(
            inv.view("HW-c").map(|v| v.state()),
            Some(DeviceState::Offline)
        );
    }

    #[test]
    fn leases_expire_at_their_deadline() {
        let mut inv = Inventory::default();
        inv.insert_lease(lease("l1", "d", 100));
        assert!(inv.expired_leases(99).is_empty());
        assert_eq!(inv.expired_leases(100), vec!["l1".to_string()]);
        assert!(inv.remove_lease("l1").is_some());
        assert!(inv.lease_of_device("d").is_none());
    }
}
