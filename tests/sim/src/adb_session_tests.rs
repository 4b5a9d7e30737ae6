//! In-memory tests of the device session: handshake, auth, streams and flow control.

use super::*;
use crate::adb_packet::{A_SYNC, AUTH_RSAPUBLICKEY};
use crate::scrcpy_control::ControlMessage;

fn session(authorized: bool) -> AdbSession {
    AdbSession::new(Arc::new(DeviceProfile::generate("SIM-7", 0)), authorized)
}

fn drain(session: &mut AdbSession) -> (Vec<Packet>, Vec<SessionEvent>) {
    let mut packets = Vec::new();
    let mut events = Vec::new();
    while let Some(output) = session.poll_output() {
        match output {
            SessionOutput::Transmit(packet) => packets.push(packet),
            SessionOutput::Event(event) => events.push(event),
        }
    }
    (packets, events)
}

fn connect(session: &mut AdbSession, maxdata: u32) -> Vec<Packet> {
    session.handle_packet(Packet::new(
        A_CNXN,
        A_VERSION,
        maxdata,
        b"host::features=shell_v2".to_vec(),
    ));
    drain(session).0
}

fn open(session: &mut AdbSession, remote_id: u32, service: &str) {
    let mut payload = service.as_bytes().to_vec();
    payload.push(0);
    session.handle_packet(Packet::new(A_OPEN, remote_id, 0, payload));
}

/// Plays a well-behaved host: acknowledges every WRTE until the device closes the stream.
fn read_stream(session: &mut AdbSession, remote_id: u32) -> Vec<u8> {
    let mut data = Vec::new();
    for _ in 0..100_000 {
        let (packets, _) = drain(session);
        let mut closed = false;
        for packet in packets {
            assert_eq!(packet.arg1, remote_id);
            match packet.command {
                A_WRTE => {
                    data.extend_from_slice(&packet.payload);
                    session.handle_packet(Packet::new(A_OKAY, remote_id, packet.arg0, Vec::new()));
                }
                A_CLSE => closed = true,
                A_OKAY => {}
                other => panic!("unexpected {}", crate::adb_packet::command_name(other)),
            }
        }
        if closed {
            return data;
        }
    }
    panic!("stream never closed");
}

#[test]
fn handshake_answers_with_banner() {
    let mut session = session(true);
    session.handle_packet(Packet::new(A_CNXN, A_VERSION, 1 << 20, b"host::".to_vec()));
    let (packets, events) = drain(&mut session);
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].command, A_CNXN);
    let banner = String::from_utf8_lossy(&packets[0].payload).into_owned();
    assert!(
        banner.starts_with("device::ro.product.name=panther;ro.product.model=Pixel 7;"),
        "{banner}"
    );
    assert!(banner.ends_with("features=shell_v2,cmd,stat_v2"));
    assert_eq!(events, vec![SessionEvent::Online]);
    assert!(session.is_online());
}

#[test]
fn unauthorized_device_never_accepts() {
    let mut session = session(false);
    let packets = connect(&mut session, 1 << 20);
    assert_eq!(packets.len(), 1);
    assert_eq!((packets[0].command, packets[0].arg0), (A_AUTH, AUTH_TOKEN));
    assert_eq!(packets[0].payload.len(), 20);
    session.handle_packet(Packet::new(A_AUTH, AUTH_SIGNATURE, 0, vec![1; 256]));
    let (packets, _) = drain(&mut session);
    assert_eq!((packets[0].command, packets[0].arg0), (A_AUTH, AUTH_TOKEN));
    session.handle_packet(Packet::new(A_AUTH, AUTH_RSAPUBLICKEY, 0, b"key\0".to_vec()));
    assert_eq!(drain(&mut session).0, vec![]);
    // Streams are not served before the handshake completes.
    open(&mut session, 1, "shell:echo hi");
    assert_eq!(drain(&mut session).0, vec![]);
    assert!(!session.is_online());
}

#[test]
fn shell_v2_command_returns_output_and_exit_code() {
    let mut session = session(true);
    connect(&mut session, 1 << 20);
    open(
        &mut session,
        5,
        "shell,v2,TERM=xterm,raw:getprop ro.product.model",
    );
    let (packets, events) = drain(&mut session);
    assert_eq!(packets[0].command, A_OKAY);
    assert_eq!(packets[0].arg1, 5);
    let local_id = packets[0].arg0;
    assert_ne!(local_id, 0);
    assert_eq!(packets[1].command, A_WRTE);
    assert_eq!(
        packets[1].payload,
        b"\x01\x08\0\0\0Pixel 7\n\x03\x01\0\0\0\0".to_vec()
    );
    assert_eq!(packets.len(), 2, "one WRTE until the host acknowledges");
    assert_eq!(
        events,
        vec![SessionEvent::CommandRan {
            command: "getprop ro.product.model".into(),
            input: vec![]
        }]
    );
    // Host stdin (close-stdin packet) is acknowledged.
    session.handle_packet(Packet::new(A_WRTE, 5, local_id, b"\x04\0\0\0\0".to_vec()));
    assert_eq!(
        drain(&mut session).0,
        vec![Packet::new(A_OKAY, local_id, 5, Vec::new())]
    );
    session.handle_packet(Packet::new(A_OKAY, 5, local_id, Vec::new()));
    assert_eq!(
        drain(&mut session).0,
        vec![Packet::new(A_CLSE, local_id, 5, Vec::new())]
    );
    // The host's own CLSE for the now unknown stream is ignored.
    session.handle_packet(Packet::new(A_CLSE, 5, local_id, Vec::new()));
    assert_eq!(drain(&mut session).0, vec![]);
}

