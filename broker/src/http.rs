//! The HTTP side of the broker's port: `/healthz`, `/metrics`, a small JSON API and the web UI.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::domain::Role;
use crate::error::Error;
use crate::grpc::Api;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

/// The HTTP routes (without a fallback: the gRPC router adds one, see STACK.md pitfall 5).
pub fn routes(api: Api) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/devices", get(devices))
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
        .route(
            "/ui/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE_CSS) }),
        )
        .merge(protected)
        .with_state(api)
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
    req: Request,
    next: Next,
) -> Response {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match api.auth.require(header, &[Role::User, Role::Admin]).await {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
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
