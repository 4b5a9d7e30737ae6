//! Runs the real farmctl binary against an in-test broker with canned answers: JSON shapes, messages, exit codes.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_proto::v1::device_service_server::{DeviceService, DeviceServiceServer};
use farm_proto::v1::reservation_service_server::{ReservationService, ReservationServiceServer};
use farm_proto::v1::{
    Device, DeviceEvent, DeviceState, EndReason, GetDeviceRequest, Lease, LeaseState,
    ListDevicesRequest, ListDevicesResponse, ListReservationsRequest, ListReservationsResponse,
    ReleaseRequest, RenewRequest, ReserveRequest, Selector, WatchDevicesRequest,
    reserve_request::Target,
};
use tonic::{Request, Response, Status};

const TOKEN: &str = "test-token";
const BUSY_MESSAGE: &str =
    "device busy-1 is reserved by alice until 2025-12-04T16:05:00Z; pass --wait to queue";

/// A broker that knows two devices and records what it was asked.
#[derive(Default)]
struct FakeBroker {
    list_requests: Mutex<Vec<ListDevicesRequest>>,
    reserve_requests: Mutex<Vec<ReserveRequest>>,
}

fn authorize<T>(request: &Request<T>) -> Result<(), Status> {
    let expected = format!("Bearer {TOKEN}");
    match request.metadata().get("authorization") {
        Some(value) if value.to_str().ok() == Some(expected.as_str()) => Ok(()),
        _ => Err(Status::unauthenticated("missing or unknown token")),
    }
}

fn device(id: &str, state: DeviceState) -> Device {
    let reserved = state == DeviceState::Reserved;
    Device {
        id: id.into(),
        serial: id.into(),
        state: state as i32,
        platform: "android".into(),
        model: "Pixel 7".into(),
        manufacturer: "Google".into(),
        android_version: "14".into(),
        sdk: 34,
        screen_width: 1080,
        screen_height: 2400,
        density: 420,
        battery_level: -1,
        site: "lab-1".into(),
        node_id: "node-a".into(),
        tags: vec!["usb3".into()],
        lease_id: reserved.then(|| "lease-0".into()),
        holder: reserved.then(|| "alice".into()),
        state_since: Some(farm_proto::timestamp_from_millis(1_764_864_000_000)),
    }
}

fn lease(device_id: &str) -> Lease {
    Lease {
        lease_id: "lease-1".into(),
        device_id: device_id.into(),
        holder: "ci".into(),
        created_at: Some(farm_proto::timestamp_from_millis(1_764_864_000_000)),
        expires_at: Some(farm_proto::timestamp_from_millis(1_764_864_300_000)),
        fencing_token: 3,
        state: LeaseState::Active as i32,
        end_reason: EndReason::Unspecified as i32,
        ended_at: None,
        ttl_seconds: 300,
    }
}

#[tonic::async_trait]
impl DeviceService for FakeBroker {
    async fn list_devices(
        &self,
        request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        authorize(&request)?;
        self.list_requests
            .lock()
            .expect("no test thread panicked holding the lock")
            .push(request.into_inner());
        Ok(Response::new(ListDevicesResponse {
            devices: vec![
                device("R58M1234ABC", DeviceState::Available),
                device("busy-1", DeviceState::Reserved),
            ],
        }))
    }

    async fn get_device(
        &self,
        request: Request<GetDeviceRequest>,
    ) -> Result<Response<Device>, Status> {
        authorize(&request)?;
        let id = request.into_inner().id;
        if id == "R58M1234ABC" {
            Ok(Response::new(device(&id, DeviceState::Available)))
        } else {
            Err(Status::not_found(format!(
                "no device {id}; `farmctl devices` lists the known ones"
            )))
        }
    }

    type WatchDevicesStream = tokio_stream::Empty<Result<DeviceEvent, Status>>;

