//! The audit trail end to end: searches (with their parameters, liveness and results),
//! refusals, downloads, enrolments, updates, deletes and user changes are on record,
//! readable by admins and auditors only, with filters; every 401, 403 and 429 is on
//! record too, within a flood limit; the audit layer never changes a request.

mod common;

use common::{ADMIN_PASSWORD, ADMIN_USER, Server, ServerOptions, eval};
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn events(s: &Server, query: &str) -> Vec<Value> {
    let r = s.get(&format!("/audit?{query}"));
    r.ok(200)["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn every_access_is_on_record() {
    let s = Server::start();
    let index = s.create_index_id("audit-index");
    let record = s.enrol_ok(&index, &eval("deepface/img1.jpg"), &[("name", "Angelina Jolie"), ("reference", "aj")]);
    let record_id = record["record_id"].as_str().unwrap().to_string();
    let image_id = record["image_ids"][0].as_str().unwrap().to_string();

    let matches = s.search_ok(&[&index], &eval("deepface/img2.jpg"), &[("min_match_score", "60")]);
    assert_eq!(matches[0]["record_id"], record_id.as_str());
    s.search(&[&index], &eval("compreface/sample_images/017_0.jpg"), &[]).err(422, "NO_FACE_DETECTED");
    s.download(&image_id).ok(200);
    s.patch_json(&format!("/face/index/{index}/records/{record_id}"), &json!({"watch_list": ["pep"]})).ok(200);
    s.post_json("/users", &json!({"username": "auditor1", "password": "auditor-Password-1", "role": "auditor"}))
        .ok(201);
    s.post_json("/users", &json!({"username": "searcher1", "password": "searcher-Password-1", "role": "searcher"}))
        .ok(201);
    assert_eq!(s.delete(&format!("/face/index/{index}/records/{record_id}")).status, 204);

    let all = events(&s, "limit=100");
    let find = |action: &str| all.iter().filter(|e| e["action"] == action).cloned().collect::<Vec<_>>();

    let enrol = &find("record.enrol")[0];
    assert_eq!(enrol["actor"], ADMIN_USER);
    assert_eq!(enrol["outcome"], "ok");
    assert_eq!(enrol["record_ids"], json!([record_id]));
    assert_eq!(enrol["index_ids"], json!([index]));

    let searches = find("face.search");
    assert_eq!(searches.len(), 2);
    let refused = searches.iter().find(|e| e["outcome"] == "NO_FACE_DETECTED").expect("the refused search is logged");
    assert_eq!(refused["index_ids"], json!([index]));
    let found = searches.iter().find(|e| e["outcome"] == "ok").expect("the search is logged");
    assert_eq!(found["record_ids"], json!([record_id]));
    assert_eq!(found["details"]["min_match_score"], 60.0);
    assert_eq!(found["details"]["perform_liveness_check"], true);
    assert_eq!(found["details"]["liveness"]["status"], "judged");
    assert_eq!(found["details"]["results"][0]["record_id"], record_id.as_str());
    assert!(found["details"]["results"][0]["match_score"].as_f64().unwrap() >= 60.0);

    assert_eq!(find("image.download")[0]["record_ids"], json!([record_id]));
    assert_eq!(find("record.update")[0]["details"]["fields"], json!(["watch_list"]));
    assert_eq!(find("record.delete")[0]["outcome"], "ok");
    assert_eq!(find("index.create")[0]["index_ids"], json!([index]));
    let users: Vec<&Value> = all.iter().filter(|e| e["action"] == "user.create").collect();
    assert_eq!(users.len(), 2);
    assert!(users.iter().any(|e| e["details"]["user"] == "auditor1"));

    // Filters and paging.
    assert!(events(&s, "action=face.search").iter().all(|e| e["action"] == "face.search"));
    assert_eq!(events(&s, &format!("record_id={record_id}&action=record.enrol")).len(), 1);
    let first = s.get("/audit?limit=2");
    let next = first.ok(200)["next_before_id"].as_i64().expect("a next page");
    let second = events(&s, &format!("limit=2&before_id={next}"));
    assert!(second.iter().all(|e| e["id"].as_i64().unwrap() < next));
    assert!(events(&s, "since=2999-01-01").is_empty());
    s.get("/audit?since=yesterday").err(400, "INVALID_PARAMETER");

    // Auditors read it; searchers may not; nobody can change it (no such route).
    let client = reqwest::blocking::Client::new();
    let as_user = |user: &str, password: &str| {
        client.get(s.url("/audit?limit=1")).basic_auth(user, Some(password)).send().expect("request").status().as_u16()
    };
    assert_eq!(as_user("auditor1", "auditor-Password-1"), 200);
    assert_eq!(as_user("searcher1", "searcher-Password-1"), 403);
    assert_eq!(as_user(ADMIN_USER, ADMIN_PASSWORD), 200);
    let id = all[0]["id"].as_i64().unwrap();
    let delete = client.delete(s.url(&format!("/audit/{id}"))).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)).send();
    assert_eq!(delete.expect("request").status().as_u16(), 404);
}

