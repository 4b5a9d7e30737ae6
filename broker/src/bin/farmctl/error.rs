//! farmctl's errors: one line for stderr each, with a hint where one helps, and the documented exit codes.

use std::error::Error as _;

use tonic::Code;

/// Everything that can make farmctl fail after its flags parsed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "no token: set --token or FARM_TOKEN (an admin creates one with `farm-broker token create --role user --name NAME`)"
    )]
    MissingToken,

    #[error("the token must be printable ASCII without spaces; check --token or FARM_TOKEN")]
    InvalidToken,

    #[error(
        "invalid broker URL {url:?}: {reason}; set --broker or FARM_BROKER (e.g. http://127.0.0.1:4444)"
    )]
    InvalidBrokerUrl { url: String, reason: String },

    #[error(
        "cannot reach the broker at {url}: {cause}; is it running? set --broker or FARM_BROKER"
    )]
    Unreachable { url: String, cause: String },

    /// The broker (or the channel to it) answered a call with an error status.
    #[error("{}", status_line(*.code, message, url))]
    Status {
        code: Code,
        message: String,
        url: String,
    },
}

impl CliError {
    /// Classifies a failed call. A status with a source error was made on this side by the
    /// transport (connection refused or reset), not sent by the broker.
    pub fn from_status(status: &tonic::Status, url: &str) -> Self {
        if status.code() == Code::Unavailable && status.source().is_some() {
            return CliError::Unreachable {
                url: url.to_string(),
                cause: deepest_cause(status),
            };
        }
        CliError::Status {
            code: status.code(),
            message: one_line(status.message()),
            url: url.to_string(),
        }
    }

    /// The process exit code, as documented in `farmctl --help`.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::MissingToken | CliError::InvalidToken => 5,
            CliError::InvalidBrokerUrl { .. } => 2,
            CliError::Unreachable { .. } => 6,
            CliError::Status { code, .. } => exit_code_for(*code),
        }
    }
}

/// The exit code for a gRPC status code.
pub fn exit_code_for(code: Code) -> u8 {
    match code {
        Code::Ok => 0,
        // The broker checked the arguments and refused them: a usage error, like clap's.
        Code::InvalidArgument | Code::OutOfRange => 2,
        Code::NotFound => 3,
        // DEADLINE_EXCEEDED is what Reserve answers when --wait ran out with nothing free.
        Code::FailedPrecondition
        | Code::Aborted
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::DeadlineExceeded => 4,
        Code::Unauthenticated | Code::PermissionDenied => 5,
        Code::Unavailable => 6,
        _ => 1,
    }
}

/// The message of a connection error: the innermost cause says the most
/// ("Connection refused (os error 111)"), the outer ones only "transport error".
pub fn deepest_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = error;
    while let Some(source) = deepest.source() {
        deepest = source;
    }
    one_line(&deepest.to_string())
}

fn status_line(code: Code, message: &str, url: &str) -> String {
    let message = if message.is_empty() {
        format!("the broker answered {code:?} with no message")
    } else {
        message.to_string()
    };
    match code {
        Code::Unauthenticated => format!("{message} (set --token or FARM_TOKEN)"),
        Code::Unavailable => format!("{message} (broker at {url})"),
        Code::Unimplemented => {
            format!("{message} (is {url} a farm broker, as new as farmctl?)")
        }
        _ => message,
    }
}

/// Keeps the promise of one line on stderr, whatever the peer put in a message.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_control())
        .filter(|part| !part.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_the_documented_exit_codes() {
        let cases = [
            (Code::NotFound, 3),
            (Code::FailedPrecondition, 4),
            (Code::Aborted, 4),
            (Code::AlreadyExists, 4),
            (Code::ResourceExhausted, 4),
            (Code::DeadlineExceeded, 4),
            (Code::Unauthenticated, 5),
            (Code::PermissionDenied, 5),
            (Code::Unavailable, 6),
            (Code::InvalidArgument, 2),
            (Code::Internal, 1),
            (Code::Unknown, 1),
            (Code::Unimplemented, 1),
        ];
        for (code, exit) in cases {
            assert_eq!(exit_code_for(code), exit, "{code:?}");
        }
    }

    #[test]
    fn the_brokers_message_is_passed_through_on_one_line() {
        let status = tonic::Status::failed_precondition(
            "device d1 is reserved by ci\nuntil 12:00; pass --wait to queue",
        );
        let error = CliError::from_status(&status, "http://b:4444");
        assert_eq!(
            error.to_string(),
            "device d1 is reserved by ci until 12:00; pass --wait to queue"
        );
        assert_eq!(error.exit_code(), 4);
    }

    #[test]
    fn unauthenticated_adds_a_hint_about_the_token() {
        let error = CliError::from_status(&tonic::Status::unauthenticated("invalid token"), "u");
        assert_eq!(
            error.to_string(),
            "invalid token (set --token or FARM_TOKEN)"
        );
        assert_eq!(error.exit_code(), 5);
    }

    #[test]
    fn an_empty_message_still_says_something() {
        let error = CliError::from_status(&tonic::Status::new(Code::Internal, ""), "u");
        assert_eq!(
            error.to_string(),
            "the broker answered Internal with no message"
        );
        assert_eq!(error.exit_code(), 1);
    }

    #[test]
    fn a_missing_token_exits_5_and_says_how_to_fix_it() {
        assert_eq!(CliError::MissingToken.exit_code(), 5);
        assert!(CliError::MissingToken.to_string().contains("FARM_TOKEN"));
    }

    #[test]
    fn a_transport_failure_reports_its_innermost_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let outer = Outer(std::io::Error::other("Connection refused (os error 111)"));
        let unreachable = CliError::Unreachable {
            url: "http://b:1".into(),
            cause: deepest_cause(&outer),
        };
        assert_eq!(
            unreachable.to_string(),
            "cannot reach the broker at http://b:1: Connection refused (os error 111); \
             is it running? set --broker or FARM_BROKER"
        );
        assert_eq!(unreachable.exit_code(), 6);
    }

    #[test]
    fn unavailable_sent_by_the_broker_keeps_its_message() {
        let status = tonic::Status::unavailable("database is down; retry in a minute");
        let error = CliError::from_status(&status, "http://b:1");
        assert_eq!(
            error.to_string(),
            "database is down; retry in a minute (broker at http://b:1)"
        );
        assert_eq!(error.exit_code(), 6);
    }
}
