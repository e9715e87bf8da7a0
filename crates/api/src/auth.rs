//! HTTP Basic authentication, failed-login throttling and the permission rules.
//!
//! Passwords are stored as Argon2id hashes, which take tens of milliseconds to check
//! on purpose. So that a searcher's every request does not pay that, a verified
//! credential is remembered for a short time under a keyed SHA-256 of the
//! credential (the key is random per process; the password itself is never kept).
//!
//! Guessing passwords is throttled ([`LoginThrottle`]): after
//! [`MAX_USER_FAILURES`] failed logins for one username, or [`MAX_ADDRESS_FAILURES`]
//! from one client address, within [`FAILURE_WINDOW`], further attempts for that
//! username or from that address are answered `429 TOO_MANY_ATTEMPTS` with
//! `Retry-After` — right or wrong password alike, so that the lock cannot be used to
//! test guesses — until enough of those failures are older than the window. Unknown
//! usernames are counted exactly like known ones, so neither the status, the body nor
//! the lock reveals whether a user exists. Logins of one username are verified one at
//! a time, so parallel guesses cannot overrun the per-username limit.
//!
//! Every route declares the least [`Permission`] it needs in the route table
//! (`crate::route_table`); [`require`] authenticates the caller for every route that
//! needs credentials and enforces the role-only permissions before the handler runs.
//! Index-scoped permissions (search, read, write) depend on the index and are decided
//! by the handler with [`Caller::may_search`], [`Caller::may_read`] and
//! [`Caller::may_write`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use facesearch_store::{IndexInfo, IndexType, Role, User};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified credential is trusted without re-checking the hash.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(30);
const CREDENTIAL_CACHE_MAX: usize = 10_000;

/// Failed logins for one username within [`FAILURE_WINDOW`] after which that username
/// is refused with `429` until the window has passed.
pub const MAX_USER_FAILURES: usize = 5;
/// Failed logins from one client address (an IPv6 address counts by its /64) within
/// [`FAILURE_WINDOW`] after which that address is refused with `429`.
pub const MAX_ADDRESS_FAILURES: usize = 20;
/// The sliding window over which failed logins are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most usernames, and most addresses, whose failures are remembered at once.
const MAX_TRACKED: usize = 10_000;

/// The least a route asks of its caller. Role-only permissions (`Any`, `Admin`,
/// `Auditor`) are enforced by [`require`] before the handler runs; the index-scoped
/// ones (`Search`, `Read`, `Write`) by the handler, which knows the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// No credentials needed (`/healthz`, `/readyz`).
    None,
    /// Any authenticated user.
    Any,
    /// Admins only.
    Admin,
    /// Search the index (admin, or a searcher granted it).
    Search,
    /// See the index, its records and images (admin, or a searcher or operator
    /// granted it).
    Read,
    /// Change records of the index (admin, or an operator granted an INTERNAL index).
    Write,
    /// Read the audit log (admins and auditors).
    Auditor,
    /// Look for duplicate identities in an index (admin, or an operator granted it).
    Review,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::Any => "any",
            Permission::Admin => "admin",
            Permission::Search => "search",
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Auditor => "auditor",
            Permission::Review => "review",
        }
    }

    /// Whether a user of `role` passes the role check of this permission (for the
    /// index-scoped permissions the handler decides per index; they pass here).
    pub fn admits_role(self, role: Role) -> bool {
        match self {
            Permission::None | Permission::Any | Permission::Search | Permission::Read | Permission::Write => true,
            Permission::Admin => role == Role::Admin,
            Permission::Auditor => matches!(role, Role::Admin | Role::Auditor),
            // Role-checked here, index-checked by the handler.
            Permission::Review => matches!(role, Role::Admin | Role::Operator),
        }
    }
}

/// Password hashes checked at once, whoever asks.
static PASSWORD_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

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

    /// Look for duplicate identities among an index's records (admin, or an operator
    /// granted it: operators already read those records).
    pub fn may_review(&self, index: &IndexInfo) -> bool {
        self.is_admin() || (self.user.role == Role::Operator && self.granted(index))
    }

    /// Enrol, update and delete records (admin, or an operator granted an INTERNAL index:
    /// EXTERNAL indexes are read-only to non-admins).
    pub fn may_write(&self, index: &IndexInfo) -> bool {
        self.is_admin()
            || (self.user.role == Role::Operator && self.granted(index) && index.index_type == IndexType::Internal)
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------
// Credential cache

struct CacheEntries {
    map: HashMap<[u8; 32], (User, Instant)>,
    /// Bumped by every [`CredentialCache::clear`]; a verification that started before
    /// a clear must not put its (possibly outdated) result into the cache.
    generation: u64,
}

/// Verified credentials, keyed by a keyed hash of `user:password`.
pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<CacheEntries>,
}

