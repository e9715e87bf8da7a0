//! HTTPS with the server's own TLS (rustls): a self-signed certificate made with the
//! `openssl` command, requests made with `curl`, security headers on every answer, and
//! errors in JSON even where the HTTP library answers by itself.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn https_serves_the_api_with_security_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()));

    let mut child = Command::new(env!("CARGO_BIN_EXE_facesearch"))
        .args(["serve", "--bind", "127.0.0.1:0", "--exit-on-stdin-close", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("FACESEARCH_ADMIN_PASSWORD", "tls-admin-Password-1")
        .env("FACESEARCH_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut base = None;
    // The server prints its address, then "ready" once the models are loaded.
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("facesearch listening on ") {
            base = rest.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("facesearch ready") {
            break;
        }
    }
    let base = base.expect("the server printed its address");
    assert!(base.starts_with("https://"), "{base}");

    let headers = run(Command::new("curl").args(["-s", "-i", "--cacert"]).arg(&cert).arg(format!("{base}/healthz")));
    assert!(headers.contains("{\"response\":{\"status\":\"ok\"}}"), "{headers}");
    for h in
        ["strict-transport-security: max-age=31536000", "x-content-type-options: nosniff", "cache-control: no-store"]
    {
        assert!(headers.to_ascii_lowercase().contains(h), "missing {h} in {headers}");
    }
    let details = run(Command::new("curl")
        .args(["-s", "-u", "admin:tls-admin-Password-1", "--cacert"])
        .arg(&cert)
        .arg(format!("{base}/face/index/details")));
    assert_eq!(details, "{\"response\":[]}");
    // Over TLS too, hyper's own answer to a URL longer than it reads (65,534 bytes) is
    // the API's JSON error, and the server's own limits answer in JSON.
    for (size, status) in [(70_000, "414"), (10_000, "414")] {
        let long = run(Command::new("curl")
            .args(["-s", "-i", "--http1.1", "--cacert"])
            .arg(&cert)
            .arg(format!("{base}/healthz?pad={}", "a".repeat(size))));
        assert!(long.starts_with(&format!("HTTP/1.1 {status} ")), "{size}: {long}");
        assert!(long.contains("{\"error\":{\"code\":\"URI_TOO_LONG\""), "{size}: {long}");
    }
    // Plain HTTP to the TLS port gets no answer.
    let plain = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(base.replace("https://", "http://") + "/healthz")
        .output();
    assert!(!plain.expect("curl runs").status.success(), "plain HTTP must not be served on the TLS port");

    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}
