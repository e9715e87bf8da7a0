//! `facesearch migrate`: an embedded data directory moves into PostgreSQL with
//! everything in it, verified, and a copy that was cut short continues when run again.

mod common;

use std::process::Command;

use common::{Server, ServerOptions, lfw_photos, temp_dir};
use serde_json::json;

fn no_liveness() -> [(&'static str, &'static str); 1] {
    [("perform_liveness_check", "false")]
}

/// Runs `facesearch migrate`; returns (success, stdout + stderr).
fn migrate(data_dir: &std::path::Path, url: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_facesearch"))
        .arg("migrate")
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("FACESEARCH_DATABASE_URL", url)
        .env("FACESEARCH_LOG", "warn")
        .output()
        .expect("running facesearch migrate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn an_embedded_data_dir_moves_into_postgres_whole_and_resumably() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // The embedded server: two people (one with two photos), a user with a grant.
    let s = Server::start_with(ServerOptions::default().data_dir(&data));
    let index = s.create_index_id("migrating");
    let bolton = lfw_photos("John_Bolton");
    let kuchma = lfw_photos("Leonid_Kuchma");
    let a = s.enrol_ok(&index, &bolton[0], &[("name", "John Bolton"), ("reference", "jb"), ("watch_list", "pep")]);
    let a_id = a["record_id"].as_str().unwrap().to_string();
    s.add_image(&index, &a_id, &bolton[1]).ok(201);
    let b = s.enrol_ok(&index, &kuchma[0], &[("name", "Leonid Kuchma")]);
    let user = json!({"username": "dora", "password": "dora-Secret-123", "role": "operator", "grants": [index]});
    assert_eq!(s.post_json("/users", &user).status, 201);
    let before = s.search_ok(&[&index], &bolton[2], &no_liveness());
    let image = a["image_ids"][0].as_str().unwrap().to_string();
    let bytes = s.download(&image).json.clone();
    s.stop();

    let pg = facesearch_pgfixture::shared();
    let url = pg.fresh_database();
    let (ok, out) = migrate(&data, &url, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("verified: every table matches"), "{out}");

    // Cut a copy short: lose the last images (their vectors go with them), as if the
    // copy had stopped there. Verification notices; running it again completes it.
    let db = url.rsplit('/').next().unwrap();
    pg.psql(db, "DELETE FROM images WHERE seq > (SELECT MIN(seq) FROM images)").unwrap();
    let (ok, out) = migrate(&data, &url, &["--verify-only"]);
    assert!(!ok && out.contains("DIFFERENT"), "{out}");
    let (ok, out) = migrate(&data, &url, &[]);
    assert!(ok && out.contains("verified"), "{out}");

    // A server on PostgreSQL answers as the embedded one did.
    let p = Server::start_with(ServerOptions::default().database_url(&url));
    assert_eq!(p.record_count(&index), 2);
    let after = p.search_ok(&[&index], &bolton[2], &no_liveness());
    assert_eq!(after[0]["record_id"], before[0]["record_id"]);
    assert_eq!(after[0]["match_score"], before[0]["match_score"], "the same vectors, bit for bit");
    assert_eq!(p.download(&image).json, bytes, "the same image bytes");
    let record = p.get(&format!("/face/index/{index}/records/{a_id}")).ok(200).clone();
    assert_eq!(record["image_ids"].as_array().unwrap().len(), 2);
    assert_eq!(record["reference"], "jb");
    assert_eq!(p.search_ok(&[&index], &kuchma[1], &no_liveness())[0]["record_id"], b["record_id"]);
    // The user logs in with the same password, and keeps the grant.
    let me = p.http().get(p.url("/users/me")).basic_auth("dora", Some("dora-Secret-123")).send().unwrap();
    assert_eq!(me.status().as_u16(), 200);
    let me: serde_json::Value = me.json().unwrap();
    assert!(me.to_string().contains(&index), "{me}");
    // The audit log came along, and new entries continue after it.
    let audit = p.get("/audit?limit=100").ok(200).clone();
    assert!(audit.to_string().contains("record.enrol"), "{audit}");
}

#[test]
fn migrate_refuses_a_missing_database_or_url_clearly_and_copies_nothing() {
    let dir = temp_dir();
    let url = facesearch_pgfixture::shared().fresh_database();
    let (ok, out) = migrate(&dir.path().join("nothing-here"), &url, &[]);
    assert!(!ok && out.contains("no facesearch database in"), "{out}");
    let (ok, out) = migrate(&dir.path().join("nothing-here"), "mysql://elsewhere/db", &[]);
    assert!(!ok && out.contains("postgres://"), "{out}");
    // Nothing was created in the target database.
    let db = url.rsplit('/').next().unwrap();
    let tables =
        facesearch_pgfixture::shared().psql(db, "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'").unwrap();
    assert_eq!(tables.trim(), "0");
}
