//! The audit trail end to end: searches (with their parameters, liveness and results),
//! refusals, downloads, enrolments, updates, deletes and user changes are on record,
//! readable by admins and auditors only, with filters.

mod common;

use common::{ADMIN_PASSWORD, ADMIN_USER, Server, eval};
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
