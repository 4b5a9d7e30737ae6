//! The capture hub against a real adb server and the simulator (farm-sim with the scrcpy
//! server protocol and an H.264 screen): the adb host client, two viewers on one capture,
//! a touch on a button that changes the app, and the capture stopping with its viewers.
//!
//! Needs `adb` and `target/debug/farm-sim` (`cargo build --workspace --bins`, as `scripts/test` does).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use farm_node::adb_host;
use farm_node::capture::{
    CaptureConfig, CaptureHub, CaptureMethod, ControlMessage, TouchAction, Viewer, h264,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FARM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/debug/deps/capture_sim-HASH -> target/debug
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug")
        .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `adb -P PORT server nodaemon`, killed (by its handle) when dropped.
struct Adb {
    addr: SocketAddrV4,
    _child: Child,
    _home: tempfile::TempDir,
}

async fn start_adb() -> Adb {
    let port = free_port();
    let home = tempfile::tempdir().expect("temp dir");
    let child = Command::new("adb")
        .args(["-P", &port.to_string(), "server", "nodaemon"])
        .env("ANDROID_SDK_HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("adb is installed");
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    within("adb server answers host:version", async {
        loop {
            if let Ok(mut stream) = adb_host::connect(addr).await
                && adb_host::send_host_request(&mut stream, addr, "host:version")
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    Adb {
        addr,
        _child: child,
        _home: home,
    }
}

struct Sim {
    control: String,
    serial: String,
    adb_serial: String,
    _child: Child,
}

async fn start_sim(adb: &Adb, extra: &[&str]) -> Sim {
    let mut child = Command::new(bin_dir().join("farm-sim"))
        .args(["--devices", "1", "--adb-server", &adb.addr.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("farm-sim is built (cargo build -p farm-sim)");
    let stdout = child.stdout.take().expect("piped");
    let line = within("farm-sim ready line", async {
        BufReader::new(stdout).lines().next_line().await
    })
    .await
    .expect("farm-sim stdout")
    .expect("a ready line");
    let ready: Value = serde_json::from_str(&line).expect("JSON ready line");
    let device = &ready["devices"][0];
    Sim {
        control: ready["control"].as_str().expect("control").to_string(),
        serial: device["serial"].as_str().expect("serial").to_string(),
        adb_serial: device["adb_serial"]
            .as_str()
            .expect("adb_serial")
            .to_string(),
        _child: child,
    }
}

/// A plain HTTP/1.1 GET of the simulator's control interface, decoded as JSON.
async fn get_json(base: &str, path: &str) -> Value {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("sim control reachable");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

async fn sim_app_until(sim: &Sim, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/devices/{}/app", sim.serial);
    within(what, async {
        loop {
            let app = get_json(&sim.control, &path).await;
            if check(&app) {
                return app;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Clicks a button of the sim's app at its centre, in video pixels.
async fn click(sim: &Sim, viewer: &Viewer, button: &str) {
    let size = *viewer.video_size().borrow();
    let layout = get_json(&sim.control, &format!("/devices/{}/app/layout", sim.serial)).await;
    let rect = &layout["buttons"][button];
    let (width, height) = (
        layout["width"].as_i64().expect("width"),
        layout["height"].as_i64().expect("height"),
    );
    let centre = |pos: &str, side: &str, screen: i64, video: u32| {
        let p = rect[pos].as_i64().expect("rect") + rect[side].as_i64().expect("rect") / 2;
        i32::try_from(p * i64::from(video) / screen).expect("small")
    };
    let x = centre("x", "width", width, size.width);
    let y = centre("y", "height", height, size.height);
    for action in [TouchAction::Down, TouchAction::Up] {
        let touch = ControlMessage::Touch {
            action,
            pointer_id: 0,
            x,
            y,
            width: u16::try_from(size.width).expect("small"),
            height: u16::try_from(size.height).expect("small"),
            pressure: if action == TouchAction::Down {
                0xFFFF
            } else {
                0
            },
        };
        within("touch", viewer.control(touch)).await.expect("sent");
    }
}

#[tokio::test]
async fn adb_host_client_runs_shell_and_exec_on_a_sim_device() {
    let adb = start_adb().await;
    let sim = start_sim(&adb, &[]).await;
    let model = within(
        "shell",
        adb_host::shell_output(adb.addr, &sim.adb_serial, "getprop ro.product.model", 4096),
    )
    .await
    .expect("shell: works");
    assert!(!String::from_utf8_lossy(&model).trim().is_empty());
    let mut stream = within(
        "exec",
        adb_host::open_device_service(adb.addr, &sim.adb_serial, "exec:echo hello"),
    )
    .await
    .expect("exec: opens");
    let mut output = Vec::new();
    within("exec output", stream.read_to_end(&mut output))
        .await
        .expect("read");
    assert_eq!(String::from_utf8_lossy(&output).trim(), "hello");
    let error = within(
        "unknown device",
        adb_host::open_device_service(adb.addr, "no-such-device", "shell:true"),
    )
    .await
    .expect_err("no such device");
    assert!(error.to_string().contains("no-such-device"), "{error}");
}

#[tokio::test]
async fn two_viewers_on_one_sim_device_through_a_real_adb_server() {
    let adb = start_adb().await;
    // No clock: the name, the header and the first frame arrive in one read.
    let sim = start_sim(&adb, &["--screen", "360x640", "--fps", "0"]).await;
    let jar = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(jar.path(), b"not really a jar").expect("write");
    let hub = CaptureHub::new(
        adb.addr,
        CaptureConfig {
            scrcpy_server: Some(jar.path().to_path_buf()),
            ..CaptureConfig::default()
        },
    );

    let mut first = within("attach", hub.attach(&sim.adb_serial))
        .await
        .expect("attach");
    let mut second = within("attach", hub.attach(&sim.adb_serial))
        .await
        .expect("attach");
    assert_eq!(first.method(), CaptureMethod::Scrcpy);
    assert_eq!(hub.active_captures(), 1);
    for viewer in [&mut first, &mut second] {
        let frame = within("keyframe", viewer.recv()).await.expect("a frame");
        assert!(frame.keyframe && h264::starts_with_sps(&frame.data));
    }
    let app = sim_app_until(&sim, "one capture", |app| app["captures"] == 1).await;
    assert_eq!(app["captures"], 1);

    // Click button A at its centre, in video pixels.
    let size = *first.video_size().borrow();
    let layout = get_json(&sim.control, &format!("/devices/{}/app/layout", sim.serial)).await;
    let rect = &layout["buttons"]["A"];
    let (width, height) = (
        layout["width"].as_i64().expect("width"),
        layout["height"].as_i64().expect("height"),
    );
    let centre = |pos: &str, side: &str, screen: i64, video: u32| {
        let p = rect[pos].as_i64().expect("rect") + rect[side].as_i64().expect("rect") / 2;
        i32::try_from(p * i64::from(video) / screen).expect("small")
    };
    let x = centre("x", "width", width, size.width);
    let y = centre("y", "height", height, size.height);
    for action in [TouchAction::Down, TouchAction::Up] {
        let touch = ControlMessage::Touch {
            action,
            pointer_id: 0,
            x,
            y,
            width: u16::try_from(size.width).expect("small"),
            height: u16::try_from(size.height).expect("small"),
            pressure: if action == TouchAction::Down {
                0xFFFF
            } else {
                0
            },
        };
        within("touch", first.control(touch)).await.expect("sent");
    }
    sim_app_until(&sim, "button A clicked", |app| {
        app["buttons"]["A"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    // Both viewers still get frames.
    assert!(within("frame", second.recv()).await.is_some());

    drop(first);
    drop(second);
    sim_app_until(&sim, "capture stopped", |app| app["captures"] == 0).await;
    within("hub empty", async {
        while hub.active_captures() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn screenrecord_fallback_on_a_sim_device() {
    let adb = start_adb().await;
    // The profile's own screen (1080x2400): the recording is scaled to 1280 at most.
    let sim = start_sim(&adb, &["--fps", "10"]).await;
    let hub = CaptureHub::new(adb.addr, CaptureConfig::default());
    let mut viewer = within("attach", hub.attach(&sim.adb_serial))
        .await
        .expect("attach");
    assert_eq!(viewer.method(), CaptureMethod::ScreenRecord);
    let frame = within("keyframe", viewer.recv()).await.expect("a frame");
    assert!(frame.keyframe && h264::starts_with_sps(&frame.data));
    let size = *viewer.video_size().borrow();
    assert!(size.width.max(size.height) <= 1280, "{size:?}");
    click(&sim, &viewer, "C").await;
    sim_app_until(&sim, "button C clicked", |app| {
        app["buttons"]["C"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    sim_app_until(&sim, "one capture", |app| app["captures"] == 1).await;
    drop(viewer);
    sim_app_until(&sim, "capture stopped", |app| app["captures"] == 0).await;
}
