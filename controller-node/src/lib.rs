//! The farm controller node: tracks devices on the local adb server, lists USB devices,
//! samples host metrics, and reports all of it to the broker over one outbound gRPC stream.
//!
//! Tasks (each owns its state; they talk through channels):
//! - `devices`: the device set, the one owner of what the node reports;
//! - `adb_host`: the async adb host-protocol client (services as streams, `sync:` push);
//! - `capture`: screen capture and input for live sessions (scrcpy, or screenrecord), one per device;
//! - `adb_tracker`: follows `host:track-devices` and feeds the device set;
//! - `host_metrics`: samples host metrics and USB for heartbeats;
//! - `broker_link`: the `NodeService.Connect` stream, with reconnect and backoff;
//! - `services`: live sessions and WebDriver slots, fed by broker commands the link routes to them;
//! - `live`: the live-session (WebRTC) manager and its sessions, behind `services`;
//! - `webdriver`: WebDriver slots (Appium per device, chromedriver) and the HTTP proxy to them, behind `services`.

pub mod adb_host;
pub mod adb_tracker;
pub mod backoff;
pub mod broker_link;
pub mod capture;
pub mod config;
pub mod device_props;
pub mod devices;
pub mod host_metrics;
pub mod live;
pub mod services;
pub mod usb;
pub mod webdriver;

use std::future::Future;

use tokio::sync::watch;
use tracing::Instrument;

pub use config::{Cli, Config, ConfigError};

/// Why the node stopped other than by a shutdown request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("a node task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the node until `shutdown` completes, then closes the broker link and stops every task.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let span = tracing::info_span!("node", node_id = %config.node_id);
    tracing::info!(
        parent: &span,
        broker = %config.broker_url,
        site = %config.site,
        adb_server = %config.adb_server,
        version = env!("CARGO_PKG_VERSION"),
        "farm-node starting"
    );
    let (stop, stopping) = watch::channel(false);

    let fetcher = adb_tracker::AdbPropsFetcher::new(config.adb_server, config.device_props_timeout);
    let (devices, _device_count, device_task) = {
        let _in_node_span = span.enter();
        devices::spawn_device_set(fetcher)
    };
    let tracker = tokio::spawn(
        adb_tracker::run_tracker(config.adb_server, devices.clone(), stopping.clone())
            .instrument(span.clone()),
    );
    let (heartbeat, sampler) = {
        let _in_node_span = span.enter();
        host_metrics::spawn_heartbeat_sampler(config.heartbeat_interval, stopping.clone())
    };
    let (link_services, services_task) = {
        let _in_node_span = span.enter();
        services::spawn(&config, devices.clone(), stopping.clone())
    };
    let mut link = tokio::spawn(
        broker_link::run_link(
            broker_link::LinkConfig::from(&config),
            devices,
            heartbeat,
            link_services,
            stopping,
        )
        .instrument(span.clone()),
    );

    let link_result = tokio::select! {
        () = shutdown => {
            tracing::info!(parent: &span, "shutting down");
            let _ = stop.send(true);
            (&mut link).await
        }
        // The link only ends by itself if the device set stopped, which is a bug.
        result = &mut link => result,
    };
    let _ = stop.send(true);
    tracker.await?;
    sampler.await?;
    services_task.await?;
    // The device set ends once the tracker and the link dropped their handles.
    device_task.await?;
    link_result?;
    tracing::info!(parent: &span, "farm-node stopped");
    Ok(())
}

/// Completes when `shutdown` holds `true` or its sender is gone.
pub(crate) async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
