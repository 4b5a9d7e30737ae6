//! Hostile and malformed input to every broker surface: each gets a specific error and the broker keeps serving.

mod common;

use std::time::Duration;

use common::*;
use farm_proto::v1 as pb;
use pb::reserve_request::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

async fn still_serving(b: &TestBroker) {
    let (mut d, _) = clients(&b.url, &b.admin).await;
    d.list_devices(pb::ListDevicesRequest::default())
        .await
        .expect("the broker still serves others");
    assert_eq!(http_get(&b.url, "/healthz", None).await.0, 200);
}

#[tokio::test]
async fn missing_wrong_and_under_privileged_tokens_are_refused() {
    let b = start().await;
    let ch = channel(&b.url).await;
    let mut anon = pb::device_service_client::DeviceServiceClient::new(ch.clone());
    let e = anon
        .list_devices(pb::ListDevicesRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("missing token"), "{}", e.message());

    let (mut wrong, _) = clients(&b.url, "farm_not-a-real-token").await;
    let e = wrong
        .list_devices(pb::ListDevicesRequest::default())
        .await
        .expect_err("bad token");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("unknown token"), "{}", e.message());

    let (mut as_node, _) = clients(&b.url, &b.node_token).await;
    let e = as_node
        .list_devices(pb::ListDevicesRequest::default())
        .await
        .expect_err("node token");
    assert_eq!(e.code(), Code::PermissionDenied);

    let e = connect_node(&b.url, &b.alice, vec![hello("n1", "lab")])
        .await
        .err()
        .expect("user as node");
    assert_eq!(e.code(), Code::PermissionDenied);

    assert_eq!(http_get(&b.url, "/metrics", None).await.0, 401);
    assert_eq!(http_get(&b.url, "/metrics", Some("nope")).await.0, 401);
    assert_eq!(
        http_get(&b.url, "/api/v1/devices", Some(&b.node_token))
            .await
            .0,
        403
    );
    let (status, body) = http_get(&b.url, "/no/such/path", None).await;
    assert_eq!(status, 404);
    assert!(body.contains("no such path"), "{body}");
    still_serving(&b).await;
}

#[tokio::test]
async fn unknown_empty_and_oversized_ids_get_specific_errors() {
    let (b, _node, _alive) = broker_with_devices(vec![device("a", "Pixel 7")]).await;
    let (mut d, mut r) = clients(&b.url, &b.alice).await;
    let e = d
        .get_device(pb::GetDeviceRequest { id: "nope".into() })
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    let e = d
        .get_device(pb::GetDeviceRequest { id: String::new() })
        .await
        .expect_err("empty");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = d
        .get_device(pb::GetDeviceRequest {
            id: "x".repeat(100_000),
        })
        .await
        .expect_err("huge");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("limit"), "{}", e.message());

    let reserve = |target: Option<Target>, wait: u32, ttl: u32| pb::ReserveRequest {
        target,
        wait_seconds: wait,
        ttl_seconds: ttl,
    };
    let e = r.reserve(reserve(None, 0, 0)).await.expect_err("no target");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = r
        .reserve(reserve(Some(Target::DeviceId("nope".into())), 0, 0))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    let e = r
        .reserve(reserve(
            Some(Target::DeviceId("HW-a".into())),
            0,
            10_000_000,
        ))
        .await
        .expect_err("ttl");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = r
        .reserve(reserve(Some(Target::DeviceId("HW-a".into())), 1_000_000, 0))
        .await
        .expect_err("wait");
    assert_eq!(e.code(), Code::InvalidArgument);
    let bad_selector = pb::Selector {
        model: "Pixel\u{0}7".into(),
        ..Default::default()
    };
    let e = r
        .reserve(reserve(Some(Target::Selector(bad_selector)), 0, 0))
        .await
        .expect_err("control chars");
    assert_eq!(e.code(), Code::InvalidArgument);
    let many_tags = pb::Selector {
        tags: vec!["t".into(); 1000],
        ..Default::default()
    };
    let e = r
        .reserve(reserve(Some(Target::Selector(many_tags)), 0, 0))
        .await
        .expect_err("tags");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = d
        .list_devices(pb::ListDevicesRequest {
            filter: Some(pb::DeviceFilter {
                state: 77,
                ..Default::default()
            }),
        })
        .await
        .expect_err("bad state");
    assert_eq!(e.code(), Code::InvalidArgument);

    for call in ["renew", "release"] {
        let e = if call == "renew" {
            r.renew(pb::RenewRequest {
                lease_id: "lease_nope".into(),
                ttl_seconds: 0,
            })
            .await
        } else {
            r.release(pb::ReleaseRequest {
                lease_id: "lease_nope".into(),
            })
            .await
        }
        .expect_err("unknown lease");
        assert_eq!(e.code(), Code::NotFound, "{call}");
    }
    let e = r
        .release(pb::ReleaseRequest {
            lease_id: String::new(),
        })
        .await
        .expect_err("empty");
    assert_eq!(e.code(), Code::InvalidArgument);
    still_serving(&b).await;
}

