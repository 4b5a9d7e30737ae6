//! The grid's queue and lifetimes in-process: FIFO, queue timeout, vanished clients, idle sessions,
//! devices held by live users, and a node dying mid-command.

mod common;
mod grid_node;

use std::time::Duration;

use farm_broker::grid::GridConfig;
use farm_proto::v1 as pb;
use grid_node::{
    GridNode, Reply, appium_slot, farm, grid_broker, leases, post_session, send, w3c_error,
    wait_queued,
};
use serde_json::{Value, json};

async fn two_devices(grid: GridConfig) -> (common::TestBroker, GridNode) {
    let b = grid_broker(grid).await;
    let node = GridNode::connect(
        &b,
        vec![
            common::device("e1", "Pixel 7"),
            common::device("e2", "Pixel 7"),
        ],
        vec![appium_slot("e1"), appium_slot("e2")],
    )
    .await;
    (b, node)
}

fn id_of(v: &Value) -> String {
    v["value"]["sessionId"]
        .as_str()
        .expect("session id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slots_four_clients_first_come_first_served() {
    let (b, _node) = two_devices(GridConfig::default()).await;
    let caps = json!({"platformName":"Android"});
    let (s1, v1) = post_session(&b.url, "alice", &b.alice, caps.clone()).await;
    let (s2, v2) = post_session(&b.url, "alice", &b.alice, caps.clone()).await;
    assert_eq!((s1, s2), (200, 200));
    let third = tokio::spawn({
        let (url, t, c) = (b.url.clone(), b.bob.clone(), caps.clone());
        async move { post_session(&url, "bob", &t, c).await }
    });
    wait_queued(&b, 1).await;
    let fourth = tokio::spawn({
        let (url, t, c) = (b.url.clone(), b.admin.clone(), caps.clone());
        async move { post_session(&url, "admin", &t, c).await }
    });
    wait_queued(&b, 2).await;
    // The first to leave frees a slot for the first in line, not the last.
    send(
        &b,
        &b.alice,
        "DELETE",
        &format!("/session/{}", id_of(&v1)),
        None,
    )
    .await;
    let (s3, v3) = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("third placed")
        .expect("task");
    assert_eq!(s3, 200, "{v3}");
    assert!(!fourth.is_finished());
    wait_queued(&b, 1).await;
    send(
        &b,
        &b.alice,
        "DELETE",
        &format!("/session/{}", id_of(&v2)),
        None,
    )
    .await;
    let (s4, v4) = tokio::time::timeout(Duration::from_secs(5), fourth)
        .await
        .expect("fourth placed")
        .expect("task");
    assert_eq!(s4, 200, "{v4}");
    let holders: Vec<String> = leases(&b)
        .await
        .into_iter()
        .filter(|l| l.state == pb::LeaseState::Active as i32)
        .map(|l| l.holder)
        .collect();
    assert_eq!(holders.len(), 2);
    assert!(
        holders.contains(&"bob".to_string()) && holders.contains(&"admin".to_string()),
        "{holders:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_client_times_out_and_a_vanished_one_leaves_the_queue() {
    let (b, _node) = two_devices(GridConfig::default()).await;
    let caps = json!({"appium:udid":"e1"});
    let (s, _) = post_session(&b.url, "alice", &b.alice, caps.clone()).await;
    assert_eq!(s, 200);
    // farm:queueTimeout: the reason names the busy slot and who holds it.
    let (s, v) = post_session(
        &b.url,
        "bob",
        &b.bob,
        json!({"appium:udid":"e1","farm:queueTimeout":0.5}),
    )
    .await;
    assert_eq!((s, w3c_error(&v).0), (500, "session not created"), "{v}");
    assert!(
        w3c_error(&v).1.contains("timed out") && w3c_error(&v).1.contains("held by alice"),
        "{v}"
    );
    wait_queued(&b, 0).await;

    // A client that disconnects while queued leaves at once.
    use tokio::io::AsyncWriteExt;
    let addr = b.url.trim_start_matches("http://").to_string();
    let mut raw = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let body = r#"{"capabilities":{"alwaysMatch":{"appium:udid":"e1"}}}"#;
    let req = format!(
        "POST /session HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        b.bob,
        body.len()
    );
    raw.write_all(req.as_bytes()).await.expect("write");
    wait_queued(&b, 1).await;
    drop(raw);
    wait_queued(&b, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_deleted_on_its_slot_and_its_lease_ends_idle() {
    let grid = GridConfig {
        idle_timeout: Duration::from_millis(1200),
        ..GridConfig::default()
    };
    let (b, node) = two_devices(grid).await;
    let (s, v) = post_session(&b.url, "alice", &b.alice, json!({"appium:udid":"e2"})).await;
    assert_eq!(s, 200);
    let id = id_of(&v);
    // Commands keep it alive past the idle timeout.
    for _ in 0..4 {
        let (code, _) = send(&b, &b.alice, "GET", &format!("/session/{id}/url"), None).await;
        assert_eq!(code, 200);
        tokio::time::sleep(Duration::from_millis(500)).await; // spacing commands, not waiting for a condition
    }
    let lease = common::eventually(Duration::from_secs(5), "lease ended idle", || async {
        leases(&b)
            .await
            .into_iter()
            .find(|l| l.device_id == "HW-e2" && l.end_reason == pb::EndReason::Idle as i32)
    })
    .await;
    assert_eq!(lease.holder, "alice");
    common::eventually(Duration::from_secs(5), "DELETE on the slot", || async {
        node.seen()
            .iter()
            .any(|r| r.method == "DELETE" && r.path == format!("/session/{id}"))
            .then_some(())
    })
    .await;
    let (code, v) = send(&b, &b.alice, "GET", &format!("/session/{id}/url"), None).await;
    assert_eq!(code, 404);
    assert!(w3c_error(&v).1.contains("idle timeout"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_in_live_use_is_never_given_to_a_script() {
    let (b, node) = farm(GridConfig::default()).await;
    let (_, mut r) = common::clients(&b.url, &b.alice).await;
    for id in ["HW-e1", "HW-e2"] {
        r.reserve(pb::ReserveRequest {
            target: Some(pb::reserve_request::Target::DeviceId(id.into())),
            ..Default::default()
        })
        .await
        .expect("alice reserves");
    }
    let (s, v) = post_session(
        &b.url,
        "alice",
        &b.alice,
        json!({"platformName":"Android","farm:queueTimeout":0.5}),
    )
    .await;
    assert_eq!((s, w3c_error(&v).0), (500, "session not created"), "{v}");
    assert!(w3c_error(&v).1.contains("held by alice"), "{v}");
    assert!(node.seen().is_empty(), "no request reached a slot");
    // The browser slot (no device, no lease) still serves browsers.
    let (s, _) = post_session(&b.url, "bob", &b.bob, json!({"browserName":"chrome"})).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dying_mid_command_gives_a_clear_error_and_ends_the_lease_node_lost() {
    let (b, mut node) = two_devices(GridConfig::default()).await;
    let (s, v) = post_session(&b.url, "alice", &b.alice, json!({"appium:udid":"e1"})).await;
    assert_eq!(s, 200);
    let id = id_of(&v);
    node.set(std::sync::Arc::new(|_r, _n| Reply::Hang));
    let pending = tokio::spawn({
        let (url, t, id) = (b.url.clone(), b.alice.clone(), id.clone());
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{url}/session/{id}/screenshot"))
                .bearer_auth(t)
                .send()
                .await
                .expect("http");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    });
    common::eventually(
        Duration::from_secs(5),
        "command reached the node",
        || async {
            node.seen()
                .iter()
                .any(|r| r.path.ends_with("/screenshot"))
                .then_some(())
        },
    )
    .await;
    node.kill();
    let (code, v) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(code, 502, "{v}");
    assert!(w3c_error(&v).1.contains("node n1 was lost"), "{v}");
    common::eventually(Duration::from_secs(5), "lease ended node_lost", || async {
        leases(&b)
            .await
            .into_iter()
            .find(|l| l.device_id == "HW-e1" && l.end_reason == pb::EndReason::NodeLost as i32)
    })
    .await;
    let (code, v) = send(&b, &b.alice, "GET", &format!("/session/{id}/url"), None).await;
    assert_eq!(code, 404);
    assert!(w3c_error(&v).1.contains("node was lost"), "{v}");
}
