//! The WebDriver grid in-process: routing by capabilities, proxying unchanged, W3C errors for every bad input.

mod common;
mod grid_node;

use std::time::Duration;

use farm_broker::grid::GridConfig;
use farm_proto::v1 as pb;
use grid_node::{
    GridNode, Reply, browser_slot, farm, grid_broker, leases, post_session, raw_chunked_upload,
    send, w3c_error,
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_goes_to_the_matching_slot_and_commands_pass_through_unchanged() {
    let (b, node) = farm(GridConfig::default()).await;
    let (status, body) = post_session(
        &b.url,
        "alice",
        &b.alice,
        json!({"platformName":"android","appium:platformVersion":">=14","farm:site":"lab","appium:app":"/tmp/x.apk"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["value"]["sessionId"]
        .as_str()
        .expect("session id")
        .to_string();
    let create = node.seen()[0].clone();
    assert_eq!(
        (
            create.slot_id.as_str(),
            create.method.as_str(),
            create.path.as_str()
        ),
        ("appium:e1", "POST", "/session")
    );
    let sent: Value = serde_json::from_slice(&create.body).expect("json body");
    assert_eq!(
        sent["capabilities"]["alwaysMatch"],
        json!({"platformName":"android","appium:platformVersion":">=14","appium:app":"/tmp/x.apk"})
    );
    assert!(
        create.headers.iter().all(|(k, _)| k != "authorization"),
        "farm credentials never reach a slot"
    );

    // The device's lease is held by the session's owner.
    let lease = leases(&b)
        .await
        .into_iter()
        .find(|l| l.device_id == "HW-e1")
        .expect("lease on e1");
    assert_eq!(
        (lease.holder.as_str(), lease.state),
        ("alice", pb::LeaseState::Active as i32)
    );

    // A command through the legacy prefix, with a bearer token: status, headers and body unchanged.
    node.set(std::sync::Arc::new(|_req, _n| {
        Reply::Http(
            418,
            vec![("x-slot".into(), "yes".into())],
            b"not json at all, and that is fine".to_vec(),
        )
    }));
    let resp = reqwest::Client::new()
        .post(format!("{}/wd/hub/session/{id}/element?using=x", b.url))
        .bearer_auth(&b.alice)
        .body(r#"{"using":"id","value":"go"}"#)
        .send()
        .await
        .expect("http");
    assert_eq!(resp.status().as_u16(), 418);
    assert_eq!(resp.headers()["x-slot"], "yes");
    assert_eq!(
        resp.text().await.expect("body"),
        "not json at all, and that is fine"
    );
    let cmd = node.seen()[1].clone();
    assert_eq!(cmd.path, format!("/session/{id}/element?using=x"));
    assert_eq!(cmd.body, br#"{"using":"id","value":"go"}"#);

    // Someone else may not drive it.
    let (code, body) = send(&b, &b.bob, "GET", &format!("/session/{id}/url"), None).await;
    assert_eq!(code, 403, "{body}");

    // /status shows the session on its slot.
    let (_, status) = common::http_get(&b.url, "/status", Some(&b.alice)).await;
    let status: Value = serde_json::from_str(&status).expect("status json");
    assert_eq!(status["value"]["ready"], true);
    let slots = status["value"]["nodes"][0]["slots"]
        .as_array()
        .expect("slots")
        .clone();
    let e1 = slots
        .iter()
        .find(|s| s["id"]["id"] == "appium:e1")
        .expect("e1 slot");
    assert_eq!(e1["session"]["sessionId"], id.as_str());
    assert_eq!(e1["stereotype"]["appium:platformVersion"], "14");
    assert_eq!(
        slots
            .iter()
            .filter(|s| s["id"]["id"]
                .as_str()
                .is_some_and(|i| i.starts_with("browser#")))
            .count(),
        2
    );

    // DELETE ends the session and the lease; the record lists it.
    node.set(grid_node::w3c_slot());
    let (code, _) = send(&b, &b.alice, "DELETE", &format!("/session/{id}"), None).await;
    assert_eq!(code, 200);
    common::eventually(Duration::from_secs(5), "lease released", || async {
        let l = leases(&b)
            .await
            .into_iter()
            .find(|l| l.lease_id == lease.lease_id)?;
        (l.end_reason == pb::EndReason::Released as i32).then_some(())
    })
    .await;
    let (code, body) = send(&b, &b.alice, "GET", &format!("/session/{id}/url"), None).await;
    assert_eq!(
        (code, w3c_error(&body).0),
        (404, "invalid session id"),
        "{body}"
    );
    assert!(w3c_error(&body).1.contains("deleted"), "{body}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args([
            "--broker",
            &b.url,
            "--token",
            &b.admin,
            "--json",
            "sessions",
            "--kind",
            "webdriver",
        ])
        .output()
        .await
        .expect("farmctl runs");
    let list: Value = serde_json::from_slice(&out.stdout).expect("farmctl json");
    assert_eq!(list[0]["session_id"], id.as_str());
    assert_eq!(list[0]["device_id"], "HW-e1");
    assert_eq!(list[0]["holder"], "alice");
    assert_eq!(list[0]["end_reason"], "released");
    assert_eq!(list[0]["capabilities"]["alwaysMatch"]["farm:site"], "lab");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_w3c_error_that_says_why() {
    let grid = GridConfig {
        response_timeout: Duration::from_millis(800),
        max_request_bytes: 1024 * 1024,
        ..GridConfig::default()
    };
    let (b, node) = farm(grid).await;
    let post = |body: &'static str, token: Option<String>| {
        let mut req = reqwest::Client::new()
            .post(format!("{}/session", b.url))
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.expect("http");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let alice = Some(b.alice.clone());
    for (body, status, error, why) in [
        ("{not json", 400, "invalid argument", "not JSON"),
        (
            r#"{"desiredCapabilities":{}}"#,
            400,
            "invalid argument",
            "W3C only",
        ),
        (
            r#"{"capabilities":{"alwaysMatch":{"platformName":"iOS"}}}"#,
            500,
            "session not created",
            "no slot in the farm can ever satisfy",
        ),
        (
            r#"{"capabilities":{"alwaysMatch":{"appium:platformVersion":">=99"}}}"#,
            500,
            "session not created",
            "appium:platformVersion wants",
        ),
    ] {
        let (code, v) = post(body, alice.clone()).await;
        assert_eq!((code, w3c_error(&v).0), (status, error), "{body}: {v}");
        assert!(w3c_error(&v).1.contains(why), "{body}: {v}");
        assert_eq!(v["value"]["stacktrace"], "");
    }
    // Credentials: none, unknown, or a name that is not the token's.
    let (code, v) = post("{}", None).await;
    assert_eq!(code, 401, "{v}");
    let (code, v) = post_session(&b.url, "bob", &b.alice, json!({})).await;
    assert!(
        code == 401 && w3c_error(&v).1.contains("not this token's name"),
        "{v}"
    );
    let (code, _) = post_session(&b.url, "x", "farm_unknown", json!({})).await;
    assert_eq!(code, 401);
    // An unknown session id.
    let (code, v) = send(&b, &b.alice, "GET", "/session/nope/url", None).await;
    assert_eq!((code, w3c_error(&v).0), (404, "invalid session id"));

    // A slot answering garbage to a new session: the slot is given back.
    node.set(std::sync::Arc::new(|_r, _n| {
        Reply::Http(200, vec![], b"<html>".to_vec())
    }));
    let (code, v) = post_session(&b.url, "alice", &b.alice, json!({"appium:udid":"e1"})).await;
    assert_eq!((code, w3c_error(&v).0), (502, "session not created"), "{v}");
    assert!(
        w3c_error(&v).1.contains("not a W3C new-session response"),
        "{v}"
    );
    // A slot that cannot be reached (error head).
    node.set(std::sync::Arc::new(|_r, _n| {
        Reply::ErrorHead("connection refused".into())
    }));
    let (code, v) = post_session(&b.url, "alice", &b.alice, json!({"appium:udid":"e1"})).await;
    assert!(
        code == 502 && w3c_error(&v).1.contains("connection refused"),
        "{v}"
    );
    // A slot that hangs.
    node.set(std::sync::Arc::new(|_r, _n| Reply::Hang));
    let (code, v) = post_session(&b.url, "alice", &b.alice, json!({"appium:udid":"e1"})).await;
    assert_eq!((code, w3c_error(&v).0), (500, "session not created"), "{v}");
    assert!(w3c_error(&v).1.contains("did not answer within"), "{v}");
    // Each failure gave the device back: its leases all ended.
    common::eventually(Duration::from_secs(5), "no active lease", || async {
        let l = leases(&b).await;
        (l.len() == 3 && l.iter().all(|l| l.state == pb::LeaseState::Ended as i32)).then_some(())
    })
    .await;

    // Oversized bodies: by content-length, and streamed without one.
    node.set(grid_node::w3c_slot());
    let (code, v) = post_session(&b.url, "alice", &b.alice, json!({"appium:udid":"e1"})).await;
    assert_eq!(code, 200, "{v}");
    let id = v["value"]["sessionId"].as_str().expect("id").to_string();
    let (code, v) = send(
        &b,
        &b.alice,
        "POST",
        &format!("/session/{id}/appium/device/push_file"),
        Some(vec![b'x'; 2 << 20]),
    )
    .await;
    assert_eq!((code, w3c_error(&v).0), (413, "invalid argument"), "{v}");
    let head = raw_chunked_upload(
        &b,
        &b.alice,
        &format!("/session/{id}/appium/device/push_file"),
        40,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // The session still works, and nothing stays open.
    let (code, _) = send(&b, &b.alice, "GET", &format!("/session/{id}/url"), None).await;
    assert_eq!(code, 200);
    // A proxied command that hangs gets a timeout error.
    node.set(std::sync::Arc::new(|_r, _n| Reply::Hang));
    let (code, v) = send(&b, &b.alice, "GET", &format!("/session/{id}/url"), None).await;
    assert_eq!((code, w3c_error(&v).0), (500, "timeout"), "{v}");
}

/// A browser session and one command with a small body; what the node's slot saw of both.
async fn new_session_and_one_command(
    b: &common::TestBroker,
    node: &GridNode,
) -> Vec<grid_node::SeenRequest> {
    let (status, body) =
        post_session(&b.url, "alice", &b.alice, json!({"browserName":"chrome"})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["value"]["sessionId"].as_str().expect("id").to_string();
    let url = br#"{"url":"about:blank"}"#.to_vec();
    let (code, _) = send(
        b,
        &b.alice,
        "POST",
        &format!("/session/{id}/url"),
        Some(url),
    )
    .await;
    assert_eq!(code, 200);
    node.seen()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_travel_whole_only_to_nodes_that_announce_it() {
    // A node from before `http-whole` (no features in its hello) gets every body in chunks.
    let b = grid_broker(GridConfig::default()).await;
    let mut old_hello = common::hello("n1", "lab");
    if let Some(pb::node_message::Msg::Hello(h)) = &mut old_hello.msg {
        h.features.clear();
    }
    let old = GridNode::connect_with(&b, old_hello, vec![], vec![browser_slot(1)]).await;
    let seen = new_session_and_one_command(&b, &old).await;
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|r| !r.whole && !r.body.is_empty()),
        "{seen:?}"
    );
    drop(old);

    // Today's node gets the same small bodies whole in the request head.
    let (b, node) = farm(GridConfig::default()).await;
    let seen = new_session_and_one_command(&b, &node).await;
    assert!(seen.len() == 2 && seen.iter().all(|r| r.whole), "{seen:?}");
}
