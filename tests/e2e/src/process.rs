//! Child processes for tests: spawned so they die with the test, logged to a file, killed on drop.
//!
//! Every process the harness starts goes through [`ChildProcess::spawn`]:
//!
//! - stdout and stderr are drained by two threads into one log file, so a chatty
//!   process never blocks on a full pipe; stdout lines are also offered to
//!   [`ChildProcess::wait_for_line`] until the process is ready.
//! - the child is started under `setpriv --pdeathsig KILL` from one long-lived
//!   spawner thread, so it gets SIGKILL when the test process dies for any reason
//!   (a nextest timeout, a Ctrl-C), not only when `Drop` runs. The parent-death
//!   signal fires when the *thread* that forked the child exits, which is why all
//!   spawns happen on a thread that lives as long as the process.
//! - on drop the child gets SIGKILL (by its own PID, through `std::process::Child`)
//!   and is reaped; if the test is panicking, the log's path and its last lines
//!   are printed to stderr so a failed CI run shows what the process said.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

/// How many trailing log lines are printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// A process started by the harness. Killed (SIGKILL) and reaped on drop.
pub struct ChildProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    /// Stdout lines not yet consumed by `wait_for_line`; `None` once the caller
    /// stopped listening (the drain threads then only write the log).
    stdout_lines: Option<mpsc::UnboundedReceiver<String>>,
    /// The threads copying stdout and stderr into the log.
    drains: Vec<std::thread::JoinHandle<()>>,
}

/// Why a process did not print the line a test waited for.
#[derive(Debug)]
pub enum WaitError {
    /// The process closed its stdout (it exited) before printing the line.
    Exited { status: Option<ExitStatus> },
    /// The deadline passed first.
    TimedOut { timeout: Duration },
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Exited { status: Some(s) } => write!(f, "exited ({s}) before it was ready"),
            WaitError::Exited { status: None } => {
                write!(f, "closed its stdout before it was ready")
            }
            WaitError::TimedOut { timeout } => write!(f, "was not ready within {timeout:?}"),
        }
    }
}

impl std::error::Error for WaitError {}

impl ChildProcess {
    /// Starts `command` with stdin closed and stdout/stderr appended to `log_path`.
    ///
    /// `name` is how the process is called in messages (`farm-broker`, `adb server`).
    /// Panics when the program cannot be started (missing binary, `setpriv` absent):
    /// in a test that is a setup error worth stopping on.
    pub fn spawn(name: &str, command: Command, log_path: &Path) -> ChildProcess {
        ChildProcess::spawn_as(name, command, log_path, None)
    }

    /// Like [`ChildProcess::spawn`], running the program as `user` (with that
    /// user's groups) when given: how root starts PostgreSQL, which refuses root.
    /// The parent-death signal is set after the switch, which would clear it.
    pub fn spawn_as(
        name: &str,
        command: Command,
        log_path: &Path,
        user: Option<&str>,
    ) -> ChildProcess {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut wrapped = Command::new("setpriv");
        if let Some(user) = user {
            wrapped
                .arg(format!("--reuid={user}"))
                .arg(format!("--regid={user}"))
                .arg("--init-groups");
        }
        wrapped
            .arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(command.get_program());
        wrapped.args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|e| panic!("cannot open log file {}: {e}", log_path.display()));
        let log = Arc::new(Mutex::new(log));

        let mut child = spawn_on_spawner_thread(wrapped)
            .unwrap_or_else(|e| panic!("cannot start {name} ({program}): {e}"));
        let (line_tx, line_rx) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout was configured as piped");
        let stderr = child.stderr.take().expect("stderr was configured as piped");
        let stdout_drain = drain_to_log(
            stdout,
            Arc::clone(&log),
            Some(line_tx),
            format!("{name}-stdout"),
        );
        let stderr_drain = drain_to_log(stderr, log, None, format!("{name}-stderr"));

