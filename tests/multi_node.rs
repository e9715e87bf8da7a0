//! Several stateless facesearch nodes sharing one PostgreSQL database (pgvector): two
//! real `facesearch serve` processes on different ports, one real PostgreSQL.
//!
//! What a deployment behind a load balancer relies on: a write acknowledged by one
//! node is seen by the other at once (enrolment found, delete gone, user able to log
//! in), concurrent enrolments with one client reference make one record, nodes
//! starting together migrate the schema once, and a database outage is a quick 503
//! that heals by itself.

mod common;

use common::{Server, ServerOptions, lfw_photos};
use facesearch_pgfixture::TestPostgres;

fn no_liveness() -> [(&'static str, &'static str); 1] {
    [("perform_liveness_check", "false")]
}

/// Two nodes on one new database, started at the same time (their migrations and
/// first-admin creation race).
fn two_nodes() -> (Server, Server) {
    let url = facesearch_pgfixture::shared().fresh_database();
    let (u1, u2) = (url.clone(), url);
    let a = std::thread::spawn(move || Server::start_with(ServerOptions::default().database_url(&u1)));
    let b = std::thread::spawn(move || Server::start_with(ServerOptions::default().database_url(&u2)));
    (a.join().expect("node A starts"), b.join().expect("node B starts"))
}

#[test]
fn a_write_on_one_node_is_seen_by_the_other_at_once() {
    let (a, b) = two_nodes();
    assert_ne!(a.base, b.base, "two processes on two ports");
    assert!(a.ready_line.contains("database") && b.ready_line.contains("database"), "{}", a.ready_line);

    let index = a.create_index_id("shared");
    // B knows the index A just created.
    assert_eq!(b.index(&index).ok(200)["index_name"], "shared");

    let bolton = lfw_photos("John_Bolton");
    let rec = a.enrol_ok(&index, &bolton[0], &[("name", "John Bolton"), ("id_no", "JB-1")]);
    // Immediately after A's 201, B finds him.
    let found = b.search_ok(&[&index], &bolton[1], &no_liveness());
    assert_eq!(found[0]["record_id"], rec["record_id"], "{found:?}");
    assert_eq!(found[0]["name"], "John Bolton");
    // B serves the enrolled image A stored.
    let image = rec["image_ids"][0].as_str().expect("an image id");
    b.download(image).ok(200);

    // A new photo added on B is searchable on A.
    let kuchma = lfw_photos("Leonid_Kuchma");
    let other = b.enrol_ok(&index, &kuchma[0], &[("name", "Leonid Kuchma")]);
    let found = a.search_ok(&[&index], &kuchma[1], &no_liveness());
    assert_eq!(found[0]["record_id"], other["record_id"]);

    // A delete on B is gone on A at once: no match, no record, no image.
    let record_id = rec["record_id"].as_str().expect("record id");
    assert_eq!(b.delete(&format!("/face/index/{index}/records/{record_id}")).status, 204);
    let found = a.search_ok(&[&index], &bolton[1], &no_liveness());
    assert!(found.iter().all(|m| m["record_id"] != record_id), "deleted record still found: {found:?}");
    a.get(&format!("/face/index/{index}/records/{record_id}")).err(404, "RECORD_NOT_FOUND");
    a.download(image).err(404, "FILE_NOT_FOUND");
    assert_eq!(a.record_count(&index), 1);

    // A user created on A logs in on B.
    let user = serde_json::json!({"username": "carol", "password": "carol-Secret-123", "role": "searcher"});
    assert_eq!(a.post_json("/users", &user).status, 201);
    let me = b.http().get(b.url("/users/me")).basic_auth("carol", Some("carol-Secret-123")).send().expect("GET /me");
    assert_eq!(me.status().as_u16(), 200);
}

#[test]
fn concurrent_enrolments_with_one_reference_make_one_record() {
    let (a, b) = two_nodes();
    let index = a.create_index_id("kyc");
    let photos = lfw_photos("Tang_Jiaxuan");
    let fields = [("name", "Tang Jiaxuan"), ("reference", "customer-7")];
    let (ia, ib) = (index.clone(), index.clone());
    let (pa, pb) = (photos[0].clone(), photos[1].clone());
    let (ra, rb) = std::thread::scope(|scope| {
        let ta = scope.spawn(|| a.enrol(&ia, &pa, &fields));
        let tb = scope.spawn(|| b.enrol(&ib, &pb, &fields));
        (ta.join().expect("enrol on A"), tb.join().expect("enrol on B"))
    });
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 201], "one created, one told it exists: {} / {}", ra.text, rb.text);
    assert_eq!(ra.json["record_id"], rb.json["record_id"]);
    assert_eq!(a.record_count(&index), 1);
    assert_eq!(b.record_count(&index), 1);
}

