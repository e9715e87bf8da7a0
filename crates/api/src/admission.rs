//! Admission of authenticated requests: slots for requests in flight, shared fairly,
//! and a budget for the bytes of request bodies held in memory.
//!
//! **Slots** ([`Slots`]). At most `max_in_flight` authenticated requests are handled at
//! once; beyond that new ones get `503` at once (backpressure, not a queue). No one
//! user may hold more than `max_in_flight_per_user` of them, and the last
//! `admin_reserved_slots` are for admins only: all non-admin users together hold at
//! most `max_in_flight - admin_reserved_slots`. So neither one account nor any group
//! of non-admin accounts (e.g. slow uploads at 2 KB/s) can keep an admin out. The slot
//! is taken right after authentication, before the body is read, and given back when
//! the request ends.
//!
//! **Upload budget** ([`UploadBudget`]). A request body is buffered before its handler
//! runs (see [`crate::body`]). Every body may use [`FREE_BODY_BYTES`] without asking
//! (JSON requests, administration); beyond that its bytes are reserved from one budget
//! shared by all requests — the whole declared `Content-Length` (up to the body limit)
//! before anything is read, or step by step for a body of unknown length — and given
//! back when the request ends. A request that cannot get its bytes within
//! [`UPLOAD_BUDGET_WAIT`] gets `503`, its body read and thrown away. Reserving the
//! declared length up front means a request that got its bytes can always finish, so
//! waiting requests never hold each other up; the budget hands out bytes first come,
//! first served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Bytes of any body that are not counted against the upload budget, so that small
/// requests (JSON, administration) never wait for it.
pub const FREE_BODY_BYTES: usize = 64 * 1024;

/// How long a request waits for upload budget before it is refused with `503`.
pub const UPLOAD_BUDGET_WAIT: Duration = Duration::from_secs(5);

/// The default share of the slots one user may hold: a quarter of them, at least one.
pub fn default_per_user(max_in_flight: usize) -> usize {
    (max_in_flight / 4).max(1)
}

/// The default number of slots kept for admins: an eighth, at least one, none when
/// there is only one slot.
pub fn default_admin_reserve(max_in_flight: usize) -> usize {
    if max_in_flight < 2 { 0 } else { (max_in_flight / 8).max(1) }
}

/// Default upload budget: 256 MiB of request bodies in memory at once.
pub const DEFAULT_UPLOAD_BUDGET: usize = 256 << 20;

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user already holds `max_in_flight_per_user` slots.
    User(usize),
    /// Every slot this user may take is in use (for a non-admin, every slot outside
    /// the admin reserve).
    Server(usize),
}

impl Refusal {
    pub fn into_error(self) -> ApiError {
        match self {
            Refusal::User(limit) => ApiError::unavailable(format!(
                "you already have {limit} requests in flight, the most one user may have; retry when one has finished"
            ))
            .with(|d| d.limit = Some(limit as u64)),
            Refusal::Server(limit) => ApiError::unavailable("too many requests in flight; retry shortly")
                .with(|d| d.limit = Some(limit as u64)),
        }
    }
}

#[derive(Default)]
struct Held {
    all: usize,
    non_admin: usize,
    by_user: HashMap<String, usize>,
}

/// Slots for authenticated requests in flight: a global cap, a cap per user and a
/// reserve for admins.
pub struct Slots {
    total: usize,
    per_user: usize,
    admin_reserve: usize,
    held: Mutex<Held>,
}

impl Slots {
    /// `total` slots (at least 1), at most `per_user` per user (1 to `total`), and
    /// `admin_reserve` of them for admins only (less than `total`).
    pub fn new(total: usize, per_user: usize, admin_reserve: usize) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            total,
            per_user: per_user.clamp(1, total),
            admin_reserve: admin_reserve.min(total - 1),
            held: Mutex::new(Held::default()),
        })
    }

    /// The limits in force: (total, per user, admin reserve).
    pub fn limits(&self) -> (usize, usize, usize) {
        (self.total, self.per_user, self.admin_reserve)
    }

    /// Takes a slot for `username` (an admin when `admin`), or says why not.
    pub fn try_take(self: &Arc<Self>, username: &str, admin: bool) -> Result<Slot, Refusal> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = held.by_user.get(username).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(Refusal::User(self.per_user));
        }
        if held.all >= self.total {
            return Err(Refusal::Server(self.total));
        }
        let open_to_non_admins = self.total - self.admin_reserve;
        if !admin && held.non_admin >= open_to_non_admins {
            return Err(Refusal::Server(open_to_non_admins));
        }
        held.all += 1;
        if !admin {
            held.non_admin += 1;
        }
        *held.by_user.entry(username.to_string()).or_default() += 1;
        Ok(Slot { slots: self.clone(), username: username.to_string(), admin })
    }

    /// Slots held now: (all, by non-admins).
    pub fn held(&self) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        (held.all, held.non_admin)
    }
}

