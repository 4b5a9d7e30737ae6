//! A real `farm-node` process linked to a broker and an adb server; killable and restartable.

use std::process::Command;

use tempfile::TempDir;

use crate::broker::default_rust_log;
use crate::process::ChildProcess;
use crate::{bin, keep_if_panicking, temp_dir};

/// A running controller node. `Drop` kills it.
///
/// The node prints no ready line (it dials out and retries with backoff), so a
/// test waits for what it cares about instead, e.g. with [`crate::eventually`]
/// until the broker lists the node's devices.
pub struct Node {
    args: NodeArgs,
    dir: Option<TempDir>,
    process: Option<ChildProcess>,
    starts: u32,
}

#[derive(Debug, Clone)]
struct NodeArgs {
    broker_url: String,
    token: String,
    site: String,
    node_id: String,
    adb_port: u16,
    extra: Vec<String>,
}

impl Node {
    /// Starts `farm-node --broker URL --token T --site S --node-id ID --adb-server 127.0.0.1:PORT`.
    ///
    /// Returns at once: the node has no ready line. A node that exits (say, on a
    /// rejected token) is not an error here; check [`Node::is_running`] and read
    /// [`Node::log_path`] when a test cares.
    ///
    /// # Panics
    /// When the `farm-node` binary is missing.
    pub async fn start(
        broker_url: &str,
        token: &str,
        site: &str,
        node_id: &str,
        adb_port: u16,
    ) -> Node {
        Node::start_with(broker_url, token, site, node_id, adb_port, &[]).await
    }

    /// Like [`Node::start`], with more flags (e.g. `--scrcpy-server JAR`, `--webrtc-ip 127.0.0.1`).
    pub async fn start_with(
        broker_url: &str,
        token: &str,
        site: &str,
        node_id: &str,
        adb_port: u16,
        extra_args: &[&str],
    ) -> Node {
        let mut node = Node {
            args: NodeArgs {
                broker_url: broker_url.to_owned(),
                token: token.to_owned(),
                site: site.to_owned(),
                node_id: node_id.to_owned(),
                adb_port,
                extra: extra_args.iter().map(|a| a.to_string()).collect(),
            },
            dir: Some(temp_dir(&format!("node-{node_id}"))),
            process: None,
            starts: 0,
        };
        node.launch().await;
        node
    }

    /// The `--node-id`.
    pub fn node_id(&self) -> &str {
        &self.args.node_id
    }

    /// The current process's log (stdout and stderr), if one is running or ran.
    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.process.as_ref().map(ChildProcess::log_path)
    }

    /// The PID of the running node process.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    /// Whether the node process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildProcess::is_running)
    }

    /// SIGKILL: the node vanishes without saying goodbye to the broker.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.kill();
        }
    }

    /// Kills the node if it runs and starts it again with the same arguments.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    async fn launch(&mut self) {
        self.starts += 1;
        let dir = self
            .dir
            .as_ref()
            .expect("the temp dir lives as long as the node");
        let log = dir.path().join(format!("node-{}.log", self.starts));
        let a = &self.args;
        let mut command = Command::new(bin("farm-node"));
        command
            .args(["--broker", &a.broker_url, "--token", &a.token])
            .args(["--site", &a.site, "--node-id", &a.node_id])
            .arg("--adb-server")
            .arg(format!("127.0.0.1:{}", a.adb_port))
            .args(&a.extra);
        default_rust_log(&mut command);
        let mut process = ChildProcess::spawn("farm-node", command, &log);
        process.stop_listening();
        self.process = Some(process);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.process.take();
        keep_if_panicking(&mut self.dir);
    }
}
