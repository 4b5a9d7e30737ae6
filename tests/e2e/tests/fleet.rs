//! The foundation end to end: real adb server, simulated devices, broker and node processes on loopback.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use farm_e2e::{AdbServer, Broker, BrokerOpts, Node, Role, Sim, connect, eventually};
use farm_proto::v1 as pb;
use pb::reserve_request::Target;

type Devices = pb::device_service_client::DeviceServiceClient<farm_e2e::AuthChannel>;
type Reservations = pb::reservation_service_client::ReservationServiceClient<farm_e2e::AuthChannel>;

/// A whole farm: adb server, simulator, broker, one node at site "lab".
struct Farm {
    adb: AdbServer,
    sim: Sim,
    broker: Broker,
    node: Node,
    admin: String,
    devices: Devices,
    reservations: Reservations,
}

impl Farm {
    async fn start(n: usize, opts: BrokerOpts) -> Farm {
        let adb = AdbServer::start().await;
        let sim = Sim::start(adb.port(), n).await;
        let broker = Broker::start(opts).await;
        let node_token = broker.token(Role::Node, "node-1");
        let admin = broker.token(Role::Admin, "admin");
        let node = Node::start(&broker.url(), &node_token, "lab", "node-1", adb.port()).await;
        let (devices, reservations) = connect(&broker.url(), &admin).await;
        let farm = Farm {
            adb,
            sim,
            broker,
            node,
            admin,
            devices,
            reservations,
        };
        farm.wait_for_states(n, pb::DeviceState::Available, Duration::from_secs(10))
            .await;
        farm
    }

    async fn list(&self) -> Result<Vec<pb::Device>, tonic::Status> {
        Ok(self
            .devices
            .clone()
            .list_devices(pb::ListDevicesRequest::default())
            .await?
            .into_inner()
            .devices)
    }

    /// Waits until exactly `n` devices are listed, all in `state`.
    async fn wait_for_states(
        &self,
        n: usize,
        state: pb::DeviceState,
        timeout: Duration,
    ) -> Vec<pb::Device> {
        eventually(timeout, || async {
            let list = self.list().await.map_err(|e| e.to_string())?;
            let states: Vec<i32> = list.iter().map(|d| d.state).collect();
            if list.len() == n && states.iter().all(|s| *s == state as i32) {
                Ok(list)
            } else {
                Err(format!("states {states:?}"))
            }
        })
        .await
    }

    async fn device(&self, id: &str) -> Result<pb::Device, tonic::Status> {
        Ok(self
            .devices
            .clone()
            .get_device(pb::GetDeviceRequest { id: id.into() })
            .await?
            .into_inner())
    }

    async fn reserve(
        &self,
        token: &str,
        id: &str,
        wait: u32,
        ttl: u32,
    ) -> Result<pb::Lease, tonic::Status> {
        let (_, mut r) = connect(&self.broker.url(), token).await;
        Ok(r.reserve(pb::ReserveRequest {
            target: Some(Target::DeviceId(id.into())),
            wait_seconds: wait,
            ttl_seconds: ttl,
        })
        .await?
        .into_inner())
    }

