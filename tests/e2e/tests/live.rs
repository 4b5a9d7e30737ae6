//! Live interaction end to end: real Chromium (playwright-core), broker, node (scrcpy capture + WebRTC), simulator, adb.

use std::time::{Duration, Instant};

use farm_e2e::{AdbServer, Broker, BrokerOpts, Browser, Coturn, Node, Role, Sim, eventually};
use serde_json::{Value, json};

/// A farm with one 720x1280 simulated device, a node that captures through the scrcpy protocol.
struct LiveFarm {
    _adb: AdbServer,
    sim: Sim,
    broker: Broker,
    _node: Node,
    serial: String,
    _jar: tempfile::NamedTempFile,
}

impl LiveFarm {
    async fn start(broker_args: &[&str]) -> LiveFarm {
        let adb = AdbServer::start().await;
        let sim = Sim::start_with(adb.port(), 1, &["--screen", "720x1280", "--fps", "10"]).await;
        let broker = Broker::start(BrokerOpts {
            extra_args: broker_args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        })
        .await;
        // The simulator does not run the jar: any bytes stand in for the user's scrcpy-server.
        let jar = tempfile::NamedTempFile::new().expect("jar");
        std::fs::write(jar.path(), b"PK stand-in for scrcpy-server.jar").expect("write jar");
        let node_token = broker.token(Role::Node, "node-1");
        let jar_path = jar.path().display().to_string();
        let node = Node::start_with(
            &broker.url(),
            &node_token,
            "lab",
            "node-1",
            adb.port(),
            &["--scrcpy-server", &jar_path, "--webrtc-ip", "127.0.0.1"],
        )
        .await;
        let serial = sim.devices[0].serial.clone();
        let farm = LiveFarm {
            _adb: adb,
            sim,
            broker,
            _node: node,
            serial,
            _jar: jar,
        };
        let admin = farm.broker.token(Role::Admin, "admin-watch");
        let (devices, _) = farm_e2e::connect(&farm.broker.url(), &admin).await;
        eventually(Duration::from_secs(10), || {
            let mut devices = devices.clone();
            async move {
                let list = devices
                    .list_devices(farm_proto::v1::ListDevicesRequest::default())
                    .await
                    .ok()?
                    .into_inner()
                    .devices;
                (list.len() == 1 && list[0].state == farm_proto::v1::DeviceState::Available as i32)
                    .then_some(())
            }
        })
        .await;
        farm
    }

    fn page_url(&self, token: &str, extra: &str) -> String {
        format!(
            "{}/device/{}?token={token}{extra}",
            self.broker.url(),
            self.serial
        )
    }

    async fn app(&self) -> Value {
        self.sim.get(&format!("/devices/{}/app", self.serial)).await
    }

    /// The centre of a button, in video pixels (the video is the screen here: 720x1280, no scaling).
    async fn button_center(&self, name: &str) -> (i64, i64) {
        let layout = self
            .sim
            .get(&format!("/devices/{}/app/layout", self.serial))
            .await;
        let b = &layout["buttons"][name];
        let x = b["x"].as_i64().expect("x") + b["width"].as_i64().expect("w") / 2;
        let y = b["y"].as_i64().expect("y") + b["height"].as_i64().expect("h") / 2;
        (x, y)
    }
}

async fn poll(
    browser: &mut Browser,
    cmd: &str,
    args: Value,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    browser.poll(cmd, args, within, check).await
}

async fn wait_app(farm: &LiveFarm, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(5), || async {
        let app = farm.app().await;
        if check(&app) {
            Ok(app)
        } else {
            Err(format!("{what}: {app}"))
        }
    })
    .await
}

