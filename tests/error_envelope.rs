//! Every error the server writes is `{"error": {"code", "message"}}` with a stable code
//! and no name of the implementation, over real HTTP: request heads over the limits
//! (too many or too large headers, a long query string) — those the router sees and
//! those hyper refuses by itself —, requests that are not HTTP, path parameters that
//! are not UTF-8, JSON bodies of the wrong shape, and a malformed request to every
//! route of the route table.
//!
//! The request-head tests speak raw TCP, so that they control every byte.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Server, admin_basic_auth};
use serde_json::Value;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start)
}

/// Words that would give away the implementation in an error message.
const INTERNAL_WORDS: &[&str] =
    &["Body", "struct", "serde", "axum", "hyper", "Rust", "Failed to deserialize", "Invalid URL", "Cannot parse"];

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Asserts the status, a JSON content type and the envelope with `code`; returns the
    /// `error` object.
    #[track_caller]
    fn envelope(&self, status: u16, code: &str) -> Value {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{}\n\n{text}", self.head);
        let ct = self.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("application/json"), "Content-Type {ct:?}: {}\n\n{text}", self.head);
        let json: Value = serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        assert_eq!(json.as_object().map(|o| o.len()), Some(1), "{json}");
        assert_eq!(json["error"]["code"], code, "{json}");
        let message = json["error"]["message"].as_str().expect("a message");
        assert!(!message.is_empty());
        assert_neutral(&text);
        json["error"].clone()
    }
}

#[track_caller]
fn assert_neutral(text: &str) {
    for word in INTERNAL_WORDS {
        assert!(!text.contains(word), "the error names {word:?}: {text}");
    }
}

/// Sends `request` on a new connection and reads the answer until the server closes
/// it (every request here asks for `Connection: close`, and hyper's own answers close
/// too). `None` when the connection was reset before a response arrived.
fn raw(s: &Server, request: &[u8]) -> Option<Raw> {
    let mut stream = TcpStream::connect(s.addr()).expect("connecting");
    // The server may answer and close before it has read everything: not an error here.
    let _ = stream.write_all(request);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no answer and no close within 30 s");
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if !buf.is_empty() => break,
            Err(_) => return None,
        }
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)?;
    let head = String::from_utf8_lossy(&buf[..end]).trim_end().to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    Some(Raw { status, head, body: buf[end..].to_vec() })
}

fn get_with(s: &Server, target: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        s.addr(),
        admin_basic_auth()
    )
    .into_bytes()
}

#[test]
fn a_header_over_64_kib_is_a_json_431() {
    let s = server();
    let req = get_with(s, "/face/index/details", &format!("X-Big: {}\r\n", "a".repeat(70 * 1024)));
    let r = raw(s, &req).expect("an answer");
    r.envelope(431, "HEADERS_TOO_LARGE");
    // Refused by the server's own limit: the answer went through the router's layers.
    assert!(r.header("x-request-id").is_some(), "{}", r.head);
    // Just under the limit is fine.
    let req = get_with(s, "/face/index/details", &format!("X-Big: {}\r\n", "a".repeat(60 * 1024)));
    assert_eq!(raw(s, &req).expect("an answer").status, 200);
}

#[test]
fn over_100_headers_is_a_json_431() {
    let s = server();
    let headers = |n: usize| (0..n).map(|i| format!("X-Filler-{i}: v\r\n")).collect::<String>();
    // 120: over the server's limit; 300: over hyper's own, answered by hyper and rewritten.
    for n in [120, 300] {
        let r = raw(s, &get_with(s, "/face/index/details", &headers(n))).expect("an answer");
        r.envelope(431, "HEADERS_TOO_LARGE");
    }
    // 90 of them (plus Host, Authorization, Connection) pass.
    assert_eq!(raw(s, &get_with(s, "/face/index/details", &headers(90))).expect("an answer").status, 200);
}

