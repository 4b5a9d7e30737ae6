//! End-to-end tests against Debian's real adb server: the library in-process and the binary.

mod support;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use farm_sim::{InputEvent, Simulator, SimulatorConfig};
use support::AdbServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_devices_work_through_the_adb_cli() -> anyhow::Result<()> {
    let server = AdbServer::start()?;
    let simulator = Simulator::start(SimulatorConfig::new(2, server.addr())).await?;
    let ready = simulator.ready_line();
    ensure!(ready.devices.len() == 2);
    ensure!(
        ready.devices[0].model != ready.devices[1].model,
        "models vary"
    );

    let listing = text(&server.adb(&["devices", "-l"]).await?.stdout);
    for device in &ready.devices {
        let expected = format!("model:{}", device.model.replace(' ', "_"));
        ensure!(
            listing
                .lines()
                .any(|line| line.starts_with(&device.adb_serial)
                    && line.contains(" device ")
                    && line.contains(&expected)),
            "{} with {expected} missing from:\n{listing}",
            device.adb_serial
        );
    }

    let first = &ready.devices[0];
    let serial = first.adb_serial.as_str();
    let model = server
        .adb(&["-s", serial, "shell", "getprop", "ro.product.model"])
        .await?;
    ensure!(model.status.success());
    ensure!(text(&model.stdout).trim_end() == first.model, "{model:?}");
    let serialno = server
        .adb(&["-s", serial, "shell", "getprop ro.serialno"])
        .await?;
    ensure!(text(&serialno.stdout).trim_end() == first.serial);

    // shell v2 carries the remote exit code back to the adb CLI.
    let missing = server.adb(&["-s", serial, "shell", "nosuchcmd"]).await?;
    ensure!(missing.status.code() == Some(127), "{missing:?}");
    ensure!(text(&missing.stderr).contains("nosuchcmd: inaccessible or not found"));
    let exit = server.adb(&["-s", serial, "shell", "exit 3"]).await?;
    ensure!(exit.status.code() == Some(3), "{exit:?}");

    let screenshot = server
        .adb(&["-s", serial, "exec-out", "screencap", "-p"])
        .await?;
    ensure!(screenshot.status.success());
    let decoder = png::Decoder::new(std::io::Cursor::new(screenshot.stdout));
    let reader = decoder.read_info().context("screencap output is a PNG")?;
    ensure!(
        (reader.info().width, reader.info().height) == (first.screen_width, first.screen_height)
    );

    let tap = server
        .adb(&["-s", serial, "shell", "input", "tap", "12", "34"])
        .await?;
    ensure!(tap.status.success());
    let handle = simulator
        .device(&first.serial)
        .context("device by serial")?;
    ensure!(handle.input_events().await? == vec![InputEvent::Tap { x: 12, y: 34 }]);
    ensure!(
        handle
            .shell_commands()
            .await?
            .contains(&"input tap 12 34".to_string())
    );

    handle.unplug().await?;
    server.wait_for(serial, None).await?;
    // The other device is untouched.
    server
        .wait_for(&ready.devices[1].adb_serial, Some("device"))
        .await?;
    handle.replug().await?;
    server.wait_for(serial, Some("device")).await?;
    handle.unauthorize().await?;
    server.wait_for(serial, Some("unauthorized")).await?;
    handle.authorize().await?;
    server.wait_for(serial, Some("device")).await?;
    let again = server.adb(&["-s", serial, "shell", "echo", "back"]).await?;
    ensure!(text(&again.stdout) == "back\n");
    Ok(())
}

/// Kills the child process this test started, even when the test fails.
struct ChildGuard(tokio::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn http(control: &str, method: &str, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let address = control.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.get(9..12).context("status line")?.parse()?;
    let (_, body) = response.split_once("\r\n\r\n").context("response body")?;
    Ok((
        status,
        serde_json::from_str(body).with_context(|| format!("json body: {body}"))?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_one_ready_line_and_serves_the_control_api() -> anyhow::Result<()> {
    let server = AdbServer::start()?;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_farm-sim"))
        .args(["--devices", "2", "--adb-server", &server.addr().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().context("piped stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("no ready line within 60 s")??
        .context("farm-sim exited before its ready line")?;
    let ready: serde_json::Value = serde_json::from_str(&line)?;
    let control = ready["control"]
        .as_str()
        .context("control url")?
        .to_string();
    ensure!(control.starts_with("http://127.0.0.1:"));
    let devices = ready["devices"].as_array().context("devices array")?;
    ensure!(devices.len() == 2);
    let mut keys: Vec<&str> = devices[0]
        .as_object()
        .context("device object")?
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    ensure!(
        keys == [
            "adb_serial",
            "android_version",
            "model",
            "port",
            "screen_height",
            "screen_width",
            "serial"
        ]
    );
    let serial = devices[0]["serial"].as_str().context("serial")?;
    let adb_serial = devices[0]["adb_serial"].as_str().context("adb_serial")?;
    ensure!(serial.starts_with("SIM-") && serial.ends_with("-01"));
    ensure!(
        adb_serial
            == format!(
                "emulator-{}",
                devices[0]["port"].as_u64().context("port")? - 1
            )
    );
    server.wait_for(adb_serial, Some("device")).await?;

    let (status, listed) = http(&control, "GET", "/devices").await?;
    ensure!(
        status == 200 && listed[0]["state"] == "attached",
        "{listed}"
    );
    let (status, _) = http(&control, "POST", &format!("/devices/{serial}/unplug")).await?;
    ensure!(status == 200);
    server.wait_for(adb_serial, None).await?;
    let (_, listed) = http(&control, "GET", "/devices").await?;
    ensure!(listed[0]["state"] == "unplugged", "{listed}");
    let (status, body) = http(&control, "POST", "/devices/NOPE/replug").await?;
    ensure!(status == 404 && body["error"].is_string(), "{body}");
    let (status, events) = http(&control, "GET", &format!("/devices/{serial}/input")).await?;
    ensure!(status == 200 && events == serde_json::json!([]));
    Ok(())
}
