//! Live-session signalling through the broker: browser WebSocket <-> hub <-> node stream, and every way it ends.

mod common;

use std::time::Duration;

use common::*;
use farm_broker::live::{IceConfig, LiveConfig};
use farm_proto::v1 as pb;
use futures::{SinkExt, StreamExt};
use pb::live_signal::Signal;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const OFFER: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n";

async fn open(b: &TestBroker, device: &str, token: &str, observe: bool) -> Ws {
    let ws_url = b.url.replace("http://", "ws://");
    let q = if observe { "&observe=1" } else { "" };
    let (ws, _) = tokio_tungstenite::connect_async(format!(
        "{ws_url}/api/v1/devices/{device}/live?token={token}{q}"
    ))
    .await
    .expect("websocket");
    ws
}

/// The next JSON message from the broker, within 5 s; `None` when the socket closed.
async fn recv(ws: &mut Ws) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")?;
        match m.ok()? {
            Message::Text(t) => return Some(serde_json::from_str(t.as_str()).expect("json")),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// The next live signal the broker sent the node (skipping lease updates).
async fn node_signal(node: &mut FakeNode) -> pb::LiveSignal {
    loop {
        let m = node.next().await.expect("a message for the node");
        if let Some(pb::broker_message::Msg::Command(pb::Command {
            kind: Some(pb::command::Kind::Live(s)),
            ..
        })) = m.msg
        {
            return s;
        }
    }
}

async fn node_says(node: &FakeNode, session: &str, signal: Signal) {
    node.tx
        .send(pb::NodeMessage {
            msg: Some(pb::node_message::Msg::Live(pb::LiveSignal {
                session_id: session.into(),
                signal: Some(signal),
            })),
        })
        .await
        .expect("node send");
}

async fn reserve(b: &TestBroker, token: &str, ttl: u32) -> pb::Lease {
    let (_, mut r) = clients(&b.url, token).await;
    r.reserve(pb::ReserveRequest {
        target: Some(pb::reserve_request::Target::DeviceId("HW-a".into())),
        wait_seconds: 0,
        ttl_seconds: ttl,
    })
    .await
    .expect("reserve")
    .into_inner()
}

async fn broker_with_live(live: LiveConfig) -> (TestBroker, FakeNode, tokio::task::JoinHandle<()>) {
    let b = start_full(fast_config(), live).await;
    let mut node = connect_node(
        &b.url,
        &b.node_token,
        vec![hello("n1", "lab"), snapshot(vec![device("a", "Pixel 7")])],
    )
    .await
    .expect("node");
    node.next().await.expect("hello ack");
    let alive = node.keep_alive();
    let (d, _) = clients(&b.url, &b.admin).await;
    eventually(Duration::from_secs(5), "device", || {
        let mut d = d.clone();
        async move {
            d.get_device(pb::GetDeviceRequest { id: "HW-a".into() })
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    (b, node, alive)
}

#[tokio::test]
async fn the_holder_negotiates_through_the_broker_and_the_session_is_recorded() {
    let ice = IceConfig::parse(r#"{"default": {"stun": ["stun:127.0.0.1:3478"], "turn": ["turn:127.0.0.1:3478?transport=udp"], "turn_secret": "s3cret"}}"#)
        .expect("ice");
    let (b, mut node, _alive) = broker_with_live(LiveConfig {
        ice,
        ..Default::default()
    })
    .await;
    reserve(&b, &b.alice, 60).await;
    let mut ws = open(&b, "HW-a", &b.alice, false).await;
    let ready = recv(&mut ws).await.expect("ready");
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["control"], true);
    let servers = ready["iceServers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    assert!(
        servers[1]["username"]
            .as_str()
            .is_some_and(|u| u.ends_with(":alice")),
        "{ready}"
    );
    let session = ready["session"].as_str().expect("session").to_string();

    let start = node_signal(&mut node).await;
    assert_eq!(start.session_id, session);
    let Some(Signal::Start(start)) = start.signal else {
        panic!("start first")
    };
    assert_eq!(
        (
            start.device_serial.as_str(),
            start.control,
            start.user.as_str()
        ),
        ("a", true, "alice")
    );
    assert_eq!(start.ice_servers.len(), 2);

    send(&mut ws, json!({"type": "offer", "sdp": OFFER})).await;
    assert_eq!(
        node_signal(&mut node).await.signal,
        Some(Signal::OfferSdp(OFFER.into()))
    );
    send(&mut ws, json!({"type": "candidate", "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0})).await;
    let Some(Signal::Candidate(c)) = node_signal(&mut node).await.signal else {
        panic!("candidate")
    };
    assert_eq!(c.sdp_mid, "0");

    node_says(&node, &session, Signal::AnswerSdp("v=0 answer".into())).await;
    assert_eq!(
        recv(&mut ws).await.expect("answer"),
        json!({"type": "answer", "sdp": "v=0 answer"})
    );
    node_says(
        &node,
        &session,
        Signal::VideoSize(pb::VideoSize {
            width: 720,
            height: 1280,
        }),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await.expect("size"),
        json!({"type": "size", "width": 720, "height": 1280})
    );

    // A second offer on the same socket is an ICE restart.
    send(&mut ws, json!({"type": "offer", "sdp": OFFER})).await;
    assert_eq!(
        node_signal(&mut node).await.signal,
        Some(Signal::IceRestart(true))
    );
    assert_eq!(
        node_signal(&mut node).await.signal,
        Some(Signal::OfferSdp(OFFER.into()))
    );

    send(&mut ws, json!({"type": "bye"})).await;
    assert_eq!(
        node_signal(&mut node).await.signal,
        Some(Signal::End(pb::LiveEnd {
            reason: "viewer left".into()
        }))
    );
    // The record is written after the node is told: poll for it.
    let sessions: Value =
        common::eventually(Duration::from_secs(5), "session end recorded", || async {
            let (status, body) = http_get(&b.url, "/api/v1/sessions", Some(&b.admin)).await;
            let sessions: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && sessions[0]["end_reason"] == "viewer left").then_some(sessions)
        })
        .await;
    assert_eq!(sessions[0]["id"], session.as_str());
    assert_eq!(sessions[0]["user"], "alice");
    assert_eq!(sessions[0]["mode"], "control");
}

#[tokio::test]
async fn only_the_holder_controls_and_observers_need_the_setting() {
    let (b, mut node, _alive) = broker_with_live(LiveConfig::default()).await;
    reserve(&b, &b.alice, 60).await;
    let mut ws = open(&b, "HW-a", &b.bob, false).await;
    let err = recv(&mut ws).await.expect("error");
    assert_eq!(err["type"], "error");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("held by alice")),
        "{err}"
    );
    assert_eq!(recv(&mut ws).await.expect("end")["type"], "end");
    assert!(recv(&mut ws).await.is_none(), "the socket closes");
    let mut ws = open(&b, "HW-a", &b.bob, true).await;
    let err = recv(&mut ws).await.expect("error");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("not allowed")),
        "{err}"
    );
    // An admin may always watch, read-only.
    let mut ws = open(&b, "HW-a", &b.admin, true).await;
    let ready = recv(&mut ws).await.expect("ready");
    assert_eq!(ready["control"], false);
    let Some(Signal::Start(start)) = node_signal(&mut node).await.signal else {
        panic!("start")
    };
    assert!(!start.control);

    let (b2, _node2, _alive2) = broker_with_live(LiveConfig {
        allow_observers: true,
        ..Default::default()
    })
    .await;
    reserve(&b2, &b2.alice, 60).await;
    let mut ws = open(&b2, "HW-a", &b2.bob, true).await;
    assert_eq!(recv(&mut ws).await.expect("ready")["control"], false);
    // Not reserved at all: control is refused with what to do.
    let mut ws = open(&b2, "nope", &b2.bob, false).await;
    assert!(
        recv(&mut ws).await.expect("error")["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found"))
    );
}

#[tokio::test]
async fn lease_expiry_and_device_loss_end_the_session_with_their_reason() {
    let (b, mut node, _alive) = broker_with_live(LiveConfig::default()).await;
    reserve(&b, &b.alice, 1).await;
    let mut ws = open(&b, "HW-a", &b.alice, false).await;
    assert_eq!(recv(&mut ws).await.expect("ready")["type"], "ready");
    let end = recv(&mut ws).await.expect("end");
    assert_eq!(end, json!({"type": "end", "reason": "lease expired"}));
    node_signal(&mut node).await; // start
    assert_eq!(
        node_signal(&mut node).await.signal,
        Some(Signal::End(pb::LiveEnd {
            reason: "lease expired".into()
        }))
    );

    reserve(&b, &b.alice, 60).await;
    let mut ws = open(&b, "HW-a", &b.alice, false).await;
    assert_eq!(recv(&mut ws).await.expect("ready")["type"], "ready");
    node.tx
        .send(pb::NodeMessage {
            msg: Some(pb::node_message::Msg::Change(pb::DeviceChange {
                change: Some(pb::device_change::Change::Removed("a".into())),
            })),
        })
        .await
        .expect("send");
    assert_eq!(
        recv(&mut ws).await.expect("end"),
        json!({"type": "end", "reason": "device disconnected"})
    );
}

#[tokio::test]
async fn hostile_signalling_gets_errors_and_a_silent_node_times_out() {
    let (b, mut node, alive) = broker_with_live(LiveConfig {
        negotiation_timeout: Duration::from_millis(800),
        ..Default::default()
    })
    .await;
    reserve(&b, &b.alice, 60).await;
    let mut ws = open(&b, "HW-a", &b.alice, false).await;
    assert_eq!(recv(&mut ws).await.expect("ready")["type"], "ready");
    for bad in [
        "not json".to_string(),
        json!({"type": "offer", "sdp": "v=0\r\nm=audio 9 x\r\n"}).to_string(),
        json!({"type": "nuke"}).to_string(),
        json!({"type": "candidate", "candidate": "x".repeat(5000)}).to_string(),
    ] {
        ws.send(Message::Text(bad.into())).await.expect("send");
        let e = recv(&mut ws).await.expect("error");
        assert_eq!(e["type"], "error", "{e}");
    }
    // The node never answers: the session ends with a reason.
    let end = recv(&mut ws).await.expect("end");
    assert_eq!(
        end,
        json!({"type": "end", "reason": "negotiation timed out"})
    );

    // An oversized frame closes the socket; the broker keeps serving.
    let mut ws = open(&b, "HW-a", &b.alice, false).await;
    assert_eq!(recv(&mut ws).await.expect("ready")["type"], "ready");
    let _ = ws.send(Message::Text("x".repeat(200_000).into())).await;
    assert!(recv(&mut ws).await.is_none_or(|m| m["type"] != "answer"));

    // A bad token is told why.
    let mut ws = open(&b, "HW-a", "farm_wrong", false).await;
    assert!(
        recv(&mut ws).await.expect("error")["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown token"))
    );

    // The node drops mid-negotiation: "node lost".
    let mut ws = open(&b, "HW-a", &b.alice, false).await;
    assert_eq!(recv(&mut ws).await.expect("ready")["type"], "ready");
    alive.abort();
    drop(node.tx.clone());
    let FakeNode { tx, inbound } = node;
    drop(tx);
    drop(inbound);
    let end = recv(&mut ws).await.expect("end");
    assert_eq!(end["type"], "end");
    assert!(
        end["reason"]
            .as_str()
            .is_some_and(|r| r == "node lost" || r == "device disconnected"),
        "{end}"
    );
    node = connect_node(&b.url, &b.node_token, vec![hello("n2", "lab")])
        .await
        .expect("others still served");
    drop(node);
}