#[test]
fn flow_control_respects_host_maxdata_and_waits_for_okay() {
    let mut session = session(true);
    connect(&mut session, 1000);
    open(&mut session, 9, "exec:screencap -p");
    let (packets, _) = drain(&mut session);
    assert_eq!(packets.len(), 2);
    assert_eq!(packets[1].command, A_WRTE);
    assert_eq!(packets[1].payload.len(), 1000);
    // Without an OKAY nothing else is sent, whatever else arrives.
    session.handle_packet(Packet::new(A_SYNC, 0, 0, Vec::new()));
    assert_eq!(drain(&mut session).0, vec![]);
    let local_id = packets[1].arg0;
    session.handle_packet(Packet::new(A_OKAY, 9, local_id, Vec::new()));
    let mut data = packets[1].payload.clone();
    data.extend(read_stream(&mut session, 9));
    let expected = DeviceProfile::generate("SIM-7", 0);
    assert_eq!(data, expected.screenshot_png());
}

#[test]
fn big_outputs_use_256k_chunks() {
    let mut session = session(true);
    connect(&mut session, 1 << 20);
    open(&mut session, 3, "exec:screencap");
    let (packets, _) = drain(&mut session);
    assert_eq!(packets[1].payload.len(), MAX_CHUNK);
}

#[test]
fn unsupported_services_are_refused_and_unknown_packets_ignored() {
    let mut session = session(true);
    connect(&mut session, 1 << 20);
    for service in ["localabstract:scrcpy_00000001", "reboot:"] {
        open(&mut session, 4, service);
        assert_eq!(
            drain(&mut session).0,
            vec![Packet::new(A_CLSE, 0, 4, Vec::new())],
            "{service}"
        );
    }
    session.handle_packet(Packet::new(A_CLSE, 77, 88, Vec::new()));
    session.handle_packet(Packet::new(A_OKAY, 77, 88, Vec::new()));
    session.handle_packet(Packet::new(A_WRTE, 77, 88, b"x".to_vec()));
    assert_eq!(drain(&mut session).0, vec![]);
}

#[test]
fn interactive_shell_exits_zero_and_v1_shell_has_raw_output() {
    let mut session = session(true);
    connect(&mut session, 1 << 20);
    open(&mut session, 1, "shell,v2,TERM=xterm,pty:");
    assert_eq!(read_stream(&mut session, 1), b"\x03\x01\0\0\0\0".to_vec());
    open(&mut session, 2, "shell:echo hi; nosuch");
    assert_eq!(
        read_stream(&mut session, 2),
        b"hi\n/system/bin/sh: nosuch: inaccessible or not found\n".to_vec()
    );
}

#[test]
fn concurrent_streams_get_distinct_ids() {
    let mut session = session(true);
    connect(&mut session, 10);
    open(&mut session, 1, "exec:echo aaaaaaaaaaaaaaaaaaaaaa");
    open(&mut session, 2, "exec:echo bbbbbbbbbbbbbbbbbbbbbb");
    let (packets, events) = drain(&mut session);
    let okays: Vec<&Packet> = packets.iter().filter(|p| p.command == A_OKAY).collect();
    assert_eq!(okays.len(), 2);
    assert_ne!(okays[0].arg0, okays[1].arg0);
    assert_eq!(events.len(), 2);
}

/// Reads what the device sent on `remote_id` so far, acknowledging each WRTE.
fn take_written(session: &mut AdbSession, remote_id: u32) -> (Vec<u8>, bool, Vec<SessionEvent>) {
    let mut data = Vec::new();
    let mut closed = false;
    let mut all_events = Vec::new();
    loop {
        let (packets, events) = drain(session);
        all_events.extend(events);
        if packets.is_empty() {
            return (data, closed, all_events);
        }
        for packet in packets {
            if packet.arg1 != remote_id {
                continue;
            }
            match packet.command {
                A_WRTE => {
                    data.extend_from_slice(&packet.payload);
                    session.handle_packet(Packet::new(A_OKAY, remote_id, packet.arg0, Vec::new()));
                }
                A_CLSE => closed = true,
                _ => {}
            }
        }
    }
}

