//! Live sessions end to end in one process on 127.0.0.1: the node's live service (fed by a
//! fake capture playing an ffmpeg clip) answers a browser-like webrtc-rs client.

mod live_support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use farm_node::capture::{ControlMessage, TouchAction, VideoSize};
use farm_node::live::{LiveConfig, spawn_live_service};
use farm_proto::v1::{LiveEnd, LiveSignal, LiveStart, NodeMessage, live_signal::Signal};
use live_support::*;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::sync::{mpsc, watch};

const PORTRAIT: VideoSize = VideoSize {
    width: 720,
    height: 1280,
};

struct Node {
    signals: mpsc::Sender<LiveSignal>,
    outbound: mpsc::Receiver<NodeMessage>,
    connection: watch::Sender<u64>,
    _shutdown: watch::Sender<bool>,
}

fn start_node(capture: &Arc<FakeCapture>, negotiation_timeout: Duration) -> Node {
    let mut config = LiveConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), None);
    config.negotiation_timeout = negotiation_timeout;
    let (signals, signal_rx) = mpsc::channel(64);
    let (outbound_tx, outbound) = mpsc::channel(1024);
    let (connection, connection_rx) = watch::channel(1);
    let (shutdown, shutdown_rx) = watch::channel(false);
    spawn_live_service(
        config,
        Arc::new(FakeSource(Arc::clone(capture))),
        Arc::new(FakeDevices(vec!["dev-1".into()])),
        signal_rx,
        outbound_tx,
        connection_rx,
        shutdown_rx,
    );
    Node {
        signals,
        outbound,
        connection,
        _shutdown: shutdown,
    }
}

fn start(serial: &str, control: bool) -> Signal {
    Signal::Start(LiveStart {
        device_serial: serial.into(),
        device_id: "d-1".into(),
        control,
        fencing_token: 1,
        user: "alice".into(),
        ice_servers: Vec::new(),
    })
}

