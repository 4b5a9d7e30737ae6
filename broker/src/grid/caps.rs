//! W3C new-session capabilities: parsing, `alwaysMatch`/`firstMatch` merging and validation (pure).
//!
//! The merged sets come out in `firstMatch` order; the matcher (`matching.rs`)
//! tries them in that order, as a W3C remote end does.

use std::time::Duration;

use serde_json::{Map, Value};

use super::versions::VersionSpec;
use super::w3c::W3cError;

/// One capability set: a JSON object.
pub type Caps = Map<String, Value>;

/// The longest `farm:queueTimeout` a client may ask for, in seconds.
pub const MAX_QUEUE_TIMEOUT_SECS: f64 = 3600.0;

/// A valid new-session request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSessionRequest {
    /// `alwaysMatch` merged with each `firstMatch` entry, in order (at least one).
    pub sets: Vec<Caps>,
    /// `farm:queueTimeout`, when the client set one.
    pub queue_timeout: Option<Duration>,
    /// What the client sent as `capabilities` (for the session record).
    pub requested: Value,
}

/// Capability keys whose value must be a string when present.
const STRING_KEYS: &[&str] = &[
    "platformName",
    "browserName",
    "browserVersion",
    "appium:automationName",
    "appium:platformVersion",
    "appium:deviceName",
    "appium:udid",
    "farm:site",
    "farm:pool",
];

fn invalid(message: impl Into<String>) -> W3cError {
    W3cError::invalid_argument(message)
}