impl CredentialCache {
    pub fn new() -> Self {
        Self { key: rand::random(), entries: Mutex::new(CacheEntries { map: HashMap::new(), generation: 0 }) }
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
        let entries = locked(&self.entries);
        entries.map.get(digest).filter(|(_, at)| at.elapsed() < CREDENTIAL_TTL).map(|(u, _)| u.clone())
    }

    fn generation(&self) -> u64 {
        locked(&self.entries).generation
    }

    /// Remembers a verified credential, unless the cache was cleared since
    /// `generation` was read (the user may have changed meanwhile).
    fn put(&self, digest: [u8; 32], user: User, generation: u64) {
        let mut entries = locked(&self.entries);
        if entries.generation != generation {
            return;
        }
        if entries.map.len() >= CREDENTIAL_CACHE_MAX {
            entries.map.retain(|_, (_, at)| at.elapsed() < CREDENTIAL_TTL);
            if entries.map.len() >= CREDENTIAL_CACHE_MAX {
                entries.map.clear();
            }
        }
        entries.map.insert(digest, (user, Instant::now()));
    }

    /// Forgets every remembered credential (after a password, role, grant or user
    /// change), including those of verifications still in progress.
    pub fn clear(&self) {
        let mut entries = locked(&self.entries);
        entries.map.clear();
        entries.generation = entries.generation.wrapping_add(1);
    }
}

impl Default for CredentialCache {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------
// Failed-login throttling

/// Times of the latest failures per key (at most `limit` of them), bounded in size.
struct FailureLog<K> {
    limit: usize,
    entries: HashMap<K, VecDeque<Instant>>,
}

impl<K: Hash + Eq + Clone> FailureLog<K> {
    fn new(limit: usize) -> Self {
        Self { limit, entries: HashMap::new() }
    }

    /// How long `key` stays locked, if it is locked at `now`.
    fn locked_for(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let times = self.entries.get_mut(key)?;
        while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= FAILURE_WINDOW) {
            times.pop_front();
        }
        if times.is_empty() {
            self.entries.remove(key);
            return None;
        }
        // `times` holds at most `limit` failures, all within the window: locked when
        // full, until the oldest of them leaves the window.
        (times.len() >= self.limit).then(|| (times[0] + FAILURE_WINDOW).saturating_duration_since(now))
    }

    fn record(&mut self, key: K, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_TRACKED {
            self.prune(now);
            if self.entries.len() >= MAX_TRACKED {
                // Still full of recent failures: forget the key whose latest failure
                // is the oldest.
                let stalest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied().unwrap_or(now))
                    .map(|(k, _)| k.clone());
                if let Some(k) = stalest {
                    self.entries.remove(&k);
                }
            }
        }
        let times = self.entries.entry(key).or_default();
        times.push_back(now);
        while times.len() > self.limit {
            times.pop_front();
        }
    }

    fn reset(&mut self, key: &K) {
        self.entries.remove(key);
    }

    fn prune(&mut self, now: Instant) {
        self.entries
            .retain(|_, times| times.back().is_some_and(|t| now.saturating_duration_since(*t) < FAILURE_WINDOW));
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

type UserKey = [u8; 32];
type TurnLock = Arc<tokio::sync::Mutex<()>>;

/// Counts failed logins per username and per client address and says when to refuse.
/// Usernames are kept only as keyed hashes, so memory per entry is fixed.
pub struct LoginThrottle {
    key: [u8; 32],
    users: Mutex<FailureLog<UserKey>>,
    addresses: Mutex<FailureLog<IpAddr>>,
    /// One lock per username being verified right now (removed when unused).
    turns: Mutex<HashMap<UserKey, TurnLock>>,
}

/// Holds a username's verification turn; gives the lock back (and forgets it when no
/// one else waits) when dropped, also if the request is cancelled.
struct Turn<'a> {
    throttle: &'a LoginThrottle,
    key: UserKey,
    lock: TurnLock,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut turns = locked(&self.throttle.turns);
        // One reference in the map, one here: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) <= 2 {
            turns.remove(&self.key);
        }
    }
}

