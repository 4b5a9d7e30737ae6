//! A node-started Appium server (`--appium-bin`): on a loopback port chosen at start, ready
//! once `GET /status` answers, restarted with backoff (crate::backoff) when it dies, stopped with the node.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::config::SlotEndpoint;
use super::proxy::{HttpClient, empty_body};
use crate::backoff::{Backoff, random_jitter};

/// How long Appium may take to answer `GET /status` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often readiness is polled while Appium starts.
const READY_POLL: Duration = Duration::from_millis(100);

/// Starts the supervisor: returns where Appium listens, a flag that is true while it is ready
/// (device slots are announced only then), and the task.
pub fn spawn(
    path: PathBuf,
    client: HttpClient,
    shutdown: watch::Receiver<bool>,
) -> Result<
    (
        SlotEndpoint,
        watch::Receiver<bool>,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("no free port for Appium: {error}"))?
        .port();
    let endpoint = SlotEndpoint {
        authority: format!("127.0.0.1:{port}"),
        prefix: String::new(),
    };
    let (ready_tx, ready) = watch::channel(false);
    let task = tokio::spawn(
        supervise(path, port, endpoint.clone(), client, ready_tx, shutdown)
            .instrument(tracing::info_span!("appium", port)),
    );
    Ok((endpoint, ready, task))
}

async fn supervise(
    path: PathBuf,
    port: u16,
    endpoint: SlotEndpoint,
    client: HttpClient,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::for_slot_server();
    loop {
        let started = Instant::now();
        match start(&path, port) {
            Err(error) => tracing::error!(%error, "Appium could not start"),
            Ok(mut child) => {
                let became_ready = tokio::select! {
                    () = crate::wait_for_shutdown(&mut shutdown) => {
                        let _ = child.kill().await;
                        return;
                    }
                    status = child.wait() => {
                        tracing::error!(status = %describe(status), "Appium exited while starting");
                        false
                    }
                    ok = wait_ready(&client, &endpoint) => {
                        if ok {
                            tracing::info!(endpoint = %endpoint.authority, "Appium ready");
                        } else {
                            tracing::error!("Appium did not answer GET /status within {} s; restarting it", READY_TIMEOUT.as_secs());
                            let _ = child.kill().await;
                        }
                        ok
                    }
                };
                if became_ready {
                    ready.send_replace(true);
                    tokio::select! {
                        () = crate::wait_for_shutdown(&mut shutdown) => {
                            ready.send_replace(false);
                            let _ = child.kill().await;
                            tracing::info!("Appium stopped");
                            return;
                        }
                        status = child.wait() => {
                            ready.send_replace(false);
                            tracing::warn!(status = %describe(status), "Appium exited");
                        }
                    }
                }
            }
        }
        backoff.connection_ended(started.elapsed());
        let delay = backoff.next_delay(random_jitter());
        tracing::info!(
            retry_in_ms = delay.as_millis() as u64,
            "restarting Appium after a pause"
        );
        tokio::select! {
            () = crate::wait_for_shutdown(&mut shutdown) => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => error.to_string(),
    }
}

/// Starts `PATH --address 127.0.0.1 --port PORT`; its output goes to the node's debug log.
fn start(path: &Path, port: u16) -> Result<Child, String> {
    let mut child = super::child::dies_with_node(path)
        .args(["--address", "127.0.0.1", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", path.display()))?;
    if let Some(out) = child.stdout.take() {
        super::child::log_lines(out, "appium");
    }
    if let Some(err) = child.stderr.take() {
        super::child::log_lines(err, "appium");
    }
    Ok(child)
}

/// Polls `GET /status` until it answers 200; false after `READY_TIMEOUT`.
async fn wait_ready(client: &HttpClient, endpoint: &SlotEndpoint) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        let request = http::Request::get(endpoint.url("/status")).body(empty_body());
        if let Ok(request) = request
            && let Ok(Ok(response)) =
                tokio::time::timeout(READY_POLL * 10, client.request(request)).await
            && response.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(READY_POLL).await;
    }
    false
}
