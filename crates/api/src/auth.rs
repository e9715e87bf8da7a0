//! HTTP Basic authentication, failed-login throttling and the permission rules.
//!
//! Passwords are stored as Argon2id hashes, which take tens of milliseconds to check
//! on purpose. So that a searcher's every request does not pay that, a verified
//! credential is remembered for a short time under a keyed SHA-256 of the
//! credential (the key is random per process; the password itself is never kept).
//!
//! Guessing passwords is throttled ([`LoginThrottle`]) per (username, client
//! address), per client address, and per username over all addresses — the last
//! never refusing an address that has not failed for that username, nor one that
//! logged in as it recently, so that guessing cannot lock the account owner out.
//! A throttled attempt is answered `429 TOO_MANY_ATTEMPTS` with `Retry-After` —
//! right or wrong password alike, so that the lock cannot be used to test guesses.
//! Unknown usernames are counted exactly like known ones, so neither the status, the
//! body nor the lock reveals whether a user exists. Logins of one username, and from
//! one address, are verified one at a time, so parallel guesses cannot overrun a
//! limit. The client address is the TCP peer, or what a trusted reverse proxy
//! reports ([`crate::client`]).
//!
//! Every route declares the least [`Permission`] it needs in the route table
//! (`crate::route_table`); [`require`] authenticates the caller for every route that
//! needs credentials and enforces the role-only permissions before the handler runs.
//! Index-scoped permissions (search, read, write) depend on the index and are decided
//! by the handler with [`Caller::may_search`], [`Caller::may_read`] and
//! [`Caller::may_write`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use facesearch_store::{IndexInfo, IndexType, Role, User};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// How long a verified credential is trusted without re-checking the hash.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(30);
const CREDENTIAL_CACHE_MAX: usize = 10_000;

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

/// Failed logins of one username from one client address that are verified without
/// delay; each further one makes that pair wait ([`FIRST_DELAY`], doubling).
pub const PAIR_FREE_FAILURES: u32 = 5;
/// Failed logins from one client address (for any usernames) that are verified
/// without delay; each further one makes the address wait ([`FIRST_DELAY`], doubling).
pub const ADDRESS_FREE_FAILURES: u32 = 20;
/// The wait after the first failure beyond the free ones; every further failure
/// doubles it, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(60);
/// The longest wait between two attempts of a pair or an address.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// A pair's or an address's failures are forgotten this long after the latest one.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Failed logins of one username, from all addresses together, within
/// [`USER_WINDOW`] after which the username is refused from every address that has
/// failed for it — never from one that has not, nor from a known-good one.
pub const USER_BUDGET: usize = 30;
/// The sliding window of [`USER_BUDGET`].
pub const USER_WINDOW: Duration = Duration::from_secs(60 * 60);
/// An address that logged in successfully as a username is known-good for that
/// username this long: failures from elsewhere never lock it out.
pub const KNOWN_GOOD_FOR: Duration = Duration::from_secs(24 * 60 * 60);
/// Most usernames, addresses and known-good pairs remembered at once.
const MAX_TRACKED: usize = 10_000;
/// Most (username, address) pairs with failures remembered at once.
const MAX_PAIRS: usize = 50_000;

/// How long to wait after the latest of `failures` failures, when `free` of them
/// cost nothing: none below `free`, then [`FIRST_DELAY`] doubling up to [`MAX_DELAY`].
fn delay_after(failures: u32, free: u32) -> Option<Duration> {
    let beyond = failures.checked_sub(free)?;
    Some(FIRST_DELAY.saturating_mul(1 << beyond.min(16)).min(MAX_DELAY))
}

/// Makes room in `map` (at `max` entries) for one more: drops the entries `stale`
/// says are, and if that is not enough, the oldest eighth by `age` (so that a flood
/// of new keys costs one pass per `max / 8` keys, not one per key).
fn make_room<K: Hash + Eq + Clone, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    stale: impl Fn(&V) -> bool,
    age: impl Fn(&V) -> Instant,
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, v| !stale(v));
    if map.len() < max {
        return;
    }
    let mut by_age: Vec<(Instant, K)> = map.iter().map(|(k, v)| (age(v), k.clone())).collect();
    let n = (max / 8).clamp(1, by_age.len());
    by_age.select_nth_unstable_by_key(n - 1, |(at, _)| *at);
    for (_, k) in &by_age[..n] {
        map.remove(k);
    }
}

