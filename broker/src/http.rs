//! The HTTP side of the broker's port: `/healthz`, `/metrics`, a small JSON API and the web UI.

use axum::Router;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::domain::{Caller, Lease, Role, Target, format_millis};
use crate::error::Error;
use crate::grpc::Api;
use crate::grpc::convert::check_required;

const INDEX_HTML: &str = include_str!("../../web/index.html");

/// The UI's static files, compiled in: (name, content type, content).
const UI_FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript",
        include_str!("../../web/app.js"),
    ),
    (
        "live.js",
        "text/javascript",
        include_str!("../../web/live.js"),
    ),
    ("style.css", "text/css", include_str!("../../web/style.css")),
];

/// The HTTP routes (without a fallback: the gRPC router adds one, see STACK.md pitfall 5).
pub fn routes(api: Api) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/me", get(me))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{id}/reserve", post(reserve))
        .route("/api/v1/leases", get(leases))
        .route("/api/v1/leases/{id}/renew", post(renew))
        .route("/api/v1/leases/{id}/release", post(release))
        .route("/api/v1/sessions", get(sessions))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        // Authenticates inside: a browser's WebSocket cannot send headers, and a
        // refusal is more useful as a message than as a failed handshake.
        .route(
            "/api/v1/devices/{id}/live",
            get(crate::live::ws::live_socket),
        )
        // The UI itself is public; it asks for a token and sends it with every API call.
        .route("/", get(index))
        .route("/device/{id}", get(index))
        .route("/ui/{file}", get(ui_file))
        .merge(protected)
        .with_state(api)
}

async fn ui_file(Path(file): Path<String>) -> Result<Response, Error> {
    let (_, content_type, content) = UI_FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| Error::not_found(format!("no UI file {file:?}")))?;
    Ok(([(header::CONTENT_TYPE, *content_type)], *content).into_response())
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn require_token(
    State(api): State<Api>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match api.auth.require(header, &[Role::User, Role::Admin]).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn me(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    axum::Json(json!({
        "name": caller.name,
        "role": caller.role.as_str(),
        "allow_observers": api.allow_observers || caller.role == Role::Admin,
    }))
    .into_response()
}

fn lease_json(l: &Lease) -> serde_json::Value {
    json!({
        "lease_id": l.id, "device_id": l.device_id, "holder": l.holder,
        "created_at": format_millis(l.created_at), "expires_at": format_millis(l.expires_at),
        "ttl_seconds": l.ttl_ms / 1000, "fencing_token": l.fencing_token,
        "state": l.state.as_str(), "end_reason": l.end_reason.map(|r| r.as_str()),
        "ended_at": l.ended_at.map(format_millis),
    })
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    ttl_seconds: Option<u32>,
    wait_seconds: Option<u32>,
}

async fn reserve(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Option<axum::Json<ReserveBody>>,
) -> Result<Response, Error> {
    check_required("device id", &id)?;
    let body = body.map(|b| b.0).unwrap_or_default();
    let ttl = body
        .ttl_seconds
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(u64::from(t)));
    let wait = Duration::from_secs(u64::from(body.wait_seconds.unwrap_or(0)));
    let lease = api
        .fleet
        .reserve(caller, Target::Device(id), wait, ttl)
        .await?;
    Ok(axum::Json(lease_json(&lease)).into_response())
}

async fn renew(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    check_required("lease id", &id)?;
    let lease = api.fleet.renew(caller, id, None).await?;
    Ok(axum::Json(lease_json(&lease)).into_response())
}

async fn release(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    check_required("lease id", &id)?;
    let lease = api.fleet.release(caller, id).await?;
    Ok(axum::Json(lease_json(&lease)).into_response())
}

async fn leases(State(api): State<Api>) -> Result<Response, Error> {
    let leases = api.store.load_active_leases().await?;
    Ok(axum::Json(leases.iter().map(lease_json).collect::<Vec<_>>()).into_response())
}

async fn sessions(State(api): State<Api>) -> Result<Response, Error> {
    let list = api.store.list_sessions(200).await?;
    let out: Vec<_> = list
        .iter()
        .map(|s| {
            json!({
                "id": s.id, "kind": s.kind.as_str(), "device_id": s.device_id, "user": s.holder,
                "mode": s.mode, "capabilities": serde_json::from_str::<serde_json::Value>(&s.capabilities).ok(),
                "lease_id": s.lease_id, "started_at": format_millis(s.started_at),
                "ended_at": s.ended_at.map(format_millis), "end_reason": s.end_reason,
            })
        })
        .collect();
    Ok(axum::Json(out).into_response())
}

async fn metrics(State(api): State<Api>) -> Result<Response, Error> {
    let stats = api.fleet.stats().await?;
    let body = api.metrics.render(&stats);
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

async fn devices(State(api): State<Api>) -> Result<Response, Error> {
    let views = api.fleet.devices().await?;
    let list: Vec<_> = views
        .iter()
        .map(|v| {
            let d = &v.device;
            json!({
                "id": d.id, "serial": d.serial, "state": v.state().as_str(), "model": d.model,
                "manufacturer": d.manufacturer, "android_version": d.android_version,
                "screen_width": d.screen_width, "screen_height": d.screen_height,
                "battery_level": d.battery_level, "site": d.site, "node": d.node_id,
                "holder": v.lease.as_ref().map(|l| l.holder.clone()),
                "expires_at": v.lease.as_ref().map(|l| crate::domain::format_millis(l.expires_at)),
            })
        })
        .collect();
    Ok(axum::Json(list).into_response())
}