#[test]
fn a_long_query_string_is_a_json_414() {
    let s = server();
    // 10 KB: over the server's 8 KiB; 70 KB: over hyper's 65,534-byte URL, answered by
    // hyper and rewritten.
    for size in [10_000, 70_000] {
        let target = format!("/face/index/details?action_type=FACE_SEARCH&pad={}", "a".repeat(size));
        let r = raw(s, &get_with(s, &target, "")).expect("an answer");
        r.envelope(414, "URI_TOO_LONG");
    }
    let target = format!("/face/index/details?action_type=FACE_SEARCH&pad={}", "a".repeat(4000));
    assert_eq!(raw(s, &get_with(s, &target, "")).expect("an answer").status, 200);
}

#[test]
fn a_head_over_hypers_buffer_is_answered_in_json_when_answered() {
    let s = server();
    let req = get_with(s, "/face/index/details", &format!("X-Big: {}\r\n", "a".repeat(200 * 1024)));
    // hyper stops reading at its limit and closes: the client may see a reset before
    // the answer. What does arrive is the JSON 431, and in 20 tries some answer arrives.
    let answered: Vec<_> = (0..20).filter_map(|_| raw(s, &req)).collect();
    assert!(!answered.is_empty(), "20 connections reset, none answered");
    for r in answered {
        r.envelope(431, "HEADERS_TOO_LARGE");
    }
}

#[test]
fn a_request_that_is_not_http_is_a_json_400() {
    let s = server();
    for req in [
        format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nBad Header: v\r\nConnection: close\r\n\r\n", s.addr()),
        format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Ctl: a\u{1}b\r\nConnection: close\r\n\r\n", s.addr()),
        "GET /hea lthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
    ] {
        let r = raw(s, req.as_bytes()).expect("an answer");
        r.envelope(400, "MALFORMED_REQUEST");
    }
    // The connection is still served normally up to the bad request.
    let two = format!(
        "GET /healthz HTTP/1.1\r\nHost: {0}\r\n\r\nGET /healthz HTTP/1.1\r\nHost: {0}\r\nBad Header: v\r\n\r\n",
        s.addr()
    );
    let mut stream = TcpStream::connect(s.addr()).expect("connecting");
    stream.write_all(two.as_bytes()).expect("writing");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("{\"response\":{\"status\":\"ok\"}}"), "{text}");
    let second = &text[text.find("{\"response\"").expect("the first body")..];
    assert!(second.contains("HTTP/1.1 400 Bad Request\r\n") && second.contains("MALFORMED_REQUEST"), "{text}");
}

#[test]
fn path_parameters_that_are_not_utf8_are_json_400s() {
    let s = server();
    let r = s.get("/face/index/%ff%fe");
    let e = r.err(400, "INVALID_PARAMETER");
    assert_eq!(e["parameter"], "index_id", "{}", r.text);
    assert_neutral(&r.text);
    let r = s.get("/users/%ff%fe");
    assert_eq!(r.err(400, "INVALID_PARAMETER")["parameter"], "username");
    let index = s.create_index_id("utf8-paths");
    let r = s.delete(&format!("/face/index/{index}/records/%c3%28"));
    assert_eq!(r.err(400, "INVALID_PARAMETER")["parameter"], "record_id");
    // Percent-encoded UTF-8 is fine: an unknown id, not a malformed one.
    s.get("/face/index/%C3%A9t%C3%A9").err(404, "INDEX_NOT_FOUND");
}