/// A slot held; given back when dropped (also when the request is cancelled).
pub struct Slot {
    slots: Arc<Slots>,
    username: String,
    admin: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.all -= 1;
        if !self.admin {
            held.non_admin -= 1;
        }
        if let Some(n) = held.by_user.get_mut(&self.username) {
            *n -= 1;
            if *n == 0 {
                held.by_user.remove(&self.username);
            }
        }
    }
}

/// The bytes of request bodies that may be held in memory at once (beyond
/// [`FREE_BODY_BYTES`] each), of which room for one whole body is kept for admins.
pub struct UploadBudget {
    total: usize,
    reserve: usize,
    /// How long a request waits for room ([`UPLOAD_BUDGET_WAIT`]).
    wait: Duration,
    /// Open to everyone.
    shared: Arc<Semaphore>,
    /// Admins only: they take from here first, without waiting, then from `shared`.
    admins: Arc<Semaphore>,
}

/// The budget ran out: no room within the wait.
#[derive(Debug, Clone, Copy)]
pub struct BudgetExhausted(pub usize);

impl BudgetExhausted {
    pub fn into_error(self) -> ApiError {
        ApiError::unavailable("the server is receiving too many uploads at once; retry shortly")
            .with(|d| d.limit = Some(self.0 as u64))
    }
}

impl UploadBudget {
    /// A budget of `total` bytes (at least `body`, the most one body may reserve), of
    /// which up to `body` bytes (as long as `body` bytes stay open to everyone) are
    /// for admins only; a request waits up to `wait` for room.
    pub fn new(total: usize, body: usize, wait: Duration) -> Self {
        let body = body.min(Semaphore::MAX_PERMITS);
        let total = total.clamp(body, Semaphore::MAX_PERMITS);
        let reserve = (total - body).min(body);
        Self {
            total,
            reserve,
            wait,
            shared: Arc::new(Semaphore::new(total - reserve)),
            admins: Arc::new(Semaphore::new(reserve)),
        }
    }

    /// The budget, bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The part of the budget only admins may use, bytes.
    pub fn admin_reserve(&self) -> usize {
        self.reserve
    }

    /// Bytes of the budget not reserved now.
    pub fn available(&self) -> usize {
        self.shared.available_permits() + self.admins.available_permits()
    }

    /// A reservation allowing a body of `bytes` for an admin (`admin`) or another
    /// user, waiting briefly for room.
    pub async fn reserve(&self, bytes: usize, admin: bool) -> Result<Reservation, BudgetExhausted> {
        let mut r = Reservation {
            shared: self.shared.clone(),
            admins: admin.then(|| self.admins.clone()),
            total: self.total,
            wait: self.wait,
            held: Vec::new(),
        };
        r.grow(bytes).await?;
        Ok(r)
    }
}

/// Bytes reserved for one body; given back when dropped.
pub struct Reservation {
    shared: Arc<Semaphore>,
    /// The admins' part of the budget, for an admin's body.
    admins: Option<Arc<Semaphore>>,
    total: usize,
    wait: Duration,
    held: Vec<OwnedSemaphorePermit>,
}

impl Reservation {
    /// How large a body this reservation allows.
    pub fn allows(&self) -> usize {
        FREE_BODY_BYTES + self.held.iter().map(OwnedSemaphorePermit::num_permits).sum::<usize>()
    }

    /// Makes the reservation allow a body of at least `bytes`, waiting briefly for
    /// room in the budget.
    pub async fn grow(&mut self, bytes: usize) -> Result<(), BudgetExhausted> {
        let more = bytes.saturating_sub(self.allows());
        if more == 0 {
            return Ok(());
        }
        let exhausted = BudgetExhausted(self.total);
        let n = u32::try_from(more).map_err(|_| exhausted)?;
        // An admin's body goes into the admins' part if it fits there now.
        if let Some(permit) = self.admins.as_ref().and_then(|a| a.clone().try_acquire_many_owned(n).ok()) {
            self.held.push(permit);
            return Ok(());
        }
        let permit = tokio::time::timeout(self.wait, self.shared.clone().acquire_many_owned(n))
            .await
            .map_err(|_| exhausted)?
            .map_err(|_| exhausted)?;
        self.held.push(permit);
        Ok(())
    }

