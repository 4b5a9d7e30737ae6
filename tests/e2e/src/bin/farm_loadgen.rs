//! `farm-loadgen`: the reservation benchmark; simulated nodes over real gRPC plus clients reserving and releasing as fast as they can.
//!
//! What it does, against a running broker (see `scripts/bench-reservations`):
//! 1. connects `--nodes` fake controller nodes, each on its OWN gRPC connection,
//!    each sending `hello`, a snapshot of `--devices-per-node` online devices,
//!    then a heartbeat every second until the end (the broker drops a node that
//!    is silent for ~3 s); every node reads the lease updates the broker sends
//!    and answers each with a `CommandResult`, as farm-node does;
//! 2. waits until `ListDevices` shows all `nodes * devices` devices available;
//! 3. runs `--clients` loops, each on its own connection: reserve (wait 0) then
//!    release, for `--warmup-secs` (not measured) plus `--duration-secs` (measured);
//! 4. reports pairs/s, reserve and release latency percentiles, conflicts,
//!    errors, and the broker's resident memory (read from /proc/PID/status).
//!
//! A reserve refused with FAILED_PRECONDITION (every matching device busy) is a
//! conflict, not a pair. Latencies are measured by the client around each call,
//! so they include loopback gRPC and the client's own scheduling on a shared CPU.
//!
//! Every fake node holds one TCP connection: raise the open-files limit
//! (`ulimit -n 65536`) for both this process and the broker when `--nodes` is large.

use farm_e2e::measure::{Latency, mb, micros, proc_cpu_secs, proc_memory, spawn_rss_sampler};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use farm_e2e::BearerToken;
use farm_proto::v1 as pb;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

type Authed = InterceptedService<Channel, BearerToken>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Reserve any device at a random site (a selector).
    Selector,
    /// Reserve one specific random device by id.
    Device,
}

#[derive(Debug, Parser)]
#[command(
    name = "farm-loadgen",
    about = "Reservation benchmark: simulated nodes over real gRPC and clients reserving + releasing as fast as they can",
    after_help = "Usually run through scripts/bench-reservations, which starts a fresh broker and prints medians.\n\
                  Each node holds its own TCP connection: run `ulimit -n 65536` first for large --nodes."
)]
struct Args {
    /// The broker's URL.
    #[arg(long, default_value = "http://127.0.0.1:4444")]
    broker: String,
    /// Token the clients reserve with (admin or user; the holder name comes from it).
    #[arg(long, env = "FARM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Token the fake nodes connect with (role node).
    #[arg(long, env = "FARM_NODE_TOKEN", hide_env_values = true)]
    node_token: String,
    /// Simulated controller nodes, one gRPC connection each.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    nodes: u32,
    /// Online devices each node reports.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    devices_per_node: u32,
    /// Sites the nodes are spread over (node i is at site i % sites).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sites: u32,
    /// Concurrent reserve+release loops, one gRPC connection each.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,
    /// Measured time, after the warm-up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_secs: u64,
    /// Unmeasured time before the measurement (the clients already run).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup_secs: u64,
    /// selector: any device at a random site; device: a specific random device id.
    #[arg(long, value_enum, default_value_t = Mode::Selector)]
    mode: Mode,
    /// The broker's process id, to read its resident memory from /proc/PID/status.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Prefix of node ids, sites and device serials (change it to run twice against one broker).
    #[arg(long, default_value = "lg")]
    id_prefix: String,
    /// Lease ttl asked for by each reserve, in seconds (leases left behind by a crash expire).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86400))]
    ttl_secs: u32,
    /// How many nodes connect at the same time during setup.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connect_parallelism: u32,
    /// Give up when the nodes are not connected and their devices listed within this time.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=3600))]
    setup_timeout_secs: u64,
}

// ------------------------------------------------------------------- nodes

fn node_id(prefix: &str, i: u32) -> String {
    format!("{prefix}-node-{i:05}")
}

fn site_name(prefix: &str, s: u32) -> String {
    format!("{prefix}-site-{s:04}")
}

/// The device id the broker will use: the hardware serial.
fn device_id(prefix: &str, node: u32, dev: u32) -> String {
    format!("{prefix}-hw-{node:05}-{dev:03}")
}

