//! Reservation behaviour through the real gRPC API of an in-process broker: holds, waits, expiry, loss, restarts.

mod common;

use std::time::Duration;

use common::*;
use farm_proto::v1 as pb;
use pb::reserve_request::Target;
use tonic::Code;

fn by_id(id: &str, wait: u32, ttl: u32) -> pb::ReserveRequest {
    pb::ReserveRequest {
        target: Some(Target::DeviceId(id.into())),
        wait_seconds: wait,
        ttl_seconds: ttl,
    }
}

fn by_model(model: &str, wait: u32) -> pb::ReserveRequest {
    pb::ReserveRequest {
        target: Some(Target::Selector(pb::Selector {
            model: model.into(),
            ..Default::default()
        })),
        wait_seconds: wait,
        ttl_seconds: 0,
    }
}

/// The lease `id` once it has ended; `None` while it is active (or unknown).
async fn ended_lease(mut client: Reservations, id: String) -> Option<pb::Lease> {
    let all = client
        .list_reservations(pb::ListReservationsRequest {
            include_ended: true,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    all.leases
        .into_iter()
        .find(|l| l.lease_id == id && l.state == pb::LeaseState::Ended as i32)
}

#[tokio::test]
async fn a_held_device_is_refused_with_its_holder_and_expiry() {
    let (b, _node, _alive) = broker_with_devices(vec![device("a", "Pixel 7")]).await;
    let (_, mut alice) = clients(&b.url, &b.alice).await;
    let (mut devices, mut bob) = clients(&b.url, &b.bob).await;
    let lease = alice
        .reserve(by_id("HW-a", 0, 60))
        .await
        .expect("first reserve")
        .into_inner();
    assert_eq!(lease.holder, "alice");
    assert_eq!(lease.state, pb::LeaseState::Active as i32);
    let err = bob
        .reserve(by_id("HW-a", 0, 60))
        .await
        .expect_err("second reserve");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("held by alice until 20"),
        "{}",
        err.message()
    );
    let d = devices
        .get_device(pb::GetDeviceRequest { id: "HW-a".into() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(d.state, pb::DeviceState::Reserved as i32);
    assert_eq!(d.holder.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_waiting_reserve_gets_the_device_after_release() {
    let (b, _node, _alive) = broker_with_devices(vec![device("a", "Pixel 7")]).await;
    let (_, mut alice) = clients(&b.url, &b.alice).await;
    let (_, mut bob) = clients(&b.url, &b.bob).await;
    let first = alice
        .reserve(by_model("Pixel 7", 0))
        .await
        .expect("reserve")
        .into_inner();
    let waiting = tokio::spawn(async move { bob.reserve(by_model("Pixel 7", 10)).await });
    let (_, mut admin) = clients(&b.url, &b.admin).await;
    wait_for_queue(&b, 1).await;
    assert!(!waiting.is_finished(), "bob got a held device");
    let released = alice
        .release(pb::ReleaseRequest {
            lease_id: first.lease_id.clone(),
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(released.end_reason, pb::EndReason::Released as i32);
    let second = waiting
        .await
        .expect("task")
        .expect("bob reserved")
        .into_inner();
    assert_eq!(second.holder, "bob");
    assert_eq!(second.device_id, "HW-a");
    assert!(
        second.fencing_token > first.fencing_token,
        "fencing token grows"
    );
    let all = admin
        .list_reservations(pb::ListReservationsRequest {
            include_ended: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.leases.len(), 2);
}

#[tokio::test]
async fn a_lease_expires_with_reason_expired_and_waiters_time_out() {
    let (b, _node, _alive) = broker_with_devices(vec![device("a", "Pixel 7")]).await;
    let (_, mut alice) = clients(&b.url, &b.alice).await;
    let lease = alice
        .reserve(by_id("HW-a", 0, 1))
        .await
        .expect("reserve")
        .into_inner();
    let ended = eventually(Duration::from_secs(5), "lease expiry", || {
        ended_lease(alice.clone(), lease.lease_id.clone())
    })
    .await;
    assert_eq!(ended.end_reason, pb::EndReason::Expired as i32);
    let renew = alice
        .renew(pb::RenewRequest {
            lease_id: lease.lease_id.clone(),
            ttl_seconds: 0,
        })
        .await
        .expect_err("renewing an expired lease");
    assert_eq!(renew.code(), Code::FailedPrecondition);
    assert!(renew.message().contains("expired"), "{}", renew.message());

    // A waiter whose wait runs out gets DEADLINE_EXCEEDED with the reason.
    let _held = alice
        .reserve(by_id("HW-a", 0, 60))
        .await
        .expect("reserve again");
    let (_, mut bob) = clients(&b.url, &b.bob).await;
    let err = bob
        .reserve(by_id("HW-a", 1, 0))
        .await
        .expect_err("wait times out");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(err.message().contains("held by alice"), "{}", err.message());
}

#[tokio::test]
async fn renew_pushes_the_expiry_and_only_the_holder_or_an_admin_may_release() {
    let (b, _node, _alive) = broker_with_devices(vec![device("a", "Pixel 7")]).await;
    let (_, mut alice) = clients(&b.url, &b.alice).await;
    let (_, mut bob) = clients(&b.url, &b.bob).await;
    let (_, mut admin) = clients(&b.url, &b.admin).await;
    let lease = alice
        .reserve(by_id("HW-a", 0, 30))
        .await
        .expect("reserve")
        .into_inner();
    let renewed = alice
        .renew(pb::RenewRequest {
            lease_id: lease.lease_id.clone(),
            ttl_seconds: 120,
        })
        .await
        .expect("renew")
        .into_inner();
    let before = lease.expires_at.expect("expiry").seconds;
    let after = renewed.expires_at.expect("expiry").seconds;
    assert!(
        after >= before + 89,
        "expiry moved from {before} to {after}"
    );
    let err = bob
        .release(pb::ReleaseRequest {
            lease_id: lease.lease_id.clone(),
        })
        .await
        .expect_err("bob may not release alice's lease");
    assert_eq!(err.code(), Code::PermissionDenied);
    let ended = admin
        .release(pb::ReleaseRequest {
            lease_id: lease.lease_id.clone(),
        })
        .await
        .expect("admin release")
        .into_inner();
    assert_eq!(ended.end_reason, pb::EndReason::Admin as i32);
}

#[tokio::test]
async fn a_device_that_leaves_ends_its_lease_with_device_lost_and_a_silent_node_with_node_lost() {
    let (b, node, alive) =
        broker_with_devices(vec![device("a", "Pixel 7"), device("b", "Pixel 7")]).await;
    let (mut devices, mut alice) = clients(&b.url, &b.alice).await;
    let la = alice
        .reserve(by_id("HW-a", 0, 60))
        .await
        .expect("reserve a")
        .into_inner();
    let lb = alice
        .reserve(by_id("HW-b", 0, 60))
        .await
        .expect("reserve b")
        .into_inner();
    node.tx
        .send(pb::NodeMessage {
            msg: Some(pb::node_message::Msg::Change(pb::DeviceChange {
                change: Some(pb::device_change::Change::Removed("a".into())),
            })),
        })
        .await
        .expect("send");
    let lease_state = |id: String| {
        let alice = alice.clone();
        async move { ended_lease(alice, id).await.map(|l| l.end_reason) }
    };
    let reason = eventually(Duration::from_secs(3), "device_lost", || {
        lease_state(la.lease_id.clone())
    })
    .await;
    assert_eq!(reason, pb::EndReason::DeviceLost as i32);
    let d = devices
        .get_device(pb::GetDeviceRequest { id: "HW-a".into() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(d.state, pb::DeviceState::Offline as i32);

    // The node falls silent (no heartbeats, stream still open): node_lost within the timeout.
    alive.abort();
    let reason = eventually(Duration::from_secs(4), "node_lost", || {
        lease_state(lb.lease_id.clone())
    })
    .await;
    assert_eq!(reason, pb::EndReason::NodeLost as i32);
    let _ = alice
        .list_reservations(pb::ListReservationsRequest::default())
        .await;
    drop(node);
}

#[tokio::test]
async fn a_selector_nothing_could_match_fails_at_once() {
    let (b, _node, _alive) = broker_with_devices(vec![device("a", "Pixel 7")]).await;
    let (_, mut alice) = clients(&b.url, &b.alice).await;
    let started = std::time::Instant::now();
    let err = alice
        .reserve(by_model("iPhone 15", 30))
        .await
        .expect_err("no such model");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("model=iPhone 15"),
        "{}",
        err.message()
    );
    assert!(started.elapsed() < Duration::from_secs(5), "did not wait");
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served() {
    let (b, _node, _alive) = broker_with_devices(vec![device("a", "Pixel 7")]).await;
    let (_, mut alice) = clients(&b.url, &b.alice).await;
    let first = alice
        .reserve(by_model("Pixel 7", 0))
        .await
        .expect("reserve")
        .into_inner();
    let mut waiters = Vec::new();
    for (i, token) in [b.bob.clone(), b.admin.clone()].into_iter().enumerate() {
        let (_, mut c) = clients(&b.url, &token).await;
        waiters.push(tokio::spawn(async move {
            c.reserve(by_model("Pixel 7", 20)).await
        }));
        // Queue order is arrival order: let each request reach the queue before the next.
        wait_for_queue(&b, i + 1).await;
    }
    alice
        .release(pb::ReleaseRequest {
            lease_id: first.lease_id,
        })
        .await
        .expect("release");
    let second = waiters
        .remove(0)
        .await
        .expect("task")
        .expect("bob first")
        .into_inner();
    assert_eq!(second.holder, "bob");
    assert!(!waiters[0].is_finished(), "admin must still wait");
    let (_, mut bob) = clients(&b.url, &b.bob).await;
    bob.release(pb::ReleaseRequest {
        lease_id: second.lease_id,
    })
    .await
    .expect("release");
    let third = waiters
        .remove(0)
        .await
        .expect("task")
        .expect("admin next")
        .into_inner();
    assert_eq!(third.holder, "admin");
}
