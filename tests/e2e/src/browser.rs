//! Headless Chromium driven by playwright-core (`tests/e2e/browser/driver.mjs`), for tests of the web UI.
//!
//! The driver reads one JSON command per line and answers one JSON line each;
//! [`Browser::call`] sends a command and waits for its answer.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one browser command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running driver with its Chromium. Drop kills both.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts the driver and waits until Chromium is up.
    ///
    /// # Panics
    /// When node or playwright-core is missing (run `scripts/install-deps --test`) or Chromium does not start.
    pub async fn start() -> Browser {
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
        assert!(
            here.join("node_modules/playwright-core").is_dir(),
            "playwright-core is not installed in {}: run `scripts/install-deps --test`",
            here.display()
        );
        let dir = crate::temp_dir("browser");
        let log = dir.path().join("driver.log");
        let stderr = std::fs::File::create(&log).expect("driver log");
        let mut child = Command::new("node")
            .arg(here.join("driver.mjs"))
            .current_dir(&here)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run node: run `scripts/install-deps --test`");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut browser = Browser {
            child,
            stdin,
            stdout,
            next_id: 1,
            log,
            _dir: dir,
        };
        let ready = browser.read_answer(0).await;
        assert_eq!(
            ready,
            Ok(json!("ready")),
            "driver did not start: {}",
            browser.log_tail()
        );
        browser
    }

    /// Runs one driver command (see driver.mjs for the list); `Err` carries the driver's message.
    pub async fn call(&mut self, cmd: &str, mut args: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        args["id"] = json!(id);
        args["cmd"] = json!(cmd);
        let line = format!("{args}\n");
        if let Err(e) = self.stdin.write_all(line.as_bytes()).await {
            return Err(format!("driver gone ({e}): {}", self.log_tail()));
        }
        self.read_answer(id).await
    }

    /// Like [`Browser::call`], panicking with the driver's message on failure.
    pub async fn must(&mut self, cmd: &str, args: Value) -> Value {
        match self.call(cmd, args.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("browser {cmd} {args} failed: {e}"),
        }
    }

    /// Repeats a command until `check` accepts its result; panics after `within` with the last one.
    pub async fn poll(
        &mut self,
        cmd: &str,
        args: Value,
        within: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.must(cmd, args.clone()).await;
            if check(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{cmd} {args}: condition not met within {within:?}; last {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens `url` in a page named `name` and waits until `selector` shows.
    pub async fn open_when_visible(&mut self, name: &str, url: &str, selector: &str) {
        self.must("open", json!({"name": name, "url": url})).await;
        let visible = json!({"name": name, "selector": selector});
        self.poll("visible", visible, Duration::from_secs(5), |v| {
            v == &json!(true)
        })
        .await;
    }

    /// Waits until the page's live state (connecting, live, reconnecting, ended) is `wanted`.
    pub async fn wait_state(&mut self, page: &str, wanted: &str, within: Duration) -> Value {
        let args = json!({"name": page});
        self.poll("state", args, within, |s| s["state"] == wanted)
            .await
    }

    /// Opens a free device's page, clicks "Reserve and go live" and waits for the live state.
    pub async fn reserve_and_go_live(&mut self, name: &str, url: &str, within: Duration) {
        self.open_when_visible(name, url, "#reserve-go").await;
        let click = json!({"name": name, "selector": "#reserve-go"});
        self.must("click", click).await;
        self.wait_state(name, "live", within).await;
    }

    async fn read_answer(&mut self, id: u64) -> Result<Value, String> {
        loop {
            let line = match tokio::time::timeout(CALL_TIMEOUT, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => return Err(format!("driver exited: {}", self.log_tail())),
                Err(_) => {
                    return Err(format!(
                        "driver silent for {CALL_TIMEOUT:?}: {}",
                        self.log_tail()
                    ));
                }
            };
            let Ok(answer) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if answer["id"] != json!(id) {
                continue;
            }
            return if answer["ok"] == json!(true) {
                Ok(answer["result"].clone())
            } else {
                Err(answer["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string())
            };
        }
    }

    fn log_tail(&self) -> String {
        crate::process::log_tail(&self.log, 30)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- farm-e2e: browser driver log:\n{}", self.log_tail());
        }
    }
}
