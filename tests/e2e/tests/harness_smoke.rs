//! Smoke tests of the e2e harness itself: its real peers (adb server, PostgreSQL, farm-sim) start, answer and stop.

use std::net::TcpStream;
use std::time::Duration;

use farm_e2e::{AdbServer, Postgres, Sim, eventually};

#[tokio::test]
async fn adb_server_answers_and_stops_on_drop() {
    let adb = AdbServer::start().await;
    let version = adb.version().expect("host:version");
    assert_eq!(
        version.len(),
        4,
        "host:version is 4 hex digits, got {version:?}"
    );
    assert!(
        u32::from_str_radix(&version, 16).is_ok_and(|v| v >= 0x20),
        "{version:?}"
    );
    assert_eq!(
        adb.devices().expect("host:devices"),
        "",
        "a fresh server has no devices"
    );

    // The server is ours alone: a second one gets a different port.
    let other = AdbServer::start().await;
    assert_ne!(adb.port(), other.port());

    let addr = adb.addr();
    drop(adb);
    eventually(Duration::from_secs(5), || async move {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(_) => Ok(()),
            Ok(_) => Err(format!("{addr} still accepts connections")),
        }
    })
    .await;
    assert!(
        other.version().is_ok(),
        "dropping one server leaves the other running"
    );
}

#[tokio::test]
async fn postgres_creates_databases_and_stops_on_drop() {
    let pg = Postgres::start().await;
    let url = pg.create_database("farm_a");
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/farm_a", pg.port())
    );
    pg.create_database("farm_b");

    pg.psql("farm_a", "create table t (x int)");
    pg.psql("farm_a", "insert into t values (41), (1)");
    assert_eq!(pg.psql("farm_a", "select sum(x) from t"), "42");
    assert_eq!(
        pg.psql(
            "farm_b",
            "select count(*) from pg_tables where tablename = 't'"
        ),
        "0",
        "databases are separate"
    );

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], pg.port()));
    drop(pg);
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "postgres still listens on {addr} after drop"
    );
}

#[tokio::test]
async fn postgres_is_reachable_with_sqlx() {
    // The broker reaches PostgreSQL through sqlx with exactly this URL form.
    use sqlx::Connection;
    let pg = Postgres::start().await;
    let url = pg.create_database("farm");
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("sqlx connects");
    let (one,): (i32,) = sqlx::query_as("select 1")
        .fetch_one(&mut conn)
        .await
        .expect("select 1");
    assert_eq!(one, 1);
    conn.close().await.expect("close");
}

/// The adb server's `serial\tstate` lines as pairs.
fn adb_devices(adb: &AdbServer) -> Vec<(String, String)> {
    adb.devices()
        .expect("host:devices")
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(serial, state)| (serial.to_owned(), state.to_owned()))
        .collect()
}

#[tokio::test]
async fn sim_devices_attach_to_their_own_adb_server_and_obey_the_control_api() {
    let adb = AdbServer::start().await;
    let sim = Sim::start(adb.port(), 2).await;
    assert_eq!(sim.devices.len(), 2);
    let mut expected: Vec<(String, String)> = sim
        .devices
        .iter()
        .map(|d| (d.adb_serial.clone(), "device".to_owned()))
        .collect();
    expected.sort();
    let mut listed = adb_devices(&adb);
    listed.sort();
    assert_eq!(
        listed, expected,
        "the ready line comes once every device is attached"
    );

    // A second farm on the same machine sees only its own devices.
    let other_adb = AdbServer::start().await;
    let other_sim = Sim::start(other_adb.port(), 1).await;
    let other_serial = other_sim.devices[0].adb_serial.clone();
    let own: Vec<String> = adb_devices(&other_adb)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(own, vec![other_serial.clone()]);
    assert!(
        !adb_devices(&adb).iter().any(|(s, _)| *s == other_serial),
        "devices must not leak between adb servers"
    );

    let first = sim.devices[0].clone();
    sim.unplug(&first.serial).await;
    eventually(Duration::from_secs(10), || async {
        let now = adb_devices(&adb);
        match now.iter().find(|(s, _)| *s == first.adb_serial) {
            None => Ok(()),
            Some((_, state)) if state == "offline" => Ok(()),
            Some(seen) => Err(format!("still listed: {seen:?}")),
        }
    })
    .await;
    sim.replug(&first.serial).await;
    eventually(Duration::from_secs(10), || async {
        let now = adb_devices(&adb);
        now.iter()
            .any(|(s, state)| *s == first.adb_serial && state == "device")
            .then_some(())
            .ok_or(format!("not back: {now:?}"))
    })
    .await;

    let input = sim.input(&first.serial).await;
    assert!(
        input.is_array() || input.is_object(),
        "input is JSON: {input}"
    );
}
