//! The connection under HTTP/1: hyper's own answers made into the API's JSON errors.
//!
//! hyper answers a request it cannot parse itself, before any of the server's code
//! runs, with a bare status and an empty body: a request head larger than its read
//! buffer or with more headers than it has room for (`431`), a URL over 65,534 bytes
//! (`414`), or malformed syntax (`400`). The server's own limits on the request head
//! ([`crate::limits`]) are set well below hyper's, so a request over them gets the
//! JSON answer from the router; what is beyond hyper's hard limits never reaches it.
//!
//! [`Guarded`] wraps each connection's byte stream (under TLS: the decrypted side) and
//! recognises hyper's automatic answer as hyper writes it: the exact head hyper writes
//! for those three statuses (`connection: close`, `content-length: 0` and a `date`
//! within a few seconds of now), at the very end of what hyper hands to the socket,
//! after which hyper closes the connection. It sends in its place the same status
//! with the JSON error body of [`crate::limits::envelope_for`]. Nothing else written
//! is touched, and an HTTP/2 connection (recognised by its preface) is passed through
//! as it is.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::envelope_for;

/// The first bytes of an HTTP/2 connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// hyper's automatic answers are short; only this much of the end of a write is looked at.
const TAIL_WINDOW: usize = 256;
/// How far the `date` of a recognised answer may be from now.
const DATE_SLACK: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Not known yet: this many bytes of the HTTP/2 preface have been seen.
    Unknown(usize),
    Http1,
    Http2,
}

/// The JSON answer being written in place of hyper's.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// The length of hyper's answer, reported as written once the replacement is.
    claimed: usize,
}

