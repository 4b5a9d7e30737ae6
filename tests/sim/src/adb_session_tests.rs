//! In-memory tests of the device session: handshake, auth, streams and flow control.

use super::*;
use crate::adb_packet::{A_SYNC, AUTH_RSAPUBLICKEY};

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
    for service in ["sync:", "localabstract:scrcpy", "reboot:"] {
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
