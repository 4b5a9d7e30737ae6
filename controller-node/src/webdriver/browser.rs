//! The browser slot: one chromedriver process (started on first use, restarted after it
//! dies, stopped with the node) and the count of its sessions against `--browser-slots`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::config::SlotEndpoint;

/// How long chromedriver may take to say it is listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `chromedriver --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long each open session's DELETE may take when the node stops.
const STOP_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The sessions of the browser slot: created (by id) and in flight, against the limit.
#[derive(Debug)]
pub struct BrowserSessions {
    max: usize,
    active: BTreeSet<String>,
    pending: usize,
    /// Bumped when chromedriver restarts: reservations from before no longer count.
    generation: u64,
}

impl BrowserSessions {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            active: BTreeSet::new(),
            pending: 0,
            generation: 0,
        }
    }

    /// Takes a place for a new session; `None` when every place is taken.
    pub fn try_reserve(&mut self) -> Option<u64> {
        (self.active.len() + self.pending < self.max).then(|| {
            self.pending += 1;
            self.generation
        })
    }

    /// Ends a reservation: with the new session's id when it was created.
    pub fn finish(&mut self, generation: u64, session_id: Option<String>) {
        if generation != self.generation {
            return;
        }
        self.pending = self.pending.saturating_sub(1);
        if let Some(id) = session_id {
            self.active.insert(id);
        }
    }

    /// A session was deleted.
    pub fn forget(&mut self, session_id: &str) {
        self.active.remove(session_id);
    }

    /// chromedriver is gone, and its sessions with it.
    pub fn restarted(&mut self) {
        self.active.clear();
        self.pending = 0;
        self.generation += 1;
    }

    pub fn in_use(&self) -> usize {
        self.active.len() + self.pending
    }

    pub fn open_sessions(&self) -> Vec<String> {
        self.active.iter().cloned().collect()
    }
}

/// Shared between the supervisor and the streams; only ever locked for a few instructions
/// (no await inside), so a plain mutex is simpler than another task.
pub type SharedSessions = Arc<Mutex<BrowserSessions>>;

pub fn lock(sessions: &SharedSessions) -> std::sync::MutexGuard<'_, BrowserSessions> {
    sessions.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A place for one new session; given back on drop unless the session was created.
#[derive(Debug)]
pub struct SessionReservation {
    sessions: SharedSessions,
    generation: u64,
    done: bool,
}

impl SessionReservation {
    pub fn try_new(sessions: &SharedSessions) -> Option<Self> {
        let generation = lock(sessions).try_reserve()?;
        Some(Self {
            sessions: sessions.clone(),
            generation,
            done: false,
        })
    }

    /// The session was created with this id (or no id could be read: the place is freed).
    pub fn created(mut self, session_id: Option<String>) {
        self.done = true;
        lock(&self.sessions).finish(self.generation, session_id);
    }
}

impl Drop for SessionReservation {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.sessions).finish(self.generation, None);
        }
    }
}

