//! Host metrics with sysinfo (CPU, memory, disk of the working directory's filesystem, load),
//! and the heartbeat task that samples them with the USB list every interval.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::usb::{UsbReport, UsbScanner};

/// One sample of the host's health.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostMetrics {
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    pub load_average_1m: f32,
}

/// What a heartbeat carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeartbeatData {
    pub host: HostMetrics,
    pub usb: UsbReport,
}

/// A mounted filesystem: where, and its free and total bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// The filesystem holding `path`: the mount with the longest mount point that is a prefix of it.
pub fn mount_for<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|mount| path.starts_with(&mount.mount_point))
        .max_by_key(|mount| mount.mount_point.components().count())
}

/// Samples host metrics; keeps sysinfo's state between samples (CPU usage is a difference).
pub struct HostMetricsSampler {
    system: Option<sysinfo::System>,
    disks: Option<sysinfo::Disks>,
    disk_path: PathBuf,
}

impl std::fmt::Debug for HostMetricsSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMetricsSampler")
            .field("disk_path", &self.disk_path)
            .finish_non_exhaustive()
    }
}

impl HostMetricsSampler {
    /// A sampler reporting the disk that holds the current directory (or `/`).
    pub fn new() -> Self {
        let system = sysinfo::System::new()
            .inspect_err(|error| tracing::warn!(%error, "host metrics unavailable"))
            .ok();
        let disks = sysinfo::Disks::new_with_refreshed_list()
            .inspect_err(|error| tracing::warn!(%error, "disk metrics unavailable"))
            .ok();
        let disk_path = std::env::current_dir()
            .and_then(|dir| dir.canonicalize())
            .unwrap_or_else(|_| PathBuf::from("/"));
        Self {
            system,
            disks,
            disk_path,
        }
    }

    /// One sample. The first CPU figure is 0 (sysinfo needs two readings).
    pub fn sample(&mut self) -> HostMetrics {
        let mut metrics = HostMetrics::default();
        if let Some(system) = &mut self.system {
            system.refresh_cpu_usage();
            system.refresh_memory();
            metrics.cpu_percent = system.global_cpu_usage();
            metrics.memory_used_bytes = system.used_memory();
            metrics.memory_total_bytes = system.total_memory();
        }
        if let Ok(load) = sysinfo::System::load_average() {
            metrics.load_average_1m = load.one as f32;
        }
        if let Some(disks) = &mut self.disks {
            disks.refresh(true);
            let mounts: Vec<Mount> = disks
                .into_iter()
                .map(|disk| Mount {
                    mount_point: disk.mount_point().to_path_buf(),
                    free_bytes: disk.available_space(),
                    total_bytes: disk.total_space(),
                })
                .collect();
            if let Some(mount) = mount_for(&mounts, &self.disk_path) {
                metrics.disk_free_bytes = mount.free_bytes;
                metrics.disk_total_bytes = mount.total_bytes;
            }
        }
        metrics
    }
}

impl Default for HostMetricsSampler {
    fn default() -> Self {
        Self::new()
    }
}

/// Samples host metrics and USB every `interval` on a blocking thread and publishes the
/// latest on the returned watch, until `shutdown` turns true.
pub fn spawn_heartbeat_sampler(
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<HeartbeatData>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(HeartbeatData {
        host: HostMetrics::default(),
        usb: UsbReport {
            devices: Vec::new(),
            status: "USB not scanned yet".to_string(),
        },
    });
    let task = tokio::spawn(
        async move {
            let mut state = Some((HostMetricsSampler::new(), UsbScanner::new()));
            let mut last_usb_status = String::new();
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = crate::wait_for_shutdown(&mut shutdown) => return,
                }
                let Some((mut sampler, mut scanner)) = state.take() else {
                    return;
                };
                let sampled = tokio::task::spawn_blocking(move || {
                    let data = HeartbeatData {
                        host: sampler.sample(),
                        usb: scanner.scan(),
                    };
                    (sampler, scanner, data)
                })
                .await;
                let Ok((sampler, scanner, data)) = sampled else {
                    tracing::error!(
                        "host metrics sampling panicked; heartbeats keep their last values"
                    );
                    return;
                };
                if data.usb.status != last_usb_status {
                    if data.usb.status.is_empty() {
                        tracing::info!(devices = data.usb.devices.len(), "USB bus available");
                    } else {
                        tracing::warn!(usb_status = %data.usb.status, "USB devices unavailable");
                    }
                    last_usb_status.clone_from(&data.usb.status);
                }
                state = Some((sampler, scanner));
                tx.send_replace(data);
            }
        }
        .instrument(tracing::Span::current()),
    );
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(point: &str, free: u64) -> Mount {
        Mount {
            mount_point: PathBuf::from(point),
            free_bytes: free,
            total_bytes: free * 2,
        }
    }

    #[test]
    fn the_longest_matching_mount_point_wins() {
        let mounts = [mount("/", 1), mount("/work", 2), mount("/workshop", 3)];
        assert_eq!(
            mount_for(&mounts, Path::new("/work/main")).map(|m| m.free_bytes),
            Some(2)
        );
        assert_eq!(
            mount_for(&mounts, Path::new("/workshop")).map(|m| m.free_bytes),
            Some(3)
        );
        assert_eq!(
            mount_for(&mounts, Path::new("/etc")).map(|m| m.free_bytes),
            Some(1)
        );
        assert_eq!(mount_for(&[], Path::new("/etc")), None);
    }

    #[test]
    fn a_sample_has_plausible_memory() {
        let mut sampler = HostMetricsSampler::new();
        let metrics = sampler.sample();
        assert!(metrics.memory_total_bytes >= metrics.memory_used_bytes);
        assert!(metrics.disk_total_bytes >= metrics.disk_free_bytes);
    }
}
