//! Server reflection (what grpcurl uses) lists the farm's services, and only for a caller with a token.

mod common;

use common::*;
use refl::server_reflection_request::MessageRequest;
use refl::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1 as refl;

async fn list_services(url: &str, token: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    let ch = channel(url).await;
    let request = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let stream = tokio_stream::iter(vec![request]);
    let mut responses = match token {
        Some(t) => {
            refl::server_reflection_client::ServerReflectionClient::with_interceptor(ch, bearer(t))
                .server_reflection_info(stream)
                .await?
                .into_inner()
        }
        None => refl::server_reflection_client::ServerReflectionClient::new(ch)
            .server_reflection_info(stream)
            .await?
            .into_inner(),
    };
    let first = responses
        .message()
        .await?
        .ok_or_else(|| tonic::Status::internal("no answer"))?;
    match first.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => Err(tonic::Status::internal(format!("unexpected {other:?}"))),
    }
}

#[tokio::test]
async fn reflection_lists_the_farm_services_to_token_holders_only() {
    let b = start().await;
    let services = list_services(&b.url, Some(&b.alice))
        .await
        .expect("reflection");
    for s in [
        "farm.v1.DeviceService",
        "farm.v1.ReservationService",
        "farm.v1.NodeService",
    ] {
        assert!(
            services.iter().any(|x| x == s),
            "{s} missing from {services:?}"
        );
    }
    let e = list_services(&b.url, None).await.expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = list_services(&b.url, Some("farm_wrong"))
        .await
        .expect_err("bad token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}
