//! HTTP Basic authentication and the permission rules.
//!
//! Passwords are stored as Argon2id hashes, which take tens of milliseconds to check
//! on purpose. So that a searcher's every request does not pay that, a verified
//! credential is remembered for a short time under a keyed SHA-256 of the
//! credential (the key is random per process; the password itself is never kept).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use facesearch_store::{IndexInfo, IndexType, Role, User};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified credential is trusted without re-checking the hash.
const CREDENTIAL_TTL: Duration = Duration::from_secs(30);
const CREDENTIAL_CACHE_MAX: usize = 10_000;

/// The authenticated user making a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    fn granted(&self, index: &IndexInfo) -> bool {
        self.user.grants.iter().any(|g| g == &index.id)
    }

    /// Search an index (admin, or a searcher granted it).
    pub fn may_search(&self, index: &IndexInfo) -> bool {
        self.is_admin() || (self.user.role == Role::Searcher && self.granted(index))
    }

    /// See an index, its records and images (admin, or a searcher or operator granted it).
    pub fn may_read(&self, index: &IndexInfo) -> bool {
        self.is_admin() || (matches!(self.user.role, Role::Searcher | Role::Operator) && self.granted(index))
    }

    /// Enrol, update and delete records (admin, or an operator granted an INTERNAL index:
    /// EXTERNAL indexes are read-only to non-admins).
    pub fn may_write(&self, index: &IndexInfo) -> bool {
        self.is_admin()
            || (self.user.role == Role::Operator && self.granted(index) && index.index_type == IndexType::Internal)
    }
}

/// Verified credentials, keyed by a keyed hash of `user:password`.
pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], (User, Instant)>>,
}

impl CredentialCache {
    pub fn new() -> Self {
        Self { key: rand::random(), entries: Mutex::new(HashMap::new()) }
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn get(&self, digest: &[u8; 32]) -> Option<User> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(digest).filter(|(_, at)| at.elapsed() < CREDENTIAL_TTL).map(|(u, _)| u.clone())
    }

    fn put(&self, digest: [u8; 32], user: User) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CREDENTIAL_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < CREDENTIAL_TTL);
            if entries.len() >= CREDENTIAL_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(digest, (user, Instant::now()));
    }

    /// Forgets every remembered credential (after a password, role or grant change).
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Default for CredentialCache {
    fn default() -> Self {
        Self::new()
    }
}

/// `(user, password)` from an `Authorization: Basic …` header value.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header =
            parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(ApiError::unauthorized)?;
        let (name, password) = parse_basic(header).ok_or_else(ApiError::unauthorized)?;
        let digest = state.credentials().digest(&name, &password);
        if let Some(user) = state.credentials().get(&digest) {
            return Ok(Caller { user });
        }
        let user = state.store().verify_password(&name, &password).await?.ok_or_else(ApiError::unauthorized)?;
        state.credentials().put(digest, user.clone());
        Ok(Caller { user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parsing() {
        let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:pa:ss"));
        assert_eq!(parse_basic(&v), Some(("alice".into(), "pa:ss".into())));
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        let no_colon = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice"));
        assert_eq!(parse_basic(&no_colon), None);
    }
}
