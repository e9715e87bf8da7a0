//! Fair admission under load, over real HTTP: stalled (slow) uploads by one user, or
//! by a group of non-admin users, cannot take every request slot, and the bytes of
//! request bodies held in memory are bounded by the upload budget.
//!
//! Uploads are written over raw TCP so that the test controls every byte and pause.
//! An upload sends `Expect: 100-continue`: the server asks for the body (`100
//! Continue`) only once the request holds a slot and its bytes of the upload budget,
//! so the interim answer tells the test, without guessing or sleeping, that the
//! request was admitted; a refused one gets its final `503` instead. One upload per
//! test is sent the plain way (no `Expect`) and stalls mid-body, like the slow
//! uploads of the finding: its `503` must come at once, while it is still sending.
//!
//! "Waiting" here is always a blocking socket read with a read timeout (waiting for the
//! server to act), never a sleep; elapsed times are printed, not asserted, except that a
//! refusal for lack of slots must not wait for the request timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ADMIN_PASSWORD, ADMIN_USER, Server, ServerOptions};
use serde_json::{Value, json};

const PASSWORD: &str = "limits-Password-1";
const BOUNDARY: &str = "requestLimitsBoundary5kQ2x";
/// Long enough that no stalled upload of these tests is cut off by it.
const REQUEST_TIMEOUT_S: &str = "120";
/// How long a test waits for an answer the server should give at once.
const PROMPT: Duration = Duration::from_secs(15);
/// How long a test waits for the answer to an upload that waits for the budget (the
/// server gives up after 5 s).
const BUDGET_ANSWER: Duration = Duration::from_secs(30);

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn start(args: &[&str]) -> Server {
    let mut all = vec!["--request-timeout", REQUEST_TIMEOUT_S];
    all.extend_from_slice(args);
    Server::start_with(ServerOptions::default().args(&all))
}

fn create_user(s: &Server, name: &str, role: &str) {
    s.post_json("/users", &json!({"username": name, "password": PASSWORD, "role": role})).ok(201);
}

/// One response as far as it came: status, head and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn describe(&self) -> String {
        format!("{} | {}", self.head.replace("\r\n", " | "), String::from_utf8_lossy(&self.body))
    }
}

/// A raw HTTP/1.1 connection with one request on it, and what was read so far.
struct Conn {
    stream: TcpStream,
    read: Vec<u8>,
    /// The request body (sent on demand).
    body: Vec<u8>,
    sent: usize,
    what: String,
}

/// A search upload of exactly `length` bytes by `auth`: the head is sent, the body is
/// not. With `expect`, the head asks for `100 Continue`.
fn open_upload(s: &Server, what: &str, auth: &str, length: usize, expect: bool) -> Conn {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"target_index_ids\"\r\n\r\nnone\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"source_image\"; filename=\"big.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    let tail = format!("\r\n--{BOUNDARY}--\r\n").into_bytes();
    assert!(length > body.len() + tail.len(), "{what}: {length} bytes is too small for the form");
    body.resize(length - tail.len(), 0x42);
    body.extend_from_slice(&tail);
    let head = format!(
        "POST /face/search?perform_liveness_check=false HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n{}\r\n",
        s.addr(),
        if expect { "Expect: 100-continue\r\n" } else { "" }
    );
    let mut stream = TcpStream::connect(s.addr()).expect("connecting to the server");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream.write_all(head.as_bytes()).unwrap_or_else(|e| panic!("{what}: sending the head: {e}"));
    Conn { stream, read: Vec::new(), body, sent: 0, what: what.to_string() }
}

impl Conn {
    /// Sends the next `n` bytes of the body (all that is left when fewer).
    fn send(&mut self, n: usize) {
        let end = self.sent.saturating_add(n).min(self.body.len());
        self.stream
            .write_all(&self.body[self.sent..end])
            .unwrap_or_else(|e| panic!("{}: sending body bytes {}..{end}: {e}", self.what, self.sent));
        self.sent = end;
    }

