//! Users end to end: the HTTP user management (admin only), that password, grant and
//! user changes take effect with the very next request, failed-login throttling, and
//! the `facesearch user` command on a data directory that a server then uses.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{ADMIN_PASSWORD, ADMIN_USER, Resp, Server, ServerOptions};
use reqwest::blocking::Client;
use serde_json::{Value, json};

/// The reverse proxy the test servers trust: the loopback address every test client
/// connects from unless it binds another (see [`client_from`]).
const PROXY: &str = "127.0.0.1/32";

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start_with(ServerOptions::default().args(&["--trusted-proxies", PROXY])))
}

/// A request as `user` (no credentials when `None`), with an optional JSON body.
fn call(s: &Server, client: &Client, who: Option<(&str, &str)>, method: &str, path: &str, body: Option<Value>) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let what = format!("{method} {path} as {:?}", who.map(|w| w.0));
    let mut req = client.request(method, s.url(path));
    if let Some((user, password)) = who {
        req = req.basic_auth(user, Some(password));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    s.send(what, req)
}

fn as_user(s: &Server, user: &str, password: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
    call(s, s.http(), Some((user, password)), method, path, body)
}

fn admin(s: &Server, method: &str, path: &str, body: Option<Value>) -> Resp {
    as_user(s, ADMIN_USER, ADMIN_PASSWORD, method, path, body)
}

fn create_user(s: &Server, name: &str, password: &str, role: &str) -> Value {
    admin(s, "POST", "/users", Some(json!({"username": name, "password": password, "role": role}))).ok(201).clone()
}

/// A client that the server sees as `127.0.0.N`, on every machine: it connects from
/// `127.0.0.N` where that address can be bound (Linux routes all of 127/8 to the
/// loopback interface), and otherwise from `127.0.0.1`, the proxy the test servers
/// trust ([`PROXY`]), saying `X-Forwarded-For: 127.0.0.N`. (It sends the header
/// either way; from `127.0.0.N`, not a trusted proxy, the server ignores it.) So
/// per-address throttling in one test does not touch the others, and no test skips.
/// `FACESEARCH_TEST_VIA_PROXY=1` takes the proxy route everywhere (to try it where
/// the addresses can be bound).
fn client_from(n: u8) -> Client {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, n));
    let via_proxy = n == 1
        || std::env::var_os("FACESEARCH_TEST_VIA_PROXY").is_some()
        || std::net::TcpListener::bind((ip, 0)).is_err();
    forwarding_client(&ip.to_string(), (!via_proxy).then_some(ip))
}

/// A client that sends `X-Forwarded-For: forwarded` from `local` (default: 127.0.0.1).
fn forwarding_client(forwarded: &str, local: Option<IpAddr>) -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", forwarded.parse().expect("a header value"));
    Client::builder()
        .default_headers(headers)
        .local_address(local)
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .expect("a client")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("an array").iter().map(|x| x.as_str().expect("a string").to_string()).collect()
}

