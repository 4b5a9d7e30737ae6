//! The capture hub against a fake adb server on loopback (canned scrcpy and screenrecord
//! streams): one capture shared by two viewers, SPS/PPS in front of keyframes, input bytes,
//! stopping when the last viewer leaves, a device that vanishes, a codec refused.

mod fake_adb;

use std::future::Future;
use std::time::Duration;

use fake_adb::{FakeAdb, FakeOptions, SERIAL};
use farm_node::capture::{
    CaptureConfig, CaptureError, CaptureHub, CaptureMethod, ControlMessage, KeyAction, TouchAction,
    VideoSize, h264, scrcpy_control,
};

const DEADLINE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Polls `check` until it holds (every 10 ms, up to the deadline).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn scrcpy_config(jar: &tempfile::NamedTempFile) -> CaptureConfig {
    CaptureConfig {
        scrcpy_server: Some(jar.path().to_path_buf()),
        ..CaptureConfig::default()
    }
}

fn dummy_jar() -> tempfile::NamedTempFile {
    let jar = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(jar.path(), vec![0x5A; 100_000]).expect("write the jar");
    jar
}

#[tokio::test]
async fn two_viewers_share_one_scrcpy_capture() {
    let mut fake = FakeAdb::start(FakeOptions {
        refuse_first_opens: 2,
        ..FakeOptions::default()
    })
    .await;
    let jar = dummy_jar();
    let hub = CaptureHub::new(fake.addr, scrcpy_config(&jar));

    let mut first = within("attach", hub.attach(SERIAL)).await.expect("attach");
    assert_eq!(first.method(), CaptureMethod::Scrcpy);
    assert_eq!(
        *first.video_size().borrow(),
        VideoSize {
            width: 360,
            height: 640
        }
    );
    let frame = within("first frame", first.recv()).await.expect("a frame");
    assert!(frame.keyframe, "a viewer starts at a keyframe");
    assert!(h264::starts_with_sps(&frame.data), "SPS/PPS in front");

    let mut second = within("attach", hub.attach(SERIAL)).await.expect("attach");
    assert_eq!(hub.active_captures(), 1);
    let frame = within("late frame", second.recv()).await.expect("a frame");
    assert!(frame.keyframe && h264::starts_with_sps(&frame.data));
    // Every keyframe, not just the first, carries SPS/PPS.
    let mut keyframes = 0;
    while keyframes < 3 {
        let frame = within("frames", first.recv()).await.expect("a frame");
        if frame.keyframe {
            assert!(h264::starts_with_sps(&frame.data));
            keyframes += 1;
        } else {
            assert!(!h264::starts_with_sps(&frame.data));
        }
    }

    // One server, one jar push, with the expected command.
    {
        let pushed = fake.seen.pushed.lock().expect("not poisoned");
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].0, "/data/local/tmp/scrcpy-server.jar,420");
        assert_eq!(pushed[0].1, vec![0x5A; 100_000]);
        let commands = fake.seen.commands.lock().expect("not poisoned");
        let starts: Vec<&String> = commands
            .iter()
            .filter(|c| c.starts_with("shell:CLASSPATH="))
            .collect();
        assert_eq!(starts.len(), 1, "{commands:?}");
        assert!(starts[0].contains(" com.genymobile.scrcpy.Server 3.3.4 scid="));
        assert!(starts[0].contains(" max_size=1280 video_codec=h264 cleanup=false"));
    }

    // Input arrives on the control socket, byte for byte, after the join's reset video.
    let touch = ControlMessage::Touch {
        action: TouchAction::Down,
        pointer_id: 0,
        x: 100,
        y: 200,
        width: 360,
        height: 640,
        pressure: 0xFFFF,
    };
    within("control", first.control(touch.clone()))
        .await
        .expect("sent");
    let key = ControlMessage::Key {
        action: KeyAction::Up,
        keycode: 3,
        repeat: 0,
        metastate: 0,
    };
    within("control", second.control(key.clone()))
        .await
        .expect("sent");
    let mut expected = scrcpy_control::encode(&touch);
    expected.extend(scrcpy_control::encode(&key));
    let mut received = Vec::new();
    while !received.ends_with(&expected) {
        let bytes = within("control bytes", fake.control.recv())
            .await
            .expect("control socket open");
        received.extend(bytes);
    }
    assert!(
        received.starts_with(&[17]),
        "the late viewer asked for a keyframe: {received:?}"
    );

    // The capture stops when the last viewer leaves, not before.
    drop(first);
    let frame = within("frames after a viewer left", second.recv()).await;
    assert!(frame.is_some());
    assert_eq!(*fake.video_streams.borrow(), 1);
    drop(second);
    within(
        "video socket closed",
        fake.video_streams.wait_for(|n| *n == 0),
    )
    .await
    .expect("fake alive");
    eventually("no capture left", || hub.active_captures() == 0).await;

    // A new viewer starts a new capture.
    let mut again = within("attach", hub.attach(SERIAL)).await.expect("attach");
    assert!(within("frame", again.recv()).await.is_some());
    assert_eq!(hub.active_captures(), 1);
}

