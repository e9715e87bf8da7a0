//! The authorisation matrix: every endpoint of `facesearch_api::route_table()`, asked
//! by every role (admin, operator, searcher, auditor), without credentials and with
//! wrong ones, about an index the caller was granted, one it was not, and a granted
//! EXTERNAL index — each answer checked for its exact status and error code.
//!
//! The expected answers are derived from this file's own statement of each
//! endpoint's permission (which must equal the route table's) and the rules of
//! `docs/API.md`, not from the server's code. A route in the table that this file
//! does not know fails [`every_route_in_the_table_has_matrix_expectations`], so a new
//! endpoint cannot be added without deciding who may call it.
//!
//! Requests that would destroy the shared fixtures when allowed (deleting an index, a
//! record, a user) are aimed at throw-away copies when the caller is expected to be
//! allowed, and at the fixtures otherwise; afterwards the fixtures must all be there.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use common::{ADMIN_PASSWORD, ADMIN_USER, Resp, Server, ServerOptions, file_part, lfw_photos, with_form};
use facesearch_api::Permission;
use reqwest::blocking::Client;
use reqwest::blocking::multipart::Form;
use serde_json::{Value, json};

const PASSWORD: &str = "matrix-Password-1";
const OPERATOR: &str = "m-operator";
const SEARCHER: &str = "m-searcher";
const AUDITOR: &str = "m-auditor";
/// A user that the user-management routes act on.
const TARGET: &str = "m-target";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Admin,
    Operator,
    Searcher,
    Auditor,
    Anonymous,
    BadCredentials,
}

const EVERYONE: [Who; 6] =
    [Who::Admin, Who::Operator, Who::Searcher, Who::Auditor, Who::Anonymous, Who::BadCredentials];

/// The fixture indexes: operator and searcher are granted `Granted` and `External`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Idx {
    Granted,
    NotGranted,
    External,
}

const INDEXES: [Idx; 3] = [Idx::Granted, Idx::NotGranted, Idx::External];

impl Idx {
    fn n(self) -> usize {
        self as usize
    }
    fn index_type(self) -> &'static str {
        if self == Idx::External { "EXTERNAL" } else { "INTERNAL" }
    }
}

/// The body of a request.
enum Body {
    Empty,
    Json(Value),
    Form(Form),
}

/// A concrete request: path (with query) and body.
struct Req {
    path: String,
    body: Body,
}

fn req(path: impl Into<String>) -> Req {
    Req { path: path.into(), body: Body::Empty }
}

fn json_req(path: impl Into<String>, body: Value) -> Req {
    Req { path: path.into(), body: Body::Json(body) }
}

fn form_req(path: impl Into<String>, form: Form) -> Req {
    Req { path: path.into(), body: Body::Form(form) }
}

/// One endpoint and how to call it.
struct Case {
    method: &'static str,
    /// The path template, exactly as in the route table.
    path: &'static str,
    /// Who may call it, stated here independently of the server's table.
    permission: Permission,
    /// Asked once per fixture index (the index is in the path or the body).
    scoped: bool,
    /// The status of an allowed request.
    success: u16,
    /// Builds the request for one index (if scoped); `allowed` says whether the
    /// caller is expected to succeed (destructive requests then use throw-away data).
    build: fn(&Ctx, Option<Idx>, bool) -> Req,
}

const fn case(
    method: &'static str,
    path: &'static str,
    permission: Permission,
    scoped: bool,
    success: u16,
    build: fn(&Ctx, Option<Idx>, bool) -> Req,
) -> Case {
    Case { method, path, permission, scoped, success, build }
}

const DOWNLOAD: &str = "/media/file/download/{file_id}";

/// Endpoints whose success body is not `{"response": …}`, with their content type.
const RAW_SUCCESS: &[(&str, &str)] = &[
    ("/openapi.json", "application/json"),
    ("/docs", "text/html"),
    ("/console", "text/html"),
    // Redirected to /console (the client follows redirects).
    ("/", "text/html"),
    ("/metrics", "text/plain; version=0.0.4"),
];