#[test]
fn users_are_created_listed_changed_and_deleted() {
    let s = server();
    let pw = "alice-Password-1";
    let user = create_user(s, "crud-alice", pw, "searcher");
    let mut fields: Vec<&str> = user.as_object().expect("an object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["created_at", "grants", "role", "username"], "the user object: {user}");
    assert_eq!(user["username"], "crud-alice");
    assert_eq!(user["role"], "searcher");
    assert_eq!(user["grants"], json!([]));
    assert!(user["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{user}");

    // Refused creations, each with its code; none creates anything.
    let body = |name: &str, password: &str, role: &str| json!({"username": name, "password": password, "role": role});
    admin(s, "POST", "/users", Some(body("crud-alice", pw, "searcher"))).err(409, "USER_EXISTS");
    for bad in ["", "me", "has space", "colon:name", "slash/name", "ünïcode", &"x".repeat(65)] {
        let e = admin(s, "POST", "/users", Some(body(bad, pw, "searcher"))).err(400, "INVALID_PARAMETER").clone();
        assert_eq!(e["parameter"], "username", "{bad:?}: {e}");
    }
    let e = admin(s, "POST", "/users", Some(body("crud-weak", "11-chars-pw", "searcher")))
        .err(400, "WEAK_PASSWORD")
        .clone();
    assert_eq!(e["min_length"], 12);
    admin(s, "POST", "/users", Some(body("crud-long", &"p".repeat(1025), "searcher"))).err(400, "INVALID_PARAMETER");
    let e = admin(s, "POST", "/users", Some(body("crud-role", pw, "root"))).err(400, "INVALID_PARAMETER").clone();
    assert_eq!(e["parameter"], "role");
    let extra = json!({"username": "crud-extra", "password": pw, "role": "searcher", "is_admin": true});
    admin(s, "POST", "/users", Some(extra)).err(400, "INVALID_JSON");
    admin(s, "POST", "/users", Some(json!({"username": "crud-nopw", "role": "searcher"}))).err(400, "INVALID_JSON");
    let grants = json!({"username": "crud-grants", "password": pw, "role": "searcher", "grants": ["no-such-index"]});
    admin(s, "POST", "/users", Some(grants)).err(404, "INDEX_NOT_FOUND");
    for name in ["crud-weak", "crud-long", "crud-role", "crud-extra", "crud-nopw", "crud-grants"] {
        admin(s, "GET", &format!("/users/{name}"), None).err(404, "USER_NOT_FOUND");
    }
    // Exactly 12 and 1024 characters are fine.
    create_user(s, "crud-12", "twelve-chars", "auditor");
    create_user(s, "crud-1024", &"p".repeat(1024), "operator");

    // Listing and reading.
    let list = admin(s, "GET", "/users", None).ok(200).as_array().expect("a list").clone();
    let names: Vec<&str> = list.iter().map(|u| u["username"].as_str().expect("username")).collect();
    assert!(names.contains(&ADMIN_USER) && names.contains(&"crud-alice"), "{names:?}");
    assert!(names.is_sorted(), "users are listed by name: {names:?}");
    let text = admin(s, "GET", "/users", None).text;
    assert!(!text.contains("argon2") && !text.contains("password"), "no hash or password is shown: {text}");
    assert_eq!(admin(s, "GET", "/users/crud-alice", None).ok(200), &user);
    let e = admin(s, "GET", "/users/nobody-here", None).err(404, "USER_NOT_FOUND").clone();
    assert_eq!(e["username"], "nobody-here");

    // The user knows who they are, and may not manage users.
    let me = as_user(s, "crud-alice", pw, "GET", "/users/me", None).ok(200).clone();
    assert_eq!(me, user);
    as_user(s, "crud-alice", pw, "GET", "/users", None).err(403, "FORBIDDEN");
    as_user(s, "crud-alice", pw, "GET", "/users/crud-alice", None).err(403, "FORBIDDEN");
    as_user(s, "crud-alice", pw, "POST", "/users", Some(body("crud-mine", pw, "admin"))).err(403, "FORBIDDEN");
    as_user(s, "crud-alice", pw, "DELETE", "/users/crud-12", None).err(403, "FORBIDDEN");
    admin(s, "GET", "/users/crud-mine", None).err(404, "USER_NOT_FOUND");

    // PATCH: the password; the role only as it is.
    let e = admin(s, "PATCH", "/users/crud-alice", Some(json!({"role": "admin"})))
        .err(400, "ROLE_CHANGE_NOT_SUPPORTED")
        .clone();
    assert_eq!(e["parameter"], "role");
    assert_eq!(admin(s, "PATCH", "/users/crud-alice", Some(json!({"role": "searcher"}))).ok(200), &user);
    admin(s, "PATCH", "/users/crud-alice", Some(json!({"role": "boss"}))).err(400, "INVALID_PARAMETER");
    admin(s, "PATCH", "/users/crud-alice", Some(json!({"password": "short"}))).err(400, "WEAK_PASSWORD");
    admin(s, "PATCH", "/users/crud-alice", Some(json!({"grants": []}))).err(400, "INVALID_JSON");
    admin(s, "PATCH", "/users/nobody-here", Some(json!({"password": "long-enough-pw"}))).err(404, "USER_NOT_FOUND");
    as_user(s, "crud-alice", pw, "GET", "/users/me", None).ok(200);

    // DELETE: not yourself; then the user is gone at once.
    let e = admin(s, "DELETE", &format!("/users/{ADMIN_USER}"), None).err(409, "CONFLICT").clone();
    assert!(e["message"].as_str().unwrap_or_default().contains("own"), "{e}");
    create_user(s, "crud-admin2", pw, "admin");
    as_user(s, "crud-admin2", pw, "DELETE", "/users/crud-admin2", None).err(409, "CONFLICT");
    let r = admin(s, "DELETE", "/users/crud-alice", None);
    assert_eq!((r.status, r.text.as_str()), (204, ""), "DELETE /users/crud-alice");
    admin(s, "DELETE", "/users/crud-alice", None).err(404, "USER_NOT_FOUND");
    as_user(s, "crud-alice", pw, "GET", "/users/me", None).err(401, "UNAUTHORIZED");
    let r = admin(s, "DELETE", "/users/crud-admin2", None);
    assert_eq!(r.status, 204, "another admin may be deleted: {}", r.text);
}

#[test]
fn a_password_change_takes_effect_with_the_next_request() {
    let s = server();
    let (old, new) = ("bob-old-Password", "bob-new-Password");
    create_user(s, "pw-bob", old, "searcher");
    // Used once, so the credential is remembered by the server.
    as_user(s, "pw-bob", old, "GET", "/users/me", None).ok(200);
    as_user(s, "pw-bob", old, "GET", "/face/index/details", None).ok(200);
    let user = admin(s, "PATCH", "/users/pw-bob", Some(json!({"password": new}))).ok(200).clone();
    assert_eq!(user["username"], "pw-bob");
    as_user(s, "pw-bob", old, "GET", "/face/index/details", None).err(401, "UNAUTHORIZED");
    as_user(s, "pw-bob", new, "GET", "/face/index/details", None).ok(200);
    as_user(s, "pw-bob", new, "GET", "/users/me", None).ok(200);
}

#[test]
fn grants_decide_what_a_searcher_sees() {
    let s = server();
    let one = s.create_index_id("users-grants-one");
    let two = s.create_index_id("users-grants-two");
    let pw = "carla-Password-1";
    let body = json!({"username": "grant-carla", "password": pw, "role": "searcher", "grants": [one, one]});
    let user = admin(s, "POST", "/users", Some(body)).ok(201).clone();
    assert_eq!(strings(&user["grants"]), [one.as_str()], "grants given at creation, once each");

    let visible = || -> Vec<String> {
        let r = as_user(s, "grant-carla", pw, "GET", "/face/index/details?action_type=FACE_SEARCH", None);
        let mut ids: Vec<String> =
            r.ok(200).as_array().expect("a list").iter().map(|i| i["id"].as_str().expect("id").to_string()).collect();
        ids.retain(|id| *id == one || *id == two);
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(visible(), [one.as_str()]);
    as_user(s, "grant-carla", pw, "GET", &format!("/face/index/{two}"), None).err(403, "FORBIDDEN");

    let r = admin(s, "PUT", &format!("/users/grant-carla/grants/{two}"), None);
    assert_eq!((r.status, r.text.as_str()), (204, ""), "PUT grant");
    let r = admin(s, "PUT", &format!("/users/grant-carla/grants/{two}"), None);
    assert_eq!(r.status, 204, "granting twice is fine: {}", r.text);
    assert_eq!(visible(), sorted(vec![one.clone(), two.clone()]), "the new grant shows at once");
    as_user(s, "grant-carla", pw, "GET", &format!("/face/index/{two}"), None).ok(200);
    let me = as_user(s, "grant-carla", pw, "GET", "/users/me", None).ok(200).clone();
    assert_eq!(sorted(strings(&me["grants"])), sorted(vec![one.clone(), two.clone()]));

    let r = admin(s, "DELETE", &format!("/users/grant-carla/grants/{one}"), None);
    assert_eq!((r.status, r.text.as_str()), (204, ""), "DELETE grant");
    assert_eq!(visible(), [two.as_str()], "the revoked grant is gone at once");
    as_user(s, "grant-carla", pw, "GET", &format!("/face/index/{one}"), None).err(403, "FORBIDDEN");
    let r = admin(s, "DELETE", &format!("/users/grant-carla/grants/{one}"), None);
    assert_eq!(r.status, 204, "revoking what is not granted is fine: {}", r.text);

    // Unknown users and indexes.
    admin(s, "PUT", "/users/grant-carla/grants/no-such-index", None).err(404, "INDEX_NOT_FOUND");
    admin(s, "DELETE", "/users/grant-carla/grants/no-such-index", None).err(404, "INDEX_NOT_FOUND");
    admin(s, "PUT", &format!("/users/nobody-here/grants/{one}"), None).err(404, "USER_NOT_FOUND");
    admin(s, "DELETE", &format!("/users/nobody-here/grants/{one}"), None).err(404, "USER_NOT_FOUND");
    // Only admins grant.
    as_user(s, "grant-carla", pw, "PUT", &format!("/users/grant-carla/grants/{one}"), None).err(403, "FORBIDDEN");
    assert_eq!(visible(), [two.as_str()]);

    // Deleting an index takes its grants with it.
    assert_eq!(s.delete(&format!("/face/index/{two}")).status, 204);
    let me = admin(s, "GET", "/users/grant-carla", None).ok(200).clone();
    assert_eq!(me["grants"], json!([]));
}

#[test]
fn failed_logins_slow_down_the_guessing_address_only() {
    let s = server();
    // From an address of its own, so other tests' failures do not add up.
    let client = client_from(2);
    let (dora_pw, emil_pw) = ("dora-Password-1", "emil-Password-1");
    create_user(s, "thr-dora", dora_pw, "searcher");
    create_user(s, "thr-emil", emil_pw, "searcher");
    let get = |user: &str, password: &str| call(s, &client, Some((user, password)), "GET", "/users/me", None);

    // A success resets the count of that username from that address.
    for i in 0..4 {
        get("thr-dora", &format!("wrong-{i}")).err(401, "UNAUTHORIZED");
    }
    get("thr-dora", dora_pw).ok(200);
    let mut known_401 = Vec::new();
    for i in 0..5 {
        let r = get("thr-dora", &format!("wrong-{i}"));
        r.err(401, "UNAUTHORIZED");
        known_401.push(r.text);
    }
    // The sixth attempt from that address is refused unverified, right password or not.
    for password in ["wrong-5", dora_pw] {
        let r = get("thr-dora", password);
        let e = r.err(429, "TOO_MANY_ATTEMPTS").clone();
        let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("Retry-After is seconds");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert_eq!(e["retry_after"], retry, "the body says the same: {e}");
    }
    // Other users are not locked out from that address, and the same user is not
    // locked out from any other address.
    get("thr-emil", emil_pw).ok(200);
    as_user(s, "thr-emil", emil_pw, "GET", "/users/me", None).ok(200);
    as_user(s, "thr-dora", dora_pw, "GET", "/users/me", None).ok(200);
    call(s, &client_from(12), Some(("thr-dora", dora_pw)), "GET", "/users/me", None).ok(200);

    // An unknown user is answered exactly like a known one with a wrong password.
    let mut unknown_401 = Vec::new();
    for i in 0..5 {
        let r = get("thr-nobody", &format!("wrong-{i}"));
        r.err(401, "UNAUTHORIZED");
        unknown_401.push(r.text);
    }
    assert_eq!(known_401, unknown_401, "a 401 does not tell whether the user exists");
    get("thr-nobody", "wrong-5").err(429, "TOO_MANY_ATTEMPTS");

    // An admin setting a new password lifts the lock: old failures do not count against it.
    let new_pw = "dora-Password-2";
    admin(s, "PATCH", "/users/thr-dora", Some(json!({"password": new_pw}))).ok(200);
    get("thr-dora", new_pw).ok(200);
}

#[test]
fn twenty_failures_from_one_address_lock_that_address_only() {
    let s = server();
    let (attacker, bystander) = (client_from(3), client_from(4));
    let pw = "fritz-Password-1";
    create_user(s, "addr-fritz", pw, "searcher");
    // Twenty different usernames, so no username reaches its own limit.
    for i in 0..20 {
        call(s, &attacker, Some((&format!("addr-guess-{i}"), "wrong-password")), "GET", "/users/me", None)
            .err(401, "UNAUTHORIZED");
    }
    let r = call(s, &attacker, Some(("addr-fritz", pw)), "GET", "/users/me", None);
    r.err(429, "TOO_MANY_ATTEMPTS");
    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|n| (1..=60).contains(&n))));
    // Anonymous requests are not logins: still 401.
    call(s, &attacker, None, "GET", "/users/me", None).err(401, "UNAUTHORIZED");
    call(s, &bystander, Some(("addr-fritz", pw)), "GET", "/users/me", None).ok(200);
    call(s, &bystander, Some(("addr-guess-0", "wrong-password")), "GET", "/users/me", None).err(401, "UNAUTHORIZED");
}

