//! `farmctl sessions`: the request from its flags, and its table and `--json` output (pure).

use farm_proto::v1::{ListSessionsRequest, SessionInfo};
use serde::Serialize;

use crate::cli::SessionsArgs;
use crate::output::{rfc3339, rfc3339_seconds};
use crate::table::render;

const SESSION_COLUMNS: [&str; 8] = [
    "SESSION", "KIND", "DEVICE", "HOLDER", "MODE", "STARTED", "ENDED", "REASON",
];

pub fn request(args: &SessionsArgs) -> ListSessionsRequest {
    ListSessionsRequest {
        kind: args.kind.clone().unwrap_or_default(),
        holder: args.holder.clone().unwrap_or_default(),
        limit: args.limit.unwrap_or(0),
    }
}

/// A session in `--json` output. The keys are a contract with scripts: add, never rename.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionJson {
    pub session_id: String,
    /// live | webdriver
    pub kind: String,
    pub device_id: String,
    pub holder: String,
    pub mode: String,
    /// The capabilities a WebDriver client asked for; null for live sessions.
    pub capabilities: Option<serde_json::Value>,
    pub lease_id: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// null while running.
    pub end_reason: Option<String>,
}

impl From<&SessionInfo> for SessionJson {
    fn from(s: &SessionInfo) -> Self {
        SessionJson {
            session_id: s.session_id.clone(),
            kind: s.kind.clone(),
            device_id: s.device_id.clone(),
            holder: s.holder.clone(),
            mode: s.mode.clone(),
            capabilities: serde_json::from_str(&s.capabilities_json).ok(),
            lease_id: Some(s.lease_id.clone()).filter(|l| !l.is_empty()),
            started_at: s.started_at.as_ref().and_then(rfc3339),
            ended_at: s.ended_at.as_ref().and_then(rfc3339),
            end_reason: Some(s.end_reason.clone()).filter(|r| !r.is_empty()),
        }
    }
}

pub fn sessions_json(sessions: &[SessionInfo]) -> String {
    let list: Vec<SessionJson> = sessions.iter().map(SessionJson::from).collect();
    let mut text = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".to_string());
    text.push('\n');
    text
}

pub fn sessions_table(sessions: &[SessionInfo]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.session_id.clone(),
                s.kind.clone(),
                s.device_id.clone(),
                s.holder.clone(),
                s.mode.clone(),
                s.started_at
                    .as_ref()
                    .and_then(rfc3339_seconds)
                    .unwrap_or_default(),
                s.ended_at
                    .as_ref()
                    .and_then(rfc3339_seconds)
                    .unwrap_or_else(|| "running".to_string()),
                s.end_reason.clone(),
            ]
        })
        .collect();
    render(&SESSION_COLUMNS, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_session_shows_running_and_no_reason() {
        let s = SessionInfo {
            session_id: "abc".into(),
            kind: "webdriver".into(),
            device_id: "HW-1".into(),
            holder: "ci".into(),
            mode: "appium".into(),
            capabilities_json: r#"{"platformName":"Android"}"#.into(),
            ..Default::default()
        };
        let table = sessions_table(std::slice::from_ref(&s));
        assert!(table.contains("running"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&sessions_json(&[s])).expect("valid json");
        assert_eq!(json[0]["capabilities"]["platformName"], "Android");
        assert!(json[0]["end_reason"].is_null());
    }
}