    /// Gives the reserved bytes back now (the body was thrown away).
    pub fn release(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_cannot_take_more_than_their_share() {
        let slots = Slots::new(8, 2, 1);
        let a1 = slots.try_take("alice", false).expect("a first slot");
        let _a2 = slots.try_take("alice", false).expect("a second slot");
        assert_eq!(slots.try_take("alice", false).err(), Some(Refusal::User(2)));
        assert!(slots.try_take("bob", false).is_ok(), "other users are not affected");
        drop(a1);
        assert!(slots.try_take("alice", false).is_ok(), "a finished request gives its slot back");
    }

    #[test]
    fn non_admins_together_cannot_take_the_admin_reserve() {
        let slots = Slots::new(6, 2, 2);
        let held: Vec<Slot> =
            ["a", "a", "b", "b"].iter().map(|u| slots.try_take(u, false).expect("outside the reserve")).collect();
        assert_eq!(slots.try_take("c", false).err(), Some(Refusal::Server(4)));
        let r1 = slots.try_take("root", true).expect("an admin takes a reserved slot");
        let _r2 = slots.try_take("root2", true).expect("another admin takes the other");
        assert_eq!(slots.try_take("root3", true).err(), Some(Refusal::Server(6)), "all slots are in use");
        assert_eq!(slots.held(), (6, 4));
        drop(r1);
        assert_eq!(slots.try_take("c", false).err(), Some(Refusal::Server(4)), "a freed reserved slot stays reserved");
        drop(held);
        assert_eq!(slots.held(), (1, 0));
        assert!(slots.held.lock().unwrap().by_user.len() == 1, "users without slots are forgotten");
    }

    #[test]
    fn admins_have_a_share_too_and_may_use_the_whole_pool() {
        let slots = Slots::new(4, 3, 1);
        let _held: Vec<Slot> = (0..3).map(|_| slots.try_take("root", true).expect("a slot")).collect();
        assert_eq!(slots.try_take("root", true).err(), Some(Refusal::User(3)));
        assert!(slots.try_take("other-admin", true).is_ok());
    }

    #[test]
    fn limits_are_made_consistent() {
        assert_eq!(Slots::new(0, 0, 5).limits(), (1, 1, 0));
        assert_eq!(Slots::new(10, 50, 10).limits(), (10, 10, 9));
        assert_eq!((default_per_user(64), default_admin_reserve(64)), (16, 8));
        assert_eq!((default_per_user(1), default_admin_reserve(1)), (1, 0));
        assert_eq!((default_per_user(2), default_admin_reserve(2)), (1, 1));
    }

    #[tokio::test]
    async fn the_budget_reserves_beyond_the_free_bytes_and_waits_briefly() {
        const F: usize = FREE_BODY_BYTES;
        const WAIT: Duration = Duration::from_millis(200);
        // 1000 bytes, bodies of up to 300 reserved bytes: 300 kept for admins.
        let budget = Arc::new(UploadBudget::new(1000, 300, WAIT));
        assert_eq!((budget.total(), budget.admin_reserve()), (1000, 300));
        let small = budget.reserve(F, false).await.expect("free");
        assert_eq!(budget.available(), 1000);
        let mut a = budget.reserve(F + 300, false).await.expect("within the budget");
        let b = budget.reserve(F + 300, false).await.expect("within the budget");
        assert_eq!((a.allows(), budget.available()), (F + 300, 400));
        let t0 = std::time::Instant::now();
        assert!(budget.reserve(F + 200, false).await.is_err(), "only the admins' part is left");
        assert!(t0.elapsed() >= WAIT, "refused after waiting briefly, not at once");
        let admin = budget.reserve(F + 300, true).await.expect("an admin uses the reserve");
        assert_eq!(budget.available(), 100);
        a.grow(F + 400).await.expect("grows into the rest of the shared part");
        assert_eq!(budget.available(), 0);
        // A waiting request gets its bytes as soon as another gives them back.
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(F + 250, false).await.map(|r| r.allows()) })
        };
        tokio::task::yield_now().await;
        a.release();
        assert_eq!(waiter.await.expect("ran").expect("reserved"), F + 250);
        drop((small, b, admin));
        assert_eq!(budget.available(), 1000, "everything was given back");
    }

    #[test]
    fn the_budget_holds_at_least_one_body_open_to_everyone() {
        let budget = |total| UploadBudget::new(total, 300, UPLOAD_BUDGET_WAIT);
        assert_eq!(budget(10).total(), 300);
        assert_eq!(budget(300).admin_reserve(), 0);
        assert_eq!(budget(450).admin_reserve(), 150);
    }
}
