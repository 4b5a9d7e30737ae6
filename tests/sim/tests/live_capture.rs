//! The scrcpy server protocol and screenrecord through Debian's real adb server, decoded by ffprobe.

mod support;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use farm_sim::scrcpy_video::parse_packet_header;
use farm_sim::{Simulator, SimulatorConfig};
use support::AdbServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const JAR: &str = "/data/local/tmp/scrcpy-server.jar";
const SCID: &str = "0badcafe";

/// Opens `service` on `serial` through the adb server's host protocol; `None` if refused.
async fn open_service(
    server: &AdbServer,
    serial: &str,
    service: &str,
) -> anyhow::Result<Option<TcpStream>> {
    let mut stream = TcpStream::connect(server.addr()).await?;
    for request in [format!("host:transport:{serial}"), service.to_string()] {
        stream
            .write_all(format!("{:04x}{request}", request.len()).as_bytes())
            .await?;
        let mut status = [0u8; 4];
        stream.read_exact(&mut status).await?;
        if &status != b"OKAY" {
            return Ok(None);
        }
    }
    Ok(Some(stream))
}

async fn read_exact(stream: &mut TcpStream, n: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    timeout(Duration::from_secs(20), stream.read_exact(&mut bytes))
        .await
        .context("no data within 20 s")??;
    Ok(bytes)
}

/// Reads one scrcpy media packet: (config, key, payload).
async fn read_packet(stream: &mut TcpStream) -> anyhow::Result<(bool, bool, Vec<u8>)> {
    let header: [u8; 12] = read_exact(stream, 12)
        .await?
        .try_into()
        .map_err(|_| anyhow::anyhow!("12 bytes"))?;
    let header = parse_packet_header(&header);
    ensure!(
        header.length < 16 << 20,
        "absurd packet length {}",
        header.length
    );
    let payload = read_exact(stream, header.length as usize).await?;
    Ok((header.config, header.keyframe, payload))
}

