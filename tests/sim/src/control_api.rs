//! The HTTP JSON control interface tests use to inspect and manipulate simulated devices.
//!
//! `GET /devices`, `POST /devices/{serial}/unplug|replug|unauthorize|authorize`,
//! `GET /devices/{serial}/input`, `GET /devices/{serial}/commands`,
//! `GET /devices/{serial}/app` (the launcher app's state), `GET /devices/{serial}/app/layout`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::device::{DeviceHandle, DeviceInfo};
use crate::error::SimError;

type Devices = Arc<Vec<DeviceHandle>>;

/// The control routes over `devices`.
pub fn router(devices: Devices) -> Router {
    Router::new()
        .route("/devices", get(list_devices))
        .route("/devices/{serial}/unplug", post(unplug))
        .route("/devices/{serial}/replug", post(replug))
        .route("/devices/{serial}/unauthorize", post(unauthorize))
        .route("/devices/{serial}/authorize", post(authorize))
        .route("/devices/{serial}/input", get(input))
        .route("/devices/{serial}/commands", get(commands))
        .route("/devices/{serial}/app", get(app))
        .route("/devices/{serial}/app/layout", get(app_layout))
        .fallback(|| async {
            ApiError(SimError::UnknownDevice(String::new())).with_status(StatusCode::NOT_FOUND)
        })
        .with_state(devices)
}

/// A [`SimError`] as a JSON response `{"error": "..."}`.
struct ApiError(SimError);

impl ApiError {
    fn with_status(self, status: StatusCode) -> Response {
        let message = match &self.0 {
            SimError::UnknownDevice(serial) if serial.is_empty() => "no such route".to_string(),
            other => other.to_string(),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            SimError::UnknownDevice(_) => StatusCode::NOT_FOUND,
            SimError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            SimError::AdbServer { .. } | SimError::AdbProtocol { .. } => StatusCode::BAD_GATEWAY,
            SimError::Io { .. } | SimError::DeviceGone(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        self.with_status(status)
    }
}

impl From<SimError> for ApiError {
    fn from(error: SimError) -> Self {
        Self(error)
    }
}

fn find<'a>(devices: &'a Devices, serial: &str) -> Result<&'a DeviceHandle, ApiError> {
    devices
        .iter()
        .find(|device| device.serial() == serial)
        .ok_or_else(|| ApiError(SimError::UnknownDevice(serial.to_string())))
}

async fn list_devices(State(devices): State<Devices>) -> Result<Json<Vec<DeviceInfo>>, ApiError> {
    let mut infos = Vec::with_capacity(devices.len());
    for device in devices.iter() {
        infos.push(device.info().await?);
    }
    Ok(Json(infos))
}

async fn unplug(
    State(devices): State<Devices>,
    Path(serial): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    let device = find(&devices, &serial)?;
    device.unplug().await?;
    Ok(Json(device.info().await?))
}

async fn replug(
    State(devices): State<Devices>,
    Path(serial): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    let device = find(&devices, &serial)?;
    device.replug().await?;
    Ok(Json(device.info().await?))
}

async fn unauthorize(
    State(devices): State<Devices>,
    Path(serial): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    let device = find(&devices, &serial)?;
    device.unauthorize().await?;
    Ok(Json(device.info().await?))
}

async fn authorize(
    State(devices): State<Devices>,
    Path(serial): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    let device = find(&devices, &serial)?;
    device.authorize().await?;
    Ok(Json(device.info().await?))
}

async fn input(
    State(devices): State<Devices>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    let device = find(&devices, &serial)?;
    Ok(Json(device.input_events().await?).into_response())
}

async fn commands(
    State(devices): State<Devices>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    let device = find(&devices, &serial)?;
    Ok(Json(device.shell_commands().await?).into_response())
}

async fn app(
    State(devices): State<Devices>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    let device = find(&devices, &serial)?;
    Ok(Json(device.app().await?).into_response())
}

async fn app_layout(
    State(devices): State<Devices>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    let device = find(&devices, &serial)?;
    Ok(Json(device.app_layout().await?).into_response())
}