/// Issue 14, point 1: guessing from one address (127.0.0.9) used to keep `admin`,
/// and any searcher, answered 429 everywhere, their right password from another
/// address included. Now the guesser slows down only itself; the owner is never
/// refused from an address that has not failed, or that logged in before.
#[test]
fn guessing_cannot_lock_out_the_account_owner() {
    let s = server();
    let gina_pw = "gina-Password-1";
    create_user(s, "own-gina", gina_pw, "searcher");
    let attacker = client_from(9);
    let (owner_admin, owner_gina) = (client_from(1), client_from(5));
    let me =
        |client: &Client, user: &str, password: &str| call(s, client, Some((user, password)), "GET", "/users/me", None);

    // Five quick guesses each, then a guessing loop with the owners logging in
    // between guesses (before: every one of their logins was refused, too).
    for i in 0..5 {
        for user in [ADMIN_USER, "own-gina"] {
            me(&attacker, user, &format!("guess-{i}")).err(401, "UNAUTHORIZED");
        }
    }
    for i in 5..30 {
        for user in [ADMIN_USER, "own-gina"] {
            me(&attacker, user, &format!("guess-{i}")).err(429, "TOO_MANY_ATTEMPTS");
        }
        me(&owner_admin, ADMIN_USER, ADMIN_PASSWORD).ok(200);
        me(&owner_gina, "own-gina", gina_pw).ok(200);
    }
    // An address that never logged in as gina and never failed for her: not refused either.
    me(&client_from(6), "own-gina", gina_pw).ok(200);

    // Guessers on more addresses spend gina's budget of 30 failures an hour (the
    // first address spent 5 of it; five more spend 5 each).
    for n in 10..15 {
        for i in 0..5 {
            me(&client_from(n), "own-gina", &format!("guess-{n}-{i}")).err(401, "UNAUTHORIZED");
        }
    }
    // Now an address that has failed for gina is refused, right password or not,
    // even below its own limit…
    let late = client_from(16);
    me(&late, "own-gina", "guess-16").err(401, "UNAUTHORIZED");
    let r = me(&late, "own-gina", gina_pw);
    r.err(429, "TOO_MANY_ATTEMPTS");
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((60..=3600).contains(&retry), "until failures leave the hour: {retry}");
    // …but never one that has not failed for her, nor her known-good address after a typo.
    me(&client_from(17), "own-gina", gina_pw).ok(200);
    me(&owner_gina, "own-gina", "a-typo-Password").err(401, "UNAUTHORIZED");
    me(&owner_gina, "own-gina", gina_pw).ok(200);
    me(&owner_admin, ADMIN_USER, ADMIN_PASSWORD).ok(200);
}