#[test]
fn json_bodies_of_the_wrong_shape_name_no_rust_type() {
    let s = server();
    let index = s.create_index_id("json-shapes");
    let record = s.enrol_ok(&index, &common::eval("deepface/img1.jpg"), &[("name", "Angelina Jolie")]);
    let record_path = format!("/face/index/{index}/records/{}", record["record_id"].as_str().expect("record id"));
    let send = |method: &str, path: &str, body: &str| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let req = s
            .http()
            .request(method.clone(), s.url(path))
            .basic_auth(common::ADMIN_USER, Some(common::ADMIN_PASSWORD))
            .header("content-type", "application/json")
            .body(body.to_string());
        s.send(format!("{method} {path} {body}"), req)
    };
    let r = send("PATCH", &record_path, "[]");
    let e = r.err(400, "INVALID_JSON");
    assert_eq!(e["message"], "the body must be a JSON object", "{}", r.text);
    assert!(!r.text.contains("RecordPatchBody"), "{}", r.text);
    let cases = [
        ("PATCH", record_path.as_str(), "[]"),
        ("PATCH", &record_path, "[\"Ada\"]"),
        ("PATCH", &record_path, "42"),
        ("PATCH", &record_path, ""),
        ("PATCH", &record_path, "{\"name\": 42}"),
        ("PATCH", &record_path, "{\"watch_list\": {}}"),
        ("PATCH", &record_path, "{\"nickname\": \"x\"}"),
        ("PATCH", &record_path, "{\"name\": "),
        ("POST", "/users", "[\"eve\", \"eve-Password-123\", \"admin\"]"),
        ("POST", "/users", "{\"username\": 7}"),
        ("POST", "/face/index", "[]"),
        ("POST", "/face/index", "{\"index_name\": null}"),
        ("PATCH", &format!("/face/index/{index}"), "[\"title\"]"),
        ("PATCH", "/users/admin", "\"password\""),
        ("POST", &format!("/face/index/{index}/reembed"), "[\"insightface\"]"),
    ];
    for (method, path, body) in cases {
        let r = send(method, path, body);
        r.err(400, "INVALID_JSON");
        assert_neutral(&r.text);
    }
    // An array is never taken for an object: the user in the array above was not made.
    s.get("/users/eve").err(404, "USER_NOT_FOUND");
    // Not JSON at all: 415, in JSON.
    let req = s
        .http()
        .patch(s.url(&record_path))
        .basic_auth(common::ADMIN_USER, Some(common::ADMIN_PASSWORD))
        .header("content-type", "text/plain")
        .body("{}");
    s.send("PATCH as text", req).err(415, "UNSUPPORTED_MEDIA_TYPE");
}

/// Every route of the table, with `%ff` for its path parameters, a JSON array for a
/// body and a malformed query string: whatever it answers, an error is the envelope.
#[test]
fn every_route_answers_malformed_requests_with_the_envelope() {
    let s = server();
    for spec in facesearch_api::route_table() {
        let path: String = spec
            .path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "%ff%fe" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let target = format!("{path}?%zz=%&limit=%ff&cursor=%00");
        let method = reqwest::Method::from_bytes(spec.method.as_str().as_bytes()).expect("a method");
        let req = s
            .http()
            .request(method, s.url(&target))
            .basic_auth(common::ADMIN_USER, Some(common::ADMIN_PASSWORD))
            .header("content-type", "application/json")
            .body("[]");
        let r = s.send(format!("{} {target}", spec.method), req);
        if r.status >= 400 {
            r.error_shape(r.status);
            assert_neutral(&r.text);
        }
    }
    // And what no route takes.
    s.get("/no/such/endpoint").err(404, "NOT_FOUND");
    let r = s.send("PUT /healthz", s.http().put(s.url("/healthz")));
    r.err(405, "METHOD_NOT_ALLOWED");
}

/// The guard on HTTP/1 connections leaves HTTP/2 alone: a client that opens with the
/// HTTP/2 preface is answered with the server's SETTINGS frame.
#[test]
fn http2_connections_are_passed_through() {
    let s = server();
    let mut stream = TcpStream::connect(s.addr()).expect("connecting");
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").expect("the preface");
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).expect("a SETTINGS frame");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let mut frame = [0u8; 9];
    stream.read_exact(&mut frame).expect("the server's first frame");
    assert_eq!(frame[3], 4, "the first frame is SETTINGS, not {:?}", String::from_utf8_lossy(&frame));
}
