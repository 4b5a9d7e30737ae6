//! WebDriver requests the node looks into (sans-IO): the new-session body, where it injects a
//! device's udid and ports; session ids of new and deleted sessions; W3C error bodies.

use serde_json::{Map, Value, json};

use super::slots::DevicePorts;

/// The largest new-session request body the node reads (they are small; anything bigger is refused).
pub const MAX_NEW_SESSION_BODY: usize = 1 << 20;

/// Why a new-session body could not be rewritten (answered with W3C `invalid argument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewSessionError {
    #[error("the new-session body is not JSON: {0}")]
    NotJson(String),
    #[error("the new-session body must be a JSON object with a `capabilities` object")]
    NotObject,
    #[error("`{0}` in the new-session body has the wrong type")]
    WrongType(&'static str),
}

/// `POST /session` (query ignored).
pub fn is_new_session(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST && path_only(path).trim_end_matches('/') == "/session"
}

/// The session id of `DELETE /session/{id}` (the whole session, not a sub-resource).
pub fn deleted_session_id<'a>(method: &http::Method, path: &'a str) -> Option<&'a str> {
    if method != http::Method::DELETE {
        return None;
    }
    let id = path_only(path)
        .strip_prefix("/session/")?
        .trim_end_matches('/');
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

fn path_only(path: &str) -> &str {
    path.split_once('?').map_or(path, |(path, _)| path)
}

/// The keys the node sets for a device, with their unprefixed forms (which Appium would
/// prefix itself, and then find twice).
const INJECTED: [(&str, &str); 3] = [
    ("appium:udid", "udid"),
    ("appium:systemPort", "systemPort"),
    ("appium:mjpegServerPort", "mjpegServerPort"),
];

/// Rewrites a new-session body so the session lands on `serial` with its own ports:
/// sets the keys in `capabilities.alwaysMatch` (created if absent) and in a legacy
/// `desiredCapabilities` object, and removes them from every `firstMatch` entry so W3C
/// merging cannot conflict. Everything else is kept as the client sent it.
pub fn inject_device_capabilities(
    body: &[u8],
    serial: &str,
    ports: DevicePorts,
) -> Result<Vec<u8>, NewSessionError> {
    let mut root: Value = serde_json::from_slice(body)
        .map_err(|error| NewSessionError::NotJson(error.to_string()))?;
    let root_map = root.as_object_mut().ok_or(NewSessionError::NotObject)?;
    let values = [
        Value::from(serial),
        Value::from(ports.system_port),
        Value::from(ports.mjpeg_server_port),
    ];
    if let Some(desired) = root_map.get_mut("desiredCapabilities") {
        let desired = desired
            .as_object_mut()
            .ok_or(NewSessionError::WrongType("desiredCapabilities"))?;
        set_device_keys(desired, &values);
    }
    // A legacy-only body still gets W3C capabilities: Appium 2+ reads only those.
    let capabilities = root_map
        .entry("capabilities")
        .or_insert_with(|| Value::Object(Map::new()));
    if capabilities.is_null() {
        *capabilities = Value::Object(Map::new());
    }
    let capabilities = capabilities
        .as_object_mut()
        .ok_or(NewSessionError::WrongType("capabilities"))?;
    if let Some(first_match) = capabilities.get_mut("firstMatch") {
        let entries = first_match
            .as_array_mut()
            .ok_or(NewSessionError::WrongType("capabilities.firstMatch"))?;
        for entry in entries {
            let entry = entry
                .as_object_mut()
                .ok_or(NewSessionError::WrongType("capabilities.firstMatch"))?;
            for (prefixed, bare) in INJECTED {
                entry.remove(prefixed);
                entry.remove(bare);
            }
        }
    }
    let always = capabilities
        .entry("alwaysMatch")
        .or_insert_with(|| Value::Object(Map::new()));
    let always = always
        .as_object_mut()
        .ok_or(NewSessionError::WrongType("capabilities.alwaysMatch"))?;
    set_device_keys(always, &values);
    serde_json::to_vec(&root).map_err(|error| NewSessionError::NotJson(error.to_string()))
}

fn set_device_keys(caps: &mut Map<String, Value>, values: &[Value; 3]) {
    for ((prefixed, bare), value) in INJECTED.iter().zip(values) {
        caps.remove(*bare);
        caps.insert((*prefixed).to_string(), value.clone());
    }
}