/// A connection stream whose HTTP/1 automatic error answers are rewritten to JSON.
pub struct Guarded<S> {
    inner: S,
    protocol: Protocol,
    replacement: Option<Replacement>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, protocol: Protocol::Unknown(0), replacement: None }
    }

    fn saw(&mut self, bytes: &[u8]) {
        let Protocol::Unknown(seen) = self.protocol else { return };
        let n = bytes.len().min(H2_PREFACE.len() - seen);
        self.protocol = if bytes[..n] != H2_PREFACE[seen..seen + n] {
            Protocol::Http1
        } else if seen + n == H2_PREFACE.len() {
            Protocol::Http2
        } else {
            Protocol::Unknown(seen + n)
        };
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if matches!(self.protocol, Protocol::Unknown(_)) {
            let fresh = buf.filled()[before..].to_vec();
            self.saw(&fresh);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none()
            && this.protocol == Protocol::Http1
            && let Some((at, status)) = automatic_answer(buf, SystemTime::now())
        {
            if at > 0 {
                // What precedes it (the end of an earlier response) goes out as it is.
                return Pin::new(&mut this.inner).poll_write(cx, &buf[..at]);
            }
            this.replacement = Some(Replacement { bytes: json_answer(status), written: 0, claimed: buf.len() });
        }
        if let Some(r) = &mut this.replacement {
            while r.written < r.bytes.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &r.bytes[r.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                r.written += n;
            }
            let claimed = r.claimed;
            this.replacement = None;
            return Poll::Ready(Ok(claimed));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then hands over its whole pending output in one buffer, whose
    // end is where its automatic answer is.
}

/// Where in `buf` hyper's automatic answer starts, and its status, if `buf` ends with
/// one: `HTTP/1.1 400|414|431 <reason>` then exactly the headers `connection: close`,
/// `content-length: 0` and a `date` within [`DATE_SLACK`] of `now`, in any order.
pub fn automatic_answer(buf: &[u8], now: SystemTime) -> Option<(usize, StatusCode)> {
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let window_start = buf.len().saturating_sub(TAIL_WINDOW);
    let window = &buf[window_start..];
    let at = window.windows(9).rposition(|w| w == b"HTTP/1.1 ")?;
    let head = std::str::from_utf8(&window[at..]).ok()?;
    let mut lines = head.strip_suffix("\r\n\r\n")?.split("\r\n");
    let status_line = lines.next()?.strip_prefix("HTTP/1.1 ")?;
    let (code, reason) = status_line.split_once(' ')?;
    let status = StatusCode::from_bytes(code.as_bytes()).ok()?;
    if !matches!(status.as_u16(), 400 | 414 | 431) || status.canonical_reason() != Some(reason) {
        return None;
    }
    let (mut connection, mut length, mut date) = (false, false, false);
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        match name {
            "connection" if value == "close" && !connection => connection = true,
            "content-length" if value == "0" && !length => length = true,
            "date" if !date => {
                let when = httpdate::parse_http_date(value).ok()?;
                let apart = now.duration_since(when).or_else(|_| when.duration_since(now)).ok()?;
                if apart > DATE_SLACK {
                    return None;
                }
                date = true;
            }
            _ => return None,
        }
    }
    (connection && length && date).then_some((window_start + at, status))
}

/// The whole HTTP/1.1 response that replaces hyper's answer of `status`.
fn json_answer(status: StatusCode) -> Vec<u8> {
    let body = envelope_for(status).body().to_string();
    // Built by hand (hyper is not writing it): the same status, the JSON body, and the
    // headers of the server's error answers that apply to a closing connection.
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\ndate: {}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len(),
        httpdate::fmt_http_date(SystemTime::now()),
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Wraps the streams an inner acceptor (plain TCP, or TLS) produces in [`Guarded`].
#[derive(Debug, Clone)]
pub struct GuardAcceptor<A>(pub A);

impl<A, I, S> Accept<I, S> for GuardAcceptor<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Guarded<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.0.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((Guarded::new(stream), service))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper_answer(status: &str, date: SystemTime) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {}\r\n\r\n",
            httpdate::fmt_http_date(date)
        )
        .into_bytes()
    }

    #[test]
    fn hyper_answers_are_recognised_and_nothing_else() {
        let now = SystemTime::now();
        for (status, code) in
            [("431 Request Header Fields Too Large", 431), ("414 URI Too Long", 414), ("400 Bad Request", 400)]
        {
            let answer = hyper_answer(status, now);
            assert_eq!(automatic_answer(&answer, now).map(|(at, s)| (at, s.as_u16())), Some((0, code)));
            // After the end of an earlier response in the same buffer.
            let mut after = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec();
            let at = after.len();
            after.extend_from_slice(&answer);
            assert_eq!(automatic_answer(&after, now).map(|(at, _)| at), Some(at));
        }
        // Other statuses, other headers, a body, an old date, a wrong reason: left alone.
        let old = now - Duration::from_secs(3600);
        for other in [
            hyper_answer("404 Not Found", now),
            hyper_answer("431 Request Header Fields Too Large", old),
            hyper_answer("400 Bad Thing", now),
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n".to_vec(),
            [hyper_answer("400 Bad Request", now), b"x".to_vec()].concat(),
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(),
            b"\xff\xd8 image bytes".to_vec(),
        ] {
            assert_eq!(automatic_answer(&other, now), None, "{}", String::from_utf8_lossy(&other));
        }
    }

    #[test]
    fn the_replacement_is_the_json_envelope() {
        let answer = String::from_utf8(json_answer(StatusCode::URI_TOO_LONG)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("content-type: application/json") && head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "URI_TOO_LONG");
    }

    #[test]
    fn the_http2_preface_turns_the_guard_off() {
        let mut g = Guarded::new(());
        g.saw(&H2_PREFACE[..5]);
        assert_eq!(g.protocol, Protocol::Unknown(5));
        g.saw(&H2_PREFACE[5..]);
        assert_eq!(g.protocol, Protocol::Http2);
        let mut g = Guarded::new(());
        g.saw(b"GET / HTTP/1.1\r\n");
        assert_eq!(g.protocol, Protocol::Http1);
    }
}
