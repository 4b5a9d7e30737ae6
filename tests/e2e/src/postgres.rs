//! A throwaway PostgreSQL server of the test's own (initdb into a temp dir, loopback port, fsync off).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::{READY_TIMEOUT, free_port, keep_if_panicking, temp_dir};

/// The superuser every harness server has (`initdb -U postgres`), trusted on loopback.
pub const SUPERUSER: &str = "postgres";

/// A PostgreSQL server on `127.0.0.1:port`, with trust authentication.
///
/// One server per test: nextest runs every test in a process of its own, so a
/// server shared through a `static` would be shared by nobody and never stopped
/// (statics are not dropped). initdb + start take well under a second here; make
/// several databases on one server with [`Postgres::create_database`] when a test
/// needs more than one.
///
/// The postmaster is the test's child (started directly, not daemonized by
/// `pg_ctl start`), so it dies with the test even when `Drop` never runs. `Drop`
/// stops it with `pg_ctl stop -m immediate`. As root, everything runs as the
/// `postgres` user, since PostgreSQL refuses to run as root.
pub struct Postgres {
    port: u16,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    run_as: Option<String>,
    process: Option<ChildProcess>,
    dir: Option<TempDir>,
}

impl Postgres {
    /// Creates a cluster in a temp dir and starts it on a free port.
    ///
    /// The server binaries are found in `$FARM_PG_BIN` if set, else in the newest
    /// `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package).
    ///
    /// # Panics
    /// When PostgreSQL is not installed (run `scripts/install-deps --test`), initdb
    /// fails, or the server does not accept connections within [`READY_TIMEOUT`].
    pub async fn start() -> Postgres {
        let bin_dir = find_bin_dir().unwrap_or_else(|e| panic!("{e}"));
        let run_as = running_as_root().then(|| SUPERUSER.to_owned());
        let dir = temp_dir("postgres");
        if let Some(user) = &run_as {
            // initdb creates the data dir inside this one, the socket goes here too.
            run_checked(
                Command::new("chown")
                    .arg(format!("{user}:{user}"))
                    .arg(dir.path()),
            );
        }
        let data_dir = dir.path().join("data");
        let mut initdb = as_user(&bin_dir.join("initdb"), run_as.as_deref());
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args(["-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        run_checked(&mut initdb);

        let mut server = Postgres {
            port: 0,
            bin_dir,
            data_dir,
            run_as,
            process: None,
            dir: Some(dir),
        };
        let mut last_error = String::new();
        for attempt in 1..=3 {
            let port = free_port();
            match server.launch(port).await {
                Ok(process) => {
                    server.port = port;
                    server.process = Some(process);
                    return server;
                }
                Err(e) => last_error = format!("attempt {attempt} (port {port}): {e}"),
            }
        }
        panic!("cannot start PostgreSQL: {last_error}");
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on this server (the database need not exist yet).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its URL,
    /// e.g. `postgres://postgres@127.0.0.1:PORT/NAME`.
    ///
    /// # Panics
    /// When `name` is not a plain identifier (`[a-z_][a-z0-9_]*`) or `createdb` fails.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            is_plain_identifier(name),
            "database name {name:?} must match [a-z_][a-z0-9_]*"
        );
        let mut createdb = Command::new(self.bin_dir.join("createdb"));
        createdb
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .arg(name);
        run_checked(&mut createdb);
        self.url(name)
    }

    /// Runs one SQL statement with `psql` on database `db` and returns its
    /// unaligned, tuples-only output (for checks straight against the store).
    /// Give one statement per call: with several, psql also prints command tags.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut psql = Command::new(self.bin_dir.join("psql"));
        psql.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
        ])
        .args([
            "-d",
            db,
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        let output = run_checked(&mut psql);
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned()
    }

    /// The server's log (its stderr).
    pub fn log_path(&self) -> Option<&Path> {
        self.process.as_ref().map(ChildProcess::log_path)
    }

    /// Starts the postmaster on `port` and waits until `pg_isready` says it accepts connections.
    async fn launch(&self, port: u16) -> Result<ChildProcess, String> {
        let dir = self
            .dir
            .as_ref()
            .expect("the temp dir lives as long as the server");
        let mut postgres = Command::new(self.bin_dir.join("postgres"));
        postgres
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            // A test database is disposable: trade durability for speed.
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        let log = dir.path().join(format!("postgres-{port}.log"));
        let mut process =
            ChildProcess::spawn_as("postgres", postgres, &log, self.run_as.as_deref());
        process.stop_listening();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
                .args(["-U", SUPERUSER, "-d", "postgres"])
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(process);
            }
            if !process.is_running() || Instant::now() >= deadline {
                return Err(format!(
                    "postgres did not accept connections; log {}:\n{}",
                    process.log_path().display(),
                    process.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            if process.is_running() {
                let mut stop = as_user(&self.bin_dir.join("pg_ctl"), self.run_as.as_deref());
                stop.arg("stop")
                    .arg("-D")
                    .arg(&self.data_dir)
                    .args(["-m", "immediate", "-t", "5"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let _ = stop.status();
                process.wait_exit(Duration::from_secs(2));
            }
            drop(process); // SIGKILL if still alive, and the log on failure
        }
        keep_if_panicking(&mut self.dir);
    }
}

/// `program` run as `user` (via `setpriv`), or as ourselves when `None`.
fn as_user(program: &Path, user: Option<&str>) -> Command {
    match user {
        Some(user) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={user}"))
                .arg(format!("--regid={user}"))
                .arg("--init-groups")
                .arg("--")
                .arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Runs a setup command to completion; panics with its output when it fails.
fn run_checked(command: &mut Command) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Whether this process runs as root (the owner of `/proc/self` is our effective uid).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The directory with `initdb`, `postgres`, `pg_ctl`, `pg_isready`, `createdb`, `psql`.
fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("FARM_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let entries = std::fs::read_dir("/usr/lib/postgresql").map_err(|e| {
        format!("PostgreSQL server binaries not found in /usr/lib/postgresql ({e}): run `scripts/install-deps --test`")
    })?;
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no /usr/lib/postgresql/*/bin/initdb: run `scripts/install-deps --test`".to_owned()
    })
}

fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_plain_identifiers() {
        for ok in ["farm", "t_1", "_x"] {
            assert!(is_plain_identifier(ok), "{ok}");
        }
        for bad in ["", "1x", "Farm", "a-b", "a;drop", &"x".repeat(64)] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }
}