/// The address failures are counted by: IPv4 as is (also when IPv4-mapped), IPv6 by
/// its /64 network, since one client usually controls a whole /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Whole seconds to wait, rounded up, at least 1.
fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self {
            key: rand::random(),
            users: Mutex::new(FailureLog::new(MAX_USER_FAILURES)),
            addresses: Mutex::new(FailureLog::new(MAX_ADDRESS_FAILURES)),
            turns: Mutex::new(HashMap::new()),
        }
    }

    fn user_key(&self, username: &str) -> UserKey {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(username.as_bytes());
        h.finalize().into()
    }

    /// `Err(seconds to wait)` if attempts for `username` or from `peer` are refused at `now`.
    pub fn check(&self, username: &str, peer: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let by_address = peer.and_then(|ip| locked(&self.addresses).locked_for(&address_key(ip), now));
        let by_user = locked(&self.users).locked_for(&self.user_key(username), now);
        match by_address.into_iter().chain(by_user).max() {
            Some(wait) => Err(retry_after_secs(wait)),
            None => Ok(()),
        }
    }

    /// Records a failed login for `username` from `peer` at `now`.
    pub fn failed(&self, username: &str, peer: Option<IpAddr>, now: Instant) {
        locked(&self.users).record(self.user_key(username), now);
        if let Some(ip) = peer {
            locked(&self.addresses).record(address_key(ip), now);
        }
    }

    /// A successful login (or a password reset): the username's failures are forgotten.
    pub fn succeeded(&self, username: &str) {
        let key = self.user_key(username);
        let mut users = locked(&self.users);
        if users.entries.contains_key(&key) {
            users.reset(&key);
        }
    }

    /// Usernames and addresses with failures remembered now (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize) {
        (locked(&self.users).len(), locked(&self.addresses).len())
    }

    /// Waits until no other login of `username` is being verified, and holds that turn.
    async fn turn(&self, username: &str) -> Turn<'_> {
        let key = self.user_key(username);
        let lock = locked(&self.turns).entry(key).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        Turn { throttle: self, key, lock, guard: Some(guard) }
    }
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------
// Authentication

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

fn too_many_attempts(seconds: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_ATTEMPTS",
        format!("too many failed logins; try again in {seconds} s"),
    )
    .with("retry_after", seconds)
}

/// Checks the `Authorization` header of a request from `peer` (the client address,
/// when known). Wrong credentials and unknown users get the same `401`; a throttled
/// username or address gets `429 TOO_MANY_ATTEMPTS` with `retry_after` (seconds).
pub async fn authenticate(headers: &HeaderMap, peer: Option<IpAddr>, state: &AppState) -> Result<Caller, ApiError> {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(ApiError::unauthorized)?;
    let (name, password) = parse_basic(header).ok_or_else(ApiError::unauthorized)?;
    let throttle = state.throttle();
    let credentials = state.credentials();
    throttle.check(&name, peer, Instant::now()).map_err(too_many_attempts)?;
    let digest = credentials.digest(&name, &password);
    if let Some(user) = credentials.get(&digest) {
        throttle.succeeded(&name);
        return Ok(Caller { user });
    }
    // One verification per username at a time; the ones that waited look again.
    let _turn = throttle.turn(&name).await;
    throttle.check(&name, peer, Instant::now()).map_err(too_many_attempts)?;
    if let Some(user) = credentials.get(&digest) {
        throttle.succeeded(&name);
        return Ok(Caller { user });
    }
    let generation = credentials.generation();
    // Each check costs tens of milliseconds and ~19 MiB by design: a flood of guesses
    // must not take every core, so at most a few run at once and the rest wait briefly.
    let _check = tokio::time::timeout(Duration::from_secs(5), PASSWORD_CHECKS.acquire())
        .await
        .map_err(|_| ApiError::unavailable("too many logins are being checked; retry shortly"))?
        .map_err(|_| ApiError::unavailable("too many logins are being checked; retry shortly"))?;
    match state.store().verify_password(&name, &password).await? {
        Some(user) => {
            throttle.succeeded(&name);
            credentials.put(digest, user.clone(), generation);
            Ok(Caller { user })
        }
        None => {
            throttle.failed(&name, peer, Instant::now());
            tracing::info!(peer = ?peer, "failed login");
            Err(ApiError::unauthorized())
        }
    }
}

/// The client address of a request, when the server recorded it.
fn peer_of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

