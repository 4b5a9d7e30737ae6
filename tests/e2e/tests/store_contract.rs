//! The storage contract: one suite of store behaviours, run against SQLite and against a real PostgreSQL.

use farm_broker::domain::{Device, EndReason, LeaseState, Presence, Role};
use farm_broker::error::ErrorCode;
use farm_broker::store::{HistoryEntry, LeaseQuery, NewLease, Store};
use farm_e2e::Postgres;

/// A store on a fresh database of the backend, plus what keeps that database alive.
struct Backend {
    store: Store,
    url: String,
    _keep: Box<dyn std::any::Any>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = Store::sqlite_url(dir.path());
    let store = Store::open(&url).await.expect("open sqlite");
    Backend {
        store,
        url,
        _keep: Box::new(dir),
    }
}

async fn postgres() -> Backend {
    let pg = Postgres::start().await;
    let url = pg.create_database("farm");
    let store = Store::open(&url).await.expect("open postgres");
    Backend {
        store,
        url,
        _keep: Box::new(pg),
    }
}

fn device(id: &str, presence: Presence, at: i64) -> Device {
    Device {
        id: id.into(),
        serial: format!("emulator-{id}"),
        node_id: "n1".into(),
        site: "lab".into(),
        platform: "android".into(),
        model: "Pixel 7".into(),
        manufacturer: "Google".into(),
        android_version: "14".into(),
        sdk: 34,
        screen_width: 1080,
        screen_height: 2400,
        density: 420,
        battery_level: 77,
        tags: vec!["fast".into(), "lab-a".into()],
        presence,
        state_since: at,
    }
}

fn new_lease(id: &str, device: &str, holder: &str, at: i64) -> NewLease {
    NewLease {
        id: id.into(),
        device_id: device.into(),
        holder: holder.into(),
        created_at: at,
        ttl_ms: 60_000,
    }
}

async fn tokens_are_unique_by_name_and_found_by_hash(b: Backend) {
    let s = &b.store;
    s.insert_token("alice", Role::User, "hash-a", 1)
        .await
        .expect("insert");
    let dup = s
        .insert_token("alice", Role::Admin, "hash-b", 2)
        .await
        .expect_err("duplicate name");
    assert_eq!(dup.code, ErrorCode::AlreadyExists);
    let caller = s
        .token_by_hash("hash-a")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!((caller.name.as_str(), caller.role), ("alice", Role::User));
    assert!(s.token_by_hash("hash-b").await.expect("lookup").is_none());
}

async fn devices_round_trip_with_their_history(b: Backend) {
    let s = &b.store;
    let d = device("d1", Presence::Online, 10);
    let h = HistoryEntry {
        device_id: "d1".into(),
        presence: Presence::Online,
        at: 10,
        node_id: "n1".into(),
    };
    s.save_devices(std::slice::from_ref(&d), std::slice::from_ref(&h))
        .await
        .expect("save");
    assert_eq!(s.load_devices().await.expect("load"), vec![d.clone()]);
    let offline = Device {
        presence: Presence::Offline,
        state_since: 20,
        ..d.clone()
    };
    let h2 = HistoryEntry {
        presence: Presence::Offline,
        at: 20,
        ..h.clone()
    };
    s.save_devices(std::slice::from_ref(&offline), std::slice::from_ref(&h2))
        .await
        .expect("update");
    assert_eq!(s.load_devices().await.expect("load"), vec![offline]);
    assert_eq!(s.device_history("d1").await.expect("history"), vec![h, h2]);
}

async fn one_active_lease_per_device_with_growing_fencing_tokens(b: Backend) {
    let s = &b.store;
    s.save_devices(
        &[
            device("d1", Presence::Online, 1),
            device("d2", Presence::Online, 1),
        ],
        &[],
    )
    .await
    .expect("save");
    let first = s
        .create_lease(&new_lease("l1", "d1", "alice", 100))
        .await
        .expect("first lease");
    assert_eq!(first.fencing_token, 1);
    assert_eq!(first.expires_at, 60_100);
    // The database itself refuses a second active lease, whatever the caller believed.
    let second = s
        .create_lease(&new_lease("l2", "d1", "bob", 101))
        .await
        .expect_err("double booking");
    assert_eq!(second.code, ErrorCode::FailedPrecondition);
    assert!(
        s.get_lease("l2").await.expect("get").is_none(),
        "nothing was written"
    );
    let other = s
        .create_lease(&new_lease("l3", "d2", "bob", 102))
        .await
        .expect("other device");
    assert_eq!(other.fencing_token, 1, "fencing tokens are per device");
    let unknown = s
        .create_lease(&new_lease("l4", "nope", "bob", 103))
        .await
        .expect_err("unknown device");
    assert_eq!(unknown.code, ErrorCode::NotFound);

    let ended = s
        .end_leases(&["l1".into()], EndReason::Released, 200)
        .await
        .expect("end");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, LeaseState::Ended);
    assert_eq!(ended[0].end_reason, Some(EndReason::Released));
    assert_eq!(ended[0].ended_at, Some(200));
    assert!(
        s.end_leases(&["l1".into()], EndReason::Expired, 300)
            .await
            .expect("again")
            .is_empty(),
        "an ended lease keeps its first reason"
    );
    let again = s
        .create_lease(&new_lease("l5", "d1", "bob", 300))
        .await
        .expect("after release");
    assert_eq!(again.fencing_token, 2);
}