async fn keys_received(farm: &LiveFarm) -> Vec<i64> {
    let input = farm.sim.input(&farm.serial).await;
    input
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["kind"] == "key" && e["action"] != "up")
                .filter_map(|e| e["code"].as_i64())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tester_reserves_a_device_and_drives_it_live() {
    let farm = LiveFarm::start(&[]).await;
    let alice = farm.broker.token(Role::User, "alice");
    let mut b = Browser::start().await;
    b.open_when_visible("alice", &farm.page_url(&alice, ""), "#reserve-go")
        .await;

    // One click reserves and goes live; the first frame comes within a second.
    let ms = b
        .must(
            "clickToFirstFrame",
            json!({"name": "alice", "selector": "#reserve-go", "timeoutMs": 10000}),
        )
        .await
        .as_f64()
        .expect("milliseconds");
    eprintln!("click to first frame: {ms:.0} ms");
    // The 1 s target is measured by scripts/bench-live (p50 ~340 ms here); under the whole
    // suite on 2 cores it can take longer, so the test guards against seconds-long stalls.
    assert!(ms < 2000.0, "first frame {ms:.0} ms after the click");
    b.wait_state("alice", "live", Duration::from_secs(5)).await;
    let video = b.must("video", json!({"name": "alice"})).await;
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(720), Some(1280)),
        "{video}"
    );
    let before = video["frames"].as_u64().expect("frames");
    poll(
        &mut b,
        "video",
        json!({"name": "alice"}),
        Duration::from_secs(3),
        |v| v["frames"].as_u64().is_some_and(|f| f > before + 5),
    )
    .await;

    // A click on button A presses it on the device, and a later frame shows it pressed.
    let (ax, ay) = farm.button_center("A").await;
    let pixel_before = b
        .must("pixel", json!({"name": "alice", "x": ax, "y": ay}))
        .await;
    b.must("tap", json!({"name": "alice", "x": ax, "y": ay}))
        .await;
    wait_app(&farm, "button A pressed once", |app| {
        app["buttons"]["A"] == 1
    })
    .await;
    poll(
        &mut b,
        "pixel",
        json!({"name": "alice", "x": ax, "y": ay}),
        Duration::from_secs(3),
        |p| p != &pixel_before,
    )
    .await;

    // Typed text lands in the text field.
    b.must("type", json!({"name": "alice", "text": "hello farm"}))
        .await;
    wait_app(&farm, "typed text", |app| app["text"] == "hello farm").await;

    // A swipe up on the list scrolls it.
    let layout = farm
        .sim
        .get(&format!("/devices/{}/app/layout", farm.serial))
        .await;
    let list = &layout["list"];
    let lx = list["x"].as_i64().expect("x") + list["width"].as_i64().expect("w") / 2;
    let ly = list["y"].as_i64().expect("y");
    let lh = list["height"].as_i64().expect("h");
    b.must("swipe", json!({"name": "alice", "x1": lx, "y1": ly + lh * 3 / 4, "x2": lx, "y2": ly + lh / 4, "steps": 12})).await;
    wait_app(&farm, "list scrolled", |app| {
        app["scroll"].as_i64().is_some_and(|s| s > 0)
    })
    .await;

    // Home and Back arrive as key events.
    b.must(
        "click",
        json!({"name": "alice", "selector": "#keys [data-key='3']"}),
    )
    .await;
    b.must(
        "click",
        json!({"name": "alice", "selector": "#keys [data-key='4']"}),
    )
    .await;
    eventually(Duration::from_secs(5), || async {
        let keys = keys_received(&farm).await;
        if keys.contains(&3) && keys.contains(&4) {
            Ok(())
        } else {
            Err(format!("keys {keys:?}"))
        }
    })
    .await;

    // Rotate: the dimensions swap and a tap still lands on the right button.
    b.must("click", json!({"name": "alice", "selector": "#rotate"}))
        .await;
    poll(
        &mut b,
        "video",
        json!({"name": "alice"}),
        Duration::from_secs(5),
        |v| v["width"].as_u64() == Some(1280) && v["height"].as_u64() == Some(720),
    )
    .await;
    wait_app(&farm, "rotated", |app| {
        app["rotation"].as_i64().is_some_and(|r| r % 2 == 1)
    })
    .await;
    let (bx, by) = farm.button_center("B").await;
    b.must("tap", json!({"name": "alice", "x": bx, "y": by}))
        .await;
    wait_app(&farm, "button B pressed after rotation", |app| {
        app["buttons"]["B"] == 1 && app["buttons"]["A"] == 1
    })
    .await;

    // Garbage on the input channel is refused with a reason; the session stays live.
    b.must(
        "eval",
        json!({"name": "alice", "js": "window.livePage.channel.send('this is not json'); true"}),
    )
    .await;
    poll(
        &mut b,
        "state",
        json!({"name": "alice"}),
        Duration::from_secs(3),
        |s| {
            s["note"]
                .as_str()
                .is_some_and(|n| n.contains("Input refused"))
        },
    )
    .await;
    b.must("eval", json!({"name": "alice", "js": "window.livePage.input({type: 'touch', action: 'down', pointer: 42, x: 1, y: 1}); true"})).await;
    b.must("eval", json!({"name": "alice", "js": "window.livePage.input({type: 'touch', action: 'down', pointer: 0, x: 99999, y: 1}); true"})).await;
    b.must("eval", json!({"name": "alice", "js": "window.livePage.input({type: 'text', text: 'x'.repeat(5000)}); true"})).await;
    let state = b.must("state", json!({"name": "alice"})).await;
    assert_eq!(state["state"], "live", "{state}");
    assert_eq!(
        farm.app().await["text"],
        "hello farm",
        "refused input changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_cannot_drive_a_held_device_and_observers_share_one_capture() {
    let farm = LiveFarm::start(&["--allow-observers"]).await;
    let alice = farm.broker.token(Role::User, "alice");
    let bob = farm.broker.token(Role::User, "bob");
    let mut b = Browser::start().await;
    b.reserve_and_go_live("alice", &farm.page_url(&alice, ""), Duration::from_secs(10))
        .await;

    // Bob is told who holds it and may only watch.
    b.must(
        "open",
        json!({"name": "bob", "url": farm.page_url(&bob, "")}),
    )
    .await;
    let s = poll(
        &mut b,
        "state",
        json!({"name": "bob"}),
        Duration::from_secs(5),
        |s| {
            s["text"]
                .as_str()
                .is_some_and(|t| t.contains("held by alice"))
        },
    )
    .await;
    assert!(
        s["note"].as_str().is_some_and(|n| n.contains("watch")),
        "{s}"
    );
    assert_eq!(
        b.must("visible", json!({"name": "bob", "selector": "#reserve-go"}))
            .await,
        json!(false)
    );
    b.must("click", json!({"name": "bob", "selector": "#watch"}))
        .await;
    b.wait_state("bob", "live", Duration::from_secs(10)).await;
    let video = b.must("video", json!({"name": "bob"})).await;
    assert_eq!(video["control"], false, "an observer gets no input channel");
    // A click by bob changes nothing on the device.
    let (ax, ay) = farm.button_center("A").await;
    b.must("tap", json!({"name": "bob", "x": ax, "y": ay}))
        .await;
    // Bob tries to open a control session by hand: refused, with the reason.
    let refused = b
        .must(
            "eval",
            json!({"name": "bob", "js": format!(r#"new Promise((resolve) => {{
                const ws = new WebSocket(location.origin.replace('http', 'ws') + '/api/v1/devices/{}/live?token={}');
                ws.onmessage = (e) => {{ const m = JSON.parse(e.data); if (m.type === 'error') resolve(m.message); }};
            }})"#, farm.serial, bob)}),
        )
        .await;
    assert!(
        refused
            .as_str()
            .is_some_and(|m| m.contains("only the lease holder")),
        "{refused}"
    );

    // Four viewers of one device, one capture.
    for (name, token) in [
        ("carol", farm.broker.token(Role::User, "carol")),
        ("dave", farm.broker.token(Role::User, "dave")),
    ] {
        b.must(
            "open",
            json!({"name": name, "url": farm.page_url(&token, "")}),
        )
        .await;
        poll(
            &mut b,
            "visible",
            json!({"name": name, "selector": "#watch"}),
            Duration::from_secs(5),
            |v| v == &json!(true),
        )
        .await;
        b.must("click", json!({"name": name, "selector": "#watch"}))
            .await;
        b.wait_state(name, "live", Duration::from_secs(10)).await;
    }
    let app = farm.app().await;
    assert_eq!(app["captures"], 1, "four viewers, one capture: {app}");
    assert_eq!(
        app["buttons"]["A"], 0,
        "observers could not press anything: {app}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugging_and_lease_expiry_end_the_session_with_their_reason() {
    let farm = LiveFarm::start(&[]).await;
    let alice = farm.broker.token(Role::User, "alice");
    let mut b = Browser::start().await;
    b.reserve_and_go_live("alice", &farm.page_url(&alice, ""), Duration::from_secs(10))
        .await;
    let unplugged = Instant::now();
    farm.sim.unplug(&farm.serial).await;
    let s = b.wait_state("alice", "ended", Duration::from_secs(2)).await;
    eprintln!(
        "page showed {:?} {:?} after unplug",
        s["text"],
        unplugged.elapsed()
    );
    assert_eq!(s["text"], "device disconnected", "{s}");

    // Back, with a lease that expires on its own.
    farm.sim.replug(&farm.serial).await;
    let (_, mut reservations) = farm_e2e::connect(&farm.broker.url(), &alice).await;
    let lease = eventually(Duration::from_secs(10), || {
        let mut r = reservations.clone();
        let serial = farm.serial.clone();
        async move {
            r.reserve(farm_proto::v1::ReserveRequest {
                target: Some(farm_proto::v1::reserve_request::Target::DeviceId(serial)),
                wait_seconds: 0,
                ttl_seconds: 4,
            })
            .await
            .map_err(|e| e.message().to_string())
        }
    })
    .await;
    let _ = &mut reservations;
    assert_eq!(lease.get_ref().holder, "alice");
    b.must(
        "goto",
        json!({"name": "alice", "url": farm.page_url(&alice, "")}),
    )
    .await;
    b.wait_state("alice", "live", Duration::from_secs(10)).await;
    let s = b
        .wait_state("alice", "ended", Duration::from_secs(10))
        .await;
    assert_eq!(s["text"], "lease expired", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_works_through_turn_only() {
    let turn = Coturn::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let ice = dir.path().join("ice.json");
    std::fs::write(&ice, turn.ice_config()).expect("ice config");
    let ice_arg = ice.display().to_string();
    let farm = LiveFarm::start(&["--ice-config", &ice_arg]).await;
    let alice = farm.broker.token(Role::User, "alice");
    let mut b = Browser::start().await;
    b.reserve_and_go_live(
        "alice",
        &farm.page_url(&alice, "&relay=1"),
        Duration::from_secs(15),
    )
    .await;
    poll(
        &mut b,
        "video",
        json!({"name": "alice"}),
        Duration::from_secs(5),
        |v| v["frames"].as_u64().is_some_and(|f| f > 3),
    )
    .await;
    let relay = b
        .must(
            "eval",
            json!({"name": "alice", "js": r#"(async () => {
                const stats = await window.livePage.pc.getStats();
                let pair = null;
                stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
                if (!pair) return 'no pair';
                return stats.get(pair.localCandidateId).candidateType;
            })()"#}),
        )
        .await;
    assert_eq!(relay, "relay", "the media path goes through TURN");
    // Input still works through the relay.
    let (ax, ay) = farm.button_center("A").await;
    b.must("tap", json!({"name": "alice", "x": ax, "y": ay}))
        .await;
    wait_app(&farm, "button A pressed through TURN", |app| {
        app["buttons"]["A"] == 1
    })
    .await;
}
