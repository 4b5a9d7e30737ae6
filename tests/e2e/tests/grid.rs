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
    let url = format!("{}/status", broker.url());
    let token = token.to_string();
    eventually(Duration::from_secs(30), || {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let v: serde_json::Value = reqwest::Client::new()
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let count: usize = v["value"]["nodes"]
                .as_array()?
                .iter()
                .map(|n| n["slots"].as_array().map_or(0, |s| s.len()))
                .sum();
            (count >= n).then_some(())
        }
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
    let dir = tempfile::tempdir().expect("temp dir");
    let adb = AdbServer::start().await;
    let _sim = Sim::start(adb.port(), 1).await;
    let (_appium, appium_url) = start_appium(dir.path()).await;
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
            "--appium",
            &appium_url,
            "--appium-caps",
            r#"{"platformName":"Fake","appium:automationName":"Fake"}"#,
        ],
    )
    .await;
    wait_for_slots(&broker, &user, 1).await;
    let app = dir.path().join("app.xml");
    std::fs::write(&app, r#"<app width="720" height="1280"><title>T</title><MockButton id="go">Go</MockButton></app>"#).expect("app xml");
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