async fn renew_touches_only_active_leases(b: Backend) {
    let s = &b.store;
    s.save_devices(&[device("d1", Presence::Online, 1)], &[])
        .await
        .expect("save");
    s.create_lease(&new_lease("l1", "d1", "alice", 100))
        .await
        .expect("lease");
    let renewed = s
        .renew_lease("l1", 500_000, 400_000)
        .await
        .expect("renew")
        .expect("active");
    assert_eq!((renewed.expires_at, renewed.ttl_ms), (500_000, 400_000));
    assert_eq!(
        s.get_lease("l1").await.expect("get").map(|l| l.expires_at),
        Some(500_000)
    );
    s.end_leases(&["l1".into()], EndReason::Expired, 600_000)
        .await
        .expect("end");
    assert!(
        s.renew_lease("l1", 900_000, 1)
            .await
            .expect("renew")
            .is_none()
    );
    assert!(
        s.renew_lease("nope", 900_000, 1)
            .await
            .expect("renew")
            .is_none()
    );
}

async fn listing_filters_and_orders_leases(b: Backend) {
    let s = &b.store;
    s.save_devices(
        &[
            device("d1", Presence::Online, 1),
            device("d2", Presence::Online, 1),
        ],
        &[],
    )
    .await
    .expect("save");
    s.create_lease(&new_lease("l1", "d1", "alice", 100))
        .await
        .expect("lease");
    s.end_leases(&["l1".into()], EndReason::DeviceLost, 150)
        .await
        .expect("end");
    s.create_lease(&new_lease("l2", "d1", "bob", 200))
        .await
        .expect("lease");
    s.create_lease(&new_lease("l3", "d2", "alice", 300))
        .await
        .expect("lease");
    let ids = |v: Vec<farm_broker::domain::Lease>| v.into_iter().map(|l| l.id).collect::<Vec<_>>();
    let active = s.list_leases(&LeaseQuery::default()).await.expect("list");
    assert_eq!(ids(active), vec!["l3", "l2"]);
    let all = s
        .list_leases(&LeaseQuery {
            include_ended: true,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(ids(all.clone()), vec!["l3", "l2", "l1"]);
    assert_eq!(all[2].end_reason, Some(EndReason::DeviceLost));
    let alices = s
        .list_leases(&LeaseQuery {
            include_ended: true,
            holder: Some("alice".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(ids(alices), vec!["l3", "l1"]);
    let on_d1 = s
        .list_leases(&LeaseQuery {
            include_ended: true,
            device_id: Some("d1".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(ids(on_d1), vec!["l2"]);
    assert_eq!(ids(s.load_active_leases().await.expect("active")).len(), 2);
}

async fn racing_writers_never_double_book(b: Backend) {
    b.store
        .save_devices(&[device("d1", Presence::Online, 1)], &[])
        .await
        .expect("save");
    // Separate connections race for one device, bypassing the broker's own serialization.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let url = b.url.clone();
        tasks.push(tokio::spawn(async move {
            let store = Store::open(&url).await.expect("open");
            store
                .create_lease(&new_lease(&format!("race{i}"), "d1", "x", 1000 + i))
                .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => won += 1,
            Err(e) => assert!(
                matches!(
                    e.code,
                    ErrorCode::FailedPrecondition | ErrorCode::Unavailable
                ),
                "unexpected error {e:?}"
            ),
        }
    }
    assert_eq!(won, 1, "exactly one racer gets the device");
    assert_eq!(b.store.load_active_leases().await.expect("active").len(), 1);
}

async fn reopening_keeps_everything(b: Backend) {
    b.store
        .save_devices(&[device("d1", Presence::Online, 1)], &[])
        .await
        .expect("save");
    b.store
        .create_lease(&new_lease("l1", "d1", "alice", 100))
        .await
        .expect("lease");
    b.store.close().await;
    let again = Store::open(&b.url)
        .await
        .expect("reopen runs migrations again harmlessly");
    let active = again.load_active_leases().await.expect("active");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].expires_at, 60_100);
}

macro_rules! contract {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::$backend().await).await;
                }
            )*
        }
    };
}

macro_rules! contract_for_every_backend {
    ($($case:ident),* $(,)?) => {
        contract!(sqlite: $($case),*);
        contract!(postgres: $($case),*);
    };
}

contract_for_every_backend!(
    tokens_are_unique_by_name_and_found_by_hash,
    devices_round_trip_with_their_history,
    one_active_lease_per_device_with_growing_fencing_tokens,
    renew_touches_only_active_leases,
    listing_filters_and_orders_leases,
    racing_writers_never_double_book,
    reopening_keeps_everything,
);