#[tokio::test]
async fn a_vanishing_device_ends_the_capture_with_a_reason() {
    let fake = FakeAdb::start(FakeOptions::default()).await;
    let jar = dummy_jar();
    let hub = CaptureHub::new(fake.addr, scrcpy_config(&jar));
    let mut viewer = within("attach", hub.attach(SERIAL)).await.expect("attach");
    assert!(within("frame", viewer.recv()).await.is_some());
    assert_eq!(viewer.ended(), None);
    fake.unplug.notify_one();
    while within("end of frames", viewer.recv()).await.is_some() {}
    let reason = viewer.ended().expect("a reason once frames stop");
    assert!(
        reason.contains("closed") || reason.contains("ended"),
        "{reason}"
    );
    let error = viewer
        .control(ControlMessage::RotateDevice)
        .await
        .expect_err("capture ended");
    assert!(matches!(error, CaptureError::Ended(_)), "{error}");
    eventually("capture gone", || hub.active_captures() == 0).await;
    // Attaching again fails with the adb server's reason.
    let error = within("attach", hub.attach(SERIAL))
        .await
        .expect_err("device gone");
    assert!(error.to_string().contains("not found"), "{error}");
}

#[tokio::test]
async fn other_codecs_are_refused() {
    let fake = FakeAdb::start(FakeOptions {
        codec: Some(*b"h265"),
        ..FakeOptions::default()
    })
    .await;
    let jar = dummy_jar();
    let hub = CaptureHub::new(fake.addr, scrcpy_config(&jar));
    let error = within("attach", hub.attach(SERIAL))
        .await
        .expect_err("h265 refused");
    assert!(error.to_string().contains("not h264"), "{error}");
    eventually("capture gone", || hub.active_captures() == 0).await;
}

#[tokio::test]
async fn screenrecord_fallback_streams_and_taps() {
    let mut fake = FakeAdb::start(FakeOptions::default()).await;
    let hub = CaptureHub::new(fake.addr, CaptureConfig::default());
    let mut viewer = within("attach", hub.attach(SERIAL)).await.expect("attach");
    assert_eq!(viewer.method(), CaptureMethod::ScreenRecord);
    let frame = within("frame", viewer.recv()).await.expect("a frame");
    assert!(frame.keyframe && h264::starts_with_sps(&frame.data));
    // `wm size` said 720x1280; the stream's SPS says 360x640, and wins.
    let mut size = viewer.video_size();
    within(
        "size from the SPS",
        size.wait_for(|s| s.width == 360 && s.height == 640),
    )
    .await
    .expect("capture alive");
    let mut keyframes = 0;
    while keyframes < 2 {
        let frame = within("frames", viewer.recv()).await.expect("a frame");
        if frame.keyframe {
            assert!(h264::starts_with_sps(&frame.data));
            keyframes += 1;
        }
    }
    let touch = |action| ControlMessage::Touch {
        action,
        pointer_id: 0,
        x: 100,
        y: 200,
        width: 360,
        height: 640,
        pressure: 0xFFFF,
    };
    viewer
        .control(touch(TouchAction::Down))
        .await
        .expect("down");
    viewer.control(touch(TouchAction::Up)).await.expect("up");
    viewer
        .control(ControlMessage::Text("hi there".into()))
        .await
        .expect("text");
    let error = viewer
        .control(ControlMessage::RotateDevice)
        .await
        .expect_err("not with screenrecord");
    assert!(matches!(error, CaptureError::Unsupported(_)));
    {
        let commands = fake.seen.commands.lock().expect("not poisoned");
        assert!(
            commands.contains(&"exec:screenrecord --output-format=h264 --time-limit 170 -".into()),
            "{commands:?}"
        );
        assert!(commands.contains(&"shell:input tap 200 400".into()));
        assert!(commands.contains(&"shell:input text hi%sthere".into()));
    }
    drop(viewer);
    within(
        "screenrecord closed",
        fake.video_streams.wait_for(|n| *n == 0),
    )
    .await
    .expect("fake alive");
    eventually("no capture left", || hub.active_captures() == 0).await;
    assert!(fake.control.try_recv().is_err(), "no scrcpy control socket");
}

#[tokio::test]
async fn a_slow_viewer_lags_and_resyncs_at_a_keyframe() {
    let fake = FakeAdb::start(FakeOptions::default()).await;
    let jar = dummy_jar();
    let hub = CaptureHub::new(fake.addr, scrcpy_config(&jar));
    let mut fast = within("attach", hub.attach(SERIAL)).await.expect("attach");
    let mut slow = within("attach", hub.attach(SERIAL)).await.expect("attach");
    // The fast viewer reads well past the frame buffer (64) while the slow one reads nothing.
    for _ in 0..100 {
        within("fast frames", fast.recv()).await.expect("a frame");
    }
    let frame = within("slow frame", slow.recv()).await.expect("a frame");
    assert!(frame.keyframe && h264::starts_with_sps(&frame.data));
    // The slow viewer then follows on: deltas after its keyframe.
    let next = within("slow frame", slow.recv()).await.expect("a frame");
    assert!(next.pts_us > frame.pts_us || next.keyframe);
}