    async fn watch_devices(
        &self,
        _request: Request<WatchDevicesRequest>,
    ) -> Result<Response<Self::WatchDevicesStream>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

#[tonic::async_trait]
impl ReservationService for FakeBroker {
    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<Lease>, Status> {
        authorize(&request)?;
        let request = request.into_inner();
        self.reserve_requests
            .lock()
            .expect("no test thread panicked holding the lock")
            .push(request.clone());
        match request.target {
            Some(Target::DeviceId(id)) if id == "busy-1" => {
                Err(Status::failed_precondition(BUSY_MESSAGE))
            }
            Some(Target::DeviceId(id)) => Ok(Response::new(lease(&id))),
            _ => Ok(Response::new(lease("R58M1234ABC"))),
        }
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<Lease>, Status> {
        authorize(&request)?;
        Err(Status::unimplemented("not in this fake"))
    }

    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<Lease>, Status> {
        authorize(&request)?;
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_reservations(
        &self,
        request: Request<ListReservationsRequest>,
    ) -> Result<Response<ListReservationsResponse>, Status> {
        authorize(&request)?;
        Ok(Response::new(ListReservationsResponse {
            leases: vec![lease("busy-1")],
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<farm_proto::v1::ListSessionsRequest>,
    ) -> Result<Response<farm_proto::v1::ListSessionsResponse>, Status> {
        authorize(&request)?;
        Ok(Response::new(
            farm_proto::v1::ListSessionsResponse::default(),
        ))
    }
}

/// Serves the fake on 127.0.0.1:0 for as long as the test's runtime lives.
async fn start_fake_broker() -> (String, Arc<FakeBroker>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr: SocketAddr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let broker = Arc::new(FakeBroker::default());
    let server = tonic::transport::Server::builder()
        .add_service(DeviceServiceServer::from_arc(broker.clone()))
        .add_service(ReservationServiceServer::from_arc(broker.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (format!("http://{addr}"), broker)
}

/// A URL where nothing listens: a port the OS just handed out and took back.
async fn dead_broker_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    drop(listener);
    format!("http://{addr}")
}

/// Runs farmctl with only the given flags: FARM_BROKER and FARM_TOKEN of the caller are removed.
async fn farmctl(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args(args)
        .env_remove("FARM_BROKER")
        .env_remove("FARM_TOKEN")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("farmctl finishes within 30 s")
        .expect("farmctl starts")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The error contract: exit code, nothing on stdout, one `farmctl: ` line on stderr.
fn assert_fails(output: &Output, code: i32) -> String {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "stdout: {:?}", output.stdout);
    assert!(stderr.starts_with("farmctl: "), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_json_is_an_array_with_the_documented_keys() {
    let (url, broker) = start_fake_broker().await;
    let output = farmctl(&[
        "--broker",
        &url,
        "--token",
        TOKEN,
        "--json",
        "devices",
        "--platform",
        "android",
        "--tag",
        "usb3",
        "--state",
        "available",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let devices: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    let devices = devices.as_array().expect("an array");
    assert_eq!(devices.len(), 2);
    let keys = [
        "id",
        "serial",
        "state",
        "platform",
        "model",
        "manufacturer",
        "android_version",
        "sdk",
        "screen_width",
        "screen_height",
        "density",
        "battery_level",
        "site",
        "node",
        "tags",
        "lease_id",
        "holder",
        "state_since",
    ];
    for device in devices {
        let object = device.as_object().expect("each device is an object");
        let mut found: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = keys.to_vec();
        found.sort_unstable();
        expected.sort_unstable();
        assert_eq!(found, expected);
    }
    assert_eq!(devices[0]["state"], "available");
    assert_eq!(devices[0]["node"], "node-a");
    assert!(devices[0]["battery_level"].is_null());
    assert_eq!(devices[1]["state"], "reserved");
    assert_eq!(devices[1]["holder"], "alice");
    assert_eq!(devices[1]["state_since"], "2025-12-04T16:00:00Z");

    let requests = broker.list_requests.lock().expect("lock").clone();
    let filter = requests[0].filter.clone().expect("a filter is always sent");
    assert_eq!(filter.platform, "android");
    assert_eq!(filter.tags, ["usb3"]);
    assert_eq!(filter.state, DeviceState::Available as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_table_has_a_header_and_one_row_per_device() {
    let (url, _broker) = start_fake_broker().await;
    // The token from the environment works like --token.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args(["devices"])
        .env("FARM_BROKER", &url)
        .env("FARM_TOKEN", TOKEN)
        .output()
        .await
        .expect("farmctl runs");
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "SERIAL", "STATE", "MODEL", "ANDROID", "SCREEN", "SITE", "NODE", "HOLDER"
        ]
    );
    assert!(lines[2].starts_with("busy-1 "), "{stdout}");
    assert!(lines[2].ends_with("alice"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_device_exits_3_with_the_brokers_message() {
    let (url, _broker) = start_fake_broker().await;
    let output = farmctl(&["--broker", &url, "--token", TOKEN, "device", "nope"]).await;
    let stderr = assert_fails(&output, 3);
    assert_eq!(
        stderr.trim_end(),
        "farmctl: no device nope; `farmctl devices` lists the known ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_exits_5_before_trying_to_connect() {
    // Nothing listens there: had farmctl tried to connect, it would exit 6.
    let url = dead_broker_url().await;
    let output = farmctl(&["--broker", &url, "devices"]).await;
    let stderr = assert_fails(&output, 5);
    assert!(stderr.contains("FARM_TOKEN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_exits_5_with_a_hint() {
    let (url, _broker) = start_fake_broker().await;
    let output = farmctl(&["--broker", &url, "--token", "wrong", "reservations"]).await;
    let stderr = assert_fails(&output, 5);
    assert!(stderr.contains("missing or unknown token"), "{stderr}");
    assert!(stderr.contains("set --token or FARM_TOKEN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_exits_6_and_names_the_url() {
    let url = dead_broker_url().await;
    let output = farmctl(&["--broker", &url, "--token", TOKEN, "devices"]).await;
    let stderr = assert_fails(&output, 6);
    assert!(
        stderr.contains(&format!("cannot reach the broker at {url}")),
        "{stderr}"
    );
    assert!(stderr.contains("FARM_BROKER"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_device_exits_4_with_the_brokers_message() {
    let (url, _broker) = start_fake_broker().await;
    let output = farmctl(&[
        "--broker", &url, "--token", TOKEN, "reserve", "--device", "busy-1",
    ])
    .await;
    let stderr = assert_fails(&output, 4);
    assert_eq!(stderr.trim_end(), format!("farmctl: {BUSY_MESSAGE}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_by_selector_prints_one_lease_object() {
    let (url, broker) = start_fake_broker().await;
    let output = farmctl(&[
        "--broker", &url, "--token", TOKEN, "--json", "reserve", "--model", "Pixel 7", "--tag",
        "usb3", "--ttl", "600",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let lease: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(
        lease,
        serde_json::json!({
            "lease_id": "lease-1",
            "device_id": "R58M1234ABC",
            "holder": "ci",
            "state": "active",
            "created_at": "2025-12-04T16:00:00Z",
            "expires_at": "2025-12-04T16:05:00Z",
            "ttl_seconds": 300,
            "fencing_token": 3,
            "end_reason": null,
            "ended_at": null,
        })
    );
    let requests = broker.reserve_requests.lock().expect("lock").clone();
    assert_eq!(
        requests[0].target,
        Some(Target::Selector(Selector {
            model: "Pixel 7".into(),
            tags: vec!["usb3".into()],
            ..Selector::default()
        }))
    );
    assert_eq!(requests[0].ttl_seconds, 600);

    let quiet = farmctl(&[
        "--broker", &url, "--token", TOKEN, "reserve", "-q", "--device", "d2",
    ])
    .await;
    assert_eq!(quiet.status.code(), Some(0), "stderr: {}", stderr(&quiet));
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), "lease-1\n");
}
