//! Measurement helpers shared by the benchmarks: process CPU and memory from /proc, latency summaries.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

/// VmRSS and VmHWM (peak) of a process, in KiB.
pub fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) of a process in seconds; assumes the usual 100 ticks/s.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Samples the broker's RSS every 100 ms until told to stop; returns the peak in KiB.
pub fn spawn_rss_sampler(
    pid: u32,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some((rss, _)) = proc_memory(pid) {
                        peak = peak.max(rss);
                    }
                }
                _ = stop.changed() => return peak,
            }
        }
    })
}

pub fn mb(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(mut us: Vec<u32>) -> Latency {
        us.sort_unstable();
        let at = |q: f64| -> f64 {
            if us.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest value with at least q of the samples at or below it.
            let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
            f64::from(us[rank - 1]) / 1000.0
        };
        let mean = if us.is_empty() {
            0.0
        } else {
            us.iter().map(|&v| f64::from(v)).sum::<f64>() / us.len() as f64 / 1000.0
        };
        Latency {
            count: us.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: us.last().map(|&v| f64::from(v) / 1000.0).unwrap_or(0.0),
            mean_ms: mean,
        }
    }
}