/// `--trusted-proxies`: `X-Forwarded-For` names the client only when the TCP peer is
/// a trusted proxy, and then only its right-most untrusted entry counts.
#[test]
fn x_forwarded_for_is_believed_from_trusted_proxies_only() {
    let s = server();
    let pw = "hana-Password-1";
    create_user(s, "xff-hana", pw, "searcher");
    let me = |client: &Client, password: &str| call(s, client, Some(("xff-hana", password)), "GET", "/users/me", None);
    // Through the trusted proxy (127.0.0.1) as 127.0.0.50: five failures lock that
    // client only.
    let guesser = forwarding_client("127.0.0.50", None);
    for i in 0..5 {
        me(&guesser, &format!("guess-{i}")).err(401, "UNAUTHORIZED");
    }
    me(&guesser, pw).err(429, "TOO_MANY_ATTEMPTS");
    // An entry the client wrote itself, to the left, does not get it out.
    me(&forwarding_client("127.0.0.77, 127.0.0.50", None), pw).err(429, "TOO_MANY_ATTEMPTS");
    // Another client behind the same proxy is not locked out.
    me(&forwarding_client("127.0.0.51", None), pw).ok(200);
    me(&forwarding_client("127.0.0.50, 127.0.0.51", None), pw).ok(200);

    // A server that trusts no proxy takes the TCP peer and ignores the header.
    let plain = Server::start();
    let pw2 = "hana-Password-2";
    call(
        &plain,
        plain.http(),
        Some((ADMIN_USER, ADMIN_PASSWORD)),
        "POST",
        "/users",
        Some(json!({"username": "xff-hana", "password": pw2, "role": "searcher"})),
    )
    .ok(201);
    let me =
        |client: &Client, password: &str| call(&plain, client, Some(("xff-hana", password)), "GET", "/users/me", None);
    for i in 0..5 {
        me(&forwarding_client("127.0.0.52", None), &format!("guess-{i}")).err(401, "UNAUTHORIZED");
    }
    me(&forwarding_client("127.0.0.53", None), pw2).err(429, "TOO_MANY_ATTEMPTS");
    me(plain.http(), pw2).err(429, "TOO_MANY_ATTEMPTS");
}