/// The failures of one key since it last logged in (or was forgotten).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    last: Instant,
}

/// Growing waits per key ([`delay_after`]), bounded in size.
struct BackoffLog<K> {
    free: u32,
    max: usize,
    entries: HashMap<K, Backoff>,
}

impl<K: Hash + Eq + Clone> BackoffLog<K> {
    fn new(free: u32, max: usize) -> Self {
        Self { free, max, entries: HashMap::new() }
    }

    /// The key's failures at `now`, forgetting them when the latest is too old.
    fn current(&mut self, key: &K, now: Instant) -> Option<Backoff> {
        let b = *self.entries.get(key)?;
        if now.saturating_duration_since(b.last) >= FORGET_AFTER {
            self.entries.remove(key);
            return None;
        }
        Some(b)
    }

    /// How long `key` must still wait, if it must at `now`.
    fn locked_for(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let b = self.current(key, now)?;
        let until = b.last + delay_after(b.failures, self.free)?;
        (until > now).then(|| until - now)
    }

    /// When the key's failures will be forgotten, if it has any at `now`.
    fn forgotten_in(&mut self, key: &K, now: Instant) -> Option<Duration> {
        self.current(key, now).map(|b| (b.last + FORGET_AFTER).saturating_duration_since(now))
    }

    fn record(&mut self, key: K, now: Instant) {
        let previous = self.current(&key, now);
        if previous.is_none() {
            let stale = |b: &Backoff| now.saturating_duration_since(b.last) >= FORGET_AFTER;
            make_room(&mut self.entries, self.max, stale, |b| b.last);
        }
        let (failures, last) = previous.map_or((0, now), |b| (b.failures, b.last.max(now)));
        self.entries.insert(key, Backoff { failures: failures.saturating_add(1), last });
    }