/// Parses a `POST /session` body.
pub fn parse_new_session(body: &[u8]) -> Result<NewSessionRequest, W3cError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "the new-session body is not JSON ({e}); send {{\"capabilities\": {{\"alwaysMatch\": {{...}}}}}}"
        ))
    })?;
    let Some(root) = root.as_object() else {
        return Err(invalid("the new-session body must be a JSON object"));
    };
    let Some(capabilities) = root.get("capabilities") else {
        let legacy = if root.contains_key("desiredCapabilities") {
            " (this grid speaks W3C only: move desiredCapabilities into capabilities.alwaysMatch)"
        } else {
            ""
        };
        return Err(invalid(format!(
            "the new-session body has no \"capabilities\" object{legacy}"
        )));
    };
    let Some(caps) = capabilities.as_object() else {
        return Err(invalid("\"capabilities\" must be a JSON object"));
    };
    let always = match caps.get("alwaysMatch") {
        None | Some(Value::Null) => Caps::new(),
        Some(Value::Object(m)) => validate_set(m, "alwaysMatch")?,
        Some(_) => return Err(invalid("capabilities.alwaysMatch must be a JSON object")),
    };
    let first: Vec<Caps> = match caps.get("firstMatch") {
        None | Some(Value::Null) => vec![Caps::new()],
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(invalid(
                "capabilities.firstMatch must hold at least one object (or be left out)",
            ));
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(m) => validate_set(m, &format!("firstMatch[{i}]")),
                _ => Err(invalid(format!(
                    "capabilities.firstMatch[{i}] must be a JSON object"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("capabilities.firstMatch must be a JSON array")),
    };
    let mut sets = Vec::with_capacity(first.len());
    for (i, entry) in first.into_iter().enumerate() {
        let mut merged = always.clone();
        for (k, v) in entry {
            if merged.contains_key(&k) {
                return Err(invalid(format!(
                    "capability {k:?} is in both alwaysMatch and firstMatch[{i}]; W3C allows it in one only"
                )));
            }
            merged.insert(k, v);
        }
        sets.push(merged);
    }
    let queue_timeout = sets
        .iter()
        .find_map(|s| s.get("farm:queueTimeout"))
        .map(queue_timeout)
        .transpose()?;
    for set in &mut sets {
        for v in set.values_mut() {
            redact_credentials(v);
        }
    }
    let mut requested = capabilities.clone();
    redact_credentials(&mut requested);
    Ok(NewSessionRequest {
        sets,
        queue_timeout,
        requested,
    })
}

/// Hides `user:password@` in URL-like strings (Selenium sends its own `se:remoteUrl`, with the
/// farm token in it when the token is in the grid URL): neither slots nor session records see it.
pub fn redact_credentials(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Some(scheme_end) = s.find("://") {
                let rest = &s[scheme_end + 3..];
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                if let Some(at) = rest[..authority_end].rfind('@') {
                    *s = format!("{}://***@{}", &s[..scheme_end], &rest[at + 1..]);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_credentials),
        Value::Object(m) => m.values_mut().for_each(redact_credentials),
        _ => {}
    }
}

fn queue_timeout(v: &Value) -> Result<Duration, W3cError> {
    match v.as_f64() {
        Some(secs) if (0.0..=MAX_QUEUE_TIMEOUT_SECS).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(invalid(format!(
            "farm:queueTimeout must be a number of seconds from 0 to {MAX_QUEUE_TIMEOUT_SECS}, not {v}"
        ))),
    }
}

/// Drops null values (W3C: "unset") and checks the types of the keys the grid reads.
fn validate_set(set: &Caps, name: &str) -> Result<Caps, W3cError> {
    let mut out = Caps::new();
    for (k, v) in set {
        if v.is_null() {
            continue;
        }
        if STRING_KEYS.contains(&k.as_str()) && !v.is_string() {
            return Err(invalid(format!(
                "capability {k:?} in {name} must be a string, not {v}"
            )));
        }
        if k == "farm:tags" {
            let ok = match v {
                Value::String(_) => true,
                Value::Array(items) => items.iter().all(Value::is_string),
                _ => false,
            };
            if !ok {
                return Err(invalid(format!(
                    "capability \"farm:tags\" in {name} must be a string or an array of strings"
                )));
            }
        }
        if let (true, Some(spec)) = (
            k == "appium:platformVersion" || k == "browserVersion",
            v.as_str(),
        ) {
            VersionSpec::parse(spec).map_err(|e| invalid(format!("{k} {spec:?}: {e}")))?;
        }
        if k == "farm:queueTimeout" {
            queue_timeout(v)?;
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// The body sent to the slot: the matched set as `alwaysMatch`, without the grid's own `farm:` keys.
pub fn slot_request_body(matched: &Caps) -> Value {
    let always: Caps = matched
        .iter()
        .filter(|(k, _)| !k.starts_with("farm:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::json!({ "capabilities": { "alwaysMatch": always, "firstMatch": [{}] } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NewSessionRequest, W3cError> {
        parse_new_session(s.as_bytes())
    }

    #[test]
    fn always_match_merges_into_every_first_match() {
        let r = parse(
            r#"{"capabilities":{"alwaysMatch":{"platformName":"Android"},
                "firstMatch":[{"appium:udid":"a"},{"appium:udid":"b"}]}}"#,
        )
        .expect("valid");
        assert_eq!(r.sets.len(), 2);
        assert_eq!(r.sets[1]["platformName"], "Android");
        assert_eq!(r.sets[1]["appium:udid"], "b");
    }

    #[test]
    fn bad_requests_say_why() {
        for (body, why) in [
            ("{", "not JSON"),
            ("[]", "JSON object"),
            (r#"{"desiredCapabilities":{}}"#, "W3C only"),
            (r#"{"capabilities":[]}"#, "must be a JSON object"),
            (r#"{"capabilities":{"firstMatch":[]}}"#, "at least one"),
            (
                r#"{"capabilities":{"alwaysMatch":{"a":1},"firstMatch":[{"a":2}]}}"#,
                "both alwaysMatch",
            ),
            (
                r#"{"capabilities":{"alwaysMatch":{"platformName":3}}}"#,
                "must be a string",
            ),
            (
                r#"{"capabilities":{"alwaysMatch":{"farm:queueTimeout":-1}}}"#,
                "farm:queueTimeout",
            ),
            (
                r#"{"capabilities":{"alwaysMatch":{"appium:platformVersion":">=x"}}}"#,
                "platformVersion",
            ),
            (
                r#"{"capabilities":{"alwaysMatch":{"farm:tags":[1]}}}"#,
                "farm:tags",
            ),
        ] {
            let err = parse(body).expect_err(body);
            assert_eq!(err.error, "invalid argument", "{body}");
            assert!(err.message.contains(why), "{body}: {}", err.message);
        }
    }

    #[test]
    fn nulls_are_unset_and_queue_timeout_is_read() {
        let r = parse(
            r#"{"capabilities":{"alwaysMatch":{"browserName":null,"farm:queueTimeout":2.5}}}"#,
        )
        .expect("valid");
        assert!(!r.sets[0].contains_key("browserName"));
        assert_eq!(r.queue_timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn credentials_in_urls_never_leave_the_broker() {
        let r = parse(
            r#"{"capabilities":{"alwaysMatch":{"se:remoteUrl":"http://ci:farm_x@h:4444/wd/hub","u":"https://h/a@b"}}}"#,
        )
        .expect("valid");
        assert_eq!(r.sets[0]["se:remoteUrl"], "http://***@h:4444/wd/hub");
        assert_eq!(r.sets[0]["u"], "https://h/a@b");
        assert!(!r.requested.to_string().contains("farm_x"));
    }

    #[test]
    fn the_slot_gets_the_matched_set_without_farm_keys() {
        let r = parse(r#"{"capabilities":{"alwaysMatch":{"farm:site":"lab","x:y":[1]}}}"#)
            .expect("valid");
        let body = slot_request_body(&r.sets[0]);
        assert_eq!(
            body,
            serde_json::json!({"capabilities":{"alwaysMatch":{"x:y":[1]},"firstMatch":[{}]}})
        );
    }
}