#[tokio::test]
async fn a_node_must_say_hello_first_and_a_duplicate_node_id_is_refused() {
    let b = start().await;
    let e = connect_node(&b.url, &b.node_token, vec![heartbeat()])
        .await
        .err()
        .expect("no hello");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("hello"), "{}", e.message());
    let e = connect_node(&b.url, &b.node_token, vec![hello("bad id!", "lab")])
        .await
        .err()
        .expect("bad id");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = connect_node(&b.url, &b.node_token, vec![hello("n1", "")])
        .await
        .err()
        .expect("no site");
    assert_eq!(e.code(), Code::InvalidArgument);
    // A hello listing a thousand (or hostile) protocol features is refused with the reason.
    for features in [
        vec!["x".to_string(); 1000],
        vec!["http-whole\u{0}".to_string()],
    ] {
        let mut h = hello("n1", "lab");
        if let Some(pb::node_message::Msg::Hello(hello)) = &mut h.msg {
            hello.features = features;
        }
        let e = connect_node(&b.url, &b.node_token, vec![h])
            .await
            .err()
            .expect("bad features");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("features"), "{}", e.message());
    }

    let mut first = connect_node(
        &b.url,
        &b.node_token,
        vec![hello("n1", "lab"), snapshot(vec![device("a", "P")])],
    )
    .await
    .expect("first node");
    assert!(first.next().await.is_some());
    let _alive = first.keep_alive();
    let e = connect_node(&b.url, &b.node_token, vec![hello("n1", "lab")])
        .await
        .err()
        .expect("duplicate");
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains("--node-id"), "{}", e.message());
    // The first node is untouched: its device is still there and available.
    let (mut d, _) = clients(&b.url, &b.admin).await;
    let dev = d
        .get_device(pb::GetDeviceRequest { id: "HW-a".into() })
        .await
        .expect("device")
        .into_inner();
    assert_eq!(dev.state, pb::DeviceState::Available as i32);
}

#[tokio::test]
async fn garbage_device_reports_are_refused_on_the_stream_which_stays_open() {
    let (b, mut node, _alive) = broker_with_devices(vec![device("a", "Pixel 7")]).await;
    let mut bad = device("b", "Pixel 7");
    bad.serial = String::new();
    let mut huge = device("c", "Pixel 7");
    huge.model = "M".repeat(10_000);
    let mut weird = device("d", "Pixel 7");
    weird.state = 42;
    for d in [bad, huge, weird] {
        node.tx
            .send(pb::NodeMessage {
                msg: Some(pb::node_message::Msg::Change(pb::DeviceChange {
                    change: Some(pb::device_change::Change::Upsert(d)),
                })),
            })
            .await
            .expect("send");
        let reply = loop {
            let m = node.next().await.expect("a refusal");
            if let Some(pb::broker_message::Msg::Error(e)) = m.msg {
                break e.message;
            }
        };
        assert!(!reply.is_empty());
    }
    // A second hello on the same stream is refused too, and the stream carries on.
    node.tx.send(hello("n1", "lab")).await.expect("send");
    // A good change still lands afterwards.
    node.tx
        .send(pb::NodeMessage {
            msg: Some(pb::node_message::Msg::Change(pb::DeviceChange {
                change: Some(pb::device_change::Change::Upsert(device("e", "Pixel 8"))),
            })),
        })
        .await
        .expect("send");
    let (d, _) = clients(&b.url, &b.admin).await;
    eventually(Duration::from_secs(3), "device e", || {
        let mut d = d.clone();
        async move {
            d.get_device(pb::GetDeviceRequest { id: "HW-e".into() })
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    let list = d
        .clone()
        .list_devices(pb::ListDevicesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.devices.len(), 2, "only the good devices are known");
    still_serving(&b).await;
}

#[tokio::test]
async fn raw_garbage_on_the_port_does_not_hurt_the_broker() {
    let b = start().await;
    let addr = b.url.trim_start_matches("http://").to_string();
    let payloads: Vec<Vec<u8>> = vec![
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        vec![0u8; 100_000],
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'a', 200_000))
            .collect(),
        (0..=255u8).cycle().take(50_000).collect(),
    ];
    for p in payloads {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let _ = s.write_all(&p).await;
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    }
    still_serving(&b).await;
}