fn local_id_of(session: &mut AdbSession, remote_id: u32, service: &str) -> u32 {
    open(session, remote_id, service);
    let (packets, _) = drain(session);
    let okay = packets
        .iter()
        .find(|p| p.command == A_OKAY && p.arg1 == remote_id)
        .unwrap_or_else(|| panic!("{service} refused: {packets:?}"));
    let local = okay.arg0;
    // Whatever else came (e.g. a dummy byte) is sent again by the next pump: nothing is lost,
    // the WRTE is still awaiting its OKAY.
    for packet in packets.iter().filter(|p| p.command == A_WRTE) {
        session.handle_packet(Packet::new(A_OKAY, remote_id, packet.arg0, Vec::new()));
    }
    local
}

#[test]
fn push_then_scrcpy_server_sockets_and_control() {
    let mut session = session(true);
    connect(&mut session, 1 << 20);
    let start = "shell,v2,raw:CLASSPATH=/data/local/tmp/scrcpy-server.jar app_process / \
        com.genymobile.scrcpy.Server 3.3.4 scid=0000abcd tunnel_forward=true audio=false \
        control=true max_size=1280";
    // Without the jar the server exits 1 with an error on stderr.
    open(&mut session, 1, start);
    let (bytes, closed, _) = take_written(&mut session, 1);
    assert!(closed);
    assert_eq!(bytes[0], 2, "stderr first: {bytes:?}");
    assert!(bytes.ends_with(&[3, 1, 0, 0, 0, 1]));

    let sync = local_id_of(&mut session, 2, "sync:");
    let mut push = b"SEND".to_vec();
    let path = b"/data/local/tmp/scrcpy-server.jar,33188";
    push.extend((path.len() as u32).to_le_bytes());
    push.extend(path);
    push.extend(b"DATA\x03\0\0\0jar");
    push.extend(b"DONE\0\0\0\0");
    session.handle_packet(Packet::new(A_WRTE, 2, sync, push));
    let (reply, _, _) = take_written(&mut session, 2);
    assert_eq!(reply, b"OKAY\0\0\0\0");

    open(&mut session, 3, start);
    let (log, closed, _) = take_written(&mut session, 3);
    assert!(!closed);
    assert!(
        String::from_utf8_lossy(&log)
            .contains("[server] INFO: Device: [Google] Pixel 7 (Android 14)")
    );

    open(&mut session, 4, "localabstract:scrcpy_0000abcd");
    let (dummy, _, events) = take_written(&mut session, 4);
    assert_eq!(dummy, vec![0]);
    assert!(events.is_empty());
    let video = session
        .streams
        .iter()
        .find(|(_, s)| s.remote_id == 4)
        .map(|(id, _)| *id)
        .expect("video");
    open(&mut session, 5, "localabstract:scrcpy_0000abcd");
    let (_, _, events) = take_written(&mut session, 5);
    let control = session
        .streams
        .iter()
        .find(|(_, s)| s.remote_id == 5)
        .map(|(id, _)| *id)
        .expect("control");
    assert!(matches!(
        &events[..],
        [SessionEvent::CaptureRequested { stream, capture: CaptureKind::Scrcpy { control_stream: Some(c), .. } }]
            if *stream == video && *c == control
    ));
    // A third socket is refused.
    open(&mut session, 6, "localabstract:scrcpy_0000abcd");
    assert_eq!(
        drain(&mut session).0,
        vec![Packet::new(A_CLSE, 0, 6, Vec::new())]
    );

    session.handle_packet(Packet::new(A_WRTE, 5, control, vec![11, 17]));
    let (_, events) = drain(&mut session);
    assert_eq!(
        events,
        vec![
            SessionEvent::Control {
                stream: video,
                message: ControlMessage::RotateDevice
            },
            SessionEvent::Control {
                stream: video,
                message: ControlMessage::ResetVideo
            },
        ]
    );
    // Garbage closes the control socket only.
    session.handle_packet(Packet::new(A_WRTE, 5, control, vec![200]));
    let (packets, _) = drain(&mut session);
    assert!(packets.contains(&Packet::new(A_CLSE, control, 5, Vec::new())));
    // Closing the video socket stops the capture and ends the server's shell with exit 0.
    session.handle_packet(Packet::new(A_CLSE, 4, video, Vec::new()));
    let (bytes, closed, events) = take_written(&mut session, 3);
    assert!(closed && bytes.ends_with(&[3, 1, 0, 0, 0, 0]));
    assert_eq!(events, vec![SessionEvent::CaptureStopped { stream: video }]);
}

#[test]
fn screenrecord_streams_until_the_capture_ends() {
    let mut session = session(true);
    connect(&mut session, 1 << 20);
    let stream = local_id_of(
        &mut session,
        1,
        "exec:screenrecord --output-format=h264 --time-limit 1 -",
    );
    session.write_stream(stream, b"h264 bytes");
    let (bytes, closed, _) = take_written(&mut session, 1);
    assert_eq!((bytes.as_slice(), closed), (&b"h264 bytes"[..], false));
    session.end_capture(stream);
    let (_, closed, _) = take_written(&mut session, 1);
    assert!(closed);
    open(&mut session, 2, "exec:screenrecord /sdcard/a.mp4");
    let (bytes, closed, _) = take_written(&mut session, 2);
    assert!(closed && String::from_utf8_lossy(&bytes).contains("only streams"));
}
