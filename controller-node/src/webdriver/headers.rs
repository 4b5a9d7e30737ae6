//! HTTP headers between the broker's wire form and the slot's requests: hop-by-hop headers
//! stay behind, everything else passes through unchanged.

use farm_proto::v1::HttpHeader;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one connection (RFC 9110 7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` (any case) is a hop-by-hop header.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The header names a `connection` header lists (they are hop-by-hop for this message).
fn connection_tokens<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// The headers to send to a slot: the broker's, minus hop-by-hop ones and `host` (the
/// client sets the slot's). Headers that are not valid HTTP are dropped (and logged).
pub fn request_headers(headers: &[HttpHeader]) -> HeaderMap {
    let listed = connection_tokens(
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .map(|h| h.value.as_str()),
    );
    let mut map = HeaderMap::with_capacity(headers.len());
    for header in headers {
        let name = header.name.to_ascii_lowercase();
        if is_hop_by_hop(&name) || name == "host" || listed.contains(&name) {
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&header.value),
        ) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => {
                tracing::debug!(header = %header.name, "dropped a request header that is not valid HTTP")
            }
        }
    }
    map
}

/// The headers to send back to the broker: the slot's, minus hop-by-hop ones. Values that
/// are not UTF-8 are passed lossily (the wire form is a string).
pub fn response_headers(map: &HeaderMap) -> Vec<HttpHeader> {
    let listed = connection_tokens(
        map.get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    map.iter()
        .filter(|(name, _)| {
            !is_hop_by_hop(name.as_str()) && !listed.iter().any(|l| l == name.as_str())
        })
        .map(|(name, value)| HttpHeader {
            name: name.as_str().to_string(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str) -> HttpHeader {
        HttpHeader {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn request_headers_drop_hop_by_hop_and_host() {
        let map = request_headers(&[
            header("Content-Type", "application/json; charset=utf-8"),
            header("Connection", "keep-alive, X-Private"),
            header("x-private", "1"),
            header("Keep-Alive", "timeout=5"),
            header("Transfer-Encoding", "chunked"),
            header("Upgrade", "h2c"),
            header("TE", "trailers"),
            header("Proxy-Authorization", "Basic x"),
            header("Host", "broker:4444"),
            header("Content-Length", "12"),
            header("X-Multi", "a"),
            header("x-multi", "b"),
            header("bad name", "v"),
            header("x-bad-value", "a\nb"),
            header("user-agent", "selenium/4"),
        ]);
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["content-length", "content-type", "user-agent", "x-multi"]
        );
        let multi: Vec<&[u8]> = map
            .get_all("x-multi")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(multi, [b"a", b"b"]);
        assert_eq!(map["content-type"], "application/json; charset=utf-8");
    }

    #[test]
    fn response_headers_pass_through_unchanged_minus_hop_by_hop() {
        let mut map = HeaderMap::new();
        map.insert("content-type", HeaderValue::from_static("application/json"));
        map.insert("content-length", HeaderValue::from_static("42"));
        map.insert("connection", HeaderValue::from_static("close, x-hop"));
        map.insert("x-hop", HeaderValue::from_static("1"));
        map.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        map.append("set-cookie", HeaderValue::from_static("a=1"));
        map.append("set-cookie", HeaderValue::from_static("b=2"));
        map.insert(
            "x-binary",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid value"),
        );
        let headers = response_headers(&map);
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("content-type", "application/json"),
                ("content-length", "42"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-binary", "caf\u{fffd}"),
            ]
        );
    }
}
