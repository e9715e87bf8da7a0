//! Slow and oversized clients (slowloris and friends) are cut off without exhausting
//! the server. One server with `--request-timeout 2` is shared by the tests; they talk
//! to it over raw TCP so that they control every byte and every pause.
//!
//! "Waiting" here is always a blocking socket read with a read timeout (waiting for the
//! server to act), never a sleep; elapsed times are printed, never asserted.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Server, ServerOptions, admin_basic_auth};
use serde_json::Value;

/// The server's request timeout, seconds.
const REQUEST_TIMEOUT_S: u64 = 2;
/// How long a test waits for the server to answer or close a stalled request.
const SLOW_BODY_WAIT: Duration = Duration::from_secs(20);
/// How long a test waits for the server to give up on a stalled header block.
const SLOW_HEADER_WAIT: Duration = Duration::from_secs(40);
const SLOW_CONNECTIONS: usize = 50;
const BOUNDARY: &str = "slowlorisBoundary7MA4YWxkTrZu0gW";

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // Every stalled body here is the admin's: the per-user share of the request
        // slots is raised to all of them, so that these tests see the request timeout at
        // work (the per-user limit is tested in `tests/request_limits.rs`).
        Server::start_with(ServerOptions::default().args(&[
            "--request-timeout",
            &REQUEST_TIMEOUT_S.to_string(),
            "--max-in-flight-per-user",
            "64",
        ]))
    })
}

