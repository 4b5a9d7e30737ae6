//! The node's WebDriver service end to end: against a stand-in slot (streaming 20 MB both
//! ways, header and status pass-through, udid/port injection, timeouts, cancels), against
//! Debian's real chromedriver, and against Appium 3 with its fake driver.

mod webdriver_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use farm_node::webdriver::WebDriverConfig;
use farm_node::webdriver::config::{AppiumConfig, AppiumServer, BrowserConfig, parse_endpoint};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use webdriver_support::{DEADLINE, Harness, Seen, StandIn, pattern, stand_in_slot};

const DEVICE: &str = "emulator-5554";
const SLOT: &str = "appium:emulator-5554";
const TWENTY_MB: usize = 20 * 1024 * 1024;

fn appium_config(url: &str, extra: Value) -> Result<WebDriverConfig> {
    Ok(WebDriverConfig {
        appium: Some(AppiumConfig {
            server: AppiumServer::Remote(parse_endpoint(url)?),
            extra_capabilities: extra.as_object().cloned().unwrap_or_default(),
        }),
        command_timeout: Duration::from_secs(2),
        ..WebDriverConfig::default()
    })
}

/// The next request the stand-in saw on `path` (others are skipped).
async fn seen(slot: &mut StandIn, path: &str) -> Result<Seen> {
    loop {
        let record = tokio::time::timeout(DEADLINE, slot.seen.recv())
            .await
            .context("the stand-in saw no request")?
            .context("the stand-in stopped")?;
        if record.path == path {
            return Ok(record);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_slots_and_the_streaming_proxy() -> Result<()> {
    let mut slot = stand_in_slot().await?;
    let caps = json!({"platformName": "Fake", "appium:automationName": "Fake"});
    let mut node = Harness::start(appium_config(&format!("http://{}", slot.addr), caps)?).await?;

    // A device comes online: its slot is announced with merged capabilities.
    node.online(&[DEVICE]).await?;
    let inventory = node.slots_where(|inv| !inv.slots.is_empty()).await?;
    ensure!(inventory.slots.len() == 1, "{inventory:?}");
    let announced = &inventory.slots[0];
    ensure!(announced.slot_id == SLOT && announced.kind == "appium" && announced.max_sessions == 1);
    let advertised: Value = serde_json::from_str(&announced.capabilities_json)?;
    ensure!(
        advertised
            == json!({"platformName": "Fake", "appium:automationName": "Fake",
                      "appium:platformVersion": "14", "appium:deviceName": "Pixel Test",
                      "appium:udid": DEVICE}),
        "{advertised}"
    );

    // New session: the device's udid and ports are injected, the answer passes through.
    let request = json!({"capabilities": {
        "alwaysMatch": {"platformName": "Fake", "appium:udid": "someone-else"},
        "firstMatch": [{"appium:systemPort": 1, "appium:app": "/x.xml"}]}});
    let answer = node
        .call(1, SLOT, "POST", "/session", request.to_string().as_bytes())
        .await?;
    ensure!(answer.head.status == 200 && answer.header("x-slot") == Some("stand-in"));
    ensure!(answer.json()?["value"]["sessionId"] == "fake-session");
    let new_session = seen(&mut slot, "/session").await?;
    let sent: Value = serde_json::from_slice(&new_session.body)?;
    ensure!(
        sent == json!({"capabilities": {
            "alwaysMatch": {"platformName": "Fake", "appium:udid": DEVICE,
                            "appium:systemPort": 8200, "appium:mjpegServerPort": 9200},
            "firstMatch": [{"appium:app": "/x.xml"}]}}),
        "{sent}"
    );
    ensure!(new_session.headers["content-length"] == new_session.body.len().to_string().as_str());

    // 20 MB up, streamed in 64 KiB chunks; hop-by-hop headers stay behind.
    let headers = [
        ("x-custom", "kept"),
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "dropped"),
        ("transfer-encoding", "chunked"),
        ("host", "broker.example:4444"),
    ];
    node.request(2, SLOT, "PUT", "/upload", &headers).await?;
    for start in (0..TWENTY_MB).step_by(65_536) {
        let data: Vec<u8> = (start..start + 65_536).map(pattern).collect();
        node.body(2, data, false).await?;
    }
    node.body(2, Vec::new(), true).await?;
    let answer = node.answer(2).await?;
    ensure!(answer.head.status == 201, "{:?}", answer.head);
    ensure!(answer.json()? == json!({"bytes": TWENTY_MB, "mismatches": 0}));
    let upload = seen(&mut slot, "/upload").await?;
    ensure!(upload.headers.get("x-custom").is_some_and(|v| v == "kept"));
    ensure!(
        upload.headers.get("x-secret").is_none(),
        "{:?}",
        upload.headers
    );
    let host = upload.headers.get("host").context("host")?;
    ensure!(host == slot.addr.to_string().as_str(), "{host:?}");

    // 20 MB down: status and headers unchanged, chunks of at most 64 KiB.
    let path = format!("/download?size={TWENTY_MB}");
    let answer = node.call(3, SLOT, "GET", &path, b"").await?;
    ensure!(answer.head.status == 203 && answer.header("x-download") == Some("yes"));
    ensure!(answer.body.len() == TWENTY_MB && answer.largest_chunk <= 65_536);
    ensure!(
        answer.chunks >= TWENTY_MB / 65_536,
        "{} chunks",
        answer.chunks
    );
    ensure!(
        answer
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(i))
    );

    // A slot's garbage passes through as is; a small answer of known length comes whole in
    // the head (one message).
    let answer = node.call(4, SLOT, "GET", "/garbage", b"").await?;
    ensure!(answer.body == b"<html>not json" && answer.header("content-type") == Some("text/html"));
    ensure!(answer.chunks == 0 && answer.head.end, "{:?}", answer.head);

    // New-session bodies over 1 MiB, or not JSON, are answered by the node itself.
    node.request(5, SLOT, "POST", "/session", &[]).await?;
    node.body(5, vec![b' '; 1 << 20], false).await?;
    node.body(5, b"{}".to_vec(), true).await?;
    let answer = node.answer(5).await?;
    ensure!(answer.head.status == 413 && answer.json()?["value"]["error"] == "session not created");
    let answer = node.call(6, SLOT, "POST", "/session", b"{not json").await?;
    ensure!(answer.head.status == 400 && answer.json()?["value"]["error"] == "invalid argument");

    // A slot that hangs: an error head after the command timeout.
    node.request(7, SLOT, "GET", "/hang", &[]).await?;
    node.body(7, Vec::new(), true).await?;
    let head = node.head(7).await?;
    ensure!(head.error.contains("did not answer within 2 s"), "{head:?}");

    // The broker cancels a stream: the node drops the slot's answer.
    node.call_head(8, SLOT, "/endless").await?;
    node.cancel(8).await?;
    tokio::time::timeout(DEADLINE, slot.gone.recv()).await?;
    // The broker link reconnects: every stream ends.
    node.call_head(9, SLOT, "/endless").await?;
    node.connection.send_replace(2);
    tokio::time::timeout(DEADLINE, slot.gone.recv()).await?;

    // A small answer that breaks off before its announced length: nothing went out yet, so
    // the broker gets an error head that says why.
    node.request_whole(13, SLOT, "GET", "/short", &[], b"")
        .await?;
    let head = node.head(13).await?;
    ensure!(head.error.contains("broke off its answer"), "{head:?}");

    // Unknown slots, bad requests and gone devices get an error head.
    node.request(10, "appium:nope", "GET", "/status", &[])
        .await?;
    ensure!(node.head(10).await?.error.contains("not on this node"));
    node.request(11, SLOT, "GET", "no-slash", &[]).await?;
    node.body(11, Vec::new(), true).await?;
    ensure!(node.head(11).await?.error.contains("invalid request path"));
    node.online(&[]).await?;
    node.slots_where(|inv| inv.slots.is_empty()).await?;
    node.request(12, SLOT, "GET", "/status", &[]).await?;
    ensure!(node.head(12).await?.error.contains("not on this node"));
    node.stop().await
}

#[tokio::test]
async fn a_node_without_slots_says_so() -> Result<()> {
    let mut node = Harness::start(WebDriverConfig::default()).await?;
    node.request(1, "browser", "POST", "/session", &[]).await?;
    let head = node.head(1).await?;
    ensure!(
        head.status == 0 && head.error.contains("no WebDriver slots"),
        "{head:?}"
    );
    ensure!(node.slots.borrow().slots.is_empty());
    node.stop().await
}

const HEADLESS: &str = r#"{"capabilities":{"alwaysMatch":{"browserName":"chrome","goog:chromeOptions":{"args":["--headless","--no-sandbox","--disable-gpu"]}}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_chromedriver_behind_the_browser_slot() -> Result<()> {
    let chromedriver = PathBuf::from("/usr/bin/chromedriver");
    ensure!(
        chromedriver.exists(),
        "chromedriver missing: run scripts/install-deps --test"
    );
    let config = WebDriverConfig {
        browser: Some(BrowserConfig {
            chromedriver,
            max_sessions: 1,
        }),
        ..WebDriverConfig::default()
    };
    let mut node = Harness::start(config).await?;
    let inventory = node.slots_where(|inv| !inv.slots.is_empty()).await?;
    let caps: Value = serde_json::from_str(&inventory.slots[0].capabilities_json)?;
    ensure!(inventory.slots[0].slot_id == "browser" && inventory.slots[0].max_sessions == 1);
    ensure!(caps["browserName"] == "chrome" && caps["platformName"] == "linux");
    ensure!(
        caps["browserVersion"]
            .as_str()
            .is_some_and(|v| v.split('.').count() == 2)
    );

    let mut stream = 0;
    for round in 0..2 {
        stream += 1;
        let answer = node
            .call(stream, "browser", "POST", "/session", HEADLESS.as_bytes())
            .await?;
        ensure!(
            answer.head.status == 200,
            "round {round}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let id = answer.json()?["value"]["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_string();

        // The one place is taken: the node refuses a second session itself.
        stream += 1;
        let refused = node
            .call(stream, "browser", "POST", "/session", HEADLESS.as_bytes())
            .await?;
        ensure!(refused.head.status == 500);
        ensure!(refused.json()?["value"]["error"] == "session not created");

        stream += 1;
        let url = json!({"url": "data:text/html,<title>farm grid</title>"}).to_string();
        let path = format!("/session/{id}/url");
        ensure!(
            node.call(stream, "browser", "POST", &path, url.as_bytes())
                .await?
                .head
                .status
                == 200
        );
        stream += 1;
        let title = node
            .call(
                stream,
                "browser",
                "GET",
                &format!("/session/{id}/title"),
                b"",
            )
            .await?;
        ensure!(title.json()?["value"] == "farm grid", "{:?}", title.json());

        stream += 1;
        let deleted = node
            .call(stream, "browser", "DELETE", &format!("/session/{id}"), b"")
            .await?;
        ensure!(deleted.head.status == 200, "{:?}", deleted.json());
    }
    node.stop().await
}

/// Appium 3 with the fake driver, installed by `scripts/install-deps --test`.
struct Appium {
    child: tokio::process::Child,
    url: String,
}

async fn start_appium(home: &Path) -> Result<Appium> {
    let binary = home.join("node_modules/.bin/appium");
    ensure!(
        binary.exists(),
        "{} missing: run scripts/install-deps --test",
        binary.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(binary)
        .args([
            "--address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-no-colors",
        ])
        .env("APPIUM_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start appium")?;
    let stdout = child.stdout.take().context("appium stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("listener started") {
                // Keep draining its log so it never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return Ok(());
            }
        }
        bail!("appium exited before it listened")
    })
    .await
    .context("appium did not start in time")??;
    Ok(Appium {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appium_fake_driver_behind_a_device_slot() -> Result<()> {
    let home = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/appium");
    let mut appium = start_appium(&home).await?;
    let dir = tempfile::tempdir()?;
    let app = dir.path().join("app.xml");
    std::fs::write(
        &app,
        r#"<app width="720" height="1280"><title>T</title><MockButton id="go">Go</MockButton></app>"#,
    )?;
    let caps = json!({"platformName": "Fake", "appium:automationName": "Fake"});
    let mut node = Harness::start(appium_config(&appium.url, caps)?).await?;
    node.online(&[DEVICE]).await?;
    node.slots_where(|inv| !inv.slots.is_empty()).await?;

    let request = json!({"capabilities": {"alwaysMatch": {
        "platformName": "Fake", "appium:automationName": "Fake",
        "appium:deviceName": "Fake", "appium:app": app.to_string_lossy()}}});
    let answer = node
        .call(1, SLOT, "POST", "/session", request.to_string().as_bytes())
        .await?;
    ensure!(
        answer.head.status == 200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let value = &answer.json()?["value"];
    let id = value["sessionId"]
        .as_str()
        .context("sessionId")?
        .to_string();
    // Appium saw the injected device capabilities.
    let cap = |name: &str| {
        let caps = &value["capabilities"];
        caps.get(name)
            .or_else(|| caps.get(format!("appium:{name}")))
            .cloned()
            .unwrap_or_default()
    };
    ensure!(
        cap("udid") == DEVICE && cap("systemPort") == 8200,
        "{value}"
    );

    let find = json!({"using": "id", "value": "go"}).to_string();
    let path = format!("/session/{id}/element");
    let element = node.call(2, SLOT, "POST", &path, find.as_bytes()).await?;
    ensure!(element.head.status == 200, "{:?}", element.json());
    let shot = node
        .call(3, SLOT, "GET", &format!("/session/{id}/screenshot"), b"")
        .await?;
    ensure!(shot.head.status == 200 && shot.json()?["value"].is_string());
    let deleted = node
        .call(4, SLOT, "DELETE", &format!("/session/{id}"), b"")
        .await?;
    ensure!(deleted.head.status == 200, "{:?}", deleted.json());
    node.stop().await?;
    appium.child.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_stops_reading_the_body_ends_its_stream() -> Result<()> {
    let mut slot = stand_in_slot().await?;
    let mut node =
        Harness::start(appium_config(&format!("http://{}", slot.addr), json!({}))?).await?;
    node.online(&[DEVICE]).await?;
    node.slots_where(|inv| !inv.slots.is_empty()).await?;
    // `/hang` never reads its body: once the socket buffers are full the node must give up
    // on this stream (within ~2 s) instead of stalling every other stream behind it.
    node.request(1, SLOT, "PUT", "/hang", &[]).await?;
    for _ in 0..(256 * 1024 * 1024 / 65_536) {
        node.body(1, vec![0; 65_536], false).await?;
    }
    // The slot never answered, so the broker gets an error head (a cancel once a head is out).
    let head = node.head(1).await?;
    ensure!(
        head.error.contains("did not read the request body"),
        "{head:?}"
    );
    seen(&mut slot, "/hang").await?;
    // Later chunks of the cancelled stream are dropped, and other streams still work.
    node.body(1, Vec::new(), true).await?;
    let answer = node.call(2, SLOT, "GET", "/garbage", b"").await?;
    ensure!(answer.head.status == 200);
    node.stop().await
}
