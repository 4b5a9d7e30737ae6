//! The grid's HTTP routes: `POST /session`, `/session/{id}/...` proxied to its slot, `GET /status`
//! (each also under the legacy `/wd/hub` prefix). No fallback: this router merges with tonic's.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::Value;

use super::caps::{parse_new_session, slot_request_body};
use super::streams::{Answer, Limits, Outgoing, forward};
use super::w3c::{W3cError, credentials};
use super::{Grid, Placement};
use crate::domain::{Caller, Role};
use crate::grpc::Api;

/// The largest new-session answer the grid reads (it must find the session id in it).
const MAX_NEW_SESSION_ANSWER: usize = 8 * 1024 * 1024;

pub fn routes(api: Api) -> Router {
    let mut router = Router::new();
    for prefix in ["", "/wd/hub"] {
        router = router
            .route(&format!("{prefix}/status"), get(status))
            .route(&format!("{prefix}/session"), post(new_session))
            .route(&format!("{prefix}/session/{{id}}"), any(session_root))
            .route(&format!("{prefix}/session/{{id}}/{{*rest}}"), any(command));
    }
    router.with_state(api)
}

async fn caller(api: &Api, headers: &HeaderMap) -> Result<Caller, W3cError> {
    let creds = credentials(headers)?;
    let caller = api
        .auth
        .require(Some(&creds.bearer), &[Role::User, Role::Admin])
        .await?;
    if !creds.user.is_empty() && creds.user != caller.name {
        return Err(W3cError::unauthorized(format!(
            "the user name in the URL ({:?}) is not this token's name; use http://{}:TOKEN@... (or leave the name empty)",
            creds.user, caller.name
        )));
    }
    Ok(caller)
}

fn limits(grid: &Grid) -> Limits {
    Limits {
        max_request_bytes: grid.config().max_request_bytes,
        response_timeout: grid.config().response_timeout,
    }
}

fn respond(answer: Answer) -> Response {
    let mut response = Response::new(answer.body);
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
}

/// The path as the slot sees it: without `/wd/hub`, with the query.
fn slot_path(req: &Request) -> String {
    let path = req.uri().path();
    let path = path.strip_prefix("/wd/hub").unwrap_or(path);
    match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

async fn status(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(e) = caller(&api, &headers).await {
        return e.into_response();
    }
    match api.grid.status().await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Gives the slot back unless the session was created (the client may vanish at any await).
struct PlacementGuard<'a> {
    grid: &'a Grid,
    alloc_id: u64,
    armed: bool,
}

impl Drop for PlacementGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.grid.abandon(self.alloc_id);
        }
    }
}

async fn new_session(State(api): State<Api>, req: Request) -> Response {
    match create(&api, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn create(api: &Api, req: Request) -> Result<Response, W3cError> {
    let grid = &api.grid;
    let caller = caller(api, req.headers()).await?;
    let cap = grid.config().max_new_session_bytes;
    let body = axum::body::to_bytes(req.into_body(), cap)
        .await
        .map_err(|e| {
            W3cError::too_large(format!(
                "the new-session body is over {cap} bytes or broke off ({e})"
            ))
        })?;
    let request = parse_new_session(&body)?;
    let placement: Placement = grid.place(caller.clone(), request).await?;
    let mut guard = PlacementGuard {
        grid,
        alloc_id: placement.alloc_id,
        armed: true,
    };
    let target = placement.target.clone();
    let payload = slot_request_body(&placement.matched).to_string();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    let outgoing = Outgoing {
        method: Method::POST,
        path: "/session".into(),
        headers,
        body: Body::from(payload),
    };
    let where_ = format!("slot {} on node {}", target.slot_id, target.node_id);
    let answer = forward(api.grid.router(), &target, outgoing, limits(grid), ())
        .await
        .map_err(|e| W3cError {
            message: format!("{where_} could not create the session: {}", e.message),
            ..e.while_creating()
        })?;
    let (status, headers) = (answer.status, answer.headers);
    let bytes = axum::body::to_bytes(answer.body, MAX_NEW_SESSION_ANSWER)
        .await
        .map_err(|e| {
            W3cError::session_not_created(format!("{where_} broke off its new-session answer: {e}"))
        })?;
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let garbage = || {
        let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        W3cError::bad_gateway(format!(
            "{where_} answered {status} with something that is not a W3C new-session response: {text:?}"
        ))
        .while_creating()
    };
    if !status.is_success() {
        // The slot's own W3C error (e.g. Appium's reason) goes to the client unchanged.
        if parsed.as_ref().is_some_and(|v| v.get("value").is_some()) {
            return Ok(rebuild(status, headers, bytes));
        }
        return Err(garbage());
    }
    let session_id = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/value/sessionId")
                .or_else(|| v.get("sessionId"))
                .and_then(Value::as_str)
        })
        .map(str::to_string)
        .ok_or_else(garbage)?;
    grid.started(placement.alloc_id, session_id.clone()).await?;
    guard.armed = false;
    Ok(rebuild(status, headers, bytes))
}

fn rebuild(status: StatusCode, headers: HeaderMap, bytes: axum::body::Bytes) -> Response {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

async fn session_root(State(api): State<Api>, Path(id): Path<String>, req: Request) -> Response {
    let delete = req.method() == Method::DELETE;
    match proxy(&api, &id, req).await {
        Ok(answer) => {
            if delete {
                // Whatever the slot said, the session is over for the grid.
                api.grid.deleted(&id).await;
            }
            respond(answer)
        }
        Err(e) => {
            if delete && e.error != "invalid session id" && e.status != StatusCode::FORBIDDEN {
                api.grid.deleted(&id).await;
            }
            e.into_response()
        }
    }
}

async fn command(
    State(api): State<Api>,
    Path((id, _rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    match proxy(&api, &id, req).await {
        Ok(answer) => respond(answer),
        Err(e) => e.into_response(),
    }
}

async fn proxy(api: &Api, session_id: &str, req: Request) -> Result<Answer, W3cError> {
    let caller = caller(api, req.headers()).await?;
    let (target, inflight) = api.grid.begin(session_id, &caller)?;
    let path = slot_path(&req);
    let (parts, body) = req.into_parts();
    let outgoing = Outgoing {
        method: parts.method,
        path,
        headers: parts.headers,
        body,
    };
    forward(
        api.grid.router(),
        &target,
        outgoing,
        limits(&api.grid),
        inflight,
    )
    .await
}