/// `major.minor` of the chromedriver at `path`.
pub async fn probe_version(path: &Path) -> Result<String, String> {
    let output = tokio::time::timeout(
        VERSION_TIMEOUT,
        Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("`{} --version` did not finish", path.display()))?
    .map_err(|error| format!("cannot run {}: {error}", path.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    super::slots::chromedriver_version(&text).ok_or_else(|| {
        format!(
            "`{} --version` printed no ChromeDriver version: {:?}",
            path.display(),
            text.trim()
        )
    })
}

type EndpointReply = oneshot::Sender<Result<SlotEndpoint, String>>;

/// The handle to the chromedriver supervisor task.
#[derive(Debug, Clone)]
pub struct Chromedriver {
    requests: mpsc::Sender<EndpointReply>,
    pub sessions: SharedSessions,
}

impl Chromedriver {
    /// Starts the supervisor (chromedriver itself starts on the first [`Chromedriver::endpoint`]).
    pub fn spawn(
        path: PathBuf,
        max_sessions: u32,
        client: super::proxy::HttpClient,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (requests, inbox) = mpsc::channel(64);
        let sessions = Arc::new(Mutex::new(BrowserSessions::new(max_sessions as usize)));
        let task = tokio::spawn(
            supervise(path, client, sessions.clone(), inbox, shutdown)
                .instrument(tracing::info_span!("chromedriver")),
        );
        (Self { requests, sessions }, task)
    }

    /// Where chromedriver listens, starting it first if it is not running.
    pub async fn endpoint(&self) -> Result<SlotEndpoint, String> {
        let (reply, answer) = oneshot::channel();
        let stopped = || "the node is stopping".to_string();
        self.requests.send(reply).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

struct Running {
    child: Child,
    endpoint: SlotEndpoint,
}

async fn supervise(
    path: PathBuf,
    client: super::proxy::HttpClient,
    sessions: SharedSessions,
    mut inbox: mpsc::Receiver<EndpointReply>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut running: Option<Running> = None;
    loop {
        let exited = async {
            match running.as_mut() {
                Some(r) => r.child.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = crate::wait_for_shutdown(&mut shutdown) => break,
            status = exited => {
                match status {
                    Ok(status) => tracing::warn!(%status, "chromedriver exited; it restarts on the next request"),
                    Err(error) => tracing::warn!(%error, "lost track of chromedriver; it restarts on the next request"),
                }
                running = None;
                lock(&sessions).restarted();
            }
            request = inbox.recv() => {
                let Some(reply) = request else { break };
                if running.is_none() {
                    match start(&path).await {
                        Ok(started) => {
                            tracing::info!(endpoint = %started.endpoint.authority, "chromedriver started");
                            running = Some(started);
                        }
                        Err(error) => {
                            tracing::error!(%error, "chromedriver could not start");
                            let _ = reply.send(Err(error));
                            continue;
                        }
                    }
                }
                if let Some(r) = &running {
                    let _ = reply.send(Ok(r.endpoint.clone()));
                }
            }
        }
    }
    if let Some(mut r) = running {
        // Deleting the sessions closes their browsers; killing chromedriver alone would not.
        let open = lock(&sessions).open_sessions();
        for id in open {
            let request = http::Request::delete(r.endpoint.url(&format!("/session/{id}")))
                .body(super::proxy::empty_body());
            if let Ok(request) = request {
                let _ = tokio::time::timeout(STOP_SESSION_TIMEOUT, client.request(request)).await;
            }
        }
        let _ = r.child.kill().await;
        tracing::info!("chromedriver stopped");
    }
}

/// Starts chromedriver on a free loopback port and waits for its "started successfully" line.
async fn start(path: &Path) -> Result<Running, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("no free port for chromedriver: {error}"))?
        .port();
    let mut child = super::child::dies_with_node(path)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", path.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| "chromedriver has no stdout".to_string())?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(START_TIMEOUT, async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    tracing::debug!(%line, "chromedriver");
                    if line.contains("started successfully") {
                        return Ok(());
                    }
                }
                Ok(None) | Err(_) => return Err(()),
            }
        }
    })
    .await;
    match ready {
        Ok(Ok(())) => {}
        Ok(Err(())) => {
            let status = child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_default();
            return Err(format!("chromedriver exited while starting ({status})"));
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(format!(
                "chromedriver did not start within {} s",
                START_TIMEOUT.as_secs()
            ));
        }
    }
    // Keep reading its output so a full pipe never blocks it.
    super::child::log_lines(lines.into_inner(), "chromedriver");
    Ok(Running {
        child,
        endpoint: SlotEndpoint {
            authority: format!("127.0.0.1:{port}"),
            prefix: String::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_limited_and_given_back() {
        let shared: SharedSessions = Arc::new(Mutex::new(BrowserSessions::new(2)));
        let first = SessionReservation::try_new(&shared).expect("place 1");
        let second = SessionReservation::try_new(&shared).expect("place 2");
        assert!(SessionReservation::try_new(&shared).is_none());
        drop(second); // creation failed
        assert_eq!(lock(&shared).in_use(), 1);
        first.created(Some("s1".into()));
        let third = SessionReservation::try_new(&shared).expect("place freed");
        third.created(Some("s2".into()));
        assert!(SessionReservation::try_new(&shared).is_none());
        assert_eq!(lock(&shared).open_sessions(), ["s1", "s2"]);
        lock(&shared).forget("s1");
        lock(&shared).forget("unknown");
        assert_eq!(lock(&shared).in_use(), 1);
    }

    #[test]
    fn a_restart_frees_every_place_and_voids_old_reservations() {
        let shared: SharedSessions = Arc::new(Mutex::new(BrowserSessions::new(1)));
        let old = SessionReservation::try_new(&shared).expect("place");
        lock(&shared).restarted();
        let new = SessionReservation::try_new(&shared).expect("free after restart");
        old.created(Some("stale".into()));
        assert_eq!(lock(&shared).in_use(), 1);
        assert!(lock(&shared).open_sessions().is_empty());
        new.created(None);
        assert_eq!(lock(&shared).in_use(), 0);
    }
}
