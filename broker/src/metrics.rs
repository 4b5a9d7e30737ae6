//! Prometheus metrics: fleet gauges computed at scrape time, and the reservation latency histogram.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::fleet::FleetStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    state: String,
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    site: String,
}

/// The broker's metrics; the histogram is fed as requests finish.
#[derive(Debug)]
pub struct Metrics {
    pub reservation_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            // 0.5 ms .. ~1 s
            reservation_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of everything, with fleet figures from `stats`.
    pub fn render(&self, stats: &FleetStats) -> String {
        let mut registry = Registry::default();
        let devices = Family::<DeviceLabels, Gauge>::default();
        for ((state, site), n) in &stats.devices {
            devices
                .get_or_create(&DeviceLabels {
                    state: state.to_string(),
                    site: site.clone(),
                })
                .set(*n as i64);
        }
        registry.register("farm_devices", "Devices by state and site", devices);
        let gauge = |v: u64| {
            let g: Gauge = Gauge::default();
            g.set(v as i64);
            g
        };
        registry.register(
            "farm_nodes_connected",
            "Controller nodes connected now",
            gauge(stats.nodes_connected),
        );
        registry.register(
            "farm_leases_active",
            "Active leases",
            gauge(stats.active_leases),
        );
        registry.register(
            "farm_reservations_waiting",
            "Reservations queued for a device",
            gauge(stats.waiting_reservations),
        );
        let cpu = Family::<NodeLabels, Gauge<f64, AtomicU64>>::default();
        let disk_free = Family::<NodeLabels, Gauge>::default();
        let mem_used = Family::<NodeLabels, Gauge>::default();
        let cameras = Family::<NodeLabels, Gauge>::default();
        for (node, site, h) in &stats.node_health {
            let l = NodeLabels {
                node: node.clone(),
                site: site.clone(),
            };
            cpu.get_or_create(&l).set(f64::from(h.cpu_percent));
            disk_free.get_or_create(&l).set(h.disk_free_bytes as i64);
            mem_used.get_or_create(&l).set(h.memory_used_bytes as i64);
            cameras.get_or_create(&l).set(i64::from(h.cameras));
        }
        registry.register("farm_node_cpu_percent", "Node host CPU use", cpu);
        registry.register(
            "farm_node_disk_free_bytes",
            "Node host free disk",
            disk_free,
        );
        registry.register(
            "farm_node_memory_used_bytes",
            "Node host memory in use",
            mem_used,
        );
        registry.register(
            "farm_node_usb_cameras",
            "USB video devices on the node",
            cameras,
        );
        registry.register(
            "farm_reservation_duration_seconds",
            "Time to answer an immediate Reserve",
            self.reservation_seconds.clone(),
        );
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_devices_by_state_and_site() {
        let mut stats = FleetStats {
            nodes_connected: 2,
            active_leases: 1,
            ..Default::default()
        };
        stats.devices.insert(("available", "lab".into()), 3);
        let m = Metrics::default();
        m.reservation_seconds.observe(0.003);
        let text = m.render(&stats);
        assert!(
            text.contains("farm_devices{state=\"available\",site=\"lab\"} 3"),
            "{text}"
        );
        assert!(text.contains("farm_nodes_connected 2"), "{text}");
        assert!(text.contains("farm_leases_active 1"), "{text}");
        assert!(
            text.contains("farm_reservation_duration_seconds_count 1"),
            "{text}"
        );
    }
}