fn cases() -> Vec<Case> {
    use Permission as P;
    vec![
        case("GET", "/healthz", P::None, false, 200, |_, _, _| req("/healthz")),
        case("GET", "/readyz", P::None, false, 200, |_, _, _| req("/readyz")),
        case("GET", "/openapi.json", P::None, false, 200, |_, _, _| req("/openapi.json")),
        case("GET", "/docs", P::None, false, 200, |_, _, _| req("/docs")),
        case("GET", "/console", P::None, false, 200, |_, _, _| req("/console")),
        case("GET", "/", P::None, false, 200, |_, _, _| req("/")),
        // Without `--metrics-auth` (the default); tests/metrics.rs checks it with.
        case("GET", "/metrics", P::None, false, 200, |_, _, _| req("/metrics")),
        case("GET", "/face/index/details", P::Any, false, 200, |_, _, _| {
            req("/face/index/details?action_type=FACE_SEARCH")
        }),
        case("POST", "/face/search", P::Search, true, 200, |c, i, _| {
            let form = Form::new()
                .part("source_image", file_part(&c.photo))
                .text("target_index_ids", c.index(i).to_string())
                .text("min_match_score", "0");
            form_req("/face/search?perform_liveness_check=false", form)
        }),
        case("GET", DOWNLOAD, P::Read, true, 200, |c, i, _| {
            req(format!("/media/file/download/{}", c.fx.image[i.unwrap().n()]))
        }),
        case("POST", "/face/index", P::Admin, false, 201, |c, _, _| {
            json_req("/face/index", json!({"index_name": format!("m-new-index-{}", c.next())}))
        }),
        case("GET", "/face/index/{index_id}", P::Read, true, 200, |c, i, _| req(format!("/face/index/{}", c.index(i)))),
        case("PATCH", "/face/index/{index_id}", P::Admin, true, 200, |c, i, _| {
            json_req(format!("/face/index/{}", c.index(i)), json!({"description": "patched by the matrix"}))
        }),
        case("DELETE", "/face/index/{index_id}", P::Admin, true, 204, |c, i, allowed| {
            let id = if allowed { c.throwaway_index(i.unwrap()) } else { c.index(i).to_string() };
            req(format!("/face/index/{id}"))
        }),
        case("POST", "/face/index/{index_id}/records", P::Write, true, 201, |c, i, _| {
            let form = Form::new().part("image", file_part(&c.photo)).text("name", "Matrix Enrolment");
            form_req(format!("/face/index/{}/records", c.index(i)), form)
        }),
        case("GET", "/face/index/{index_id}/records", P::Read, true, 200, |c, i, _| {
            req(format!("/face/index/{}/records?limit=5", c.index(i)))
        }),
        case("GET", "/face/index/{index_id}/records/{record_id}", P::Read, true, 200, |c, i, _| {
            req(format!("/face/index/{}/records/{}", c.index(i), c.record(i)))
        }),
        case("PATCH", "/face/index/{index_id}/records/{record_id}", P::Write, true, 200, |c, i, _| {
            json_req(
                format!("/face/index/{}/records/{}", c.index(i), c.record(i)),
                json!({"additional_info": "patched by the matrix"}),
            )
        }),
        case("DELETE", "/face/index/{index_id}/records/{record_id}", P::Write, true, 204, |c, i, allowed| {
            let record = if allowed { c.throwaway_record(i.unwrap()) } else { c.record(i).to_string() };
            req(format!("/face/index/{}/records/{record}", c.index(i)))
        }),
        case("POST", "/face/index/{index_id}/records/{record_id}/images", P::Write, true, 201, |c, i, _| {
            let form = Form::new().part("image", file_part(&c.photo));
            form_req(format!("/face/index/{}/records/{}/images", c.index(i), c.record(i)), form)
        }),
        // Moving an index to another pack: an allowed start is aimed at a throw-away
        // index (empty, moved to the pack it has: the job finishes at once), refused
        // ones at the fixtures; the job read is of a throw-away index that has one.
        case("POST", "/face/index/{index_id}/reembed", P::Admin, true, 202, |c, i, allowed| {
            let id = if allowed { c.throwaway_index(i.unwrap()) } else { c.index(i).to_string() };
            json_req(format!("/face/index/{id}/reembed"), json!({"pack": "open"}))
        }),
        case("GET", "/face/index/{index_id}/reembed", P::Admin, true, 200, |c, i, allowed| {
            let id = if allowed { c.reembedded_index(i.unwrap()) } else { c.index(i).to_string() };
            req(format!("/face/index/{id}/reembed"))
        }),
        // `wait`: the job (on one record) ends before the answer, so jobs never pile up.
        case("POST", "/face/index/{index_id}/duplicates", P::Review, true, 202, |c, i, _| {
            req(format!("/face/index/{}/duplicates?wait=30", c.index(i)))
        }),
        case("GET", "/face/index/{index_id}/duplicates/{job_id}", P::Review, true, 200, |c, i, _| {
            req(format!("/face/index/{}/duplicates/{}", c.index(i), c.job(i.unwrap())))
        }),
        case("GET", "/users/me", P::Any, false, 200, |_, _, _| req("/users/me")),
        case("POST", "/users", P::Admin, false, 201, |c, _, _| {
            json_req(
                "/users",
                json!({"username": format!("m-new-user-{}", c.next()), "password": PASSWORD, "role": "searcher"}),
            )
        }),
        case("GET", "/users", P::Admin, false, 200, |_, _, _| req("/users")),
        case("GET", "/users/{username}", P::Admin, false, 200, |_, _, _| req(format!("/users/{TARGET}"))),
        case("PATCH", "/users/{username}", P::Admin, false, 200, |_, _, _| {
            json_req(format!("/users/{TARGET}"), json!({"password": "m-target-Password-2"}))
        }),
        case("DELETE", "/users/{username}", P::Admin, false, 204, |c, _, allowed| {
            let name = if allowed { c.throwaway_user() } else { TARGET.to_string() };
            req(format!("/users/{name}"))
        }),
        case("PUT", "/users/{username}/grants/{index_id}", P::Admin, true, 204, |c, i, _| {
            req(format!("/users/{TARGET}/grants/{}", c.index(i)))
        }),
        case("DELETE", "/users/{username}/grants/{index_id}", P::Admin, true, 204, |c, i, _| {
            req(format!("/users/{TARGET}/grants/{}", c.index(i)))
        }),
        case("GET", "/audit", P::Auditor, false, 200, |_, _, _| req("/audit?limit=5")),
    ]
}