    fn reset(&mut self, key: &K) {
        self.entries.remove(key);
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Times of the latest failures per key (at most `limit` of them within `window`),
/// bounded in size.
struct FailureLog<K> {
    limit: usize,
    window: Duration,
    entries: HashMap<K, VecDeque<Instant>>,
}

impl<K: Hash + Eq + Clone> FailureLog<K> {
    fn new(limit: usize, window: Duration) -> Self {
        Self { limit, window, entries: HashMap::new() }
    }

    /// How long `key` stays over its limit, if it is at `now`.
    fn locked_for(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let window = self.window;
        let times = self.entries.get_mut(key)?;
        while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
            times.pop_front();
        }
        if times.is_empty() {
            self.entries.remove(key);
            return None;
        }
        // `times` holds at most `limit` failures, all within the window: locked when
        // full, until the oldest of them leaves the window.
        (times.len() >= self.limit).then(|| (times[0] + window).saturating_duration_since(now))
    }

    fn record(&mut self, key: K, now: Instant) {
        if !self.entries.contains_key(&key) {
            let window = self.window;
            let latest = |times: &VecDeque<Instant>| times.back().copied().unwrap_or(now);
            let stale = |times: &VecDeque<Instant>| now.saturating_duration_since(latest(times)) >= window;
            make_room(&mut self.entries, MAX_TRACKED, stale, latest);
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

    fn len(&self) -> usize {
        self.entries.len()
    }
}

type UserKey = [u8; 32];
type TurnLock = Arc<tokio::sync::Mutex<()>>;

/// What one verification at a time is held for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TurnKey {
    User(UserKey),
    Address(IpAddr),
}

/// Everything [`LoginThrottle`] remembers, under one lock.
struct Tables {
    /// Per (username, address): growing waits after [`PAIR_FREE_FAILURES`].
    pairs: BackoffLog<(UserKey, IpAddr)>,
    /// Per address, any usernames: growing waits after [`ADDRESS_FREE_FAILURES`].
    addresses: BackoffLog<IpAddr>,
    /// Per username, all addresses: the latest [`USER_BUDGET`] failures.
    users: FailureLog<UserKey>,
    /// (username, address) pairs that logged in, and when they last did.
    known_good: HashMap<(UserKey, IpAddr), Instant>,
}

impl Tables {
    fn is_known_good(&mut self, key: &(UserKey, IpAddr), now: Instant) -> bool {
        match self.known_good.get(key) {
            Some(at) if now.saturating_duration_since(*at) < KNOWN_GOOD_FOR => true,
            Some(_) => {
                self.known_good.remove(key);
                false
            }
            None => false,
        }
    }

    fn remember_good(&mut self, key: (UserKey, IpAddr), now: Instant) {
        if !self.known_good.contains_key(&key) {
            let stale = |at: &Instant| now.saturating_duration_since(*at) >= KNOWN_GOOD_FOR;
            make_room(&mut self.known_good, MAX_TRACKED, stale, |at| *at);
        }
        self.known_good.insert(key, now);
    }
}

/// How many keys the throttle remembers (for tests and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    pub usernames: usize,
    pub addresses: usize,
    pub pairs: usize,
    pub known_good: usize,
}

/// Counts failed logins and says when to refuse one, so that guessing stays
/// impractical and never locks the account owner out:
///
/// * per (username, client address): [`PAIR_FREE_FAILURES`] failures, then a wait of
///   [`FIRST_DELAY`] doubling with every further failure up to [`MAX_DELAY`];
/// * per client address, whatever the usernames: the same after
///   [`ADDRESS_FREE_FAILURES`];
/// * per username, from all addresses together: at most [`USER_BUDGET`] failures per
///   [`USER_WINDOW`]; past it, attempts for the username are refused from addresses
///   that have failed for it — but never from an address that has not, nor from one
///   that logged in as that user within [`KNOWN_GOOD_FOR`].
///
/// So failures from one address never refuse the right password from another. A
/// client address is an IPv4 address, or an IPv6 /64 (one client usually controls a
/// whole /64); a request without one (not over TCP) counts as one address of its own.
/// Usernames are kept only as keyed hashes, so memory per entry is fixed.
pub struct LoginThrottle {
    key: [u8; 32],
    tables: Mutex<Tables>,
    /// One lock per username, and one per address, being verified right now (removed
    /// when unused).
    turns: Mutex<HashMap<TurnKey, TurnLock>>,
}

/// Holds a verification turn; gives the lock back (and forgets it when no one else
/// waits) when dropped, also if the request is cancelled.
struct Turn<'a> {
    throttle: &'a LoginThrottle,
    key: TurnKey,
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
/// its /64 network, since one client usually controls a whole /64. No address (a
/// request not served over TCP) counts as `0.0.0.0`.
pub(crate) fn address_key(ip: Option<IpAddr>) -> IpAddr {
    let Some(ip) = ip else { return IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) };
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
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
            tables: Mutex::new(Tables {
                pairs: BackoffLog::new(PAIR_FREE_FAILURES, MAX_PAIRS),
                addresses: BackoffLog::new(ADDRESS_FREE_FAILURES, MAX_TRACKED),
                users: FailureLog::new(USER_BUDGET, USER_WINDOW),
                known_good: HashMap::new(),
            }),
            turns: Mutex::new(HashMap::new()),
        }
    }

    fn user_key(&self, username: &str) -> UserKey {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(username.as_bytes());
        h.finalize().into()
    }

    /// `Err(seconds to wait)` if an attempt for `username` from `peer` is refused at `now`.
    pub fn check(&self, username: &str, peer: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let pair = (self.user_key(username), address_key(peer));
        let mut t = locked(&self.tables);
        let mut wait = t.addresses.locked_for(&pair.1, now).max(t.pairs.locked_for(&pair, now));
        // The username's budget binds only addresses that have failed for it (until
        // their failures are forgotten), and never a known-good one.
        if let Some(forgotten_in) = t.pairs.forgotten_in(&pair, now)
            && !t.is_known_good(&pair, now)
        {
            wait = wait.max(t.users.locked_for(&pair.0, now).map(|w| w.min(forgotten_in)));
        }
        wait.map_or(Ok(()), |w| Err(retry_after_secs(w)))
    }

    /// Records a failed login for `username` from `peer` at `now`.
    pub fn failed(&self, username: &str, peer: Option<IpAddr>, now: Instant) {
        let pair = (self.user_key(username), address_key(peer));
        let mut t = locked(&self.tables);
        t.pairs.record(pair, now);
        t.addresses.record(pair.1, now);
        t.users.record(pair.0, now);
    }

    /// A successful login of `username` from `peer` at `now`: the pair's failures are
    /// forgotten and the address is known-good for the username. The address's and
    /// the username's other failures stand.
    pub fn logged_in(&self, username: &str, peer: Option<IpAddr>, now: Instant) {
        let pair = (self.user_key(username), address_key(peer));
        let mut t = locked(&self.tables);
        t.pairs.reset(&pair);
        t.remember_good(pair, now);
    }

    /// Forgets every failure (and known-good address) of `username`: its password was
    /// just set, and the old one's failures say nothing about the new one.
    pub fn forget_user(&self, username: &str) {
        let user = self.user_key(username);
        let mut t = locked(&self.tables);
        t.users.reset(&user);
        t.pairs.entries.retain(|(u, _), _| *u != user);
        t.known_good.retain(|(u, _), _| *u != user);
    }

    /// How many keys are remembered now (for tests and metrics).
    pub fn tracked(&self) -> Tracked {
        let t = locked(&self.tables);
        Tracked {
            usernames: t.users.len(),
            addresses: t.addresses.len(),
            pairs: t.pairs.len(),
            known_good: t.known_good.len(),
        }
    }

    async fn turn(&self, key: TurnKey) -> Turn<'_> {
        let lock = locked(&self.turns).entry(key).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        Turn { throttle: self, key, lock, guard: Some(guard) }
    }

    /// Waits until no other login of `username`, and none from `peer`'s address, is
    /// being verified, and holds both turns, so that parallel guesses cannot overrun
    /// a limit. (Always the username first: no two requests wait for each other.)
    async fn turns(&self, username: &str, peer: Option<IpAddr>) -> (Turn<'_>, Turn<'_>) {
        let user = self.turn(TurnKey::User(self.user_key(username))).await;
        let address = self.turn(TurnKey::Address(address_key(peer))).await;
        (user, address)
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
    ApiError::new(ErrorCode::TooManyAttempts, format!("too many failed logins; try again in {seconds} s"))
        .with(|d| d.retry_after = Some(seconds))
}

