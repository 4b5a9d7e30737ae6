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

/// The gRPC routes: the three services and server reflection.
pub fn routes(api: Api) -> tonic::service::Routes {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(farm_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled-in descriptor set is valid");
    tonic::service::Routes::new(pb::device_service_server::DeviceServiceServer::new(
        api.clone(),
    ))
    .add_service(pb::reservation_service_server::ReservationServiceServer::new(api.clone()))
    .add_service(pb::node_service_server::NodeServiceServer::new(api))
    .add_service(reflection)
}