/// `ffprobe` on an H.264 elementary stream: "width,height,profile".
async fn probe(bytes: &[u8]) -> anyhow::Result<String> {
    let path = std::env::temp_dir().join(format!(
        "farm-sim-probe-{}-{}.h264",
        std::process::id(),
        bytes.len()
    ));
    tokio::fs::write(&path, bytes).await?;
    let output = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-f",
            "h264",
            "-select_streams",
            "v:0",
            "-show_entries",
        ])
        .args(["stream=width,height,profile", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .await
        .context("running ffprobe (Debian's ffmpeg)")?;
    let _ = tokio::fs::remove_file(&path).await;
    ensure!(
        output.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn touch(action: u8, x: i32, y: i32, width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![2, action];
    out.extend(0u64.to_be_bytes());
    out.extend(x.to_be_bytes());
    out.extend(y.to_be_bytes());
    out.extend(width.to_be_bytes());
    out.extend(height.to_be_bytes());
    out.extend(0xFFFFu16.to_be_bytes());
    out.extend(1u32.to_be_bytes());
    out.extend(1u32.to_be_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrcpy_server_protocol_and_screenrecord_through_real_adb() -> anyhow::Result<()> {
    let server = AdbServer::start()?;
    let simulator = Simulator::start(SimulatorConfig::new(1, server.addr())).await?;
    let ready = simulator.ready_line();
    let serial = ready.devices[0].adb_serial.clone();
    let device = simulator
        .device(&ready.devices[0].serial)
        .context("device")?;

    let jar = std::env::temp_dir().join(format!("farm-sim-dummy-{}.jar", std::process::id()));
    std::fs::write(&jar, b"PK\x03\x04 a dummy scrcpy server")?;
    let pushed = server
        .adb(&["-s", &serial, "push", &jar.to_string_lossy(), JAR])
        .await?;
    let _ = std::fs::remove_file(&jar);
    ensure!(pushed.status.success(), "adb push: {pushed:?}");

    // A wrong version is refused like the real server does.
    let wrong = server
        .adb(&[
            "-s",
            &serial,
            "shell",
            &format!(
                "CLASSPATH={JAR} app_process / com.genymobile.scrcpy.Server 2.0 tunnel_forward=true"
            ),
        ])
        .await?;
    ensure!(wrong.status.code() == Some(1), "{wrong:?}");
    ensure!(String::from_utf8_lossy(&wrong.stderr).contains("does not match the client"));

    let start = format!(
        "CLASSPATH={JAR} app_process / com.genymobile.scrcpy.Server 3.3.4 scid={SCID} \
         tunnel_forward=true audio=false control=true max_size=1280 video_codec=h264"
    );
    let server_shell = tokio::process::Command::new("adb")
        .args([
            "-P",
            &server.addr().port().to_string(),
            "-s",
            &serial,
            "shell",
            &start,
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;

    // The server registers its socket when the shell command arrives: poll until it does.
    let socket = format!("localabstract:scrcpy_{SCID}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut video = loop {
        if let Some(mut stream) = open_service(&server, &serial, &socket).await? {
            let mut dummy = [0u8; 1];
            if stream.read(&mut dummy).await? == 1 {
                ensure!(dummy[0] == 0, "dummy byte {dummy:?}");
                break stream;
            }
        }
        if Instant::now() >= deadline {
            bail!("scrcpy socket never opened");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut control = open_service(&server, &serial, &socket)
        .await?
        .context("control socket")?;

    let name = read_exact(&mut video, 64).await?;
    ensure!(name.starts_with(b"Pixel 7\0"), "{name:?}");
    let header = read_exact(&mut video, 12).await?;
    ensure!(
        header
            == farm_sim::scrcpy_video::codec_header(farm_sim::scrcpy_video::CODEC_H264, 576, 1280)
    );
    let (config, _, sps_pps) = read_packet(&mut video).await?;
    ensure!(config, "first packet is config");
    let (config, key, picture) = read_packet(&mut video).await?;
    ensure!(!config && key, "then a keyframe");
    let probed = probe(&[sps_pps, picture].concat()).await?;
    ensure!(probed == "Constrained Baseline,576,1280", "{probed}");
    ensure!(device.app().await?.captures == 1);

    // Touch button A (layout in screen pixels, sent in video pixels) over the control socket.
    let layout = device.app_layout().await?;
    let (x, y) = layout.buttons["A"].center();
    let (vx, vy) = (x * 576 / 1080, y * 1280 / 2400);
    control.write_all(&touch(0, vx, vy, 576, 1280)).await?;
    control.write_all(&touch(1, vx, vy, 576, 1280)).await?;
    // A touch for another video size is dropped, as the real server does.
    control.write_all(&touch(0, vx, vy, 1080, 2400)).await?;
    // Set clipboard with sequence 7: acknowledged on the control socket.
    let mut clipboard = vec![9];
    clipboard.extend(7u64.to_be_bytes());
    clipboard.push(0);
    clipboard.extend(2u32.to_be_bytes());
    clipboard.extend(b"hi");
    control.write_all(&clipboard).await?;
    let ack = read_exact(&mut control, 9).await?;
    ensure!(ack == [1, 0, 0, 0, 0, 0, 0, 0, 7], "{ack:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let app = device.app().await?;
        if app.buttons["A"] == 1 && app.clipboard == "hi" {
            ensure!(
                app.last_button.as_deref() == Some("A") && app.pointers == 0,
                "{app:?}"
            );
            break;
        }
        ensure!(Instant::now() < deadline, "button A never pressed: {app:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let inputs = device.input_events().await?;
    let touches = inputs
        .iter()
        .filter(|e| matches!(e, farm_sim::InputEvent::Touch { .. }))
        .count();
    ensure!(touches == 2, "{inputs:?}");
    // Frames keep coming (the press changed the screen; the clock ticks).
    let (config, _, _) = read_packet(&mut video).await?;
    ensure!(!config);

    // Closing the sockets ends the server's shell.
    drop(video);
    drop(control);
    let output = timeout(Duration::from_secs(10), server_shell.wait_with_output())
        .await
        .context("the server shell did not end")??;
    let log = String::from_utf8_lossy(&output.stdout);
    ensure!(
        log.contains("[server] INFO: Device: [Google] Pixel 7 (Android 14)"),
        "{log}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while device.app().await?.captures != 0 {
        ensure!(Instant::now() < deadline, "capture still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let recorded = server
        .adb(&[
            "-s",
            &serial,
            "exec-out",
            "screenrecord",
            "--output-format=h264",
            "--size",
            "720x1600",
            "--time-limit",
            "1",
            "-",
        ])
        .await?;
    ensure!(
        recorded.status.success() && recorded.stdout.len() > 100,
        "{:?}",
        recorded.status
    );
    let probed = probe(&recorded.stdout).await?;
    ensure!(probed.ends_with("720,1600"), "{probed}");
    Ok(())
}