/// Checks the `Authorization` header of a request from `peer` (the client address,
/// when known). Wrong credentials and unknown users get the same `401`; a throttled
/// attempt ([`LoginThrottle`]) gets `429 TOO_MANY_ATTEMPTS` with `retry_after`
/// (seconds).
pub async fn authenticate(headers: &HeaderMap, peer: Option<IpAddr>, state: &AppState) -> Result<Caller, ApiError> {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(ApiError::unauthorized)?;
    let (name, password) = parse_basic(header).ok_or_else(ApiError::unauthorized)?;
    let throttle = state.throttle();
    let credentials = state.credentials();
    throttle.check(&name, peer, Instant::now()).map_err(too_many_attempts)?;
    let digest = credentials.digest(&name, &password);
    if let Some(user) = credentials.get(&digest) {
        throttle.logged_in(&name, peer, Instant::now());
        return Ok(Caller { user });
    }
    // One verification per username, and per address, at a time; the ones that
    // waited look again.
    let _turns = throttle.turns(&name, peer).await;
    throttle.check(&name, peer, Instant::now()).map_err(too_many_attempts)?;
    if let Some(user) = credentials.get(&digest) {
        throttle.logged_in(&name, peer, Instant::now());
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
            throttle.logged_in(&name, peer, Instant::now());
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

/// The client address of a request (see [`crate::client`]), when known.
fn peer_of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    crate::client::of(extensions)
}

/// An error response, with `Retry-After` set from a `retry_after` detail.
fn error_response(e: ApiError) -> Response {
    let retry = e.details.retry_after;
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
    use facesearch_store::prelude::*;

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

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn five_failures_slow_down_that_pair_only() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..PAIR_FREE_FAILURES {
            assert_eq!(t.check("alice", ip("10.0.0.1"), t0), Ok(()), "attempt {i} is allowed");
            t.failed("alice", ip("10.0.0.1"), t0 + Duration::from_secs(u64::from(i)));
        }
        // Locked until a minute after the latest failure, right password or wrong.
        assert_eq!(t.check("alice", ip("10.0.0.1"), t0 + Duration::from_secs(5)), Err(59));
        assert_eq!(t.check("alice", ip("10.0.0.1"), t0 + Duration::from_millis(63_500)), Err(1));
        // The same username from any other address, and other usernames, are not.
        assert_eq!(t.check("alice", ip("10.9.9.9"), t0 + Duration::from_secs(5)), Ok(()));
        assert_eq!(t.check("alice", None, t0 + Duration::from_secs(5)), Ok(()));
        assert_eq!(t.check("bob", ip("10.0.0.1"), t0 + Duration::from_secs(5)), Ok(()));
        // Each further failure doubles the wait.
        let mut at = t0 + Duration::from_secs(4) + MINUTE;
        for minutes in [2, 4, 8, 15, 15] {
            assert_eq!(t.check("alice", ip("10.0.0.1"), at), Ok(()));
            t.failed("alice", ip("10.0.0.1"), at);
            assert_eq!(t.check("alice", ip("10.0.0.1"), at), Err(minutes * 60), "after {minutes} min");
            at += MINUTE * minutes as u32;
        }
        // An hour without failures forgets them: five free ones again.
        let later = at + FORGET_AFTER;
        for _ in 0..PAIR_FREE_FAILURES {
            assert_eq!(t.check("alice", ip("10.0.0.1"), later), Ok(()));
            t.failed("alice", ip("10.0.0.1"), later);
        }
        assert_eq!(t.check("alice", ip("10.0.0.1"), later), Err(60));
    }

    /// Failures an attacker gets in each hour of `hours` by trying the moment a try
    /// is allowed, as `user(i)` from `address(i)` for the i-th try.
    fn guesses_per_hour(
        t: &LoginThrottle,
        hours: usize,
        user: impl Fn(usize) -> String,
        address: impl Fn(usize) -> Option<IpAddr>,
    ) -> Vec<usize> {
        let t0 = Instant::now();
        let mut per_hour = vec![0; hours];
        let mut n = 0;
        for second in 0..hours as u64 * 3600 {
            let now = t0 + Duration::from_secs(second);
            while t.check(&user(n), address(n), now).is_ok() {
                t.failed(&user(n), address(n), now);
                per_hour[second as usize / 3600] += 1;
                n += 1;
            }
        }
        per_hour
    }

    #[test]
    fn guessing_from_one_address_gets_few_tries_an_hour() {
        // One username from one address: 5, then after 1, 2, 4, 8 and 15 minutes, …
        let per_hour = guesses_per_hour(&LoginThrottle::new(), 4, |_| "alice".into(), |_| ip("192.0.2.1"));
        assert_eq!(per_hour, [11, 4, 4, 4]);
        // Any usernames from one address: 20, then the same growing waits.
        let per_hour = guesses_per_hour(&LoginThrottle::new(), 4, |i| format!("user{i}"), |_| ip("192.0.2.1"));
        assert_eq!(per_hour, [26, 4, 4, 4]);
    }

    #[test]
    fn guessing_from_many_addresses_gets_the_username_budget_plus_one_per_address() {
        for n in [10, 40] {
            // `n` addresses, each trying alice's password every second for four hours.
            let t = LoginThrottle::new();
            let t0 = Instant::now();
            let addresses: Vec<Option<IpAddr>> = (0..n).map(|i| ip(&format!("192.0.2.{i}"))).collect();
            let mut per_hour = [0; 4];
            for second in 0..4 * 3600 {
                let now = t0 + Duration::from_secs(second);
                for a in &addresses {
                    if t.check("alice", *a, now).is_ok() {
                        t.failed("alice", *a, now);
                        per_hour[second as usize / 3600] += 1;
                    }
                }
            }
            // Any one hour: the budget, plus one from each address that had not failed.
            assert!(per_hour.iter().all(|h| *h <= USER_BUDGET + n), "{n} addresses: {per_hour:?}");
            if n < USER_BUDGET {
                assert_eq!(per_hour, [USER_BUDGET; 4], "{n} addresses");
            }
            // The owner, from an address of their own, is never refused.
            assert_eq!(t.check("alice", ip("203.0.113.1"), t0 + Duration::from_secs(4 * 3600)), Ok(()));
        }
    }

    #[test]
    fn the_username_budget_never_refuses_an_address_that_has_not_failed() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        // The owner logged in from 10.0.0.1 (known-good), then typed a wrong password once.
        t.logged_in("alice", ip("10.0.0.1"), t0);
        t.failed("alice", ip("10.0.0.1"), t0);
        // Guessers spend the budget from addresses of their own, none past its own limit.
        for i in 0..USER_BUDGET - 1 {
            let a = ip(&format!("198.51.100.{}", i / 4));
            assert_eq!(t.check("alice", a, t0), Ok(()));
            t.failed("alice", a, t0);
        }
        let soon = t0 + Duration::from_secs(10);
        // Every address that failed for alice is refused now, right password or wrong…
        assert_eq!(t.check("alice", ip("198.51.100.0"), soon), Err(3590));
        // …but not one that has not failed for alice, nor the known-good owner.
        assert_eq!(t.check("alice", ip("203.0.113.1"), soon), Ok(()));
        assert_eq!(t.check("alice", ip("10.0.0.1"), soon), Ok(()));
        assert_eq!(t.check("bob", ip("198.51.100.0"), soon), Ok(()), "other usernames are not refused");
        // A fresh address that fails joins the refused ones.
        t.failed("alice", ip("203.0.113.1"), soon);
        assert!(t.check("alice", ip("203.0.113.1"), soon).is_err());
        // The budget frees up as the failures leave the window.
        assert_eq!(t.check("alice", ip("198.51.100.0"), t0 + USER_WINDOW), Ok(()));
        // An admin setting a new password forgets alice's failures everywhere.
        t.failed("alice", ip("203.0.113.1"), t0 + USER_WINDOW);
        t.forget_user("alice");
        assert_eq!(t.tracked().pairs, 0);
        assert_eq!(t.tracked().usernames, 0);
    }

    #[test]
    fn a_success_forgets_the_pair_but_not_the_address() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for _ in 0..PAIR_FREE_FAILURES - 1 {
            t.failed("alice", ip("10.0.0.1"), t0);
        }
        t.logged_in("alice", ip("10.0.0.1"), t0);
        for _ in 0..PAIR_FREE_FAILURES - 1 {
            t.failed("alice", ip("10.0.0.1"), t0);
        }
        assert_eq!(t.check("alice", ip("10.0.0.1"), t0), Ok(()), "the success forgot the first failures");
        t.failed("alice", ip("10.0.0.1"), t0);
        assert!(t.check("alice", ip("10.0.0.1"), t0).is_err());
        let t = locked(&t.tables);
        assert_eq!(t.addresses.entries[&address_key(ip("10.0.0.1"))].failures, 9);
        assert_eq!(t.users.entries.values().next().map(VecDeque::len), Some(9), "nor the username's budget");
    }

    #[test]
    fn twenty_failures_slow_down_an_address_for_every_username() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..ADDRESS_FREE_FAILURES {
            assert_eq!(t.check(&format!("user{i}"), ip("192.0.2.7"), t0), Ok(()));
            t.failed(&format!("user{i}"), ip("192.0.2.7"), t0);
        }
        assert_eq!(t.check("someone-else", ip("192.0.2.7"), t0 + Duration::from_secs(10)), Err(50));
        assert_eq!(t.check("someone-else", ip("192.0.2.8"), t0), Ok(()), "other addresses are not locked");
        assert_eq!(t.check("someone-else", None, t0), Ok(()));
        assert_eq!(t.check("someone-else", ip("192.0.2.7"), t0 + MINUTE), Ok(()));
    }

    #[test]
    fn ipv6_clients_count_by_their_64_network() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..ADDRESS_FREE_FAILURES {
            t.failed(&format!("u{i}"), ip(&format!("2001:db8:1:2::{:x}", i + 1)), t0);
        }
        assert!(t.check("x", ip("2001:db8:1:2:ffff::1"), t0).is_err());
        assert_eq!(t.check("x", ip("2001:db8:1:3::1"), t0), Ok(()));
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert_eq!(address_key(ip("::ffff:10.1.2.3")), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn memory_stays_bounded() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..MAX_PAIRS + 500 {
            let a = IpAddr::from((i as u32).to_be_bytes());
            t.failed(&format!("user{i}"), Some(a), t0);
            t.logged_in(&format!("user{i}"), Some(a), t0);
            t.failed(&format!("user{i}"), Some(a), t0);
        }
        let n = t.tracked();
        assert!(
            n.usernames <= MAX_TRACKED
                && n.addresses <= MAX_TRACKED
                && n.pairs <= MAX_PAIRS
                && n.known_good <= MAX_TRACKED,
            "{n:?}"
        );
        assert!(n.pairs > MAX_TRACKED, "pairs have a bound of their own: {n:?}");
    }

    #[test]
    fn stale_entries_go_before_the_oldest_recent_ones() {
        let t0 = Instant::now();
        let stale = |at: &Instant| *at < t0 + Duration::from_secs(100);
        // Full, some of it stale: only the stale entries go.
        let mut map: HashMap<u32, Instant> =
            (0..16).map(|i| (i, t0 + Duration::from_secs(u64::from(i) * 10))).collect();
        make_room(&mut map, 16, stale, |at| *at);
        let mut left: Vec<u32> = map.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, (10..16).collect::<Vec<_>>());
        // Full of recent entries: the oldest eighth goes.
        let mut map: HashMap<u32, Instant> =
            (0..16).map(|i| (i, t0 + Duration::from_secs(1000 + u64::from(i)))).collect();
        make_room(&mut map, 16, stale, |at| *at);
        assert_eq!(map.len(), 14);
        assert!(!map.contains_key(&0) && !map.contains_key(&1));
        // Not full: nothing goes.
        make_room(&mut map, 16, |_| true, |at| *at);
        assert_eq!(map.len(), 14);
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        h.insert(AUTHORIZATION, HeaderValue::from_str(&v).expect("a header value"));
        h
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_guesses_cannot_overrun_the_limits() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = facesearch_store::SqliteStore::open(dir.path()).expect("a store");
        store.create_user("alice", "alice-Password-1", Role::Searcher).await.expect("a user");
        let state = AppState::new(std::sync::Arc::new(store), crate::ApiConfig::default());
        let attempts = (0..20).map(|i| {
            let state = state.clone();
            tokio::spawn(async move {
                // Alternating usernames: the per-address turn, not only the username's, counts.
                let name = if i % 2 == 0 { "alice" } else { "nobody" };
                let headers = basic(name, &format!("guess-{i}"));
                authenticate(&headers, ip("10.0.1.1"), &state).await.map(|_| ()).map_err(|e| e.code)
            })
        });
        let mut codes = Vec::new();
        for a in attempts.collect::<Vec<_>>() {
            codes.push(a.await.expect("the attempt ran").expect_err("a wrong password"));
        }
        let verified = codes.iter().filter(|c| **c == "UNAUTHORIZED").count();
        assert_eq!(verified, 2 * PAIR_FREE_FAILURES as usize, "{codes:?}");
        assert_eq!(codes.iter().filter(|c| **c == "TOO_MANY_ATTEMPTS").count(), 20 - verified);
        // The right password is refused from that address, and accepted from any other.
        let e = authenticate(&basic("alice", "alice-Password-1"), ip("10.0.1.1"), &state).await.expect_err("locked");
        assert_eq!(e.code, "TOO_MANY_ATTEMPTS");
        assert!(e.details.retry_after.is_some_and(|s| (1..=60).contains(&s)));
        authenticate(&basic("alice", "alice-Password-1"), ip("10.0.1.2"), &state).await.expect("not locked out");
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