#[test]
fn a_database_outage_is_a_quick_503_and_heals_by_itself() {
    // A PostgreSQL of its own: this test stops it.
    let pg = TestPostgres::start().expect("PostgreSQL starts");
    let url = pg.create_database("outage").expect("a database");
    let node = Server::start_with(ServerOptions::default().database_url(&url).args(&["--db-timeout", "2"]));
    let index = node.create_index_id("survives");
    assert_eq!(node.get("/readyz").status, 200);

    pg.stop_server().expect("the database stops");
    node.get(&format!("/face/index/{index}")).err(503, "SERVICE_UNAVAILABLE");
    let ready = node.http().get(node.url("/readyz")).send().expect("GET /readyz");
    assert_eq!(ready.status().as_u16(), 503);
    // The node itself is alive.
    assert_eq!(node.http().get(node.url("/healthz")).send().expect("GET /healthz").status().as_u16(), 200);

    pg.start_server().expect("the database is back");
    assert_eq!(node.get("/readyz").status, 200);
    assert_eq!(node.index(&index).ok(200)["index_name"], "survives");
}

#[test]
fn users_added_with_the_command_line_on_postgres_log_in_on_every_node() {
    let (a, b) = two_nodes();
    let index = a.create_index_id("cli-users");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facesearch"))
        .args(["user", "add", "erin", "--role", "searcher", "--grant", &index])
        .env("FACESEARCH_DATABASE_URL", a.database_url.as_deref().expect("a PostgreSQL node"))
        .env("FACESEARCH_NEW_PASSWORD", "erin-Secret-1234")
        .env("FACESEARCH_LOG", "warn")
        .output()
        .expect("running facesearch user add");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for node in [&a, &b] {
        let me = node.http().get(node.url("/users/me")).basic_auth("erin", Some("erin-Secret-1234")).send().unwrap();
        assert_eq!(me.status().as_u16(), 200);
    }
}

/// The last-admin rule holds across nodes: two admins deleting each other at the same
/// moment through two nodes leave exactly one admin (the rule is kept by the database,
/// not by a lock inside one process). Several rounds, each with two fresh admins.
#[test]
fn two_admins_deleting_each_other_on_two_nodes_leave_one() {
    let (a, b) = two_nodes();
    let as_user = |node: &Server, client: &reqwest::blocking::Client, who: &str, method: &str, path: &str| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        node.send(
            format!("{method} {path} as {who}"),
            client.request(method, node.url(path)).basic_auth(who, Some(password(who))),
        )
    };
    fn password(who: &str) -> String {
        format!("{who}-Secret-Password")
    }
    let admins = |node: &Server, who: &str| -> Vec<String> {
        let client = node.http();
        let r = as_user(node, client, who, "GET", "/users");
        let list = r.ok(200).as_array().expect("users").clone();
        list.iter().filter(|u| u["role"] == "admin").map(|u| u["username"].as_str().unwrap().to_string()).collect()
    };
    // The bootstrap admin makes the first pair, then goes like every round's survivor.
    let mut survivor = common::ADMIN_USER.to_string();
    let mut outcomes = Vec::new();
    for round in 0..8 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        for name in [&x, &y] {
            let body = serde_json::json!({"username": name, "password": password(name), "role": "admin"});
            let req = a.http().post(a.url("/users")).json(&body);
            let req = if survivor == common::ADMIN_USER {
                req.basic_auth(common::ADMIN_USER, Some(common::ADMIN_PASSWORD))
            } else {
                req.basic_auth(&survivor, Some(password(&survivor)))
            };
            a.send(format!("POST /users {name}"), req).ok(201);
        }
        // Three admins: x may delete the last round's survivor. Now x and y are the only two.
        let r = as_user(&a, a.http(), &x, "DELETE", &format!("/users/{survivor}"));
        assert_eq!(r.status, 204, "{}", r.text);
        assert_eq!(admins(&b, &x), [x.clone(), y.clone()]);

        // Each on their own node and connection, credentials already verified (so that
        // both deletes reach the database together), at the same moment.
        let (ca, cb) = (reqwest::blocking::Client::new(), reqwest::blocking::Client::new());
        as_user(&a, &ca, &x, "GET", "/users/me").ok(200);
        as_user(&b, &cb, &y, "GET", "/users/me").ok(200);
        let barrier = std::sync::Barrier::new(2);
        let (rx, ry) = std::thread::scope(|scope| {
            let tx = scope.spawn(|| {
                barrier.wait();
                as_user(&a, &ca, &x, "DELETE", &format!("/users/{y}"))
            });
            let ty = scope.spawn(|| {
                barrier.wait();
                as_user(&b, &cb, &y, "DELETE", &format!("/users/{x}"))
            });
            (tx.join().expect("x deletes y"), ty.join().expect("y deletes x"))
        });
        let mut statuses = [rx.status, ry.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [204, 409], "round {round}: {} / {}", rx.text, ry.text);
        let refused = if rx.status == 409 { &rx } else { &ry };
        assert!(refused.err(409, "CONFLICT")["message"].as_str().unwrap_or_default().contains("last admin"));
        survivor = if rx.status == 204 { x.clone() } else { y.clone() };
        assert_eq!(admins(&a, &survivor), [survivor.clone()], "round {round}: exactly one admin remains");
        assert_eq!(admins(&b, &survivor), [survivor.clone()]);
        outcomes.push(survivor.chars().next().unwrap_or('?'));
    }
    eprintln!("survivors by round: {outcomes:?}");
}