/// What the rules of `docs/API.md` say `who` gets from `case` about index `idx`:
/// the status and, for refusals, the error code.
fn expected(case: &Case, who: Who, idx: Option<Idx>) -> (u16, Option<&'static str>) {
    if case.permission == Permission::None {
        return (case.success, None);
    }
    if matches!(who, Who::Anonymous | Who::BadCredentials) {
        return (401, Some("UNAUTHORIZED"));
    }
    // Operator and searcher were granted the Granted and the External index.
    let granted = matches!(idx, Some(Idx::Granted | Idx::External));
    let allowed = match case.permission {
        Permission::None | Permission::Any => true,
        Permission::Admin => who == Who::Admin,
        Permission::Auditor => matches!(who, Who::Admin | Who::Auditor),
        Permission::Search => who == Who::Admin || (who == Who::Searcher && granted),
        Permission::Read => who == Who::Admin || (matches!(who, Who::Searcher | Who::Operator) && granted),
        // EXTERNAL indexes are read-only to everyone but admins.
        Permission::Write => who == Who::Admin || (who == Who::Operator && idx == Some(Idx::Granted)),
        // Duplicate jobs: admins, and operators on the indexes granted to them.
        Permission::Review => who == Who::Admin || (who == Who::Operator && granted),
    };
    if allowed {
        (case.success, None)
    } else if case.path == DOWNLOAD {
        // An image the caller may not read is indistinguishable from no image.
        (404, Some("FILE_NOT_FOUND"))
    } else {
        (403, Some("FORBIDDEN"))
    }
}

/// The shared fixtures, by [`Idx`].
struct Fixture {
    index: [String; 3],
    record: [String; 3],
    image: [String; 3],
}