/// An error response, with `Retry-After` set from a `retry_after` detail.
fn error_response(e: ApiError) -> Response {
    let retry = e.details.get("retry_after").and_then(serde_json::Value::as_u64);
    let mut response = e.into_response();
    if let Some(seconds) = retry {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Route middleware: authenticates the caller of a route that needs `permission`
/// (anything but [`Permission::None`]), refuses a role the permission never admits
/// with `403`, and hands the [`Caller`] on to the handler.
pub async fn require(
    State((state, permission)): State<(AppState, Permission)>,
    mut request: Request,
    next: Next,
) -> Response {
    if permission == Permission::None {
        return next.run(request).await;
    }
    let peer = peer_of(request.extensions());
    let refused = match authenticate(request.headers(), peer, &state).await {
        Err(e) => Err(error_response(e)),
        Ok(caller) if !permission.admits_role(caller.user.role) => {
            let what = match permission {
                Permission::Auditor => "use this endpoint (admins and auditors only)",
                Permission::Review => "use this endpoint (admins and operators only)",
                _ => "use this endpoint (admins only)",
            };
            Err(ApiError::forbidden(what).into_response())
        }
        Ok(caller) => Ok(caller),
    };
    let caller = match refused {
        Ok(caller) => caller,
        Err(response) => {
            // The body was not read yet (authentication comes first); read it away so
            // the client receives this answer rather than a reset.
            let limit = crate::body::drain_cap(crate::body::limit_for(state.config().max_image_bytes));
            crate::body::discard(request.into_body(), limit).await;
            return response;
        }
    };
    // Only authenticated requests take one of the limited slots, so slow anonymous
    // clients cannot lock the API; per user, and with a reserve for admins (see
    // `crate::admission`).
    let _slot = match state.slots().try_take(&caller.user.username, caller.is_admin()) {
        Ok(slot) => slot,
        Err(refusal) => {
            crate::body::discard_later(request.into_body(), crate::body::limit_for(state.config().max_image_bytes));
            return refusal.into_error().into_response();
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Normally [`require`] has authenticated the request already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        authenticate(&parts.headers, peer_of(&parts.extensions), state).await
    }
}

#[cfg(test)]
mod tests {
    use facesearch_store::Store as _;

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

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("an IP address"))
    }

    #[test]
    fn five_failures_lock_a_username_until_the_window_passes() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..MAX_USER_FAILURES {
            assert_eq!(t.check("alice", ip("10.0.0.1"), t0), Ok(()), "attempt {i} is allowed");
            t.failed("alice", ip("10.0.0.1"), t0 + Duration::from_secs(i as u64));
        }
        // Locked until the first failure is 60 s old, for any address.
        assert_eq!(t.check("alice", ip("10.0.0.1"), t0 + Duration::from_secs(5)), Err(55));
        assert_eq!(t.check("alice", ip("10.9.9.9"), t0 + Duration::from_millis(59_500)), Err(1));
        assert_eq!(t.check("alice", None, t0 + Duration::from_secs(5)), Err(55));
        // Other usernames are not affected.
        assert_eq!(t.check("bob", ip("10.0.0.2"), t0 + Duration::from_secs(5)), Ok(()));
        // One failure left the window: one more attempt is allowed, and if it fails the
        // lock lasts until the next oldest failure leaves it.
        let later = t0 + FAILURE_WINDOW;
        assert_eq!(t.check("alice", ip("10.0.0.1"), later), Ok(()));
        t.failed("alice", ip("10.0.0.1"), later);
        assert_eq!(t.check("alice", ip("10.0.0.1"), later), Err(1));
        // All old: free again.
        assert_eq!(t.check("alice", ip("10.0.0.1"), later + FAILURE_WINDOW), Ok(()));
    }

    #[test]
    fn a_success_resets_the_username_but_not_the_address() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for _ in 0..MAX_USER_FAILURES - 1 {
            t.failed("alice", ip("10.0.0.1"), t0);
        }
        t.succeeded("alice");
        for _ in 0..MAX_USER_FAILURES - 1 {
            t.failed("alice", ip("10.0.0.1"), t0);
        }
        assert_eq!(t.check("alice", None, t0), Ok(()), "the success forgot the first failures");
        t.failed("alice", ip("10.0.0.1"), t0);
        assert!(t.check("alice", None, t0).is_err());
        assert_eq!(locked(&t.addresses).entries[&address_key("10.0.0.1".parse().unwrap())].len(), 9);
    }

    #[test]
    fn twenty_failures_lock_an_address_for_every_username() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..MAX_ADDRESS_FAILURES {
            assert_eq!(t.check(&format!("user{i}"), ip("192.0.2.7"), t0), Ok(()));
            t.failed(&format!("user{i}"), ip("192.0.2.7"), t0);
        }
        assert_eq!(t.check("someone-else", ip("192.0.2.7"), t0 + Duration::from_secs(10)), Err(50));
        assert_eq!(t.check("someone-else", ip("192.0.2.8"), t0), Ok(()), "other addresses are not locked");
        assert_eq!(t.check("someone-else", None, t0), Ok(()));
        assert_eq!(t.check("someone-else", ip("192.0.2.7"), t0 + FAILURE_WINDOW), Ok(()));
    }

    #[test]
    fn ipv6_clients_count_by_their_64_network() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..MAX_ADDRESS_FAILURES {
            t.failed(&format!("u{i}"), ip(&format!("2001:db8:1:2::{:x}", i + 1)), t0);
        }
        assert!(t.check("x", ip("2001:db8:1:2:ffff::1"), t0).is_err());
        assert_eq!(t.check("x", ip("2001:db8:1:3::1"), t0), Ok(()));
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert_eq!(address_key("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn memory_stays_bounded() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED + 500 {
            let a = IpAddr::from((i as u32).to_be_bytes());
            t.failed(&format!("user{i}"), Some(a), t0);
        }
        let (users, addresses) = t.tracked();
        assert!(users <= MAX_TRACKED && addresses <= MAX_TRACKED, "{users} users, {addresses} addresses");
        // Entries older than the window are pruned before anything recent is evicted.
        t.failed("late", ip("10.0.0.1"), t0 + FAILURE_WINDOW * 2);
        assert_eq!(t.tracked(), (1, 1));
        t.failed("later", ip("10.0.0.2"), t0 + FAILURE_WINDOW * 2);
        assert_eq!(t.tracked(), (2, 2));
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        h.insert(AUTHORIZATION, HeaderValue::from_str(&v).expect("a header value"));
        h
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_guesses_cannot_overrun_the_username_limit() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = facesearch_store::SqliteStore::open(dir.path()).expect("a store");
        store.create_user("alice", "alice-Password-1", Role::Searcher).await.expect("a user");
        let state = AppState::new(std::sync::Arc::new(store), crate::ApiConfig::default());
        let attempts = (0..20).map(|i| {
            let state = state.clone();
            tokio::spawn(async move {
                let headers = basic("alice", &format!("guess-{i}"));
                authenticate(&headers, ip(&format!("10.0.1.{i}")), &state).await.map(|_| ()).map_err(|e| e.code)
            })
        });
        let mut codes = Vec::new();
        for a in attempts.collect::<Vec<_>>() {
            codes.push(a.await.expect("the attempt ran").expect_err("a wrong password"));
        }
        let verified = codes.iter().filter(|c| **c == "UNAUTHORIZED").count();
        assert_eq!(verified, MAX_USER_FAILURES, "{codes:?}");
        assert_eq!(codes.iter().filter(|c| **c == "TOO_MANY_ATTEMPTS").count(), 20 - MAX_USER_FAILURES);
        // Locked for the right password too; other users are not.
        let e = authenticate(&basic("alice", "alice-Password-1"), None, &state).await.expect_err("locked");
        assert_eq!(e.code, "TOO_MANY_ATTEMPTS");
        assert!(e.details["retry_after"].as_u64().is_some_and(|s| (1..=60).contains(&s)));
        assert!(locked(&state.throttle().turns).is_empty(), "verification turns are given back");
    }

    #[tokio::test]
    async fn a_cleared_cache_forgets_credentials() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = facesearch_store::SqliteStore::open(dir.path()).expect("a store");
        store.create_user("bob", "bob-Password-12", Role::Admin).await.expect("a user");
        let state = AppState::new(std::sync::Arc::new(store), crate::ApiConfig::default());
        let headers = basic("bob", "bob-Password-12");
        authenticate(&headers, None, &state).await.expect("logged in");
        let digest = state.credentials().digest("bob", "bob-Password-12");
        assert!(state.credentials().get(&digest).is_some(), "remembered");
        // A verification that started before a clear does not put its result back.
        let generation = state.credentials().generation();
        state.credentials().clear();
        assert!(state.credentials().get(&digest).is_none());
        let user = state.store().get_user("bob").await.expect("store").expect("bob");
        state.credentials().put(digest, user, generation);
        assert!(state.credentials().get(&digest).is_none(), "a stale verification is not cached");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::from_millis(3001)), 4);
    }

    #[test]
    fn permissions_admit_roles() {
        assert!(Permission::Admin.admits_role(Role::Admin));
        for role in [Role::Operator, Role::Searcher, Role::Auditor] {
            assert!(!Permission::Admin.admits_role(role));
            assert!(Permission::Any.admits_role(role));
        }
        assert!(Permission::Auditor.admits_role(Role::Auditor));
        assert!(Permission::Auditor.admits_role(Role::Admin));
        assert!(!Permission::Auditor.admits_role(Role::Searcher));
        assert!(Permission::Review.admits_role(Role::Admin) && Permission::Review.admits_role(Role::Operator));
        assert!(!Permission::Review.admits_role(Role::Searcher) && !Permission::Review.admits_role(Role::Auditor));
    }
}
