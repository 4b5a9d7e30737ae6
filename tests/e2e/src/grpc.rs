//! gRPC clients for tests: a lazily connecting channel that sends `authorization: Bearer TOKEN` on every call.

use farm_proto::v1::device_service_client::DeviceServiceClient;
use farm_proto::v1::reservation_service_client::ReservationServiceClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// A channel to the broker that authenticates every request.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// Adds `authorization: Bearer TOKEN` to each request.
#[derive(Debug, Clone)]
pub struct BearerToken(AsciiMetadataValue);

impl BearerToken {
    /// # Panics
    /// When the token has characters not allowed in an HTTP header.
    pub fn new(token: &str) -> BearerToken {
        let value = format!("Bearer {token}")
            .parse()
            .unwrap_or_else(|e| panic!("token {token:?} is not a valid header value: {e}"));
        BearerToken(value)
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel to `url` (e.g. `http://127.0.0.1:4444`) carrying `token`; build any
/// client on it, e.g. `NodeServiceClient::new(channel(url, token))`.
///
/// The channel connects lazily and reconnects by itself, so it survives
/// [`crate::Broker::restart`]: calls fail with `UNAVAILABLE` while the broker is
/// down (wrap them in [`crate::eventually`]) and succeed again once it is back.
///
/// # Panics
/// When `url` is not a valid URI. Must be called inside a tokio runtime.
pub fn channel(url: &str, token: &str) -> AuthChannel {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .unwrap_or_else(|e| panic!("bad broker URL {url:?}: {e}"))
        .connect_timeout(std::time::Duration::from_secs(5));
    InterceptedService::new(endpoint.connect_lazy(), BearerToken::new(token))
}

/// The client-facing services on one authenticated channel (see [`channel`]).
pub async fn connect(
    url: &str,
    token: &str,
) -> (
    DeviceServiceClient<AuthChannel>,
    ReservationServiceClient<AuthChannel>,
) {
    let channel = channel(url, token);
    (
        DeviceServiceClient::new(channel.clone()),
        ReservationServiceClient::new(channel),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn bearer_token_is_added_to_requests() {
        let mut interceptor = BearerToken::new("fa_secret");
        let request = interceptor
            .call(Request::new(()))
            .expect("interceptor accepts");
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().ok()),
            Some(Some("Bearer fa_secret"))
        );
    }

    #[test]
    #[should_panic(expected = "not a valid header value")]
    fn tokens_with_newlines_are_rejected() {
        BearerToken::new("a\nb");
    }
}