struct Ctx<'a> {
    s: &'a Server,
    fx: Fixture,
    photo: std::path::PathBuf,
    counter: Cell<u32>,
    /// Clients seen as other loopback addresses, for wrong credentials (see
    /// [`Ctx::bad_credentials`]).
    bad_clients: RefCell<HashMap<IpAddr, Client>>,
    bad_count: Cell<u32>,
    /// Whether 127.0.0.2… can be bound here (else those clients go through the trusted
    /// proxy address, 127.0.0.1, with `X-Forwarded-For`).
    other_addresses: bool,
    /// Duplicate job per fixture index (see [`Ctx::job`]).
    jobs: RefCell<HashMap<usize, String>>,
}

impl Ctx<'_> {
    fn next(&self) -> u32 {
        self.counter.set(self.counter.get() + 1);
        self.counter.get()
    }

    fn index(&self, i: Option<Idx>) -> &str {
        &self.fx.index[i.expect("a scoped case").n()]
    }

    fn record(&self, i: Option<Idx>) -> &str {
        &self.fx.record[i.expect("a scoped case").n()]
    }

    fn throwaway_index(&self, i: Idx) -> String {
        let r = self.s.post_json(
            "/face/index",
            &json!({"index_name": format!("m-throwaway-{}", self.next()), "index_type": i.index_type()}),
        );
        r.ok(201)["id"].as_str().expect("index id").to_string()
    }

    /// A throw-away index with a (finished or running) re-embedding job.
    fn reembedded_index(&self, i: Idx) -> String {
        let id = self.throwaway_index(i);
        self.s.post_json(&format!("/face/index/{id}/reembed"), &json!({"pack": "open"})).ok(202);
        id
    }

    fn throwaway_record(&self, i: Idx) -> String {
        let r = self.s.enrol_ok(&self.fx.index[i.n()], &self.photo, &[("name", "Throwaway")]);
        r["record_id"].as_str().expect("record id").to_string()
    }

    /// A finished duplicate job on the fixture index `i`, started by the admin once.
    fn job(&self, i: Idx) -> String {
        if let Some(id) = self.jobs.borrow().get(&i.n()) {
            return id.clone();
        }
        let r = self.s.post_json(&format!("/face/index/{}/duplicates?wait=30", self.fx.index[i.n()]), &json!({}));
        let id = r.ok(202)["job_id"].as_str().expect("job id").to_string();
        self.jobs.borrow_mut().insert(i.n(), id.clone());
        id
    }

    fn throwaway_user(&self) -> String {
        let name = format!("m-throwaway-{}", self.next());
        self.s.post_json("/users", &json!({"username": name, "password": PASSWORD, "role": "auditor"})).ok(201);
        name
    }

    /// Wrong credentials, rotating over the real users and unknown ones, each from a
    /// client address used for at most 10 failures, so that the failed-login throttle
    /// (5 per username and address, 20 per address) never turns the expected 401 into
    /// a 429. The server sees the address either as the TCP peer (127.0.0.N bound
    /// here) or, where that cannot be bound, from `X-Forwarded-For` through the proxy
    /// it trusts (127.0.0.1): so every request is tried on every machine.
    fn bad_credentials(&self) -> (Client, String, String) {
        let n = self.bad_count.get();
        self.bad_count.set(n + 1);
        let user = match n % 5 {
            0 => ADMIN_USER.to_string(),
            1 => OPERATOR.to_string(),
            2 => SEARCHER.to_string(),
            3 => AUDITOR.to_string(),
            _ => format!("m-ghost-{n}"),
        };
        let password = format!("wrong-password-{n}");
        let octet = u8::try_from(2 + n / 10).expect("fewer than 2,500 wrong-credential requests");
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet));
        let client = self
            .bad_clients
            .borrow_mut()
            .entry(ip)
            .or_insert_with(|| {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert("x-forwarded-for", ip.to_string().parse().expect("a header value"));
                Client::builder()
                    .local_address(self.other_addresses.then_some(ip))
                    .default_headers(headers)
                    .timeout(std::time::Duration::from_secs(120))
                    .build()
                    .expect("building a client")
            })
            .clone();
        (client, user, password)
    }

    /// Sends `case`'s request as `who`.
    fn send(&self, case: &Case, who: Who, r: Req) -> Resp {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("an HTTP method");
        let url = self.s.url(&r.path);
        let what = format!("{} {} as {who:?}", case.method, r.path);
        let mut builder = match who {
            Who::Admin => self.s.http().request(method, url).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)),
            Who::Operator => self.s.http().request(method, url).basic_auth(OPERATOR, Some(PASSWORD)),
            Who::Searcher => self.s.http().request(method, url).basic_auth(SEARCHER, Some(PASSWORD)),
            Who::Auditor => self.s.http().request(method, url).basic_auth(AUDITOR, Some(PASSWORD)),
            Who::Anonymous => self.s.http().request(method, url),
            Who::BadCredentials => {
                let (client, user, password) = self.bad_credentials();
                client.request(method, url).basic_auth(user, Some(password))
            }
        };
        builder = match r.body {
            Body::Empty => builder,
            Body::Json(v) => builder.json(&v),
            Body::Form(f) => with_form(builder, f),
        };
        self.s.send(what, builder)
    }
}

