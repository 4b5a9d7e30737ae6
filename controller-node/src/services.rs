//! The node's services behind the broker link: live sessions (WebRTC) and WebDriver slots.
//!
//! The link routes `live`, `http_request` and `http_body` commands here and carries back
//! what the services send. Live signals go to the live-session manager ([`crate::live`]);
//! WebDriver requests and bodies to the WebDriver service ([`crate::webdriver`]), which also
//! owns the slot inventory the link announces.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use farm_proto::v1::SlotInventory;
use tokio::sync::{mpsc, watch};

use crate::broker_link::LinkServices;
use crate::capture::CaptureHub;
use crate::config::Config;
use crate::devices::DeviceSetHandle;
use crate::live::{LiveConfig, default_webrtc_ip, spawn_live_service};
use crate::webdriver::spawn_webdriver_service;

/// Live signals waiting for the live-session manager.
const LIVE_QUEUE: usize = 1024;

/// Starts the services; returns the link's side of their channels and the task.
pub fn spawn(
    config: &Config,
    devices: DeviceSetHandle,
    mut shutdown: watch::Receiver<bool>,
) -> (LinkServices, tokio::task::JoinHandle<()>) {
    let (messages_tx, messages) = mpsc::channel(1024);
    let (slots_tx, slots) = watch::channel(SlotInventory::default());
    let (connection, connection_rx) = watch::channel(0);

    let (live_tx, live_rx) = mpsc::channel(LIVE_QUEUE);
    let live = spawn_live_service(
        live_config(config),
        Arc::new(CaptureHub::new(config.adb_server, config.capture.clone())),
        Arc::new(devices.clone()),
        live_rx,
        messages_tx.clone(),
        connection_rx.clone(),
        shutdown.clone(),
    );
    let (webdriver, webdriver_task) = spawn_webdriver_service(
        config.webdriver.clone(),
        devices,
        messages_tx,
        slots_tx,
        connection_rx,
        shutdown.clone(),
    );

    // The link hands commands straight to the services; this task only waits for them to stop.
    let task = tokio::spawn(async move {
        crate::wait_for_shutdown(&mut shutdown).await;
        if let Err(error) = live.await {
            tracing::error!(%error, "the live-session manager failed");
        }
        if let Err(error) = webdriver_task.await {
            tracing::error!(%error, "the WebDriver service failed");
        }
    });
    (
        LinkServices {
            live: live_tx,
            webdriver,
            messages,
            slots,
            connection,
        },
        task,
    )
}

/// Where live sessions bind: `--webrtc-ip`, else the address that reaches the broker.
fn live_config(config: &Config) -> LiveConfig {
    let ip = match config.webrtc_ip {
        Some(ip) => ip,
        None => default_webrtc_ip(&config.broker_url).unwrap_or_else(|error| {
            tracing::warn!(
                %error,
                "cannot tell which address browsers reach this node on; live sessions use 127.0.0.1 (pass --webrtc-ip)"
            );
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }),
    };
    tracing::info!(webrtc_ip = %ip, webrtc_ports = ?config.webrtc_ports, "live sessions bind here");
    LiveConfig::new(ip, config.webrtc_ports.clone())
}
