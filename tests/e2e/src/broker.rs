//! A real `farm-broker serve` process on loopback, with its own data dir; killable and restartable on the same port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{ChildProcess, WaitError};
use crate::{READY_TIMEOUT, bin, keep_if_panicking, temp_dir};

/// The line `farm-broker serve` prints on stdout once it accepts connections.
pub const LISTENING_PREFIX: &str = "farm-broker listening on http://";

/// How a test wants its broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerOpts {
    /// `--database-url` (e.g. from [`crate::Postgres::create_database`]); `None`
    /// for the default SQLite store in the broker's temp data dir.
    pub database_url: Option<String>,
    /// More flags for `farm-broker serve`, after the harness's own.
    pub extra_args: Vec<String>,
}

/// The role a token is created for (`farm-broker token create --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
    Node,
}

impl Role {
    /// The flag value: `admin`, `user` or `node`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Node => "node",
        }
    }
}

/// A running broker. Its data dir (SQLite file, logs) lives as long as this
/// handle, across [`Broker::kill`] and [`Broker::restart`]; `Drop` kills the process.
pub struct Broker {
    opts: BrokerOpts,
    dir: Option<TempDir>,
    data_dir: PathBuf,
    addr: SocketAddr,
    process: Option<ChildProcess>,
    /// How many times the process was started (numbers the log files).
    starts: u32,
}

impl Broker {
    /// Starts `farm-broker serve --listen 127.0.0.1:0 --data-dir TMP [--database-url URL]`
    /// and waits for its ready line to learn the port.
    ///
    /// # Panics
    /// When the broker exits or stays silent for [`READY_TIMEOUT`], with its log.
    pub async fn start(opts: BrokerOpts) -> Broker {
        let dir = temp_dir("broker");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("cannot create the broker's data dir");
        let mut broker = Broker {
            opts,
            dir: Some(dir),
            data_dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            process: None,
            starts: 0,
        };
        let (process, addr) = broker
            .launch("127.0.0.1:0")
            .await
            .unwrap_or_else(|message| panic!("{message}"));
        broker.process = Some(process);
        broker.addr = addr;
        broker
    }

    /// `http://127.0.0.1:PORT`: the gRPC and HTTP address (one port for both).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `--data-dir` (kept across restarts).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The current process's log (stdout and stderr), if one is running or ran.
    pub fn log_path(&self) -> Option<&Path> {
        self.process.as_ref().map(ChildProcess::log_path)
    }

    /// The PID of the running broker process.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    /// SIGKILL, as a crash or `kill -9` would: no graceful shutdown, no flush.
    pub fn kill(&mut self) {
        // The handle stays, so a later failure still prints this run's log.
        if let Some(process) = self.process.as_mut() {
            process.kill();
        }
    }

    /// Kills the broker if it runs, then starts it again on the same data dir,
    /// database and port, and waits until it is ready. Clients that dialled the
    /// old process (lazy tonic channels, nodes) reconnect to the same address.
    ///
    /// # Panics
    /// When the new process is not ready within [`READY_TIMEOUT`]. Early exits
    /// (the port not yet free) are retried until then.
    pub async fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch(&listen).await {
                Ok((process, addr)) => {
                    self.process = Some(process);
                    self.addr = addr;
                    return;
                }
                Err(message) if Instant::now() >= deadline => panic!("{message}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Creates a token with `farm-broker token create --role R --name N` against
    /// this broker's store, and returns it.
    ///
    /// # Panics
    /// When the command fails, with its stderr.
    pub fn token(&self, role: Role, name: &str) -> String {
        let mut command = Command::new(bin("farm-broker"));
        command.args(["token", "create", "--role", role.as_str(), "--name", name]);
        self.store_args(&mut command);
        let output = command
            .stdin(Stdio::null())
            .output()
            .expect("cannot run `farm-broker token create`");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let token = parse_token_output(&stdout);
        match (output.status.success(), token) {
            (true, Some(token)) => token,
            _ => panic!(
                "`farm-broker token create --role {} --name {name}` failed ({}):\nstdout: {stdout}\nstderr: {}",
                role.as_str(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    /// Starts one broker process listening on `listen` and waits for its ready line.
    async fn launch(&mut self, listen: &str) -> Result<(ChildProcess, SocketAddr), String> {
        self.starts += 1;
        let dir = self
            .dir
            .as_ref()
            .expect("the temp dir lives as long as the broker");
        let log = dir.path().join(format!("broker-{}.log", self.starts));
        let mut command = Command::new(bin("farm-broker"));
        command.args(["serve", "--listen", listen]);
        command.arg("--data-dir").arg(&self.data_dir);
        if let Some(url) = &self.opts.database_url {
            command.arg("--database-url").arg(url);
        }
        command.args(&self.opts.extra_args);
        default_rust_log(&mut command);
        let mut process = ChildProcess::spawn("farm-broker", command, &log);
        match process
            .wait_for_line(READY_TIMEOUT, parse_listening_line)
            .await
        {
            Ok(addr) => {
                process.stop_listening();
                Ok((process, addr))
            }
            Err(error) => {
                let message = process.not_ready_message(&error);
                if matches!(error, WaitError::TimedOut { .. }) {
                    process.kill();
                }
                Err(message)
            }
        }
    }

    /// `--database-url URL` when the broker uses one, else `--data-dir DIR`.
    fn store_args(&self, command: &mut Command) {
        match &self.opts.database_url {
            Some(url) => command.arg("--database-url").arg(url),
            None => command.arg("--data-dir").arg(&self.data_dir),
        };
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Dropping the process kills it (and prints its log if the test failed).
        self.process.take();
        keep_if_panicking(&mut self.dir);
    }
}

/// Sets `RUST_LOG=info` for a child unless the test run sets its own.
pub(crate) fn default_rust_log(command: &mut Command) {
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
}

/// `farm-broker listening on http://127.0.0.1:4444` -> `127.0.0.1:4444`.
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix(LISTENING_PREFIX)?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// The token printed by `token create`: its only (last non-empty) stdout line.
fn parse_token_output(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .filter(|line| !line.contains(char::is_whitespace))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_gives_the_address() {
        let addr = parse_listening_line("farm-broker listening on http://127.0.0.1:40123");
        assert_eq!(addr, Some(SocketAddr::from(([127, 0, 0, 1], 40123))));
        assert_eq!(
            parse_listening_line("farm-broker listening on http://127.0.0.1:4444/\n"),
            Some(SocketAddr::from(([127, 0, 0, 1], 4444)))
        );
        assert!(parse_listening_line("farm-broker listening on http://[::1]:80").is_some());
    }

    #[test]
    fn other_lines_are_not_ready_lines() {
        for line in [
            "",
            "INFO starting",
            "farm-broker listening on https://127.0.0.1:1",
            "farm-broker listening on http://localhost:4444",
            "farm-broker listening on http://127.0.0.1",
        ] {
            assert_eq!(parse_listening_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn token_is_the_last_nonempty_line() {
        assert_eq!(
            parse_token_output("fa_abc123\n").as_deref(),
            Some("fa_abc123")
        );
        assert_eq!(
            parse_token_output("note\nfa_x\n\n").as_deref(),
            Some("fa_x")
        );
        assert_eq!(parse_token_output(""), None);
        assert_eq!(parse_token_output("not a token\n"), None);
    }

    #[test]
    fn roles_are_the_cli_values() {
        assert_eq!(
            [Role::Admin, Role::User, Role::Node].map(Role::as_str),
            ["admin", "user", "node"]
        );
    }
}
