//! Processes the node starts for its slots (chromedriver, Appium): they die with the node, and
//! their output goes to the node's debug log.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tracing::Instrument;

/// A command for `path` that must not outlive the node, even a node killed with SIGKILL (which
/// skips every cleanup): on Linux, `setpriv --pdeathsig KILL` has the kernel kill it with its parent.
pub fn dies_with_node(path: &Path) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if cfg!(target_os = "linux") && Path::new(SETPRIV).exists() {
        let mut command = Command::new(SETPRIV);
        command.args(["--pdeathsig", "KILL", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

/// Reads `output` to its end line by line into the debug log, so a full pipe never blocks the child.
pub fn log_lines(output: impl AsyncRead + Unpin + Send + 'static, name: &'static str) {
    tokio::spawn(
        async move {
            let mut lines = BufReader::new(output).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(%line, "{name}");
            }
        }
        .in_current_span(),
    );
}