#[test]
fn every_route_in_the_table_has_matrix_expectations() {
    let table = facesearch_api::route_table();
    let cases = cases();
    let mut seen = HashSet::new();
    for spec in table {
        let key = (spec.method.as_str().to_string(), spec.path);
        assert!(seen.insert(key.clone()), "{} {} is in the route table twice", key.0, key.1);
        let case =
            cases.iter().find(|c| c.method == spec.method.as_str() && c.path == spec.path).unwrap_or_else(|| {
                panic!(
                    "{} {} is in the route table but not in the authorisation matrix (tests/authz_matrix.rs): \
                     add a case saying who may call it",
                    spec.method, spec.path
                )
            });
        assert_eq!(
            case.permission, spec.permission,
            "{} {}: the route table says {:?}, the matrix expects {:?}",
            spec.method, spec.path, spec.permission, case.permission
        );
    }
    for c in &cases {
        assert!(
            table.iter().any(|s| s.method.as_str() == c.method && s.path == c.path),
            "the matrix has {} {}, which the route table does not",
            c.method,
            c.path
        );
    }
    assert_eq!(seen.len(), cases.len());
}

fn create_user(s: &Server, name: &str, role: &str, password: &str) {
    s.post_json("/users", &json!({"username": name, "password": password, "role": role})).ok(201);
}

fn grant(s: &Server, user: &str, index_id: &str) {
    let r = s.send(
        format!("PUT grant {user} {index_id}"),
        s.http().put(s.url(&format!("/users/{user}/grants/{index_id}"))).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)),
    );
    assert_eq!(r.status, 204, "granting {index_id} to {user}: {}", r.text);
}

