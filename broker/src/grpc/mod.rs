//! The gRPC API (farm.v1): device, reservation and node services over the fleet, plus reflection.

pub mod convert;
mod devices;
mod nodes;
mod reservations;

use std::sync::Arc;

use farm_proto::v1 as pb;

use crate::auth::Authenticator;
use crate::domain::{Caller, Role};
use crate::error::Result;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::store::Store;

/// What every service needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Api {
    pub fleet: Fleet,
    pub auth: Authenticator,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub live: crate::live::LiveHub,
    /// The WebDriver grid (`/session`, `/status`).
    pub grid: crate::grid::Grid,
    /// Whether non-holders may watch live screens (admins always may).
    pub allow_observers: bool,
}

impl Api {
    async fn caller<T>(&self, req: &tonic::Request<T>, roles: &[Role]) -> Result<Caller> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.auth.require(header, roles).await
    }
}

/// Clients (people and scripts).
const CLIENT_ROLES: &[Role] = &[Role::User, Role::Admin];

/// The gRPC routes: the three services (each checks its caller's token) and
/// server reflection (behind a token check of its own, like every endpoint).
pub fn routes(api: Api) -> axum::Router {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(farm_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled-in descriptor set is valid");
    // A plain route (no fallback, so it merges with tonic's router; STACK.md pitfall 5).
    let reflection = axum::Router::new()
        .route_service(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            reflection,
        )
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            require_token,
        ));
    tonic::service::Routes::new(pb::device_service_server::DeviceServiceServer::new(
        api.clone(),
    ))
    .add_service(pb::reservation_service_server::ReservationServiceServer::new(api.clone()))
    .add_service(pb::node_service_server::NodeServiceServer::new(api))
    .into_axum_router()
    .merge(reflection)
}

/// Refuses a gRPC call without a valid token, answering in gRPC terms.
async fn require_token(
    axum::extract::State(api): axum::extract::State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match api
        .auth
        .require(header, &[Role::User, Role::Admin, Role::Node])
        .await
    {
        Ok(_) => next.run(req).await,
        Err(e) => tonic::Status::from(e).into_http::<axum::body::Body>(),
    }
}