/// How the server reacted to a request.
#[derive(Debug)]
enum Answer {
    /// A response (head complete; body as far as it came).
    Response { status: u16, head: String, body: Vec<u8> },
    /// The connection was closed (EOF or reset) without a complete response head.
    Closed { partial: usize, how: String },
    /// Neither within the wait.
    Silence,
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Response { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn json(&self) -> Value {
        match self {
            Answer::Response { body, .. } => serde_json::from_slice(body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    fn describe(&self) -> String {
        match self {
            Answer::Response { status, head, body } => {
                format!("{status}: {} | {}", head.replace("\r\n", " | "), String::from_utf8_lossy(body))
            }
            Answer::Closed { partial, how } => format!("closed ({how}; {partial} bytes before)"),
            Answer::Silence => "no answer".into(),
        }
    }
}

fn connect(s: &Server) -> TcpStream {
    let stream = TcpStream::connect(s.addr()).expect("connecting to the server");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// Writes everything it can; a server that closes early is not an error here (what it
/// answered, if anything, is read next).
fn send(stream: &mut TcpStream, bytes: &[u8]) -> Option<std::io::Error> {
    stream.write_all(bytes).and_then(|()| stream.flush()).err()
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// A response head parsed far enough: status, content length, chunked.
fn parse_head(head: &str) -> (u16, Option<usize>, bool) {
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    for line in head.lines().skip(1) {
        let Some((k, v)) = line.split_once(':') else { continue };
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    (status, length, chunked)
}

/// Blocks reading until a complete response arrives, the connection closes, or `wait`
/// has passed.
fn read_answer(stream: &mut TcpStream, wait: Duration) -> Answer {
    let deadline = Instant::now() + wait;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let finish = |buf: &[u8], complete_or_closed: bool| -> Option<Answer> {
        let end = head_end(buf)?;
        let head = String::from_utf8_lossy(&buf[..end]).trim_end().to_string();
        let (status, length, chunked) = parse_head(&head);
        let body = &buf[end..];
        let done = match (length, chunked) {
            (Some(n), _) => body.len() >= n,
            (None, true) => body.ends_with(b"0\r\n\r\n"),
            (None, false) => status == 204 || status == 304 || (100..200).contains(&status),
        };
        (done || complete_or_closed).then(|| Answer::Response { status, head, body: body.to_vec() })
    };
    // Each pass reads at least one byte or ends the loop; a response is far below this.
    for _ in 0..100_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return finish(&buf, true).unwrap_or(Answer::Silence);
        }
        stream.set_read_timeout(Some(left)).expect("setting the read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => {
                return finish(&buf, true).unwrap_or(Answer::Closed { partial: buf.len(), how: "EOF".into() });
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(a) = finish(&buf, false) {
                    return a;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return finish(&buf, true).unwrap_or(Answer::Silence);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return finish(&buf, true).unwrap_or(Answer::Closed { partial: buf.len(), how: format!("{e}") });
            }
        }
    }
    panic!("the server sent more than 100000 reads' worth of data");
}

/// The head of a search request promising a 1 MB multipart body, and the first few
/// hundred bytes of that body.
fn slow_search_start(s: &Server) -> (Vec<u8>, Vec<u8>) {
    let head = format!(
        "POST /face/search?perform_liveness_check=false HTTP/1.1\r\n\
         Host: {}\r\n\
         Authorization: {}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Content-Length: 1000000\r\n\
         \r\n",
        s.addr(),
        admin_basic_auth()
    );
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"target_index_ids\"\r\n\r\nnone\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"source_image\"; filename=\"slow.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
    body.resize(body.len() + 200, 0x42);
    (head.into_bytes(), body)
}

/// A stalled slow body must get the JSON 503 REQUEST_TIMEOUT, or at least be closed.
#[track_caller]
fn assert_cut_off(what: &str, a: &Answer) {
    match a {
        Answer::Response { status, .. } => {
            assert_eq!(*status, 503, "{what}: expected 503 REQUEST_TIMEOUT, got {}", a.describe());
            assert_eq!(a.json()["error"]["code"], "REQUEST_TIMEOUT", "{what}: {}", a.describe());
        }
        Answer::Closed { .. } => {}
        Answer::Silence => panic!("{what}: the server neither answered nor closed within {SLOW_BODY_WAIT:?}"),
    }
}

/// (a) A body that stops arriving is answered 503 REQUEST_TIMEOUT (or closed).
#[test]
fn stalled_body_is_cut_off_by_the_request_timeout() {
    let s = server();
    let mut stream = connect(s);
    let (head, body) = slow_search_start(s);
    let t0 = Instant::now();
    assert!(send(&mut stream, &head).is_none(), "sending the request head failed");
    assert!(send(&mut stream, &body).is_none(), "sending the first body bytes failed");
    let a = read_answer(&mut stream, SLOW_BODY_WAIT);
    let took = t0.elapsed();
    eprintln!(
        "(a) stalled body ({} of 1000000 bytes sent): {} after {took:.2?} (request timeout {REQUEST_TIMEOUT_S} s)",
        body.len(),
        match &a {
            Answer::Response { status, .. } => format!("answered {status} {}", a.json()["error"]["code"]),
            other => other.describe(),
        }
    );
    assert_cut_off("stalled body", &a);
    if let Answer::Response { .. } = a {
        // The rest of the promised body will never come: the connection must not be
        // kept waiting for it.
        let after = read_answer(&mut stream, SLOW_BODY_WAIT);
        eprintln!("(a) after the 503 the connection was: {}", after.describe());
        assert!(
            !matches!(after, Answer::Silence),
            "after answering 503 the server kept the connection open for {SLOW_BODY_WAIT:?}"
        );
    }
}

/// A plain request on a fresh connection, with a read timeout: the status and elapsed time.
fn quick_get(s: &Server, path: &str, auth: bool) -> (Answer, Duration) {
    let mut stream = connect(s);
    let auth = if auth { format!("Authorization: {}\r\n", admin_basic_auth()) } else { String::new() };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n", s.addr());
    let t0 = Instant::now();
    assert!(send(&mut stream, req.as_bytes()).is_none(), "sending GET {path} failed");
    let a = read_answer(&mut stream, SLOW_BODY_WAIT);
    (a, t0.elapsed())
}

/// (b) 50 stalled bodies at once do not keep the server from answering others.
#[test]
fn fifty_stalled_bodies_do_not_starve_other_clients() {
    let s = server();
    let (head, body) = slow_search_start(s);
    let t0 = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW_CONNECTIONS)
        .map(|i| {
            let mut c = connect(s);
            assert!(send(&mut c, &head).is_none(), "slow connection {i}: sending the head failed");
            assert!(send(&mut c, &body).is_none(), "slow connection {i}: sending the body start failed");
            c
        })
        .collect();
    let opened = t0.elapsed();

    let (health, health_took) = quick_get(s, "/healthz", false);
    let (details, details_took) = quick_get(s, "/face/index/details", true);
    eprintln!(
        "(b) {SLOW_CONNECTIONS} stalled bodies opened in {opened:.2?}; then /healthz {:?} in {health_took:.2?}, \
         /face/index/details {:?} in {details_took:.2?}",
        health.status(),
        details.status()
    );
    assert_eq!(health.status(), Some(200), "/healthz with {SLOW_CONNECTIONS} stalled clients: {}", health.describe());
    assert_eq!(details.status(), Some(200), "details with {SLOW_CONNECTIONS} stalled clients: {}", details.describe());

    let mut answered = 0;
    let mut closed = 0;
    for (i, c) in slow.iter_mut().enumerate() {
        let a = read_answer(c, SLOW_BODY_WAIT);
        assert_cut_off(&format!("stalled body {i} of {SLOW_CONNECTIONS}"), &a);
        if a.status().is_some() { answered += 1 } else { closed += 1 }
    }
    eprintln!(
        "(b) all {SLOW_CONNECTIONS} stalled bodies cut off {:.2?} after the first was opened: \
         {answered} answered 503 REQUEST_TIMEOUT, {closed} closed",
        t0.elapsed()
    );
}

/// (c) A header block that stops half-way is eventually closed (or answered 4xx).
#[test]
fn stalled_header_block_is_eventually_dropped() {
    let s = server();
    let mut stream = connect(s);
    let partial = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nUser-Agent: slowloris\r\nX-Slow: a", s.addr());
    let t0 = Instant::now();
    assert!(send(&mut stream, partial.as_bytes()).is_none(), "sending the partial head failed");
    let a = read_answer(&mut stream, SLOW_HEADER_WAIT);
    let took = t0.elapsed();
    eprintln!("(c) stalled header block: {} after {took:.2?}", a.describe());
    match &a {
        Answer::Closed { .. } => {}
        Answer::Response { status, .. } => {
            assert!((400..500).contains(status), "stalled header block answered {}", a.describe())
        }
        Answer::Silence => panic!(
            "a connection that sent half a header block and stopped was still open after {SLOW_HEADER_WAIT:?}: \
             the server has no header read timeout, so slowloris clients can hold connections (and file \
             descriptors) forever"
        ),
    }
}

/// (c, continued) Many half-sent header blocks do not keep the server from answering.
#[test]
fn fifty_stalled_header_blocks_do_not_starve_other_clients() {
    let s = server();
    let partial = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: a", s.addr());
    let t0 = Instant::now();
    let held: Vec<TcpStream> = (0..SLOW_CONNECTIONS)
        .map(|i| {
            let mut c = connect(s);
            assert!(send(&mut c, partial.as_bytes()).is_none(), "stalled head {i}: sending failed");
            c
        })
        .collect();
    let opened = t0.elapsed();
    let (health, health_took) = quick_get(s, "/healthz", false);
    let (details, details_took) = quick_get(s, "/face/index/details", true);
    eprintln!(
        "(c) {SLOW_CONNECTIONS} stalled header blocks opened in {opened:.2?}; then /healthz {:?} in \
         {health_took:.2?}, /face/index/details {:?} in {details_took:.2?}",
        health.status(),
        details.status()
    );
    assert_eq!(health.status(), Some(200), "/healthz with stalled header blocks: {}", health.describe());
    assert_eq!(details.status(), Some(200), "details with stalled header blocks: {}", details.describe());
    drop(held);
}

/// (d) An oversized header block gets a 4xx or a closed connection, never a hang or 5xx.
fn oversized_head(what: &str, extra_headers: &str) {
    let s = server();
    let mut stream = connect(s);
    let req = format!(
        "GET /face/index/details HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        s.addr(),
        admin_basic_auth()
    );
    let t0 = Instant::now();
    let write_error = send(&mut stream, req.as_bytes());
    let a = read_answer(&mut stream, SLOW_BODY_WAIT);
    eprintln!(
        "(d) {what} ({} bytes of head; write {}): {} after {:.2?}",
        req.len(),
        write_error.map_or("complete".to_string(), |e| format!("failed: {e}")),
        a.describe(),
        t0.elapsed()
    );
    match &a {
        Answer::Closed { .. } => {}
        Answer::Response { status, .. } => assert!(
            (400..500).contains(status),
            "{what}: expected 431/400 or a closed connection, got {}",
            a.describe()
        ),
        Answer::Silence => panic!("{what}: no answer and no close within {SLOW_BODY_WAIT:?}"),
    }
}

#[test]
fn two_hundred_headers_are_refused() {
    let extra: String = (0..200).map(|i| format!("X-Filler-{i}: value-{i}\r\n")).collect();
    oversized_head("200 headers", &extra);
}

#[test]
fn a_100_kb_header_value_is_refused() {
    oversized_head("a 100 KB header value", &format!("X-Big: {}\r\n", "a".repeat(100 * 1024)));
}

#[test]
fn a_1_mb_header_value_is_refused() {
    oversized_head("a 1 MB header value", &format!("X-Big: {}\r\n", "a".repeat(1024 * 1024)));
}
