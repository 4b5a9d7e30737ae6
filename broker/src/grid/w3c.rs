//! W3C WebDriver errors as HTTP responses, and Selenium-Grid-style credentials (basic or bearer).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::error::{Error, ErrorCode};

/// A W3C error: the `error` code string, an HTTP status, and a message that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct W3cError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
}

impl W3cError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> W3cError {
        W3cError {
            status,
            error,
            message: message.into(),
        }
    }

    pub fn session_not_created(message: impl Into<String>) -> W3cError {
        W3cError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "session not created",
            message,
        )
    }

    pub fn invalid_session_id(message: impl Into<String>) -> W3cError {
        W3cError::new(StatusCode::NOT_FOUND, "invalid session id", message)
    }

    pub fn invalid_argument(message: impl Into<String>) -> W3cError {
        W3cError::new(StatusCode::BAD_REQUEST, "invalid argument", message)
    }

    pub fn timeout(message: impl Into<String>) -> W3cError {
        W3cError::new(StatusCode::INTERNAL_SERVER_ERROR, "timeout", message)
    }

    pub fn unknown_error(message: impl Into<String>) -> W3cError {
        W3cError::new(StatusCode::INTERNAL_SERVER_ERROR, "unknown error", message)
    }

    pub fn unknown_command(message: impl Into<String>) -> W3cError {
        W3cError::new(StatusCode::NOT_FOUND, "unknown command", message)
    }

    /// Over the body cap: 413, so clients and proxies see what happened.
    pub fn too_large(message: impl Into<String>) -> W3cError {
        W3cError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid argument", message)
    }

    /// The slot or its node failed: 502, the grid's own failure as "unknown error".
    pub fn bad_gateway(message: impl Into<String>) -> W3cError {
        W3cError::new(StatusCode::BAD_GATEWAY, "unknown error", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> W3cError {
        W3cError::new(StatusCode::UNAUTHORIZED, "unknown error", message)
    }

    pub fn forbidden(message: impl Into<String>) -> W3cError {
        W3cError::new(StatusCode::FORBIDDEN, "unknown error", message)
    }

    /// The same error with "session not created" (for failures while creating a session).
    pub fn while_creating(self) -> W3cError {
        if self.status == StatusCode::BAD_REQUEST || self.status == StatusCode::PAYLOAD_TOO_LARGE {
            return self;
        }
        W3cError {
            error: "session not created",
            ..self
        }
    }
}

/// The broker's own errors (auth, fleet) in W3C terms.
impl From<Error> for W3cError {
    fn from(e: Error) -> W3cError {
        match e.code {
            ErrorCode::Unauthenticated => W3cError::unauthorized(e.message),
            ErrorCode::PermissionDenied => W3cError::forbidden(e.message),
            ErrorCode::InvalidArgument => W3cError::invalid_argument(e.message),
            ErrorCode::DeadlineExceeded => W3cError::timeout(e.message),
            _ => W3cError::unknown_error(e.message),
        }
    }
}

impl IntoResponse for W3cError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "value": { "error": self.error, "message": self.message, "stacktrace": "" }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"farm\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// Credentials as Selenium Grid clients send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `Bearer TOKEN`, ready for the authenticator.
    pub bearer: String,
    /// The user name from basic auth (empty for bearer): it must be the token's name.
    pub user: String,
}

/// Reads `Authorization: Basic base64(NAME:TOKEN)` (from `http://NAME:TOKEN@broker:4444`)
/// or `Authorization: Bearer TOKEN`.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, W3cError> {
    let missing = || {
        W3cError::unauthorized(
            "missing credentials: put the farm token in the URL (http://NAME:TOKEN@broker:4444) or send `Authorization: Bearer TOKEN`",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| W3cError::unauthorized("the authorization header is not ASCII"))?;
    if value.len() > 1024 {
        return Err(W3cError::unauthorized("authorization header too long"));
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials {
            bearer: format!("Bearer {}", rest.trim()),
            user: String::new(),
        });
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(W3cError::unauthorized(format!(
            "unsupported authorization scheme {scheme:?}: use basic (NAME:TOKEN in the URL) or Bearer"
        )));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| W3cError::unauthorized("basic credentials are not valid base64 UTF-8"))?;
    let (user, token) = decoded.split_once(':').unwrap_or(("", decoded.as_str()));
    if token.is_empty() {
        return Err(W3cError::unauthorized(
            "basic credentials carry no token: use http://NAME:TOKEN@broker:4444 with your farm token as the password",
        ));
    }
    Ok(Credentials {
        bearer: format!("Bearer {token}"),
        user: user.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("ascii"),
        );
        h
    }

    #[test]
    fn basic_and_bearer_credentials() {
        let basic = base64::engine::general_purpose::STANDARD.encode("ci:farm_abc");
        assert_eq!(
            credentials(&with(&format!("Basic {basic}"))),
            Ok(Credentials {
                bearer: "Bearer farm_abc".into(),
                user: "ci".into()
            })
        );
        assert_eq!(
            credentials(&with("Bearer t")).map(|c| c.bearer),
            Ok("Bearer t".into())
        );
        assert_eq!(
            credentials(&HeaderMap::new()).map_err(|e| e.status),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert!(credentials(&with("Basic !!!")).is_err());
        assert!(credentials(&with("Digest x")).is_err());
        let no_token = base64::engine::general_purpose::STANDARD.encode("ci:");
        assert!(credentials(&with(&format!("Basic {no_token}"))).is_err());
    }
}
