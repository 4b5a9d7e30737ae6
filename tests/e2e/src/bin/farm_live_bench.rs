//! The live-interaction benchmark: click to first frame, input to photon (with a per-stage breakdown),
//! node CPU per viewer, and frame rates with 8 devices, on real processes and headless Chromium.
//!
//! Run it through `scripts/bench-live` (release binaries); it prints one JSON document.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use farm_e2e::measure::proc_cpu_secs;
use farm_e2e::{AdbServer, Broker, BrokerOpts, Browser, Node, Role, Sim};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Measures live-session latency, node CPU per viewer and fleet frame rates")]
struct Args {
    /// Click-to-first-frame repetitions.
    #[arg(long, default_value_t = 10)]
    first_frame_runs: u32,
    /// Input-to-photon samples.
    #[arg(long, default_value_t = 200)]
    samples: u32,
    /// Seconds per CPU and frame-rate measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Devices for the fleet frame-rate measurement.
    #[arg(long, default_value_t = 8)]
    devices: usize,
}

struct Farm {
    _adb: AdbServer,
    sim: Sim,
    broker: Broker,
    node: Node,
    _jar: tempfile::NamedTempFile,
}

async fn farm(devices: usize, fps: u32) -> Result<Farm> {
    let adb = AdbServer::start().await;
    let fps = fps.to_string();
    let sim = Sim::start_with(
        adb.port(),
        devices,
        &["--screen", "720x1280", "--fps", &fps],
    )
    .await;
    let broker = Broker::start(BrokerOpts {
        extra_args: vec!["--allow-observers".into()],
        ..Default::default()
    })
    .await;
    let jar = tempfile::NamedTempFile::new()?;
    std::fs::write(jar.path(), b"stand-in")?;
    let jar_path = jar.path().display().to_string();
    let token = broker.token(Role::Node, "node-1");
    let node = Node::start_with(
        &broker.url(),
        &token,
        "lab",
        "node-1",
        adb.port(),
        &["--scrcpy-server", &jar_path, "--webrtc-ip", "127.0.0.1"],
    )
    .await;
    let farm = Farm {
        _adb: adb,
        sim,
        broker,
        node,
        _jar: jar,
    };
    let admin = farm.broker.token(Role::Admin, "bench-admin");
    let (devices_client, _) = farm_e2e::connect(&farm.broker.url(), &admin).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = devices_client.clone();
        let n = c
            .list_devices(farm_proto::v1::ListDevicesRequest::default())
            .await
            .map(|r| {
                r.into_inner()
                    .devices
                    .iter()
                    .filter(|d| d.state == 1)
                    .count()
            })
            .unwrap_or(0);
        if n == devices {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {devices} devices became available");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(farm)
}

async fn call(b: &mut Browser, cmd: &str, args: Value) -> Result<Value> {
    b.call(cmd, args)
        .await
        .map_err(|e| anyhow::anyhow!("{cmd}: {e}"))
}

async fn wait_live(b: &mut Browser, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = call(b, "state", json!({"name": name})).await?;
        if s["state"] == "live" {
            let v = call(b, "video", json!({"name": name})).await?;
            if v["frames"].as_u64().unwrap_or(0) > 0 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{name} not live: {s}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    json!({"n": v.len(), "p50": percentile(&v, 0.5), "p95": percentile(&v, 0.95), "max": v.last().copied().unwrap_or(f64::NAN)})
}

async fn node_cpu_percent(pid: u32, seconds: u64) -> Result<f64> {
    let start = proc_cpu_secs(pid).context("node CPU")?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    Ok((proc_cpu_secs(pid).context("node CPU")? - start) / t.elapsed().as_secs_f64() * 100.0)
}

const INPUT_TO_PHOTON: &str = r#"async (n) => {
  const live = window.livePage;
  const video = document.getElementById('video');
  const canvas = document.createElement('canvas');
  canvas.width = 8; canvas.height = 8;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const markerWhite = () => { ctx.drawImage(video, 8, 8, 16, 16, 0, 0, 8, 8); return ctx.getImageData(4, 4, 1, 1).data[0] > 128; };
  const frame = () => new Promise((resolve) => video.requestVideoFrameCallback((now, meta) => resolve(meta)));
  const until = async (white, t0) => {
    for (;;) {
      const meta = await frame();
      if (markerWhite() === white) return meta;
      if (performance.now() - t0 > 3000) return null;
    }
  };
  const rtts = [];
  for (let i = 0; i < 20; i++) {
    const t = performance.now();
    const pong = new Promise((resolve) => {
      const prev = live.channel.onmessage;
      live.channel.onmessage = (e) => { const m = JSON.parse(e.data); if (m.type === 'pong') { live.channel.onmessage = prev; resolve(); } };
    });
    live.input({ type: 'ping', t });
    await pong;
    rtts.push(performance.now() - t);
  }
  const samples = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    live.input({ type: 'touch', action: 'down', pointer: 0, x: 700, y: 1260 });
    const meta = await until(true, t0);
    if (meta) {
      samples.push({
        total: meta.presentationTime - t0,
        displayed: meta.expectedDisplayTime ? meta.expectedDisplayTime - t0 : null,
        received: meta.receiveTime ? meta.receiveTime - t0 : null,
        decode_present: meta.receiveTime ? meta.presentationTime - meta.receiveTime : null,
      });
    }
    const t1 = performance.now();
    live.input({ type: 'touch', action: 'up', pointer: 0, x: 700, y: 1260 });
    await until(false, t1);
    await new Promise((r) => setTimeout(r, 20 + Math.random() * 30));
  }
  return { rtts, samples };
}"#;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut out = serde_json::Map::new();

    // 1. Click to first frame, and input to photon, on one device; the clock ticks at 10 fps as scrcpy repeats an idle frame every 100 ms.
    {
        let f = farm(1, 10).await?;
        let serial = f.sim.devices[0].serial.clone();
        let alice = f.broker.token(Role::User, "alice");
        let url = format!("{}/device/{serial}?token={alice}", f.broker.url());
        let mut b = Browser::start().await;
        call(&mut b, "open", json!({"name": "alice", "url": url})).await?;
        let mut first = Vec::new();
        let mut steps: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        for _ in 0..args.first_frame_runs {
            call(&mut b, "goto", json!({"name": "alice", "url": url})).await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while call(
                &mut b,
                "visible",
                json!({"name": "alice", "selector": "#reserve-go"}),
            )
            .await?
                != json!(true)
            {
                if Instant::now() > deadline {
                    bail!("no reserve button");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let ms = call(
                &mut b,
                "clickToFirstFrame",
                json!({"name": "alice", "selector": "#reserve-go"}),
            )
            .await?;
            first.push(ms.as_f64().unwrap_or(f64::NAN));
            wait_live(&mut b, "alice").await?;
            // Where the time went: each step of the page's timeline, from the click.
            let timeline = call(
                &mut b,
                "eval",
                json!({"name": "alice", "js": "window.livePage.timeline"}),
            )
            .await?;
            if let (Some(t), Some(start)) = (timeline.as_object(), timeline["reserve"].as_f64()) {
                for (step, at) in t {
                    if let Some(at) = at.as_f64() {
                        steps.entry(step.clone()).or_default().push(at - start);
                    }
                }
            }
            call(
                &mut b,
                "eval",
                json!({"name": "alice", "js": "window.livePage.release().then(() => true)"}),
            )
            .await?;
        }
        out.insert("click_to_first_frame_ms".into(), summary(first));
        out.insert(
            "click_to_first_frame_steps_p50_ms".into(),
            steps
                .into_iter()
                .map(|(k, v)| (k, summary(v)["p50"].clone()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        );

        call(&mut b, "goto", json!({"name": "alice", "url": url})).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        call(
            &mut b,
            "click",
            json!({"name": "alice", "selector": "#reserve-go"}),
        )
        .await?;
        wait_live(&mut b, "alice").await?;
        let r = call(
            &mut b,
            "eval",
            json!({"name": "alice", "js": format!("({INPUT_TO_PHOTON})({})", args.samples)}),
        )
        .await?;
        let col = |k: &str| -> Vec<f64> {
            r["samples"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s[k].as_f64()).collect())
                .unwrap_or_default()
        };
        let rtts: Vec<f64> = r["rtts"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let app = f.sim.get(&format!("/devices/{serial}/app")).await;
        let mut rtt_sorted = rtts.clone();
        rtt_sorted.sort_by(|a, b| a.total_cmp(b));
        let one_way = percentile(&rtt_sorted, 0.5) / 2.0;
        let render_encode = app["render_encode_ms_avg"].as_f64().unwrap_or(f64::NAN);
        let mut received = col("received");
        received.sort_by(|a, b| a.total_cmp(b));
        let mut decode = col("decode_present");
        decode.sort_by(|a, b| a.total_cmp(b));
        out.insert("input_to_photon_ms".into(), summary(col("total")));
        out.insert(
            "input_to_expected_display_ms".into(),
            summary(col("displayed")),
        );
        out.insert(
            "breakdown_p50_ms".into(),
            json!({
                "browser_to_node_data_channel": one_way,
                "device_render_and_encode_avg": render_encode,
                "control_adb_frame_transfer_and_rtp": percentile(&received, 0.5) - one_way - render_encode,
                "decode_and_present": percentile(&decode, 0.5),
                "input_to_frame_received": percentile(&received, 0.5),
            }),
        );
        out.insert(
            "samples_lost".into(),
            json!(args.samples as usize - col("total").len()),
        );
    }

    // 2. Node CPU per viewer at 30 fps 720p.
    {
        let f = farm(1, 30).await?;
        let serial = f.sim.devices[0].serial.clone();
        let pid = f.node.pid().context("node pid")?;
        let alice = f.broker.token(Role::User, "alice");
        let mut b = Browser::start().await;
        let url = format!("{}/device/{serial}?token={alice}", f.broker.url());
        call(&mut b, "open", json!({"name": "v0", "url": url})).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        call(
            &mut b,
            "click",
            json!({"name": "v0", "selector": "#reserve-go"}),
        )
        .await?;
        wait_live(&mut b, "v0").await?;
        let idle = node_cpu_percent(pid, 2).await?;
        let one = node_cpu_percent(pid, args.seconds).await?;
        for i in 1..4 {
            let admin = f.broker.token(Role::Admin, &format!("watcher{i}"));
            let name = format!("v{i}");
            call(&mut b, "open", json!({"name": name, "url": format!("{}/device/{serial}?token={admin}", f.broker.url())})).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            call(&mut b, "click", json!({"name": name, "selector": "#watch"})).await?;
            wait_live(&mut b, &name).await?;
        }
        let four = node_cpu_percent(pid, args.seconds).await?;
        let v = call(&mut b, "video", json!({"name": "v0"})).await?;
        let app = f.sim.get(&format!("/devices/{serial}/app")).await;
        out.insert(
            "node_cpu_percent_of_one_core".into(),
            json!({"capture_only_sampled_2s_with_1_viewer": idle, "one_viewer": one, "four_viewers": four,
                   "per_viewer_marginal": (four - one) / 3.0, "per_viewer_average_at_4": four / 4.0,
                   "video": format!("{}x{}", v["width"], v["height"]), "sim_captures": app["captures"]}),
        );
    }

    // 3. N devices at 30 fps, one viewer each: frames per second delivered to each viewer.
    {
        let f = farm(args.devices, 30).await?;
        let mut b = Browser::start().await;
        for (i, d) in f.sim.devices.iter().enumerate() {
            let token = f.broker.token(Role::User, &format!("user{i}"));
            let name = format!("d{i}");
            call(&mut b, "open", json!({"name": name, "url": format!("{}/device/{}?token={token}", f.broker.url(), d.serial)})).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            call(
                &mut b,
                "click",
                json!({"name": name, "selector": "#reserve-go"}),
            )
            .await?;
        }
        for i in 0..args.devices {
            wait_live(&mut b, &format!("d{i}")).await?;
        }
        let mut before = Vec::new();
        for i in 0..args.devices {
            before.push(
                call(&mut b, "video", json!({"name": format!("d{i}")})).await?["frames"]
                    .as_f64()
                    .unwrap_or(0.0),
            );
        }
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let mut fps = Vec::new();
        for (i, b0) in before.iter().enumerate() {
            let after = call(&mut b, "video", json!({"name": format!("d{i}")})).await?["frames"]
                .as_f64()
                .unwrap_or(0.0);
            fps.push((after - b0) / t.elapsed().as_secs_f64());
        }
        out.insert(
            "fleet_fps_per_viewer".into(),
            json!({"devices": args.devices, "per_viewer": fps, "summary": summary(fps.clone())}),
        );
    }

    println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    Ok(())
}