    /// The next response (interim or final) within `wait`, or `None` on silence;
    /// panics when the connection closes without one.
    fn next_answer(&mut self, wait: Duration) -> Option<Answer> {
        let deadline = Instant::now() + wait;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(answer) = self.take_answer() {
                return Some(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).expect("setting the read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    panic!("{}: the connection closed without an answer ({} bytes read)", self.what, self.read.len())
                }
                Ok(n) => self.read.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: reading the answer: {e}", self.what),
            }
        }
    }

    /// A complete response from the bytes read so far, removed from them.
    fn take_answer(&mut self) -> Option<Answer> {
        let end = self.read.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.read[..end]).trim_end().to_string();
        let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if self.read.len() < end + length {
            return None;
        }
        let body = self.read[end..end + length].to_vec();
        self.read.drain(..end + length);
        Some(Answer { status, head, body })
    }

    /// The final response within `wait` (interim `100 Continue` skipped).
    fn final_answer(&mut self, wait: Duration) -> Option<Answer> {
        let deadline = Instant::now() + wait;
        loop {
            let answer = self.next_answer(deadline.saturating_duration_since(Instant::now()))?;
            if answer.status >= 200 {
                return Some(answer);
            }
        }
    }

    /// Asserts that the server asked for the body: the request holds a slot (and its
    /// bytes of the upload budget). Then sends the first bytes of the body and stalls.
    #[track_caller]
    fn assert_admitted(&mut self, wait: Duration) {
        match self.next_answer(wait) {
            Some(a) if a.status == 100 => self.send(1000),
            Some(a) => panic!("{}: expected 100 Continue (admitted), got {}", self.what, a.describe()),
            None => panic!("{}: no 100 Continue within {wait:?}: the request was not admitted", self.what),
        }
    }

    /// Asserts a final `503 SERVICE_UNAVAILABLE` JSON answer within `wait`; returns it.
    #[track_caller]
    fn assert_refused(&mut self, wait: Duration) -> Answer {
        let t0 = Instant::now();
        let a = self
            .final_answer(wait)
            .unwrap_or_else(|| panic!("{}: no answer within {wait:?}; expected 503 (refused)", self.what));
        assert_eq!(a.status, 503, "{}: expected 503 (refused), got {}", self.what, a.describe());
        assert!(a.head.to_ascii_lowercase().contains("content-type: application/json"), "{}", a.describe());
        assert_eq!(a.json()["error"]["code"], "SERVICE_UNAVAILABLE", "{}: {}", self.what, a.describe());
        eprintln!("{}: refused after {:.2?}: {}", self.what, t0.elapsed(), a.json()["error"]["message"]);
        a
    }

    /// Sends the rest of the body and returns the final answer (the slot and the
    /// budget are given back before it is sent).
    #[track_caller]
    fn finish(&mut self) -> Answer {
        self.send(usize::MAX);
        self.final_answer(PROMPT).unwrap_or_else(|| panic!("{}: no answer to the completed upload", self.what))
    }
}

/// A quick request on a fresh connection: its status and error code.
fn quick(s: &Server, user: &str, password: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut req = match method {
        "GET" => s.http().get(s.url(path)),
        _ => s.http().post(s.url(path)),
    }
    .basic_auth(user, Some(password));
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = s.send(format!("{user}: {method} {path}"), req);
    (r.status, r.json["error"]["code"].as_str().unwrap_or_default().to_string())
}

/// Point 3: one searcher opening more slow uploads than the per-user limit gets a
/// prompt 503 JSON for the excess, other users and the admin are still served, and the
/// slots come back when the uploads end.
#[test]
fn one_user_cannot_take_every_request_slot() {
    // 8 slots, 3 per user, 2 kept for admins.
    let s = start(&["--max-in-flight", "8", "--max-in-flight-per-user", "3", "--admin-reserved-slots", "2"]);
    create_user(&s, "flooder", "searcher");
    create_user(&s, "bystander", "searcher");
    let flooder = basic("flooder", PASSWORD);
    let t0 = Instant::now();
    let mut held: Vec<Conn> = (0..3)
        .map(|i| {
            let mut c = open_upload(&s, &format!("flooder upload {i}"), &flooder, 1_000_000, true);
            c.assert_admitted(PROMPT);
            c
        })
        .collect();
    eprintln!("3 stalled uploads of the flooder admitted in {:.2?}", t0.elapsed());

    // More uploads of the same user: refused at once, also a plain slow upload that is
    // still sending (it must not have to wait for the request timeout).
    for i in 3..6 {
        let mut c = open_upload(&s, &format!("flooder upload {i}"), &flooder, 1_000_000, true);
        let e = c.assert_refused(PROMPT);
        assert_eq!(e.json()["error"]["limit"], 3, "the per-user limit is named: {}", e.describe());
    }
    let mut slow = open_upload(&s, "flooder plain slow upload", &flooder, 1_000_000, false);
    slow.send(2000);
    slow.assert_refused(PROMPT);
    assert_eq!(quick(&s, "flooder", PASSWORD, "GET", "/users/me", None), (503, "SERVICE_UNAVAILABLE".into()));

    // Everyone else is still served: another searcher, and the admin.
    assert_eq!(quick(&s, "bystander", PASSWORD, "GET", "/users/me", None).0, 200);
    assert_eq!(quick(&s, ADMIN_USER, ADMIN_PASSWORD, "GET", "/users", None).0, 200);
    create_user(&s, "created-meanwhile", "auditor");

    // A finished upload gives its slot back.
    let done = held.pop().expect("a held upload").finish();
    assert_ne!(done.status, 503, "the completed upload was answered: {}", done.describe());
    let mut again = open_upload(&s, "flooder upload after one ended", &flooder, 1_000_000, true);
    again.assert_admitted(PROMPT);
    drop(held);
}