// ---------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------

/// Runs `facesearch user ARGS --data-dir DIR`, with `password` in
/// FACESEARCH_NEW_PASSWORD or, if `stdin` is given, on standard input.
fn cli(dir: &Path, args: &[&str], password: Option<&str>, stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facesearch"));
    cmd.arg("user").args(args).arg("--data-dir").arg(dir);
    cmd.env_remove("FACESEARCH_DATA_DIR").env_remove("FACESEARCH_NEW_PASSWORD").env("FACESEARCH_LOG", "warn");
    if let Some(p) = password {
        cmd.env("FACESEARCH_NEW_PASSWORD", p);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running facesearch user");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("writing stdin");
        }
    }
    child.wait_with_output().expect("waiting for facesearch user")
}

#[track_caller]
fn cli_ok(dir: &Path, args: &[&str], password: Option<&str>, stdin: Option<&str>) -> String {
    let out = cli(dir, args, password, stdin);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "facesearch user {args:?} failed: {stdout}\n{stderr}");
    stdout.into_owned()
}

/// Asserts a non-zero exit with `message` in the error output.
#[track_caller]
fn cli_fails(dir: &Path, args: &[&str], password: Option<&str>, message: &str) {
    let out = cli(dir, args, password, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "facesearch user {args:?} should fail; it printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(message), "facesearch user {args:?}: expected {message:?} in the error, got {stderr}");
}

#[test]
fn the_cli_manages_users_of_a_data_dir_that_a_server_then_uses() {
    let tmp = common::temp_dir();
    let dir = tmp.path().join("data");
    let (admin_pw, searcher_pw) = ("cli-admin-Password", "cli-searcher-Password");

    cli_fails(&dir, &["list"], None, "no facesearch database");
    assert!(!dir.exists(), "listing does not create a data directory");
    let out = cli_ok(&dir, &["add", "cli-admin", "--role", "admin"], Some(admin_pw), None);
    assert!(out.contains("created user cli-admin (admin)"), "{out}");
    // The password from standard input; JSON output.
    let out =
        cli_ok(&dir, &["add", "cli-searcher", "--role", "Searcher", "--json"], None, Some(&format!("{searcher_pw}\n")));
    let user: Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(user["username"], "cli-searcher");
    assert_eq!(user["role"], "searcher");
    assert!(user.get("password_hash").is_none());

    // Errors: a clear message and a non-zero exit.
    cli_fails(&dir, &["add", "cli-weak", "--role", "searcher"], Some("too-short"), "at least 12 characters");
    cli_fails(&dir, &["add", "cli-searcher", "--role", "searcher"], Some(searcher_pw), "already exists");
    cli_fails(&dir, &["add", "bad name", "--role", "searcher"], Some(searcher_pw), "username must be");
    cli_fails(&dir, &["add", "cli-root", "--role", "root"], Some(searcher_pw), "role must be");
    cli_fails(
        &dir,
        &["add", "cli-granted", "--role", "searcher", "--grant", "no-such-index"],
        Some(searcher_pw),
        "no index",
    );
    cli_fails(&dir, &["passwd", "nobody"], Some(searcher_pw), "no user named \"nobody\"");
    cli_fails(&dir, &["grant", "cli-searcher", "no-such-index"], None, "no index");
    cli_fails(&dir, &["remove", "nobody"], None, "no user named");
    cli_fails(&dir, &["remove", "cli-admin"], None, "last admin");
    let out = cli(&dir, &["add", "cli-nopw", "--role", "searcher"], None, None);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no password"));

    let out = cli_ok(&dir, &["list", "--json"], None, None);
    let list: Value = serde_json::from_str(&out).expect("JSON output");
    let names: Vec<&str> = list.as_array().expect("a list").iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["cli-admin", "cli-searcher"]);
    let out = cli_ok(&dir, &["list"], None, None);
    assert!(out.contains("cli-searcher") && out.contains("searcher"), "{out}");

    // A server on that data directory: the users log in (no admin was bootstrapped).
    let s = Server::start_with(ServerOptions::default().data_dir(&dir));
    let me = as_user(&s, "cli-searcher", searcher_pw, "GET", "/users/me", None).ok(200).clone();
    assert_eq!(me["role"], "searcher");
    as_user(&s, "cli-searcher", "wrong-password", "GET", "/users/me", None).err(401, "UNAUTHORIZED");
    as_user(&s, ADMIN_USER, ADMIN_PASSWORD, "GET", "/users/me", None).err(401, "UNAUTHORIZED");
    let index = as_user(&s, "cli-admin", admin_pw, "POST", "/face/index", Some(json!({"index_name": "cli-index"})))
        .ok(201)["id"]
        .as_str()
        .expect("index id")
        .to_string();

    // The command line works next to the running server.
    let late_pw = "cli-late-Password";
    cli_ok(&dir, &["add", "cli-late", "--role", "searcher", "--grant", &index], Some(late_pw), None);
    let details = as_user(&s, "cli-late", late_pw, "GET", "/face/index/details", None).ok(200).clone();
    let ids: Vec<&str> = details.as_array().expect("a list").iter().map(|i| i["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [index.as_str()], "the grant given on the command line");
    cli_ok(&dir, &["grant", "cli-searcher", &index], None, None);
    let me = as_user(&s, "cli-searcher", searcher_pw, "GET", "/users/me", None).ok(200).clone();
    assert_eq!(strings(&me["grants"]), [index.as_str()]);
    let new_pw = "cli-late-Password-2";
    let out = cli_ok(&dir, &["passwd", "cli-late", "--json"], None, Some(&format!("{new_pw}\r\n")));
    assert_eq!(serde_json::from_str::<Value>(&out).expect("JSON")["username"], "cli-late");
    as_user(&s, "cli-late", new_pw, "GET", "/users/me", None).ok(200);
    let out = cli_ok(&dir, &["revoke", "cli-late", &index], None, None);
    assert!(out.contains("revoked"), "{out}");
    let out = cli_ok(&dir, &["remove", "cli-late"], None, None);
    assert!(out.contains("removed user cli-late"), "{out}");
    let out = cli_ok(&dir, &["list", "--json"], None, None);
    assert!(!out.contains("cli-late"), "{out}");
}

// ---------------------------------------------------------------------------------
// Passwords without a printable character
// ---------------------------------------------------------------------------------

/// Twelve spaces, twelve NULs, tabs and line breaks, ideographic spaces: long enough,
/// but nothing to type. Refused everywhere a password is set.
const BLANK_PASSWORDS: &[&str] = &[
    "            ",
    "\0\0\0\0\0\0\0\0\0\0\0\0",
    "\t\t\t\t\t\t\t\t\t\t\t\t",
    " \u{3000} \u{3000} \u{3000} \u{3000} \u{3000} \u{3000}",
    "\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}",
];

#[test]
fn passwords_without_a_printable_character_are_refused_over_http() {
    let s = server();
    for (i, blank) in BLANK_PASSWORDS.iter().enumerate() {
        let name = format!("blank-{i}");
        let body = json!({"username": name, "password": blank, "role": "searcher"});
        let e = admin(s, "POST", "/users", Some(body)).err(400, "WEAK_PASSWORD").clone();
        assert!(e["message"].as_str().unwrap_or_default().contains("printable"), "{e}");
        admin(s, "GET", &format!("/users/{name}"), None).err(404, "USER_NOT_FOUND");
    }
    let pw = "blank-Password-1";
    create_user(s, "blank-patch", pw, "searcher");
    for blank in BLANK_PASSWORDS {
        admin(s, "PATCH", "/users/blank-patch", Some(json!({"password": blank}))).err(400, "WEAK_PASSWORD");
    }
    // The old password still works; spaces around and inside a real password are fine.
    as_user(s, "blank-patch", pw, "GET", "/users/me", None).ok(200);
    let spaced = "  correct horse battery  ";
    admin(s, "PATCH", "/users/blank-patch", Some(json!({"password": spaced}))).ok(200);
    as_user(s, "blank-patch", spaced, "GET", "/users/me", None).ok(200);
}

#[test]
fn the_cli_refuses_passwords_without_a_printable_character() {
    let tmp = common::temp_dir();
    let dir = tmp.path().join("data");
    cli_ok(&dir, &["add", "cli-root", "--role", "admin"], Some("cli-root-Password"), None);
    // From the environment (which cannot hold a NUL) and from standard input.
    cli_fails(&dir, &["add", "cli-spaces", "--role", "searcher"], Some("            "), "printable");
    cli_fails(&dir, &["add", "cli-tabs", "--role", "searcher"], Some("\t\t\t\t\t\t\t\t\t\t\t\t"), "printable");
    for blank in BLANK_PASSWORDS {
        let out = cli(&dir, &["add", "cli-stdin", "--role", "searcher"], None, Some(&format!("{blank}\n")));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("printable"), "{blank:?}: {stderr}");
        let out = cli(&dir, &["passwd", "cli-root"], None, Some(&format!("{blank}\n")));
        assert!(!out.status.success(), "passwd {blank:?}");
    }
    let out = cli_ok(&dir, &["list", "--json"], None, None);
    assert!(!out.contains("cli-spaces") && !out.contains("cli-stdin"), "{out}");
}

#[test]
fn a_first_admin_password_without_a_printable_character_stops_the_server() {
    for blank in ["            ", "\t \t \t \t \t \t "] {
        let tmp = common::temp_dir();
        let out = Command::new(env!("CARGO_BIN_EXE_facesearch"))
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data"))
            // A server that did start stops at once (its standard input is empty).
            .arg("--exit-on-stdin-close")
            .env_remove("FACESEARCH_DATABASE_URL")
            .env_remove("FACESEARCH_CONFIG")
            .env("FACESEARCH_ADMIN_PASSWORD", blank)
            .env("FACESEARCH_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("running facesearch serve");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{blank:?}: the server started: {stdout}");
        assert!(stderr.contains("FACESEARCH_ADMIN_PASSWORD") && stderr.contains("printable"), "{stderr}");
        assert!(!stdout.contains("created admin user"), "{stdout}");
    }
}