fn node_device(prefix: &str, node: u32, dev: u32) -> pb::NodeDevice {
    pb::NodeDevice {
        serial: format!("emulator-{}", 5554 + 2 * dev),
        hardware_serial: device_id(prefix, node, dev),
        state: pb::NodeDeviceState::Online as i32,
        model: "Pixel 7".into(),
        manufacturer: "Google".into(),
        android_version: "14".into(),
        sdk: 34,
        screen_width: 1080,
        screen_height: 2400,
        density: 420,
        battery_level: 90,
        platform: "android".into(),
    }
}

fn msg(m: pb::node_message::Msg) -> pb::NodeMessage {
    pb::NodeMessage { msg: Some(m) }
}

/// What the node tasks count, shared.
#[derive(Debug, Default)]
struct NodeCounters {
    connected: AtomicU64,
    heartbeats_sent: AtomicU64,
    lease_updates: AtomicU64,
    broker_errors: AtomicU64,
    /// Streams that ended before the run did (the broker dropped the node).
    dropped: AtomicU64,
}

/// Connects one node on its own channel, then heartbeats and drains until `stop`.
async fn connect_node(
    args: Arc<Args>,
    index: u32,
    counters: Arc<NodeCounters>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let endpoint = Endpoint::from_shared(args.broker.clone())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    // Each node its own connection, as real nodes have.
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("node {index}: cannot connect to {}", args.broker))?;
    let mut client = pb::node_service_client::NodeServiceClient::with_interceptor(
        channel,
        BearerToken::new(&args.node_token),
    );
    let (tx, rx) = mpsc::channel::<pb::NodeMessage>(16);
    let id = node_id(&args.id_prefix, index);
    tx.send(msg(pb::node_message::Msg::Hello(pb::NodeHello {
        node_id: id.clone(),
        site: site_name(&args.id_prefix, index % args.sites),
        version: "farm-loadgen".into(),
        hostname: "loadgen".into(),
        features: Vec::new(),
    })))
    .await?;
    let devices = (0..args.devices_per_node)
        .map(|d| node_device(&args.id_prefix, index, d))
        .collect();
    tx.send(msg(pb::node_message::Msg::Snapshot(pb::DeviceSnapshot {
        devices,
    })))
    .await?;
    let mut inbound = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .with_context(|| format!("node {id}: Connect refused"))?
        .into_inner();
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let mut stop = stop;
    Ok(tokio::spawn(async move {
        // Spread the heartbeats over the second instead of sending them in step.
        let phase = Duration::from_millis(u64::from(index) * 7 % 1000);
        let mut beat =
            tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_secs(1));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    let hb = msg(pb::node_message::Msg::Heartbeat(pb::Heartbeat::default()));
                    if tx.send(hb).await.is_err() {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                }
                m = inbound.message() => match m {
                    Ok(Some(pb::BrokerMessage { msg: Some(pb::broker_message::Msg::Command(c)) })) => {
                        counters.lease_updates.fetch_add(1, Ordering::Relaxed);
                        // A real node answers every command (farm-node's broker_link does).
                        let result = msg(pb::node_message::Msg::Result(pb::CommandResult {
                            id: c.id,
                            ok: true,
                            ..Default::default()
                        }));
                        if tx.send(result).await.is_err() {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    Ok(Some(pb::BrokerMessage { msg: Some(pb::broker_message::Msg::Error(_)) })) => {
                        counters.broker_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        if !*stop.borrow() {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                },
                _ = stop.changed() => break,
            }
        }
        // Dropping `tx` ends the node's stream: the broker sees the node leave.
    }))
}