/// Point 3: non-admin accounts together cannot take the slots kept for admins.
#[test]
fn non_admin_accounts_together_cannot_take_the_admin_reserve() {
    // 8 slots, 3 per user, 2 kept for admins: non-admins hold at most 6.
    let s = start(&["--max-in-flight", "8", "--max-in-flight-per-user", "3", "--admin-reserved-slots", "2"]);
    for name in ["s1", "s2", "s3", "latecomer"] {
        create_user(&s, name, "searcher");
    }
    let mut held = Vec::new();
    for name in ["s1", "s2"] {
        for i in 0..3 {
            let mut c = open_upload(&s, &format!("{name} upload {i}"), &basic(name, PASSWORD), 1_000_000, true);
            c.assert_admitted(PROMPT);
            held.push(c);
        }
    }
    // Six non-admin slots are in use; two are free but kept for admins.
    let mut c = open_upload(&s, "s3 upload", &basic("s3", PASSWORD), 1_000_000, true);
    let e = c.assert_refused(PROMPT);
    assert_eq!(e.json()["error"]["limit"], 6, "the non-admin share is named: {}", e.describe());
    assert_eq!(quick(&s, "latecomer", PASSWORD, "GET", "/users/me", None), (503, "SERVICE_UNAVAILABLE".into()));

    // The admin still administers, and can even hold the reserved slots...
    assert_eq!(quick(&s, ADMIN_USER, ADMIN_PASSWORD, "GET", "/users", None).0, 200);
    create_user(&s, "made-by-admin", "searcher");
    let admin = basic(ADMIN_USER, ADMIN_PASSWORD);
    let mut admin_uploads: Vec<Conn> = (0..2)
        .map(|i| {
            let mut c = open_upload(&s, &format!("admin upload {i}"), &admin, 1_000_000, true);
            c.assert_admitted(PROMPT);
            c
        })
        .collect();
    // ... and then all 8 are in use, for admins too.
    assert_eq!(quick(&s, ADMIN_USER, ADMIN_PASSWORD, "GET", "/users", None), (503, "SERVICE_UNAVAILABLE".into()));
    let done = admin_uploads.pop().expect("an admin upload").finish();
    assert_ne!(done.status, 503, "{}", done.describe());
    assert_eq!(quick(&s, ADMIN_USER, ADMIN_PASSWORD, "GET", "/users", None).0, 200);

    // A non-admin slot that ends lets another non-admin in.
    let done = held.pop().expect("a held upload").finish();
    assert_ne!(done.status, 503, "{}", done.describe());
    assert_eq!(quick(&s, "latecomer", PASSWORD, "GET", "/users/me", None).0, 200);
}

/// Point 6: the bytes of request bodies held at once are bounded: beyond the budget an
/// upload waits briefly, then gets 503 JSON (its body is not kept); one that finds
/// room meanwhile goes ahead; small requests and the admins' room are unaffected.
#[test]
fn the_upload_budget_bounds_the_bytes_held_at_once() {
    // Bodies of up to 1,000,000 + 256 KiB bytes; 64 KiB of each are not counted. A
    // budget of 3,100,000 bytes keeps one whole body (1,196,608) for admins; the other
    // 1,903,392 hold two uploads of 1,000,000 bytes (934,464 counted each), not three.
    let s = start(&["--max-image-bytes", "1000000", "--upload-budget-bytes", "3100000"]);
    for name in ["u1", "u2", "u3", "u4"] {
        create_user(&s, name, "searcher");
    }
    let mut first = open_upload(&s, "u1 upload", &basic("u1", PASSWORD), 1_000_000, true);
    first.assert_admitted(PROMPT);
    let mut second = open_upload(&s, "u2 upload", &basic("u2", PASSWORD), 1_000_000, true);
    second.assert_admitted(PROMPT);

    // The third waits for the budget, then is refused.
    let mut third = open_upload(&s, "u3 upload", &basic("u3", PASSWORD), 1_000_000, true);
    let t0 = Instant::now();
    let e = third.assert_refused(BUDGET_ANSWER);
    let waited = t0.elapsed();
    eprintln!("u3's upload refused after waiting {waited:.2?} for the upload budget");
    assert_eq!(e.json()["error"]["limit"], 3_100_000, "the budget is named: {}", e.describe());

    // A small upload (within the 64 KiB every body may use) is not held up.
    let mut small = open_upload(&s, "u3 small upload", &basic("u3", PASSWORD), 30_000, true);
    match small.next_answer(PROMPT) {
        Some(a) if a.status == 100 => {}
        other => panic!("a small upload was not asked for its body at once: {other:?}"),
    }
    let done = small.finish();
    assert_ne!(done.status, 503, "{}", done.describe());
    // The admins' part of the budget is still free.
    let mut admin = open_upload(&s, "admin upload", &basic(ADMIN_USER, ADMIN_PASSWORD), 1_000_000, true);
    admin.assert_admitted(PROMPT);

    // An upload that waits goes ahead as soon as another gives its bytes back.
    let mut fourth = open_upload(&s, "u4 upload", &basic("u4", PASSWORD), 1_000_000, true);
    assert!(
        fourth.next_answer(Duration::from_millis(500)).is_none(),
        "u4's upload was answered while the budget was full"
    );
    let done = first.finish();
    assert_ne!(done.status, 503, "{}", done.describe());
    fourth.assert_admitted(PROMPT);
    let done = fourth.finish();
    assert_ne!(done.status, 503, "the admitted upload was answered: {}", done.describe());
    drop((second, admin));
}
