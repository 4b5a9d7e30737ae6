//! `farm-sim`: start simulated Android devices on an adb server and print one JSON ready line.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use farm_sim::{AttachMode, Simulator, SimulatorConfig};

/// Simulated Android devices that attach to a real adb server.
///
/// When every device shows as `device` in the adb server, prints one JSON line on stdout:
/// {"control":"http://IP:PORT","devices":[{"serial":..,"adb_serial":..,"port":..,"model":..,
/// "android_version":..,"screen_width":..,"screen_height":..}]}. Logs go to stderr (RUST_LOG).
#[derive(Debug, Parser)]
#[command(name = "farm-sim", version)]
struct Args {
    /// How many devices to simulate.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// The adb server (HOST:PORT) the devices attach to.
    #[arg(long, default_value = "127.0.0.1:5037")]
    adb_server: String,
    /// Where the HTTP control interface listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// How devices attach: `emulator` (host:emulator:PORT) or `connect` (host:connect).
    #[arg(long, value_enum, default_value_t = AttachMode::Emulator)]
    attach: AttachMode,
    /// Seconds to wait for every device to show as `device`.
    #[arg(long, default_value_t = 30)]
    ready_timeout: u64,
    /// Screen size WxH for every device (default: each profile's own, e.g. 1080x2400).
    #[arg(long, value_parser = parse_screen)]
    screen: Option<(u32, u32)>,
    /// Clock frames per second while a capture runs (0 = frames only when the screen changes).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=60))]
    fps: u32,
}

/// `WxH` with both sides in 16..=4096 (openh264's limits are wider; these keep tests sane).
fn parse_screen(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WxH, e.g. 1080x2400, got {text:?}"))?;
    let side = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|v| (16..=4096).contains(v))
            .ok_or_else(|| format!("screen sides must be integers in 16..=4096, got {text:?}"))
    };
    Ok((side(w)?, side(h)?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let adb_server = tokio::net::lookup_host(&args.adb_server)
        .await
        .with_context(|| format!("resolving --adb-server {}", args.adb_server))?
        .next()
        .with_context(|| format!("--adb-server {} resolves to no address", args.adb_server))?;
    let config = SimulatorConfig {
        devices: args.devices,
        adb_server,
        attach: args.attach,
        control: args.control,
        ready_timeout: Duration::from_secs(args.ready_timeout),
        screen: args.screen,
        fps: args.fps,
    };
    let simulator = Simulator::start(config)
        .await
        .context("starting the simulated devices")?;
    let line = serde_json::to_string(&simulator.ready_line()).context("encoding the ready line")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}").context("writing the ready line")?;
        stdout.flush().context("flushing the ready line")?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    simulator.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
