//! ICE servers per site: STUN, and TURN with time-limited credentials (coturn's shared-secret scheme).
//!
//! The credential for user U valid until T is `username = "T:U"`,
//! `credential = base64(HMAC-SHA1(secret, username))`, as coturn's
//! `--use-auth-secret --static-auth-secret=SECRET` expects.

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::domain::Millis;

/// The ICE servers of one site, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteIce {
    #[serde(default)]
    pub stun: Vec<String>,
    #[serde(default)]
    pub turn: Vec<String>,
    /// coturn's `static-auth-secret`; TURN URLs need it.
    #[serde(default)]
    pub turn_secret: Option<String>,
    /// How long a TURN credential stays valid, in seconds (default 1 hour).
    #[serde(default)]
    pub turn_ttl_secs: Option<u64>,
}

/// ICE configuration: a default and per-site overrides (the `--ice-config` JSON file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceConfig {
    #[serde(default)]
    pub default: SiteIce,
    #[serde(default)]
    pub sites: HashMap<String, SiteIce>,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

impl IceConfig {
    /// Parses and checks a configuration file's text.
    pub fn parse(text: &str) -> Result<IceConfig, String> {
        let config: IceConfig =
            serde_json::from_str(text).map_err(|e| format!("bad ICE config: {e}"))?;
        for (name, site) in std::iter::once(("default", &config.default))
            .chain(config.sites.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if !site.turn.is_empty() && site.turn_secret.as_deref().unwrap_or("").is_empty() {
                return Err(format!(
                    "ICE config for {name}: TURN URLs need a turn_secret"
                ));
            }
            for url in site.stun.iter() {
                if !url.starts_with("stun:") && !url.starts_with("stuns:") {
                    return Err(format!("ICE config for {name}: {url:?} is not a stun: URL"));
                }
            }
            for url in site.turn.iter() {
                if !url.starts_with("turn:") && !url.starts_with("turns:") {
                    return Err(format!("ICE config for {name}: {url:?} is not a turn: URL"));
                }
            }
        }
        Ok(config)
    }

    /// The servers a user at `site` gets now, with fresh TURN credentials.
    pub fn servers_for(&self, site: &str, user: &str, now: Millis) -> Vec<IceServer> {
        let site = self.sites.get(site).unwrap_or(&self.default);
        let mut servers = Vec::new();
        if !site.stun.is_empty() {
            servers.push(IceServer {
                urls: site.stun.clone(),
                username: String::new(),
                credential: String::new(),
            });
        }
        if let (false, Some(secret)) = (site.turn.is_empty(), site.turn_secret.as_deref()) {
            let expiry = now / 1000 + site.turn_ttl_secs.unwrap_or(3600) as i64;
            let (username, credential) = turn_credential(secret, user, expiry);
            servers.push(IceServer {
                urls: site.turn.clone(),
                username,
                credential,
            });
        }
        servers
    }
}

/// coturn REST credentials for `user`, valid until `expiry` (Unix seconds).
pub fn turn_credential(secret: &str, user: &str, expiry: i64) -> (String, String) {
    let username = format!("{expiry}:{user}");
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_the_coturn_rest_scheme() {
        // HMAC-SHA1("secret", "1700000000:alice"), base64.
        let (user, cred) = turn_credential("secret", "alice", 1_700_000_000);
        assert_eq!(user, "1700000000:alice");
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"secret").expect("key");
        mac.update(b"1700000000:alice");
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(cred, expected);
        assert_eq!(cred.len(), 28, "20 bytes of SHA-1 in base64");
    }

    #[test]
    fn sites_get_their_own_servers_and_others_the_default() {
        let config = IceConfig::parse(
            r#"{"default": {"stun": ["stun:stun.example:3478"]},
                "sites": {"paris": {"turn": ["turn:turn.paris:3478?transport=udp"], "turn_secret": "s", "turn_ttl_secs": 60}}}"#,
        )
        .expect("valid");
        let paris = config.servers_for("paris", "bob", 1_000_000);
        assert_eq!(paris.len(), 1);
        assert_eq!(paris[0].username, "1060:bob");
        let other = config.servers_for("tokyo", "bob", 0);
        assert_eq!(other[0].urls, vec!["stun:stun.example:3478".to_string()]);
        assert!(other[0].username.is_empty());
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        assert!(IceConfig::parse("{").is_err());
        assert!(
            IceConfig::parse(r#"{"default": {"turn": ["turn:x"]}}"#)
                .unwrap_err()
                .contains("turn_secret")
        );
        assert!(
            IceConfig::parse(r#"{"default": {"stun": ["http://x"]}}"#)
                .unwrap_err()
                .contains("stun:")
        );
        assert!(IceConfig::parse(r#"{"bogus": 1}"#).is_err());
    }
}
