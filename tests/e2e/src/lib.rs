//! The end-to-end harness: starts real adb servers, PostgreSQL, simulators, brokers and nodes on loopback.
//!
//! Everything runs as separate processes (not in-process), so a test can SIGKILL
//! a broker or a node and watch what really happens. A typical test:
//!
//! ```no_run
//! use std::time::Duration;
//! use farm_e2e::{eventually, AdbServer, Broker, BrokerOpts, Node, Role, Sim};
//!
//! # async fn example() {
//! let adb = AdbServer::start().await;
//! let sim = Sim::start(adb.port(), 2).await;
//! let broker = Broker::start(BrokerOpts::default()).await;
//! let node_token = broker.token(Role::Node, "node-1");
//! let _node = Node::start(&broker.url(), &node_token, "lab", "node-1", adb.port()).await;
//! let admin = broker.token(Role::Admin, "admin");
//! let (mut devices, _reservations) = farm_e2e::connect(&broker.url(), &admin).await;
//! let listed = eventually(Duration::from_secs(20), || {
//!     let mut devices = devices.clone();
//!     async move {
//!         let list = devices
//!             .list_devices(farm_proto::v1::ListDevicesRequest::default())
//!             .await
//!             .ok()?
//!             .into_inner()
//!             .devices;
//!         (list.len() == 2).then_some(list)
//!     }
//! })
//! .await;
//! # let _ = (listed, sim);
//! # }
//! ```
//!
//! Rules the harness keeps so tests can run in parallel and stay debuggable:
//! - every server listens on `127.0.0.1` on a port of its own (port 0, or
//!   [`free_port`] where a program needs a number up front);
//! - a process is ready when it says so (the ready lines in ARCHITECTURE.md's
//!   "Process contracts"), read with a deadline, never after a fixed sleep;
//! - every child is killed when its handle drops, and also when the test process
//!   dies (see [`process`]); on a failing test each log's path and tail is printed.
//!
//! The binaries come from the workspace's `target/debug` ([`bin`]): build them with
//! `cargo build --workspace --bins` before running these tests (`scripts/test` does).

pub mod adb;
pub mod broker;
pub mod browser;
pub mod coturn;
pub mod grpc;
pub mod measure;
pub mod node;
pub mod postgres;
pub mod process;
pub mod sim;

use std::fmt::Debug;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use adb::AdbServer;
pub use broker::{Broker, BrokerOpts, Role};
pub use browser::Browser;
pub use coturn::Coturn;
pub use grpc::{AuthChannel, BearerToken, channel, connect};
pub use node::Node;
pub use postgres::Postgres;
pub use sim::{Sim, SimDevice};

/// How long a process gets to print its ready line before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of a workspace binary (`farm-broker`, `farm-node`, `farm-sim`, `farmctl`, ...).
///
/// Looks in `$FARM_BIN_DIR` when set, else in the directory of the running test's
/// profile: a test executable lives in `<target>/debug/deps/`, the binaries in
/// `<target>/debug/`, so this also follows `CARGO_TARGET_DIR`.
///
/// # Panics
/// When the binary is missing, with the command that builds it.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FARM_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => profile_dir_of(
            &std::env::current_exe().expect("the running test has a path (current_exe)"),
        ),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first \
         (the e2e tests start the workspace's binaries as processes)",
        path.display()
    );
    path
}

/// `<target>/debug/deps/test-abc` -> `<target>/debug`; any other location -> its own directory.
fn profile_dir_of(exe: &std::path::Path) -> PathBuf {
    let dir = exe.parent().unwrap_or(std::path::Path::new("."));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Only for programs that must be told a port number up front (adb, PostgreSQL);
/// another process may take it before it is used, so callers retry on a bind
/// failure. Prefer `--listen 127.0.0.1:0` and reading the ready line.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind 127.0.0.1:0 to find a free port")
}

/// What one poll of [`eventually`] observed: `Some`/`Ok` ends the wait.
pub trait Attempt {
    /// The value the wait returns.
    type Output;
    /// `Ok(value)` when the condition holds, else a description of what was seen.
    fn into_outcome(self) -> Result<Self::Output, String>;
}

impl<T> Attempt for Option<T> {
    type Output = T;
    fn into_outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_owned())
    }
}

impl<T, E: Debug> Attempt for Result<T, E> {
    type Output = T;
    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Polls `check` until it returns `Some(value)` or `Ok(value)`, and returns the value.
///
/// Polls at once, then every 20 ms growing to 250 ms. Use it to wait for a
/// condition (a device shows up, a lease expires) instead of sleeping.
///
/// # Panics
/// When `timeout` passes first, with the last `Err` (or `None`) observed, so the
/// failure says what the system looked like: return `Err(format!(..))` with the
/// state you saw to make that message useful.
pub async fn eventually<A, F, Fut>(timeout: Duration, mut check: F) -> A::Output
where
    A: Attempt,
    F: FnMut() -> Fut,
    Fut: Future<Output = A>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(20);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match check().await.into_outcome() {
            Ok(value) => return value,
            Err(last) => last,
        };
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "condition not met within {timeout:?} ({attempts} attempts); last observed: {last}"
            );
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(Duration::from_millis(250));
    }
}

/// A fresh temporary directory for one process's files, named after it.
pub(crate) fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("farm-e2e-{prefix}-"))
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// Keeps `dir` on disk when the test is failing (its logs are the evidence) and
/// says where it is; otherwise lets it be removed.
pub(crate) fn keep_if_panicking(dir: &mut Option<tempfile::TempDir>) {
    if std::thread::panicking()
        && let Some(dir) = dir.take()
    {
        let path = dir.keep();
        eprintln!("--- farm-e2e: kept {} for inspection", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn profile_dir_is_above_deps() {
        assert_eq!(
            profile_dir_of(Path::new("/w/target/debug/deps/harness_smoke-0123")),
            Path::new("/w/target/debug")
        );
        assert_eq!(
            profile_dir_of(Path::new("/w/target/debug/farm-loadgen")),
            Path::new("/w/target/debug")
        );
    }

    #[test]
    fn free_ports_are_nonzero() {
        assert_ne!(free_port(), 0);
    }

    #[tokio::test]
    async fn eventually_returns_the_first_success() {
        let mut calls = 0;
        let value = eventually(Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("only {n}"))
                }
            }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "last observed: \"still 7\"")]
    async fn eventually_panics_with_the_last_observation() {
        eventually(Duration::from_millis(100), || async {
            Err::<(), _>("still 7")
        })
        .await;
    }

    #[tokio::test]
    async fn eventually_accepts_options() {
        let v: u8 = eventually(Duration::from_secs(1), || async { Some(5u8) }).await;
        assert_eq!(v, 5);
    }
}
