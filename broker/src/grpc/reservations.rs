//! ReservationService: reserve, renew, release and list leases.

use std::time::{Duration, Instant};

use farm_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::convert::{check_required, check_string, lease_to_pb, selector, session_to_pb};
use super::{Api, CLIENT_ROLES};
use crate::domain::Target;
use crate::error::Error;
use crate::store::LeaseQuery;

fn ttl(seconds: u32) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)))
}

#[tonic::async_trait]
impl pb::reservation_service_server::ReservationService for Api {
    async fn reserve(
        &self,
        req: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req, CLIENT_ROLES).await?;
        let req = req.into_inner();
        let target = match req.target {
            Some(pb::reserve_request::Target::DeviceId(id)) => {
                check_required("device_id", &id)?;
                Target::Device(id)
            }
            Some(pb::reserve_request::Target::Selector(s)) => Target::Selector(selector(s)?),
            None => {
                return Err(Error::invalid_argument(
                    "say what to reserve: a device_id, or a selector (an empty selector means any device)",
                )
                .into());
            }
        };
        let wait = Duration::from_secs(u64::from(req.wait_seconds));
        let result = self
            .fleet
            .reserve(caller, target, wait, ttl(req.ttl_seconds))
            .await;
        if result.is_ok() && wait.is_zero() {
            self.metrics
                .reservation_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(Response::new(lease_to_pb(&result?)))
    }

    async fn renew(&self, req: Request<pb::RenewRequest>) -> Result<Response<pb::Lease>, Status> {
        let caller = self.caller(&req, CLIENT_ROLES).await?;
        let req = req.into_inner();
        check_required("lease_id", &req.lease_id)?;
        let lease = self
            .fleet
            .renew(caller, req.lease_id, ttl(req.ttl_seconds))
            .await?;
        Ok(Response::new(lease_to_pb(&lease)))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        let caller = self.caller(&req, CLIENT_ROLES).await?;
        let req = req.into_inner();
        check_required("lease_id", &req.lease_id)?;
        let lease = self.fleet.release(caller, req.lease_id).await?;
        Ok(Response::new(lease_to_pb(&lease)))
    }

    async fn list_reservations(
        &self,
        req: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ListReservationsResponse>, Status> {
        self.caller(&req, CLIENT_ROLES).await?;
        let req = req.into_inner();
        check_string("device_id", &req.device_id)?;
        check_string("holder", &req.holder)?;
        let query = LeaseQuery {
            include_ended: req.include_ended,
            device_id: Some(req.device_id).filter(|s| !s.is_empty()),
            holder: Some(req.holder).filter(|s| !s.is_empty()),
            limit: req.limit.min(10_000),
        };
        let leases = self.store.list_leases(&query).await?;
        Ok(Response::new(pb::ListReservationsResponse {
            leases: leases.iter().map(lease_to_pb).collect(),
        }))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.caller(&req, CLIENT_ROLES).await?;
        let req = req.into_inner();
        if !matches!(req.kind.as_str(), "" | "live" | "webdriver") {
            return Err(Error::invalid_argument(format!(
                "unknown session kind {:?}: use live or webdriver (or leave it empty)",
                req.kind
            ))
            .into());
        }
        check_string("holder", &req.holder)?;
        let limit = if req.limit == 0 { 100 } else { req.limit };
        let sessions = self
            .store
            .query_sessions(&req.kind, &req.holder, limit)
            .await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.iter().map(session_to_pb).collect(),
        }))
    }
}