/// Waits until the broker lists `want` available devices of ours.
async fn wait_for_devices(
    devices: &mut pb::device_service_client::DeviceServiceClient<Authed>,
    prefix: &str,
    want: usize,
    deadline: Instant,
) -> anyhow::Result<usize> {
    let ours = format!("{prefix}-hw-");
    let mut last = 0;
    loop {
        let request = pb::ListDevicesRequest {
            filter: Some(pb::DeviceFilter {
                state: pb::DeviceState::Available as i32,
                ..Default::default()
            }),
        };
        match devices.list_devices(request).await {
            Ok(r) => {
                last = r
                    .into_inner()
                    .devices
                    .iter()
                    .filter(|d| d.id.starts_with(&ours))
                    .count();
                if last >= want {
                    return Ok(last);
                }
            }
            Err(e) => eprintln!("farm-loadgen: ListDevices failed ({e}); retrying"),
        }
        if Instant::now() >= deadline {
            bail!(
                "only {last} of {want} devices were listed as available before the setup timeout"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ----------------------------------------------------------------- clients

/// One client's observations inside the measured window.
#[derive(Debug, Default)]
struct ClientStats {
    reserve_us: Vec<u32>,
    release_us: Vec<u32>,
    conflicts: u64,
    errors: u64,
    error_samples: Vec<String>,
    /// Pairs completed in the warm-up and after the window (not counted).
    unmeasured_pairs: u64,
}

impl ClientStats {
    fn error(&mut self, what: &str, status: &tonic::Status) {
        self.errors += 1;
        if self.error_samples.len() < 3 {
            self.error_samples
                .push(format!("{what}: {:?}: {}", status.code(), status.message()));
        }
    }
}

/// Reserves and releases until `end`; measures what completes in `[measure_from, end)`.
async fn client_loop(
    args: Arc<Args>,
    device_ids: Arc<Vec<String>>,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<ClientStats> {
    let channel = Endpoint::from_shared(args.broker.clone())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("client cannot connect to {}", args.broker))?;
    let mut reservations = pb::reservation_service_client::ReservationServiceClient::new(
        InterceptedService::new(channel, BearerToken::new(&args.admin_token)),
    );
    let mut stats = ClientStats::default();
    while Instant::now() < end {
        let target = match args.mode {
            Mode::Selector => {
                let site = rand::random_range(0..args.sites);
                pb::reserve_request::Target::Selector(pb::Selector {
                    site: site_name(&args.id_prefix, site),
                    ..Default::default()
                })
            }
            Mode::Device => {
                let i = rand::random_range(0..device_ids.len());
                pb::reserve_request::Target::DeviceId(device_ids[i].clone())
            }
        };
        let request = pb::ReserveRequest {
            target: Some(target),
            wait_seconds: 0,
            ttl_seconds: args.ttl_secs,
        };
        let started = Instant::now();
        let reserved = reservations.reserve(request).await;
        let reserve_done = Instant::now();
        let measured = started >= measure_from && reserve_done < end;
        let lease = match reserved {
            Ok(lease) => lease.into_inner(),
            Err(status) if status.code() == Code::FailedPrecondition => {
                if measured {
                    stats.conflicts += 1;
                }
                continue;
            }
            Err(status) => {
                if measured {
                    stats.error("reserve", &status);
                }
                // Do not spin on a broker that refuses everything.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let released = reservations
            .release(pb::ReleaseRequest {
                lease_id: lease.lease_id,
            })
            .await;
        let release_done = Instant::now();
        match released {
            Ok(_) if measured && release_done < end => {
                stats.reserve_us.push(micros(reserve_done - started));
                stats.release_us.push(micros(release_done - reserve_done));
            }
            Ok(_) => stats.unmeasured_pairs += 1,
            Err(status) => {
                if measured {
                    stats.error("release", &status);
                }
            }
        }
    }
    Ok(stats)
}

// ------------------------------------------------------------------ memory

/// The soft open-files limit of this process, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `farm_nodes_connected` from the broker's /metrics, when it can be read.
async fn nodes_connected_metric(args: &Args) -> Option<u64> {
    let body = reqwest::Client::new()
        .get(format!("{}/metrics", args.broker.trim_end_matches('/')))
        .bearer_auth(&args.admin_token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("farm_nodes_connected "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

// ------------------------------------------------------------------ report

#[derive(Debug, Serialize)]
struct Report {
    mode: Mode,
    nodes: u32,
    devices_per_node: u32,
    sites: u32,
    clients: u32,
    warmup_secs: u64,
    duration_secs: f64,
    setup_secs: f64,
    pairs: usize,
    pairs_per_sec: f64,
    /// Pairs completed during the warm-up or straddling the window's edges (not counted).
    pairs_outside_window: u64,
    reserve: Latency,
    release: Latency,
    conflicts: u64,
    errors: u64,
    error_samples: Vec<String>,
    nodes_connected_at_start: u64,
    /// From the broker's /metrics at the end (None when unreadable).
    nodes_connected_at_end: Option<u64>,
    node_streams_dropped: u64,
    /// NodeError messages the broker sent to the nodes (refused node messages).
    node_errors_received: u64,
    lease_updates_received: u64,
    heartbeats_sent: u64,
    broker_rss_before_clients_mb: Option<f64>,
    broker_rss_end_mb: Option<f64>,
    /// Highest RSS sampled every 100 ms during the client run.
    broker_rss_peak_sampled_mb: Option<f64>,
    /// The kernel's high-water mark (VmHWM) over the broker's whole life.
    broker_rss_hwm_mb: Option<f64>,
    /// Broker CPU seconds per wall second during the measured window (2.0 = both cores).
    broker_cpu_cores: Option<f64>,
    /// This process's CPU seconds per wall second during the measured window.
    loadgen_cpu_cores: Option<f64>,
}

impl Report {
    fn text(&self) -> String {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.1}{unit}"));
        let mut s = String::new();
        let _ = writeln!(
            s,
            "farm-loadgen: mode={:?} nodes={} devices/node={} sites={} clients={} warmup={}s measured={:.1}s (setup {:.1}s)",
            self.mode,
            self.nodes,
            self.devices_per_node,
            self.sites,
            self.clients,
            self.warmup_secs,
            self.duration_secs,
            self.setup_secs
        );
        let _ = writeln!(
            s,
            "  pairs/s     {:.0}  ({} reserve+release pairs)",
            self.pairs_per_sec, self.pairs
        );
        let r = &self.reserve;
        let _ = writeln!(
            s,
            "  reserve ms  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
            r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms, r.mean_ms
        );
        let r = &self.release;
        let _ = writeln!(
            s,
            "  release ms  p50 {:.2}  p99 {:.2}  max {:.2}",
            r.p50_ms, r.p99_ms, r.max_ms
        );
        let _ = writeln!(
            s,
            "  conflicts   {}   errors {}{}",
            self.conflicts,
            self.errors,
            if self.error_samples.is_empty() {
                String::new()
            } else {
                format!("  e.g. {}", self.error_samples.join(" | "))
            }
        );
        let _ = writeln!(
            s,
            "  nodes       {} connected at start, {} at end (broker /metrics), {} streams dropped; {} lease updates received",
            self.nodes_connected_at_start,
            self.nodes_connected_at_end
                .map_or("n/a".to_string(), |n| n.to_string()),
            self.node_streams_dropped,
            self.lease_updates_received
        );
        let _ = writeln!(
            s,
            "  broker RSS  before clients {}  end {}  peak sampled {}  peak (VmHWM) {}",
            opt(self.broker_rss_before_clients_mb, " MB"),
            opt(self.broker_rss_end_mb, " MB"),
            opt(self.broker_rss_peak_sampled_mb, " MB"),
            opt(self.broker_rss_hwm_mb, " MB")
        );
        let _ = write!(
            s,
            "  CPU         broker {} cores, loadgen {} cores (of 2)",
            self.broker_cpu_cores
                .map_or("n/a".to_string(), |v| format!("{v:.2}")),
            self.loadgen_cpu_cores
                .map_or("n/a".to_string(), |v| format!("{v:.2}"))
        );
        s
    }
}

// -------------------------------------------------------------------- main

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(Arc::new(args)).await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("farm-loadgen: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Arc<Args>) -> anyhow::Result<()> {
    let needed_fds = u64::from(args.nodes) + u64::from(args.clients) + 64;
    if let Some(limit) = open_files_limit()
        && limit < needed_fds
    {
        bail!(
            "the open-files limit is {limit} but {} nodes and {} clients need about {needed_fds}: run `ulimit -n 65536` first",
            args.nodes,
            args.clients
        );
    }
    let setup_started = Instant::now();
    let deadline = setup_started + Duration::from_secs(args.setup_timeout_secs);
    let counters = Arc::new(NodeCounters::default());
    let (stop_nodes, stop_rx) = watch::channel(false);

    // 1. The nodes, `connect_parallelism` at a time.
    let results: Vec<anyhow::Result<tokio::task::JoinHandle<()>>> =
        futures::stream::iter(0..args.nodes)
            .map(|i| connect_node(args.clone(), i, counters.clone(), stop_rx.clone()))
            .buffer_unordered(args.connect_parallelism as usize)
            .collect()
            .await;
    let mut node_tasks = Vec::with_capacity(results.len());
    let mut failures = BTreeMap::<String, u32>::new();
    for r in results {
        match r {
            Ok(task) => node_tasks.push(task),
            Err(e) => *failures.entry(format!("{e:#}")).or_default() += 1,
        }
    }
    if let Some((first, _)) = failures.iter().next() {
        let _ = stop_nodes.send(true);
        bail!(
            "{} of {} nodes could not connect; first error: {first}",
            failures.values().sum::<u32>(),
            args.nodes
        );
    }

    // 2. Every device listed as available.
    let mut devices = pb::device_service_client::DeviceServiceClient::new(InterceptedService::new(
        Endpoint::from_shared(args.broker.clone())?
            .connect()
            .await?,
        BearerToken::new(&args.admin_token),
    ))
    .max_decoding_message_size(256 * 1024 * 1024);
    let want = (args.nodes as usize) * (args.devices_per_node as usize);
    wait_for_devices(&mut devices, &args.id_prefix, want, deadline).await?;
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let nodes_connected_at_start = counters.connected.load(Ordering::Relaxed);
    let device_ids: Arc<Vec<String>> = Arc::new(
        (0..args.nodes)
            .flat_map(|n| (0..args.devices_per_node).map(move |d| (n, d)))
            .map(|(n, d)| device_id(&args.id_prefix, n, d))
            .collect(),
    );
    let rss_before = args.broker_pid.and_then(proc_memory).map(|(rss, _)| rss);

    // 3. The clients.
    let (stop_sampler, sampler_rx) = watch::channel(false);
    let sampler = args
        .broker_pid
        .map(|pid| spawn_rss_sampler(pid, sampler_rx));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let end = measure_from + Duration::from_secs(args.duration_secs);
    let clients: Vec<_> = (0..args.clients)
        .map(|_| {
            tokio::spawn(client_loop(
                args.clone(),
                device_ids.clone(),
                measure_from,
                end,
            ))
        })
        .collect();
    // CPU use over the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let broker_cpu_0 = args.broker_pid.and_then(proc_cpu_secs);
    let self_cpu_0 = proc_cpu_secs(std::process::id());
    tokio::time::sleep_until(end.into()).await;
    let window = measure_from.elapsed().as_secs_f64();
    let broker_cpu_1 = args.broker_pid.and_then(proc_cpu_secs);
    let self_cpu_1 = proc_cpu_secs(std::process::id());

    let mut all = ClientStats::default();
    for c in clients {
        let s = c.await.context("a client task panicked")??;
        all.reserve_us.extend(s.reserve_us);
        all.release_us.extend(s.release_us);
        all.conflicts += s.conflicts;
        all.errors += s.errors;
        all.unmeasured_pairs += s.unmeasured_pairs;
        for e in s.error_samples {
            if all.error_samples.len() < 5 && !all.error_samples.contains(&e) {
                all.error_samples.push(e);
            }
        }
    }
    let _ = stop_sampler.send(true);
    let peak_sampled = match sampler {
        Some(task) => Some(task.await.unwrap_or(0)),
        None => None,
    };
    let nodes_connected_at_end = nodes_connected_metric(&args).await;
    let memory_end = args.broker_pid.and_then(proc_memory);

    // 4. The nodes leave.
    let _ = stop_nodes.send(true);
    for t in node_tasks {
        let _ = t.await;
    }

    let duration = args.duration_secs as f64;
    let pairs = all.reserve_us.len();
    let per_core = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(((b - a) / window * 100.0).round() / 100.0),
        _ => None,
    };
    let report = Report {
        mode: args.mode,
        nodes: args.nodes,
        devices_per_node: args.devices_per_node,
        sites: args.sites,
        clients: args.clients,
        warmup_secs: args.warmup_secs,
        duration_secs: duration,
        setup_secs: (setup_secs * 10.0).round() / 10.0,
        pairs,
        pairs_per_sec: (pairs as f64 / duration).round(),
        pairs_outside_window: all.unmeasured_pairs,
        reserve: Latency::of(all.reserve_us),
        release: Latency::of(all.release_us),
        conflicts: all.conflicts,
        errors: all.errors,
        error_samples: all.error_samples,
        nodes_connected_at_start,
        nodes_connected_at_end,
        node_streams_dropped: counters.dropped.load(Ordering::Relaxed),
        node_errors_received: counters.broker_errors.load(Ordering::Relaxed),
        lease_updates_received: counters.lease_updates.load(Ordering::Relaxed),
        heartbeats_sent: counters.heartbeats_sent.load(Ordering::Relaxed),
        broker_rss_before_clients_mb: rss_before.map(mb),
        broker_rss_end_mb: memory_end.map(|(rss, _)| mb(rss)),
        broker_rss_peak_sampled_mb: peak_sampled.filter(|&p| p > 0).map(mb),
        broker_rss_hwm_mb: memory_end.map(|(_, hwm)| mb(hwm)),
        broker_cpu_cores: per_core(broker_cpu_0, broker_cpu_1),
        loadgen_cpu_cores: per_core(self_cpu_0, self_cpu_1),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.text());
    }
    Ok(())
}