#[test]
fn every_route_answers_every_role_as_the_rules_say() {
    // 127.0.0.1 is trusted as a proxy: see `Ctx::bad_credentials`.
    let s = Server::start_with(ServerOptions::default().args(&["--trusted-proxies", "127.0.0.1/32"]));
    let photos = lfw_photos("John_Bolton");
    let enrolled = lfw_photos("Tom_Cruise");

    // Users of every role, indexes granted and not, a record (with its image) in each.
    create_user(&s, OPERATOR, "operator", PASSWORD);
    create_user(&s, SEARCHER, "searcher", PASSWORD);
    create_user(&s, AUDITOR, "auditor", PASSWORD);
    create_user(&s, TARGET, "searcher", PASSWORD);
    let mut index: Vec<String> = Vec::new();
    let mut record = Vec::new();
    let mut image = Vec::new();
    for i in INDEXES {
        let r = s.post_json(
            "/face/index",
            &json!({"index_name": format!("m-{i:?}").to_lowercase(), "index_type": i.index_type()}),
        );
        let id = r.ok(201)["id"].as_str().expect("index id").to_string();
        let rec = s.enrol_ok(&id, &enrolled[0], &[("name", "Matrix Fixture")]);
        record.push(rec["record_id"].as_str().expect("record id").to_string());
        image.push(rec["image_ids"][0].as_str().expect("image id").to_string());
        index.push(id);
    }
    for user in [OPERATOR, SEARCHER] {
        grant(&s, user, &index[Idx::Granted.n()]);
        grant(&s, user, &index[Idx::External.n()]);
    }
    let other_addresses =
        std::net::TcpListener::bind("127.0.0.2:0").is_ok() && std::env::var_os("FACESEARCH_TEST_VIA_PROXY").is_none();
    let ctx = Ctx {
        s: &s,
        fx: Fixture {
            index: index.clone().try_into().expect("three indexes"),
            record: record.clone().try_into().expect("three records"),
            image: image.try_into().expect("three images"),
        },
        photo: photos[1].clone(),
        counter: Cell::new(0),
        bad_clients: RefCell::new(HashMap::new()),
        bad_count: Cell::new(0),
        other_addresses,
        jobs: RefCell::new(HashMap::new()),
    };

    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases() {
        let variants: Vec<Option<Idx>> =
            if case.scoped { INDEXES.iter().copied().map(Some).collect() } else { vec![None] };
        for idx in variants {
            for who in EVERYONE {
                let (status, code) = expected(&case, who, idx);
                let request = (case.build)(&ctx, idx, (200..300).contains(&status));
                let r = ctx.send(&case, who, request);
                checked += 1;
                let label = format!("{} {} as {who:?} on {idx:?}", case.method, case.path);
                // The path is right: whatever the answer, it is not "no such endpoint".
                if r.status == 405 || (r.status == 404 && r.json["error"]["code"] == "NOT_FOUND") {
                    failures.push(format!("{label}: the route does not exist ({} {})", r.status, r.text));
                    continue;
                }
                if r.status != status {
                    failures.push(format!("{label}: expected {status}, got {} {}", r.status, r.text));
                    continue;
                }
                match code {
                    Some(code) => {
                        r.err(status, code);
                        if status == 401 {
                            assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"facesearch\""), "{label}");
                        }
                    }
                    None if status == 204 => assert!(r.text.is_empty(), "{label}: a 204 has a body: {}", r.text),
                    None if RAW_SUCCESS.iter().any(|(p, _)| *p == case.path) => {
                        let (_, content_type) = RAW_SUCCESS.iter().find(|(p, _)| *p == case.path).expect("listed");
                        let got = r.header("content-type").unwrap_or_default();
                        assert!(got.starts_with(content_type), "{label}: Content-Type {got:?}, not {content_type}");
                        assert!(!r.text.is_empty(), "{label}: empty body");
                    }
                    None => {
                        r.ok(status);
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} answers were wrong:\n{}", failures.len(), failures.join("\n"));
    let all: usize = cases().iter().map(|c| if c.scoped { INDEXES.len() } else { 1 } * EVERYONE.len()).sum();
    assert_eq!(checked, all, "every request was tried");

    // Refused requests changed nothing: the fixtures are all there.
    for i in INDEXES {
        s.get(&format!("/face/index/{}", index[i.n()])).ok(200);
        s.get(&format!("/face/index/{}/records/{}", index[i.n()], record[i.n()])).ok(200);
    }
    s.get(&format!("/users/{TARGET}")).ok(200);

    // What each role finds to search.
    let details = |user: &str, password: &str| -> Vec<String> {
        let r = s.send(
            format!("GET details as {user}"),
            s.http().get(s.url("/face/index/details")).basic_auth(user, Some(password)),
        );
        r.ok(200).as_array().expect("a list").iter().map(|i| i["id"].as_str().expect("id").to_string()).collect()
    };
    let mine = |ids: Vec<String>| -> HashSet<String> { ids.into_iter().filter(|id| index.contains(id)).collect() };
    assert_eq!(mine(details(ADMIN_USER, ADMIN_PASSWORD)), index.iter().cloned().collect(), "admins search all");
    assert_eq!(
        mine(details(SEARCHER, PASSWORD)),
        [index[Idx::Granted.n()].clone(), index[Idx::External.n()].clone()].into_iter().collect(),
        "a searcher may search the indexes granted to it"
    );
    assert!(details(OPERATOR, PASSWORD).is_empty(), "operators do not search");
    assert!(details(AUDITOR, PASSWORD).is_empty(), "auditors do not search");
}