/// The session id in a new-session answer: `value.sessionId` (W3C) or `sessionId` (legacy).
pub fn session_id_of_answer(body: &[u8]) -> Option<String> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    answer
        .pointer("/value/sessionId")
        .or_else(|| answer.get("sessionId"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// A W3C WebDriver error body: `{"value":{"error":..,"message":..,"stacktrace":""}}`.
pub fn w3c_error_body(error: &str, message: &str) -> Vec<u8> {
    json!({"value": {"error": error, "message": message, "stacktrace": ""}})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: DevicePorts = DevicePorts {
        system_port: 8203,
        mjpeg_server_port: 9203,
    };

    fn inject(body: Value) -> Result<Value, NewSessionError> {
        let bytes = inject_device_capabilities(body.to_string().as_bytes(), "emu-1", PORTS)?;
        Ok(serde_json::from_slice(&bytes).expect("output is JSON"))
    }

    #[test]
    fn injection_checks() {
        let device = json!({"appium:udid": "emu-1", "appium:systemPort": 8203, "appium:mjpegServerPort": 9203});
        let with = |mut caps: Value| {
            for (k, v) in device.as_object().expect("object") {
                caps[k] = v.clone();
            }
            caps
        };
        let cases = [
            // alwaysMatch is created when absent, and so is capabilities.
            (json!({}), json!({"capabilities": {"alwaysMatch": device}})),
            (
                json!({"capabilities": {}}),
                json!({"capabilities": {"alwaysMatch": device}}),
            ),
            // Other capabilities and keys are kept; the client's udid and ports are replaced.
            (
                json!({"capabilities": {"alwaysMatch": {"platformName": "Fake", "appium:udid": "other",
                      "systemPort": 1, "appium:app": "/a.xml"}}, "extra": [1]}),
                json!({"capabilities": {"alwaysMatch": with(json!({"platformName": "Fake",
                      "appium:app": "/a.xml"}))}, "extra": [1]}),
            ),
            // firstMatch entries lose the injected keys so merging cannot conflict.
            (
                json!({"capabilities": {"firstMatch": [{"appium:udid": "x", "udid": "y", "a": 1}, {}]}}),
                json!({"capabilities": {"firstMatch": [{"a": 1}, {}], "alwaysMatch": device}}),
            ),
            // Legacy desiredCapabilities get the keys too, and W3C capabilities are added.
            (
                json!({"desiredCapabilities": {"platformName": "Android", "udid": "z"}}),
                json!({"desiredCapabilities": with(json!({"platformName": "Android"})),
                       "capabilities": {"alwaysMatch": device}}),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(inject(input.clone()), Ok(expected), "{input}");
        }
    }

    #[test]
    fn bad_new_session_bodies_are_refused_not_panicked_on() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "not JSON"),
            (b"{", "not JSON"),
            (b"[1,2]", "JSON object"),
            (b"null", "JSON object"),
            (br#"{"capabilities": 5}"#, "`capabilities`"),
            (br#"{"capabilities": {"alwaysMatch": []}}"#, "alwaysMatch"),
            (br#"{"capabilities": {"firstMatch": {}}}"#, "firstMatch"),
            (br#"{"capabilities": {"firstMatch": [1]}}"#, "firstMatch"),
        ];
        for (body, needle) in cases {
            let error = inject_device_capabilities(body, "s", PORTS).expect_err("refused");
            assert!(error.to_string().contains(needle), "{error}");
        }
        let error = inject_device_capabilities(br#"{"desiredCapabilities": 1}"#, "s", PORTS);
        assert_eq!(
            error,
            Err(NewSessionError::WrongType("desiredCapabilities"))
        );
    }

    #[test]
    fn request_classification() {
        use http::Method;
        assert!(is_new_session(&Method::POST, "/session"));
        assert!(is_new_session(&Method::POST, "/session/?x=1"));
        assert!(!is_new_session(&Method::GET, "/session"));
        assert!(!is_new_session(&Method::POST, "/session/abc/url"));
        assert!(!is_new_session(&Method::POST, "/sessions"));
        assert_eq!(
            deleted_session_id(&Method::DELETE, "/session/abc"),
            Some("abc")
        );
        assert_eq!(
            deleted_session_id(&Method::DELETE, "/session/abc/?q"),
            Some("abc")
        );
        assert_eq!(
            deleted_session_id(&Method::DELETE, "/session/abc/window"),
            None
        );
        assert_eq!(deleted_session_id(&Method::DELETE, "/session/"), None);
        assert_eq!(deleted_session_id(&Method::GET, "/session/abc"), None);
    }

    #[test]
    fn session_ids_and_errors() {
        assert_eq!(
            session_id_of_answer(br#"{"value":{"sessionId":"s1","capabilities":{}}}"#).as_deref(),
            Some("s1")
        );
        assert_eq!(
            session_id_of_answer(br#"{"sessionId":"s2","status":0}"#).as_deref(),
            Some("s2")
        );
        for garbage in [&b"<html>"[..], b"{}", br#"{"value":{"sessionId":7}}"#, b""] {
            assert_eq!(session_id_of_answer(garbage), None);
        }
        let body: Value =
            serde_json::from_slice(&w3c_error_body("session not created", "full")).expect("JSON");
        assert_eq!(body["value"]["error"], "session not created");
        assert_eq!(body["value"]["message"], "full");
    }
}
