//! Bearer-token authentication: tokens are random, shown once, and stored only as SHA-256 hashes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::domain::{Caller, Role};
use crate::error::{Error, Result};
use crate::store::Store;

/// Longest `authorization` value we look at; anything longer is refused unread.
const MAX_HEADER_LEN: usize = 512;

/// A new random token, e.g. `farm_3q2...`; 32 random bytes, so a plain hash is enough.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    format!(
        "farm_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Extracts the token from an `Authorization: Bearer T` value.
pub fn parse_bearer(header: Option<&str>) -> Result<&str> {
    let Some(value) = header else {
        return Err(Error::unauthenticated(
            "missing token: send `authorization: Bearer TOKEN` (farmctl: --token or FARM_TOKEN)",
        ));
    };
    if value.len() > MAX_HEADER_LEN {
        return Err(Error::unauthenticated("authorization header too long"));
    }
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() {
        return Err(Error::unauthenticated(
            "malformed authorization header: expected `Bearer TOKEN`",
        ));
    }
    Ok(token)
}

/// Checks tokens against the store, caching the ones it has seen.
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Store,
    cache: Arc<RwLock<HashMap<String, Caller>>>,
}

impl Authenticator {
    pub fn new(store: Store) -> Authenticator {
        Authenticator {
            store,
            cache: Arc::default(),
        }
    }

    /// The caller behind an `authorization` header value, if the token is known.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Caller> {
        let token = parse_bearer(header)?;
        let hash = hash_token(token);
        if let Some(caller) = self.cache.read().ok().and_then(|c| c.get(&hash).cloned()) {
            return Ok(caller);
        }
        match self.store.token_by_hash(&hash).await? {
            Some(caller) => {
                if let Ok(mut cache) = self.cache.write() {
                    cache.insert(hash, caller.clone());
                }
                Ok(caller)
            }
            None => Err(Error::unauthenticated(
                "unknown token: ask an admin for one (`farm-broker token create`)",
            )),
        }
    }

    /// Authenticates and checks the caller has at least one of `roles`.
    pub async fn require(&self, header: Option<&str>, roles: &[Role]) -> Result<Caller> {
        let caller = self.authenticate(header).await?;
        if roles.contains(&caller.role) {
            Ok(caller)
        } else {
            let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(Error::permission_denied(format!(
                "token {:?} has role {}, this needs {}",
                caller.name,
                caller.role.as_str(),
                wanted.join(" or ")
            )))
        }
    }

    /// Creates a token and returns it; only its hash is stored.
    pub async fn create(store: &Store, role: Role, name: &str, now: i64) -> Result<String> {
        validate_token_name(name)?;
        let token = generate_token();
        store
            .insert_token(name, role, &hash_token(&token), now)
            .await?;
        Ok(token)
    }
}

fn validate_token_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 {
        return Err(Error::invalid_argument(
            "token name must be 1 to 64 characters",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(Error::invalid_argument(
            "token name may hold only letters, digits and - _ . @",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_accepts_only_the_bearer_scheme() {
        assert_eq!(parse_bearer(Some("Bearer abc")), Ok("abc"));
        assert!(parse_bearer(None).is_err());
        assert!(parse_bearer(Some("Basic abc")).is_err());
        assert!(parse_bearer(Some("Bearer ")).is_err());
        assert!(parse_bearer(Some(&"Bearer x".repeat(200))).is_err());
    }

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with("farm_"));
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn token_names_are_checked() {
        assert!(validate_token_name("alice").is_ok());
        assert!(validate_token_name("").is_err());
        assert!(validate_token_name("a b").is_err());
        assert!(validate_token_name(&"a".repeat(65)).is_err());
    }
}
