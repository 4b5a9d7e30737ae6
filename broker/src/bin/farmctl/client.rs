//! The connection to the broker: one channel, the bearer token on every call, errors classified.

use std::time::Duration;

use farm_proto::v1::device_service_client::DeviceServiceClient;
use farm_proto::v1::reservation_service_client::ReservationServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::{CliError, deepest_cause};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Both client services of the broker, sharing one connection.
pub struct Broker {
    pub url: String,
    pub devices: DeviceServiceClient<InterceptedService<Channel, BearerToken>>,
    pub reservations: ReservationServiceClient<InterceptedService<Channel, BearerToken>>,
}

impl Broker {
    /// Checks the token and URL first (no network for a usage mistake), then connects.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Broker, CliError> {
        let token = BearerToken::new(token)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(CliError::InvalidBrokerUrl {
                url: url.to_string(),
                reason: "it must start with http:// or https://".to_string(),
            });
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|error| CliError::InvalidBrokerUrl {
                url: url.to_string(),
                reason: deepest_cause(&error),
            })?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| CliError::Unreachable {
                url: url.to_string(),
                cause: deepest_cause(&error),
            })?;
        Ok(Broker {
            url: url.to_string(),
            devices: DeviceServiceClient::with_interceptor(channel.clone(), token.clone()),
            reservations: ReservationServiceClient::with_interceptor(channel, token),
        })
    }

    /// The error for a failed call, with this broker's URL for the hints.
    pub fn error(&self, status: tonic::Status) -> CliError {
        CliError::from_status(&status, &self.url)
    }
}

/// Adds `authorization: Bearer TOKEN` to every request.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<BearerToken, CliError> {
        let token = token.map(str::trim).unwrap_or_default();
        if token.is_empty() {
            return Err(CliError::MissingToken);
        }
        // Tokens are printable ASCII; anything else is a copy-paste accident.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CliError::InvalidToken);
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| CliError::InvalidToken)?;
        value.set_sensitive(true);
        Ok(BearerToken(value))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn the_token_goes_into_the_authorization_header() {
        let mut token = BearerToken::new(Some(" s3cret\n")).expect("a valid token");
        let request = token
            .call(tonic::Request::new(()))
            .expect("the interceptor never refuses");
        let header = request.metadata().get("authorization").expect("header set");
        assert_eq!(header.to_str().ok(), Some("Bearer s3cret"));
    }

    #[test]
    fn no_token_or_an_unusable_one_fails_before_any_connection() {
        assert!(matches!(
            BearerToken::new(None),
            Err(CliError::MissingToken)
        ));
        assert!(matches!(
            BearerToken::new(Some("  ")),
            Err(CliError::MissingToken)
        ));
        assert!(matches!(
            BearerToken::new(Some("tok\u{e9}n")),
            Err(CliError::InvalidToken)
        ));
    }

    #[tokio::test]
    async fn a_bad_url_is_a_usage_error() {
        let error = Broker::connect("http://bad host", Some("t"))
            .await
            .err()
            .expect("invalid URL");
        assert_eq!(error.exit_code(), 2, "{error}");
        let error = Broker::connect("127.0.0.1:4444", Some("t"))
            .await
            .err()
            .expect("no scheme");
        assert_eq!(error.exit_code(), 2, "{error}");
    }
}
