//! The WebDriver grid with real peers: Appium 3 + fake driver and chromedriver behind a real node,
//! driven by the official Python clients (Appium-Python-Client, selenium) through the broker.
//!
//! Needs `scripts/install-deps --test` (Appium in tests/e2e/appium, the Python clients in
//! tests/e2e/python/.venv, chromium-driver) and the workspace binaries (`cargo build --workspace --bins`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use farm_e2e::process::ChildProcess;
use farm_e2e::{AdbServer, Broker, BrokerOpts, Node, Role, Sim, eventually, free_port};
use farm_proto::v1 as pb;

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    e2e_dir().join("python/.venv/bin/python")
}

/// Waits until the broker's /status lists `n` slots.
async fn wait_for_slots(broker: &Broker, token: &str, n: usize) {
    let (url, token) = (broker.url(), token.to_string());
    eventually(Duration::from_secs(30), || {
        let (url, token) = (url.clone(), token.clone());
        async move { (slot_count(&url, &token).await? >= n).then_some(()) }
    })
    .await;
}

async fn leases(url: &str, token: &str) -> Vec<pb::Lease> {
    let (_, mut r) = farm_e2e::connect(url, token).await;
    r.list_reservations(pb::ListReservationsRequest {
        include_ended: true,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().leases)
    .unwrap_or_default()
}

/// Starts Appium 3 (APPIUM_HOME = tests/e2e/appium) on a free loopback port; returns it and its URL.
async fn start_appium(log_dir: &std::path::Path) -> (ChildProcess, String) {
    let home = e2e_dir().join("appium");
    let port = free_port();
    let mut cmd = Command::new(home.join("node_modules/.bin/appium"));
    cmd.args(["--address", "127.0.0.1", "--port", &port.to_string()])
        .env("APPIUM_HOME", &home);
    let appium = ChildProcess::spawn("appium", cmd, &log_dir.join("appium.log"));
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    eventually(Duration::from_secs(30), || {
        let status = status.clone();
        async move {
            reqwest::get(&status)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await;
    (appium, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appium_python_client_gets_a_fake_device_through_the_broker() {
    // The node starts this Appium itself (--appium-bin); the other tests give it a URL.
    let farm = AppiumFarm::start_with(1, &[], AppiumBy::Node).await;
    let (broker, user, app) = (&farm.broker, farm.user.clone(), farm.app.clone());
    let grid = format!("http://ci:{user}@{}", broker.addr());
    let mut script = Command::new(python())
        .arg(e2e_dir().join("python/appium_session.py"))
        .args([grid.as_str(), app.to_str().unwrap_or_default(), "lab"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python venv (scripts/install-deps --test)");
    let mut out = BufReader::new(script.stdout.take().expect("stdout"));
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        (line, out)
    });
    let (line, mut out) = tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .expect("session within 60 s")
        .expect("reader");
    assert!(line.starts_with("SESSION "), "the script said {line:?}");
    // During the session the device's lease is held by the token's name.
    let during = leases(&broker.url(), &user).await;
    let lease = during
        .iter()
        .find(|l| l.state == pb::LeaseState::Active as i32)
        .expect("an active lease during the session")
        .clone();
    assert_eq!(lease.holder, "ci");
    // The session's owner watches it live, read-only, from the web UI; another user may not.
    let mut browser = farm_e2e::Browser::start().await;
    let watch = |token: &str| {
        format!(
            "{}/device/{}?watch=1&token={token}",
            broker.url(),
            lease.device_id
        )
    };
    browser
        .must(
            "open",
            serde_json::json!({"name": "ci", "url": watch(&user)}),
        )
        .await;
    browser
        .poll(
            "video",
            serde_json::json!({"name": "ci"}),
            Duration::from_secs(20),
            |v| v["frames"].as_u64().is_some_and(|f| f > 0) && v["control"] == false,
        )
        .await;
    let other = broker.token(Role::User, "someone-else");
    browser
        .must(
            "open",
            serde_json::json!({"name": "other", "url": watch(&other)}),
        )
        .await;
    browser
        .poll(
            "state",
            serde_json::json!({"name": "other"}),
            Duration::from_secs(10),
            |s| {
                s["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("not allowed"))
            },
        )
        .await;
    drop(browser);
    if let Some(mut stdin) = script.stdin.take() {
        let _ = stdin.write_all(b"quit\n");
    }
    let status = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        (script.wait(), rest)
    });
    let (status, rest) = tokio::time::timeout(Duration::from_secs(60), status)
        .await
        .expect("quit within 60 s")
        .expect("waiter");
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "script failed: {rest}"
    );
    let (url, token, id) = (broker.url(), user.clone(), lease.lease_id.clone());
    eventually(Duration::from_secs(10), || {
        let (url, token, id) = (url.clone(), token.clone(), id.clone());
        async move {
            let l = leases(&url, &token)
                .await
                .into_iter()
                .find(|l| l.lease_id == id)?;
            (l.state == pb::LeaseState::Ended as i32
                && l.end_reason == pb::EndReason::Released as i32)
                .then_some(())
        }
    })
    .await;

    // The node's own Appium dies: its device slot leaves /status, and comes back once the
    // node has restarted it. (The node's only child process is that Appium.)
    let node_pid = farm.node.pid().expect("the node runs");
    let children = std::process::Command::new("pgrep")
        .args(["-P", &node_pid.to_string()])
        .output()
        .expect("pgrep");
    let children = String::from_utf8_lossy(&children.stdout).to_string();
    assert!(!children.trim().is_empty(), "the node started Appium");
    for pid in children.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status();
    }
    let slots = |wanted: usize| {
        let (url, token) = (broker.url(), user.clone());
        eventually(Duration::from_secs(30), move || {
            let (url, token) = (url.clone(), token.clone());
            async move { (slot_count(&url, &token).await? == wanted).then_some(()) }
        })
    };
    slots(0).await;
    slots(1).await;
}

/// How many slots the broker's /status lists.
async fn slot_count(url: &str, token: &str) -> Option<usize> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/status"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        v["value"]["nodes"]
            .as_array()?
            .iter()
            .map(|n| n["slots"].as_array().map_or(0, |s| s.len()))
            .sum(),
    )
}

/// Serves one small page on loopback for the browser to load.
async fn serve_page(title: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let page =
        format!("<!doctype html><html><head><title>{title}</title></head><body>farm</body></html>");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selenium_client_gets_headless_chromium_through_the_broker() {
    let adb = AdbServer::start().await;
    let broker = Broker::start(BrokerOpts::default()).await;
    let node_token = broker.token(Role::Node, "node-1");
    let user = broker.token(Role::User, "ci");
    let _node = Node::start_with(
        &broker.url(),
        &node_token,
        "lab",
        "node-1",
        adb.port(),
        &[
            "--chromedriver",
            "/usr/bin/chromedriver",
            "--browser-slots",
            "2",
        ],
    )
    .await;
    wait_for_slots(&broker, &user, 2).await;
    let page = serve_page("Farm grid page").await;
    let grid = format!("http://ci:{user}@{}", broker.addr());
    let run = tokio::process::Command::new(python())
        .arg(e2e_dir().join("python/selenium_session.py"))
        .args([grid.as_str(), page.as_str()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("within 90 s")
        .expect("python venv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("TITLE Farm grid page"), "{stdout}");
}

/// A farm for queue tests: `devices` simulated devices, Appium + fake driver behind one node.
/// Who runs the Appium server behind the node's device slots.
#[derive(Clone, Copy, PartialEq)]
enum AppiumBy {
    /// The test starts it and gives the node `--appium URL`.
    Test,
    /// The node starts it itself (`--appium-bin`).
    Node,
}

struct AppiumFarm {
    _dir: tempfile::TempDir,
    _adb: AdbServer,
    _sim: Sim,
    _appium: Option<ChildProcess>,
    broker: Broker,
    node: Node,
    user: String,
    app: PathBuf,
}

impl AppiumFarm {
    async fn start(devices: usize, broker_args: &[&str]) -> AppiumFarm {
        AppiumFarm::start_with(devices, broker_args, AppiumBy::Test).await
    }

    async fn start_with(devices: usize, broker_args: &[&str], by: AppiumBy) -> AppiumFarm {
        let dir = tempfile::tempdir().expect("temp dir");
        let adb = AdbServer::start().await;
        let sim = Sim::start(adb.port(), devices).await;
        let (appium, appium_flag) = match by {
            AppiumBy::Test => {
                let (appium, url) = start_appium(dir.path()).await;
                (Some(appium), ["--appium".to_string(), url])
            }
            AppiumBy::Node => {
                // How an operator would point the node at an Appium with its own APPIUM_HOME.
                let home = e2e_dir().join("appium");
                let wrapper = dir.path().join("appium");
                let script = format!(
                    "#!/bin/sh\nAPPIUM_HOME='{}' exec '{}' \"$@\"\n",
                    home.display(),
                    home.join("node_modules/.bin/appium").display()
                );
                std::fs::write(&wrapper, script).expect("appium wrapper");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
                (
                    None,
                    ["--appium-bin".to_string(), wrapper.display().to_string()],
                )
            }
        };
        let broker = Broker::start(BrokerOpts {
            extra_args: broker_args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        })
        .await;
        let node_token = broker.token(Role::Node, "node-1");
        let user = broker.token(Role::User, "ci");
        let node = Node::start_with(
            &broker.url(),
            &node_token,
            "lab",
            "node-1",
            adb.port(),
            &[
                &appium_flag[0],
                &appium_flag[1],
                "--appium-caps",
                r#"{"platformName":"Fake","appium:automationName":"Fake"}"#,
            ],
        )
        .await;
        wait_for_slots(&broker, &user, devices).await;
        let app = dir.path().join("app.xml");
        std::fs::write(&app, r#"<app width="720" height="1280"><title>T</title><MockButton id="go">Go</MockButton></app>"#)
            .expect("app xml");
        AppiumFarm {
            _dir: dir,
            _adb: adb,
            _sim: sim,
            _appium: appium,
            broker,
            node,
            user,
            app,
        }
    }

    /// POST /session as user "ci" with the fake caps plus `extra`; returns (status, body).
    fn new_session(
        &self,
        extra: serde_json::Value,
    ) -> impl std::future::Future<Output = (u16, serde_json::Value)> + use<> {
        let mut caps = serde_json::json!({
            "platformName": "Fake",
            "appium:automationName": "Fake",
            "appium:app": self.app.display().to_string(),
        });
        if let (Some(c), Some(e)) = (caps.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let url = format!("{}/session", self.broker.url());
        let user = self.user.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .basic_auth("ci", Some(user))
                .json(&serde_json::json!({"capabilities": {"alwaysMatch": caps}}))
                .send()
                .await
                .expect("broker answers");
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or_default())
        }
    }

    async fn command(
        &self,
        session: &str,
        method: reqwest::Method,
        suffix: &str,
    ) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .request(
                method,
                format!("{}/session/{session}{suffix}", self.broker.url()),
            )
            .basic_auth("ci", Some(&self.user))
            .send()
            .await
            .expect("broker answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    async fn queued(&self) -> Option<u64> {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/status", self.broker.url()))
            .bearer_auth(&self.user)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["value"]["farm:queued"].as_u64()
    }
}

fn session_id(body: &serde_json::Value) -> String {
    body["value"]["sessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_four_clients_with_real_appium_queue_in_order() {
    let farm = AppiumFarm::start(2, &[]).await;
    let (s1, b1) = farm.new_session(serde_json::json!({})).await;
    let (s2, b2) = farm.new_session(serde_json::json!({})).await;
    assert_eq!((s1, s2), (200, 200), "{b1} {b2}");
    let (first, second) = (session_id(&b1), session_id(&b2));

    // Two more clients wait, in order.
    let third = tokio::spawn(farm.new_session(serde_json::json!({})));
    eventually(Duration::from_secs(10), || async {
        (farm.queued().await? == 1).then_some(())
    })
    .await;
    let fourth = tokio::spawn(farm.new_session(serde_json::json!({})));
    eventually(Duration::from_secs(10), || async {
        (farm.queued().await? == 2).then_some(())
    })
    .await;

    // A client whose queue timeout passes gets `session not created` with the reason.
    let (status, body) = farm
        .new_session(serde_json::json!({"farm:queueTimeout": 1}))
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["value"]["error"], "session not created", "{body}");
    assert!(
        body["value"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{body}"
    );

    // A client that disconnects while waiting frees its place at once.
    let leaver = tokio::spawn(farm.new_session(serde_json::json!({})));
    eventually(Duration::from_secs(10), || async {
        (farm.queued().await? == 3).then_some(())
    })
    .await;
    leaver.abort();
    eventually(Duration::from_secs(10), || async {
        (farm.queued().await? == 2).then_some(())
    })
    .await;

    // First come, first served.
    let (status, _) = farm.command(&first, reqwest::Method::DELETE, "").await;
    assert_eq!(status, 200);
    let (s3, b3) = tokio::time::timeout(Duration::from_secs(30), third)
        .await
        .expect("third in time")
        .expect("task");
    assert_eq!(s3, 200, "{b3}");
    assert!(!fourth.is_finished(), "the fourth client still waits");
    let (status, _) = farm.command(&second, reqwest::Method::DELETE, "").await;
    assert_eq!(status, 200);
    let (s4, b4) = tokio::time::timeout(Duration::from_secs(30), fourth)
        .await
        .expect("fourth in time")
        .expect("task");
    assert_eq!(s4, 200, "{b4}");
    for id in [session_id(&b3), session_id(&b4)] {
        let (status, body) = farm
            .command(&id, reqwest::Method::GET, "/window/rect")
            .await;
        assert_eq!(status, 200, "{body}");
        farm.command(&id, reqwest::Method::DELETE, "").await;
    }
    assert_eq!(farm.queued().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_use_idle_sessions_and_a_killed_node_end_leases_right_with_real_appium() {
    let mut farm = AppiumFarm::start(1, &["--webdriver-idle-secs", "2"]).await;
    let lease_reason = |reason: pb::EndReason| {
        let (url, token) = (farm.broker.url(), farm.user.clone());
        async move {
            eventually(Duration::from_secs(15), || {
                let (url, token) = (url.clone(), token.clone());
                async move {
                    let all = leases(&url, &token).await;
                    all.iter()
                        .any(|l| {
                            l.state == pb::LeaseState::Ended as i32 && l.end_reason == reason as i32
                        })
                        .then_some(())
                }
            })
            .await;
        }
    };
    // A device a tester is using live (Chromium, WebRTC) is never given to a script; a script
    // that waits gets it once the tester releases it.
    let alice = farm.broker.token(Role::User, "alice");
    let (devices, _) = farm_e2e::connect(&farm.broker.url(), &alice).await;
    let device = devices
        .clone()
        .list_devices(pb::ListDevicesRequest::default())
        .await
        .expect("devices")
        .into_inner()
        .devices
        .remove(0);
    let mut browser = farm_e2e::Browser::start().await;
    let page = format!("{}/device/{}?token={alice}", farm.broker.url(), device.id);
    browser
        .reserve_and_go_live("alice", &page, Duration::from_secs(20))
        .await;
    let (status, body) = farm
        .new_session(serde_json::json!({"farm:queueTimeout": 1}))
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["value"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("held by alice")),
        "{body}"
    );
    let waiting = tokio::spawn(farm.new_session(serde_json::json!({"farm:queueTimeout": 60})));
    eventually(Duration::from_secs(10), || async {
        (farm.queued().await == Some(1)).then_some(())
    })
    .await;
    browser
        .must(
            "click",
            serde_json::json!({"name": "alice", "selector": "#release"}),
        )
        .await;
    let (status, body) = waiting.await.expect("the waiting client");
    assert_eq!(status, 200, "the waiting script gets the device: {body}");
    browser
        .wait_state("alice", "ended", Duration::from_secs(10))
        .await;
    drop(browser);
    let (status, _) = farm
        .command(&session_id(&body), reqwest::Method::DELETE, "")
        .await;
    assert_eq!(status, 200);

    // An idle session is deleted and its lease ends `idle`.
    let (status, body) = farm.new_session(serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    let idle = session_id(&body);
    lease_reason(pb::EndReason::Idle).await;
    let (status, body) = farm
        .command(&idle, reqwest::Method::GET, "/window/rect")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["value"]["error"], "invalid session id", "{body}");

    // SIGKILL of the node mid-session: a clear error, and the lease ends `node_lost`.
    let (status, body) = farm.new_session(serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    let live = session_id(&body);
    farm.node.kill();
    lease_reason(pb::EndReason::NodeLost).await;
    let (status, body) = farm
        .command(&live, reqwest::Method::GET, "/window/rect")
        .await;
    assert!(status >= 400, "{status} {body}");
    assert!(
        body["value"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("node")),
        "the client is told the node went away: {body}"
    );
}