        ChildProcess {
            name: name.to_owned(),
            child,
            log_path: log_path.to_owned(),
            stdout_lines: Some(line_rx),
            drains: vec![stdout_drain, stderr_drain],
        }
    }

    /// Waits until the process prints a stdout line for which `accept` returns
    /// `Some`, and returns that value. Lines before it are skipped (they are in the log).
    pub async fn wait_for_line<T>(
        &mut self,
        timeout: Duration,
        mut accept: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, WaitError> {
        let Some(lines) = self.stdout_lines.as_mut() else {
            // Stdout was already given up on: nothing more can arrive here.
            return Err(WaitError::Exited { status: None });
        };
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = lines.recv().await {
                if let Some(value) = accept(&line) {
                    return Some(value);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(value)) => Ok(value),
            Ok(None) => {
                // Stdout closed: give the process a moment to finish exiting so the
                // error can say how it ended.
                let status = self.wait_exit(Duration::from_secs(2));
                self.wait_for_log(Duration::from_secs(1));
                Err(WaitError::Exited { status })
            }
            Err(_) => Err(WaitError::TimedOut { timeout }),
        }
    }

    /// Stops offering stdout lines to `wait_for_line` (they still go to the log).
    /// Call it once the process is ready so unread lines do not pile up in memory.
    pub fn stop_listening(&mut self) {
        self.stdout_lines = None;
    }

    /// The PID of the process (of `setpriv`, which exec'd into the program: the same).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the log (for error messages).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, LOG_TAIL_LINES)
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL by PID, then reap. Harmless when the process already exited.
    pub fn kill(&mut self) {
        // `Child::kill` sends SIGKILL on Unix; it fails only when the child was
        // already reaped, which is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// Waits up to `timeout` until both pipes are closed and copied into the log
    /// (after an exit, so the log has the last words). A grandchild that keeps a
    /// pipe open only makes this wait the full timeout.
    pub fn wait_for_log(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline && !self.drains.iter().all(|d| d.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A readable panic message for a process that did not become ready.
    pub fn not_ready_message(&self, error: &WaitError) -> String {
        format!(
            "{} {error}; log {}:\n{}",
            self.name,
            self.log_path.display(),
            self.log_tail()
        )
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.wait_for_log(Duration::from_millis(500));
            eprintln!(
                "--- farm-e2e: {} (pid {}) log {} (last {LOG_TAIL_LINES} lines):\n{}",
                self.name,
                self.child.id(),
                self.log_path.display(),
                self.log_tail()
            );
        }
    }
}

/// The last `lines` lines of a text file, or a note that it could not be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    match File::open(path).and_then(|mut f| f.read_to_string(&mut text)) {
        Ok(_) => {
            let mut tail: VecDeque<&str> = VecDeque::with_capacity(lines);
            for line in text.lines() {
                if tail.len() == lines {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            tail.into_iter().collect::<Vec<_>>().join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Copies a pipe line by line into the shared log, offering each line to `lines`
/// while someone listens.
fn drain_to_log(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<File>>,
    mut lines: Option<mpsc::UnboundedSender<String>>,
    thread_name: String,
) -> std::thread::JoinHandle<()> {
    let spawned = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Ok(mut file) = log.lock() {
                    let _ = file.write_all(&buf);
                    if !buf.ends_with(b"\n") {
                        let _ = file.write_all(b"\n");
                    }
                }
                if let Some(tx) = &lines {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    if tx.send(line).is_err() {
                        lines = None; // nobody listens any more
                    }
                }
            }
        });
    // Without the drain thread the child would block on a full pipe: fail loudly.
    spawned.expect("cannot start a log drain thread")
}

type SpawnRequest = (Command, std_mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from the harness's spawner thread, which lives until the
/// process exits (see the module docs on the parent-death signal).
fn spawn_on_spawner_thread(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<std_mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("farm-e2e-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the farm-e2e spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std_mpsc::channel();
    spawner
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread dropped the request"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_line_is_found_and_everything_is_logged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("sh.log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo noise; echo oops >&2; echo READY 42; sleep 30");
        let mut child = ChildProcess::spawn("sh", cmd, &log);
        let n = child
            .wait_for_line(Duration::from_secs(10), |l| {
                l.strip_prefix("READY ").map(str::to_owned)
            })
            .await
            .expect("ready line");
        assert_eq!(n, "42");
        assert!(child.is_running());
        child.kill();
        assert!(!child.is_running());
        // stdout and stderr reach the log through separate pipes: stderr may land a moment later.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let complete = |text: &str| {
            text.contains("noise") && text.contains("oops") && text.contains("READY 42")
        };
        let mut text = std::fs::read_to_string(&log).expect("log");
        while !complete(&text) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            text = std::fs::read_to_string(&log).expect("log");
        }
        assert!(complete(&text), "{text}");
    }

    #[tokio::test]
    async fn early_exit_is_reported_with_status() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo bad config >&2; exit 3");
        let mut child = ChildProcess::spawn("sh", cmd, &dir.path().join("sh.log"));
        let err = child
            .wait_for_line(Duration::from_secs(10), |_| Some(()))
            .await
            .expect_err("no ready line");
        assert!(
            matches!(err, WaitError::Exited { status: Some(s) } if s.code() == Some(3)),
            "{err:?}"
        );
        assert!(child.not_ready_message(&err).contains("bad config"));
    }

    #[tokio::test]
    async fn silent_process_times_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut child = ChildProcess::spawn("sleep", cmd, &dir.path().join("sleep.log"));
        let err = child
            .wait_for_line(Duration::from_millis(200), |_| Some(()))
            .await
            .expect_err("sleep prints nothing");
        assert!(matches!(err, WaitError::TimedOut { .. }));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, "1\n2\n3\n4\n").expect("write");
        assert_eq!(log_tail(&path, 2), "3\n4");
        assert!(log_tail(&dir.path().join("missing"), 2).starts_with("(cannot read"));
    }
}