    async fn lease(&self, id: &str) -> Option<pb::Lease> {
        self.reservations
            .clone()
            .list_reservations(pb::ListReservationsRequest {
                include_ended: true,
                limit: 1000,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .leases
            .into_iter()
            .find(|l| l.lease_id == id)
    }

    async fn metric(&self, name: &str) -> Option<String> {
        let body = reqwest::Client::new()
            .get(format!("{}/metrics", self.broker.url()))
            .bearer_auth(&self.admin)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .map(str::to_string)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_lists_exactly_the_attached_devices_with_their_properties() {
    let adb = AdbServer::start().await;
    let sim = Sim::start(adb.port(), 3).await;
    let broker = Broker::start(BrokerOpts::default()).await;
    let node_token = broker.token(Role::Node, "node-1");
    let admin = broker.token(Role::Admin, "admin");
    let started = Instant::now();
    let _node = Node::start(&broker.url(), &node_token, "lab", "node-1", adb.port()).await;
    let (devices, _) = connect(&broker.url(), &admin).await;
    let listed = eventually(Duration::from_secs(5), || {
        let mut devices = devices.clone();
        async move {
            let list = devices
                .list_devices(pb::ListDevicesRequest::default())
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .devices;
            let complete = list.len() == 3
                && list
                    .iter()
                    .all(|d| !d.model.is_empty() && d.screen_width > 0);
            if complete {
                Ok(list)
            } else {
                Err(format!("{list:?}"))
            }
        }
    })
    .await;
    eprintln!(
        "3 devices listed {:?} after the node started",
        started.elapsed()
    );
    let by_id: HashMap<&str, &pb::Device> = listed.iter().map(|d| (d.id.as_str(), d)).collect();
    for expected in &sim.devices {
        let d = by_id
            .get(expected.serial.as_str())
            .unwrap_or_else(|| panic!("{} missing from {listed:?}", expected.serial));
        assert_eq!(d.model, expected.model, "model of {}", d.id);
        assert_eq!(
            d.android_version, expected.android_version,
            "android version of {}",
            d.id
        );
        assert_eq!(
            (d.screen_width, d.screen_height),
            (expected.screen_width, expected.screen_height),
            "screen of {}",
            d.id
        );
        assert_eq!(d.serial, expected.adb_serial);
        assert_eq!((d.site.as_str(), d.node_id.as_str()), ("lab", "node-1"));
        assert_eq!(d.state, pb::DeviceState::Available as i32);
        assert_eq!(d.platform, "android");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugging_ends_the_lease_with_device_lost_and_replugging_brings_the_device_back() {
    let farm = Farm::start(2, BrokerOpts::default()).await;
    let serial = farm.sim.devices[0].serial.clone();
    let lease = farm
        .reserve(&farm.admin, &serial, 0, 300)
        .await
        .expect("reserve");
    let unplugged = Instant::now();
    farm.sim.unplug(&serial).await;
    eventually(Duration::from_secs(2), || async {
        let d = farm.device(&serial).await.map_err(|e| e.to_string())?;
        (d.state == pb::DeviceState::Offline as i32)
            .then_some(())
            .ok_or(format!("state {}", d.state))
    })
    .await;
    eprintln!("offline {:?} after unplug", unplugged.elapsed());
    let ended = eventually(Duration::from_secs(2), || async {
        farm.lease(&lease.lease_id)
            .await
            .filter(|l| l.state == pb::LeaseState::Ended as i32)
    })
    .await;
    assert_eq!(ended.end_reason, pb::EndReason::DeviceLost as i32);
    // The other device is untouched.
    let other = farm
        .device(&farm.sim.devices[1].serial)
        .await
        .expect("other");
    assert_eq!(other.state, pb::DeviceState::Available as i32);

    farm.sim.replug(&serial).await;
    eventually(Duration::from_secs(10), || async {
        let d = farm.device(&serial).await.ok()?;
        (d.state == pb::DeviceState::Available as i32).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_device_is_reported_as_such() {
    let farm = Farm::start(1, BrokerOpts::default()).await;
    let serial = farm.sim.devices[0].serial.clone();
    farm.sim.unauthorize(&serial).await;
    eventually(Duration::from_secs(5), || async {
        let list = farm.list().await.ok()?;
        list.iter()
            .any(|d| {
                d.state == pb::DeviceState::Unauthorized as i32
                    && d.model == farm.sim.devices[0].model
            })
            .then_some(())
    })
    .await;
    farm.sim.authorize(&serial).await;
    farm.wait_for_states(1, pb::DeviceState::Available, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_takes_its_devices_offline_and_a_restarted_one_brings_them_back() {
    let mut farm = Farm::start(2, BrokerOpts::default()).await;
    let lease = farm
        .reserve(&farm.admin, &farm.sim.devices[0].serial, 0, 300)
        .await
        .expect("reserve");
    let killed = Instant::now();
    farm.node.kill();
    farm.wait_for_states(2, pb::DeviceState::Offline, Duration::from_secs(3))
        .await;
    eprintln!("offline {:?} after SIGKILL of the node", killed.elapsed());
    let ended = farm.lease(&lease.lease_id).await.expect("lease");
    assert_eq!(ended.end_reason, pb::EndReason::NodeLost as i32);
    farm.node.restart().await;
    farm.wait_for_states(2, pb::DeviceState::Available, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_restores_every_lease_and_the_node_reconnects_by_itself() {
    let mut farm = Farm::start(3, BrokerOpts::default()).await;
    let user = farm.broker.token(Role::User, "alice");
    let mut before = Vec::new();
    for d in farm.sim.devices.iter().take(2) {
        before.push(
            farm.reserve(&user, &d.serial, 0, 600)
                .await
                .expect("reserve"),
        );
    }
    farm.broker.kill();
    farm.broker.restart().await;
    let restarted = Instant::now();
    eventually(Duration::from_secs(5), || async {
        (farm.metric("farm_nodes_connected").await.as_deref() == Some("1")).then_some(())
    })
    .await;
    eprintln!(
        "node reconnected {:?} after the broker restarted",
        restarted.elapsed()
    );
    let after: Vec<pb::Lease> = eventually(Duration::from_secs(5), || async {
        let (_, mut r) = connect(&farm.broker.url(), &user).await;
        r.list_reservations(pb::ListReservationsRequest::default())
            .await
            .map(|r| r.into_inner().leases)
            .map_err(|e| e.to_string())
    })
    .await;
    let mut after = after;
    after.sort_by(|a, b| {
        a.created_at
            .as_ref()
            .map(|t| (t.seconds, t.nanos))
            .cmp(&b.created_at.as_ref().map(|t| (t.seconds, t.nanos)))
    });
    assert_eq!(after.len(), 2, "{after:?}");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.lease_id, b.lease_id);
        assert_eq!(a.device_id, b.device_id);
        assert_eq!(a.expires_at, b.expires_at, "same expiry");
        assert_eq!(a.fencing_token, b.fencing_token);
        assert_eq!(a.state, pb::LeaseState::Active as i32);
    }
    // The devices are live again and the held ones still held.
    eventually(Duration::from_secs(5), || async {
        let list = farm.list().await.ok()?;
        let reserved = list
            .iter()
            .filter(|d| d.state == pb::DeviceState::Reserved as i32)
            .count();
        let available = list
            .iter()
            .filter(|d| d.state == pb::DeviceState::Available as i32)
            .count();
        (reserved == 2 && available == 1).then_some(())
    })
    .await;
    // A held device stays refused after the restart.
    let e = farm
        .reserve(&farm.admin, &before[0].device_id, 0, 60)
        .await
        .expect_err("still held");
    assert!(e.message().contains("held by alice"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_clients_never_hold_one_device_twice() {
    let farm = Farm::start(5, BrokerOpts::default()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut clients = Vec::new();
    for i in 0..50 {
        let token = farm.broker.token(Role::User, &format!("racer-{i}"));
        let url = farm.broker.url();
        clients.push(tokio::spawn(async move {
            let (_, mut r) = connect(&url, &token).await;
            let mut won = 0u32;
            while Instant::now() < deadline {
                let got = r
                    .reserve(pb::ReserveRequest {
                        target: Some(Target::Selector(pb::Selector {
                            site: "lab".into(),
                            ..Default::default()
                        })),
                        wait_seconds: 1,
                        ttl_seconds: 30,
                    })
                    .await;
                if let Ok(lease) = got {
                    won += 1;
                    let lease = lease.into_inner();
                    r.release(pb::ReleaseRequest {
                        lease_id: lease.lease_id,
                    })
                    .await
                    .expect("release my own lease");
                }
            }
            won
        }));
    }
    let mut total = 0;
    for c in clients {
        total += c.await.expect("client");
    }
    assert!(total > 50, "the clients got {total} leases in 10 s");
    // The lease history, straight from the database: per device, no two leases overlap.
    let db = format!(
        "sqlite://{}",
        farm.broker.data_dir().join("farm.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db)
        .await
        .expect("open the broker's database");
    let rows: Vec<(String, i64, Option<i64>, String)> =
        sqlx::query_as("SELECT device_id, created_at, ended_at, state FROM leases ORDER BY device_id, created_at, ended_at")
            .fetch_all(&pool)
            .await
            .expect("leases");
    assert_eq!(rows.len() as u32, total);
    let mut last: HashMap<String, i64> = HashMap::new();
    for (device, created, ended, state) in rows {
        assert_eq!(state, "ended", "every racer released its lease");
        let ended = ended.expect("ended leases have an end");
        if let Some(prev_end) = last.get(&device) {
            assert!(
                created >= *prev_end,
                "{device}: a lease began at {created} before the previous ended at {prev_end}"
            );
        }
        last.insert(device, ended);
    }
    eprintln!("{total} leases in 10 s by 50 racers over 5 devices, none overlapping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn farmctl_reserves_waits_and_reports_expiry() {
    let farm = Farm::start(1, BrokerOpts::default()).await;
    let alice = farm.broker.token(Role::User, "alice");
    let bob = farm.broker.token(Role::User, "bob");
    let serial = farm.sim.devices[0].serial.clone();
    let farmctl = |token: &str, args: &[&str]| {
        let out = std::process::Command::new(farm_e2e::bin("farmctl"))
            .env("FARM_BROKER", farm.broker.url())
            .env("FARM_TOKEN", token)
            .args(args)
            .output()
            .expect("run farmctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = farmctl(&alice, &["--json", "devices"]);
    assert_eq!(code, Some(0), "{err}");
    let devices: serde_json::Value = serde_json::from_str(&out).expect("json");
    let d = &devices[0];
    for key in [
        "id",
        "serial",
        "state",
        "model",
        "android_version",
        "site",
        "node",
    ] {
        assert!(d.get(key).is_some(), "device JSON lacks {key}: {d}");
    }
    assert_eq!(d["state"], "available");
    let (code, out, err) = farmctl(
        &alice,
        &["--json", "reserve", "--device", &serial, "--ttl", "60"],
    );
    assert_eq!(code, Some(0), "{err}");
    let lease: serde_json::Value = serde_json::from_str(&out).expect("json");
    for key in ["lease_id", "device_id", "holder", "expires_at"] {
        assert!(lease.get(key).is_some(), "lease JSON lacks {key}: {lease}");
    }
    assert_eq!(lease["holder"], "alice");
    let lease_id = lease["lease_id"].as_str().expect("lease id").to_string();

    let (code, _, err) = farmctl(&bob, &["reserve", "--device", &serial]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("held by alice until"), "{err}");

    // bob waits; alice releases; bob gets it.
    let bob_wait = {
        let url = farm.broker.url();
        let bob = bob.clone();
        let serial = serial.clone();
        std::thread::spawn(move || {
            std::process::Command::new(farm_e2e::bin("farmctl"))
                .env("FARM_BROKER", url)
                .env("FARM_TOKEN", bob)
                .args([
                    "--json", "reserve", "--device", &serial, "--wait", "20", "--ttl", "1",
                ])
                .output()
                .expect("run farmctl")
        })
    };
    eventually(Duration::from_secs(5), || async {
        (farm.metric("farm_reservations_waiting").await.as_deref() == Some("1")).then_some(())
    })
    .await;
    let (code, _, err) = farmctl(&alice, &["release", &lease_id]);
    assert_eq!(code, Some(0), "{err}");
    let out = bob_wait.join().expect("bob's farmctl");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bobs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(bobs["holder"], "bob");
    // bob's 1 s lease expires on its own.
    let bob_lease = bobs["lease_id"].as_str().expect("id").to_string();
    let ended = eventually(Duration::from_secs(5), || async {
        let (_, out, _) = farmctl(&bob, &["--json", "reservations", "--all"]);
        let all: serde_json::Value = serde_json::from_str(&out).ok()?;
        all.as_array()?
            .iter()
            .find(|l| l["lease_id"] == bob_lease.as_str() && l["state"] == "ended")
            .cloned()
    })
    .await;
    assert_eq!(ended["end_reason"], "expired");
    let (code, _, err) = farmctl(&alice, &["release", "lease_nope"]);
    assert_eq!(code, Some(3), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_runs_on_postgresql_too() {
    let pg = farm_e2e::Postgres::start().await;
    let url = pg.create_database("farm");
    let mut farm = Farm::start(
        2,
        BrokerOpts {
            database_url: Some(url),
            ..Default::default()
        },
    )
    .await;
    let lease = farm
        .reserve(&farm.admin, &farm.sim.devices[0].serial, 0, 600)
        .await
        .expect("reserve");
    farm.broker.kill();
    farm.broker.restart().await;
    let restored = eventually(Duration::from_secs(5), || async {
        farm.lease(&lease.lease_id).await
    })
    .await;
    assert_eq!(restored.expires_at, lease.expires_at);
    assert_eq!(restored.state, pb::LeaseState::Active as i32);
    drop(farm.adb.version());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_an_adb_server_or_with_a_bad_token_keeps_running_and_says_why() {
    let broker = Broker::start(BrokerOpts::default()).await;
    let node_token = broker.token(Role::Node, "node-1");
    let admin = broker.token(Role::Admin, "admin");
    let dead_adb_port = farm_e2e::free_port();
    let mut lonely = Node::start(&broker.url(), &node_token, "lab", "lonely", dead_adb_port).await;
    let mut wrong = Node::start(&broker.url(), "farm_wrong", "lab", "wrong", dead_adb_port).await;
    let metrics = || async {
        reqwest::Client::new()
            .get(format!("{}/metrics", broker.url()))
            .bearer_auth(&admin)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    eventually(Duration::from_secs(5), || async {
        metrics()
            .await
            .filter(|m| m.lines().any(|l| l == "farm_nodes_connected 1"))
    })
    .await;
    eventually(Duration::from_secs(5), || async {
        let log = std::fs::read_to_string(lonely.log_path()?).ok()?;
        log.contains("adb server not reachable").then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), || async {
        let log = std::fs::read_to_string(wrong.log_path()?).ok()?;
        log.contains("unknown token").then_some(())
    })
    .await;
    assert!(
        lonely.is_running() && wrong.is_running(),
        "nodes keep running"
    );
}