/// Issue 14, point 4: every 401, 403 and 429 of an authenticated route is on record
/// — actor (or a keyed hash of an unknown username), route, client address and
/// outcome, never a password — and a flood of them is capped per address.
#[test]
fn refusals_are_on_record() {
    // 127.0.0.1 is trusted as a proxy, so clients can be told apart by X-Forwarded-For
    // on any machine.
    let s = Server::start_with(ServerOptions::default().args(&["--trusted-proxies", "127.0.0.1/32"]));
    let index = s.create_index_id("refusal-index");
    let (sam, sam_pw) = ("ref-sam", "ref-sam-Password-1");
    s.post_json("/users", &json!({"username": sam, "password": sam_pw, "role": "searcher"})).ok(201);
    let from = |n: u8| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-forwarded-for", format!("127.0.0.{n}").parse().expect("a header value"));
        Client::builder().default_headers(headers).build().expect("a client")
    };
    let send = |client: &Client, who: Option<(&str, &str)>, method: &str, path: &str, body: Option<Value>| {
        let mut req = client.request(method.parse().expect("a method"), s.url(path));
        if let Some((user, password)) = who {
            req = req.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        s.send(format!("{method} {path}"), req)
    };
    let searcher = from(20);

    // Refused by role, in the route table (these left no entry before).
    let escalate = json!({"username": "ref-mallory", "password": "mallory-Password-1", "role": "admin"});
    send(&searcher, Some((sam, sam_pw)), "POST", "/users", Some(escalate)).err(403, "FORBIDDEN");
    send(&searcher, Some((sam, sam_pw)), "PATCH", &format!("/users/{sam}"), Some(json!({"role": "admin"})))
        .err(403, "FORBIDDEN");
    send(&searcher, Some((sam, sam_pw)), "DELETE", &format!("/face/index/{index}"), None).err(403, "FORBIDDEN");
    // Refused by the handler, for an index not granted.
    send(&searcher, Some((sam, sam_pw)), "GET", &format!("/face/index/{index}"), None).err(403, "FORBIDDEN");
    // Refused by the handler that audits it itself: one entry, not two.
    send(&searcher, Some((sam, sam_pw)), "DELETE", &format!("/face/index/{index}/records/no-such-record"), None)
        .err(403, "FORBIDDEN");
    // Wrong password, then throttled; an unknown username; no credentials.
    let guesser = from(21);
    for i in 0..5 {
        send(&guesser, Some((sam, &format!("guess-{i}"))), "GET", "/users/me", None).err(401, "UNAUTHORIZED");
    }
    send(&guesser, Some((sam, sam_pw)), "GET", "/users/me", None).err(429, "TOO_MANY_ATTEMPTS");
    let typo = "ref-sam-Password-1-typed-as-a-username";
    send(&from(22), Some((typo, "x")), "GET", "/face/index/details", None).err(401, "UNAUTHORIZED");
    send(&from(23), None, "DELETE", &format!("/face/index/{index}"), None).err(401, "UNAUTHORIZED");

    let all = events(&s, "action=request.refused&limit=1000");
    let text = serde_json::to_string(&all).expect("JSON");
    for secret in [sam_pw, typo, "guess-0", "mallory-Password-1"] {
        assert!(!text.contains(secret), "{secret:?} is in the audit log: {text}");
    }
    let find = |route: &str, client: &str| -> Vec<Value> {
        all.iter().filter(|e| e["details"]["route"] == route && e["details"]["client"] == client).cloned().collect()
    };
    let one = |route: &str, client: &str| -> Value {
        let found = find(route, client);
        assert_eq!(found.len(), 1, "one entry for {route} from {client}: {text}");
        found[0].clone()
    };
    let e = one("POST /users", "127.0.0.20");
    assert_eq!((&e["actor"], &e["outcome"]), (&json!(sam), &json!("FORBIDDEN")), "{e}");
    assert_eq!(e["details"]["via"], "127.0.0.1", "the proxy it came through: {e}");
    let e = one("PATCH /users/{username}", "127.0.0.20");
    assert_eq!((&e["actor"], &e["outcome"], &e["details"]["user"]), (&json!(sam), &json!("FORBIDDEN"), &json!(sam)));
    let e = one("DELETE /face/index/{index_id}", "127.0.0.20");
    assert_eq!((&e["actor"], &e["outcome"], &e["index_ids"]), (&json!(sam), &json!("FORBIDDEN"), &json!([index])));
    let e = one("GET /face/index/{index_id}", "127.0.0.20");
    assert_eq!((&e["actor"], &e["index_ids"]), (&json!(sam), &json!([index])));
    assert!(find("DELETE /face/index/{index_id}/records/{record_id}", "127.0.0.20").is_empty(), "{text}");
    let deletes = events(&s, &format!("action=record.delete&actor={sam}"));
    assert_eq!(deletes.len(), 1, "the handler's own entry: {deletes:?}");
    assert_eq!(deletes[0]["outcome"], "FORBIDDEN");
    let logins = find("GET /users/me", "127.0.0.21");
    assert_eq!(logins.len(), 6, "{text}");
    assert!(logins.iter().all(|e| e["actor"] == sam), "an existing username is named: {logins:?}");
    let outcomes: Vec<&str> = logins.iter().rev().map(|e| e["outcome"].as_str().unwrap_or_default()).collect();
    assert_eq!(outcomes, ["UNAUTHORIZED"; 5].into_iter().chain(["TOO_MANY_ATTEMPTS"]).collect::<Vec<_>>());
    let e = one("GET /face/index/details", "127.0.0.22");
    let actor = e["actor"].as_str().unwrap_or_default();
    assert!(actor.starts_with("unknown:") && actor.len() == 24, "an unknown username is hashed: {e}");
    assert_eq!(e["outcome"], "UNAUTHORIZED");
    let e = one("DELETE /face/index/{index_id}", "127.0.0.23");
    assert_eq!((&e["actor"], &e["outcome"]), (&json!("anonymous:"), &json!("UNAUTHORIZED")), "{e}");

    // A flood from one address: 10 entries a minute, the rest only counted (the count
    // is written as one entry once the minute is over).
    let flood = from(24);
    for _ in 0..30 {
        send(&flood, None, "GET", "/users/me", None).err(401, "UNAUTHORIZED");
    }
    let all = events(&s, "action=request.refused&limit=1000");
    let flooded = all.iter().filter(|e| e["details"]["client"] == "127.0.0.24").count();
    assert_eq!(flooded, 10, "at most 10 entries per address and minute");
    // Auditors read them like any other entry.
    assert!(events(&s, &format!("actor={sam}")).iter().any(|e| e["action"] == "request.refused"));
}

/// Issue 14, point 5: the user-change audit read at most 64 KiB of a `/users` body and
/// handed the handler the truncated rest (answered `INVALID_JSON`); the handler must
/// see exactly what was sent.
#[test]
fn the_audit_layer_hands_the_handler_the_whole_body() {
    let s = Server::start();
    let padding = " ".repeat(100 * 1024);
    let body = format!(
        "{{\"username\": \"big-body\",{padding}\"password\": \"big-body-Password-1\", \"role\": \"searcher\"}}"
    );
    assert!(body.len() > 64 * 1024);
    let req = s.http().post(s.url("/users")).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD));
    let r = s.send("POST /users (100 KiB)", req.header("content-type", "application/json").body(body));
    assert_eq!(r.ok(201)["username"], "big-body");
    let created = events(&s, "action=user.create");
    assert_eq!(created[0]["details"]["user"], "big-body", "{created:?}");
    assert_eq!(created[0]["outcome"], "ok");
}