fn end_reason(signal: &Signal) -> Option<&str> {
    match signal {
        Signal::End(LiveEnd { reason }) => Some(reason),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_watches_and_drives_a_device_until_it_disconnects() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clip = clip_frames(dir.path())?;
    let (capture, mut controls) = FakeCapture::new(PORTRAIT);
    let player = capture.play(clip);
    let mut node = start_node(&capture, Duration::from_secs(15));
    node.signals.send(live("s1", start("dev-1", true))).await?;
    let (_, first) = next_signal(&mut node.outbound, WAIT).await?;
    ensure!(
        matches!(
            first,
            Signal::VideoSize(farm_proto::v1::VideoSize {
                width: 720,
                height: 1280
            })
        ),
        "{first:?}"
    );

    let (client, channel, client_events) = browser_client(true).await?;
    let channel = channel.context("a controlling client has a channel")?;
    let mut messages = read_channel(Arc::clone(&channel));
    let (mut rest, mut tracks) = relay(
        node.outbound,
        Arc::clone(&client),
        client_events,
        node.signals.clone(),
        "s1",
    );
    let answer = negotiate(&client, &node.signals, &mut rest, "s1").await?;
    ensure!(
        video_payload_types(&answer) == [CLIENT_H264_42E01F.to_string()],
        "answer keeps only H.264 42e01f mode 1:\n{answer}"
    );
    ensure!(
        answer.contains("a=setup:passive"),
        "the node answers as DTLS server:\n{answer}"
    );
    if std::env::var_os("LIVE_PRINT_SDP").is_some() {
        eprintln!("{answer}");
    }

    // Video: H.264 packets with PTS-based timestamps and the playout-delay extension.
    let track = recv(&mut tracks, "the video track").await?;
    let mut packets = read_rtp(Arc::clone(&track));
    let ssrc = expect_video(&mut packets, 10).await?;

    // A PLI from the viewer becomes a keyframe request to the device.
    let before = capture.keyframe_requests.load(Ordering::SeqCst);
    let requested = capture.keyframe_requested.notified();
    track
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        })])
        .await?;
    tokio::time::timeout(WAIT, requested)
        .await
        .context("no keyframe request after a PLI")?;
    ensure!(capture.keyframe_requests.load(Ordering::SeqCst) > before);

    // Input: size on open, a touch reaches the device, bad input gets an error, ping/pong.
    let size: serde_json::Value =
        serde_json::from_str(&recv(&mut messages, "the size message").await?)?;
    ensure!(
        size == serde_json::json!({"type":"size","width":720,"height":1280}),
        "{size}"
    );
    channel
        .send_text(r#"{"type":"touch","action":"down","pointer":0,"x":100,"y":200}"#)
        .await?;
    let touch = recv(&mut controls, "the touch").await?;
    ensure!(
        touch
            == ControlMessage::Touch {
                action: TouchAction::Down,
                pointer_id: 0,
                x: 100,
                y: 200,
                width: 720,
                height: 1280,
                pressure: 0xFFFF
            },
        "{touch:?}"
    );
    for bad in [
        "garbage",
        r#"{"type":"touch","action":"down","pointer":42,"x":1,"y":1}"#,
        r#"{"type":"touch","action":"move","pointer":0,"x":5000,"y":1}"#,
    ] {
        channel.send_text(bad).await?;
        let reply: serde_json::Value =
            serde_json::from_str(&recv(&mut messages, "an error reply").await?)?;
        ensure!(
            reply["type"] == "error" && reply["message"].is_string(),
            "{bad}: {reply}"
        );
    }
    channel.send_text(r#"{"type":"ping","t":5}"#).await?;
    let pong: serde_json::Value = serde_json::from_str(&recv(&mut messages, "the pong").await?)?;
    ensure!(pong == serde_json::json!({"type":"pong","t":5}), "{pong}");
    ensure!(
        controls.try_recv().is_err(),
        "refused input must not reach the device"
    );

    // Rotation: the broker and the browser hear the new size.
    capture.size.send_replace(VideoSize {
        width: 1280,
        height: 720,
    });
    let rotated = loop {
        match recv(&mut rest, "the new video size").await? {
            Signal::VideoSize(size) => break size,
            Signal::Candidate(_) => continue,
            other => bail!("expected a video size, got {other:?}"),
        }
    };
    ensure!((rotated.width, rotated.height) == (1280, 720));
    let size: serde_json::Value =
        serde_json::from_str(&recv(&mut messages, "the new size").await?)?;
    ensure!(
        size == serde_json::json!({"type":"size","width":1280,"height":720}),
        "{size}"
    );

    // ICE restart: a new offer on the same session, and the video keeps coming.
    client.restart_ice().await?;
    node.signals
        .send(live("s1", Signal::IceRestart(true)))
        .await?;
    negotiate(&client, &node.signals, &mut rest, "s1").await?;
    while packets.try_recv().is_ok() {}
    expect_video(&mut packets, 10).await?;

    // The device goes away: the broker hears it within a second.
    let unplugged = Instant::now();
    capture.end();
    let reason = loop {
        match recv(&mut rest, "the end").await? {
            Signal::End(LiveEnd { reason }) => break reason,
            _ => continue,
        }
    };
    ensure!(reason == "device disconnected", "{reason}");
    ensure!(
        unplugged.elapsed() < Duration::from_secs(1),
        "took {:?}",
        unplugged.elapsed()
    );
    player.await?;
    let _ = client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_never_negotiates_is_ended() -> Result<()> {
    let (capture, _controls) = FakeCapture::new(PORTRAIT);
    let mut node = start_node(&capture, Duration::from_millis(300));
    node.signals.send(live("s2", start("dev-1", false))).await?;
    loop {
        let (session, signal) = next_signal(&mut node.outbound, WAIT).await?;
        if let Some(reason) = end_reason(&signal) {
            ensure!(
                session == "s2" && reason == "negotiation timed out",
                "{session}: {reason}"
            );
            break;
        }
    }
    wait_for_viewers(&capture, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_and_unknown_sessions_are_refused() -> Result<()> {
    let (capture, _controls) = FakeCapture::new(PORTRAIT);
    let mut node = start_node(&capture, Duration::from_secs(15));
    node.signals.send(live("s3", start("nope", true))).await?;
    let (session, signal) = next_signal(&mut node.outbound, WAIT).await?;
    ensure!(
        session == "s3" && end_reason(&signal).is_some_and(|r| r.contains("not attached")),
        "{signal:?}"
    );
    node.signals
        .send(live("s4", Signal::OfferSdp("v=0".into())))
        .await?;
    let (session, signal) = next_signal(&mut node.outbound, WAIT).await?;
    ensure!(
        session == "s4" && end_reason(&signal).is_some(),
        "{signal:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_broker_connection_closes_the_old_sessions_quietly() -> Result<()> {
    let (capture, _controls) = FakeCapture::new(PORTRAIT);
    let mut node = start_node(&capture, Duration::from_secs(15));
    node.signals.send(live("s5", start("dev-1", true))).await?;
    let (_, signal) = next_signal(&mut node.outbound, WAIT).await?;
    ensure!(matches!(signal, Signal::VideoSize(_)), "{signal:?}");
    wait_for_viewers(&capture, 1).await?;
    node.connection.send_replace(0);
    wait_for_viewers(&capture, 0).await?;
    ensure!(
        node.outbound.try_recv().is_err(),
        "no end is sent for a connection that is gone"
    );
    Ok(())
}

async fn wait_for_viewers(capture: &FakeCapture, expected: usize) -> Result<()> {
    tokio::time::timeout(WAIT, async {
        loop {
            let changed = capture.viewers_changed.notified();
            if capture.viewers.load(Ordering::SeqCst) == expected {
                return;
            }
            changed.await;
        }
    })
    .await
    .with_context(|| format!("expected {expected} viewers"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_gets_video_but_its_input_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clip = clip_frames(dir.path())?;
    let (capture, mut controls) = FakeCapture::new(PORTRAIT);
    let player = capture.play(clip);
    let node = start_node(&capture, Duration::from_secs(15));
    node.signals.send(live("s6", start("dev-1", false))).await?;
    // A hostile observer opens an input channel anyway.
    let (client, channel, client_events) = browser_client(true).await?;
    let channel = channel.context("the client made a channel")?;
    let mut messages = read_channel(Arc::clone(&channel));
    let (mut rest, mut tracks) = relay(
        node.outbound,
        Arc::clone(&client),
        client_events,
        node.signals.clone(),
        "s6",
    );
    negotiate(&client, &node.signals, &mut rest, "s6").await?;
    let track = recv(&mut tracks, "the video track").await?;
    expect_video(&mut read_rtp(track), 5).await?;
    let size = recv(&mut messages, "the size message").await?;
    ensure!(size.contains("\"size\""), "{size}");
    channel
        .send_text(r#"{"type":"touch","action":"down","pointer":0,"x":1,"y":1}"#)
        .await?;
    let reply: serde_json::Value =
        serde_json::from_str(&recv(&mut messages, "the refusal").await?)?;
    ensure!(
        reply["type"] == "error"
            && reply["message"]
                .as_str()
                .is_some_and(|m| m.contains("observers")),
        "{reply}"
    );
    ensure!(
        controls.try_recv().is_err(),
        "an observer's input must not reach the device"
    );
    capture.end();
    player.await?;
    let _ = client.close().await;
    Ok(())
}
