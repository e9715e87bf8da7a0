//! Test harness for the end-to-end HTTP tests: runs the real `facesearch serve` binary
//! as a child process on a free port with a throw-away data directory, and talks to it
//! over HTTP like any client would.
//!
//! * The server is started with `--bind 127.0.0.1:0 --exit-on-stdin-close`; its stdin
//!   is a pipe that the harness keeps open, so the server also goes away when the test
//!   process ends (even without `Drop`, e.g. for a `static` shared server).
//! * Readiness is read from the server's stdout (`facesearch listening on http://ADDR
//!   (data in …)`, then `facesearch ready (model pack …)`), by a reader thread and a
//!   channel with a hard deadline: no sleeping, no polling.
//! * Photos come from `../shared/eval` next to the repository (see its README); they
//!   are read in place and never copied into the repository.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use serde_json::Value;
use tempfile::TempDir;

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "e2e-admin-Secret-42";

/// How long a server may take to print its ready line. The first start on a machine
/// without the model cache downloads the models (~150 MB), hence the generous limit.
pub const READY_DEADLINE: Duration = Duration::from_secs(120);

/// A safety net so that a hung request fails the test instead of hanging it. It is
/// not a timing assertion.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the server environment that would change behaviour the tests rely on;
/// removed from the child's environment (the model cache location is kept).
const SCRUBBED_ENV: &[&str] = &[
    "FACESEARCH_CONFIG",
    "FACESEARCH_DATABASE_URL",
    "FACESEARCH_DB_MAX_CONNECTIONS",
    "FACESEARCH_DB_TIMEOUT",
    "FACESEARCH_PG_EF_SEARCH",
    "FACESEARCH_PG_EXACT_BELOW",
    "FACESEARCH_BIND",
    "FACESEARCH_DATA_DIR",
    "FACESEARCH_PACK",
    "FACESEARCH_LIVENESS_THRESHOLD",
    "FACESEARCH_MAX_IMAGE_BYTES",
    "FACESEARCH_MAX_IMAGE_PIXELS",
    "FACESEARCH_MAX_RESULTS_CAP",
    "FACESEARCH_MAX_SEARCH_FACES",
    "FACESEARCH_MIN_FACE_SIZE",
    "FACESEARCH_REQUEST_TIMEOUT",
    "FACESEARCH_WORKERS",
    "FACESEARCH_MAX_IN_FLIGHT",
    "FACESEARCH_MAX_IN_FLIGHT_PER_USER",
    "FACESEARCH_ADMIN_RESERVED_SLOTS",
    "FACESEARCH_UPLOAD_BUDGET_BYTES",
    "FACESEARCH_ADMIN_USER",
    "FACESEARCH_LOG_JSON",
    "FACESEARCH_METRICS_AUTH",
    "FACESEARCH_TRUSTED_PROXIES",
    "FACESEARCH_DUPLICATE_SCORE",
    "FACESEARCH_QUALITY_MIN_FACE_SIZE",
    "FACESEARCH_QUALITY_MIN_EYE_DISTANCE",
    "FACESEARCH_QUALITY_MIN_SHARPNESS",
    "FACESEARCH_QUALITY_MAX_COMPRESSION",
    "FACESEARCH_QUALITY_MIN_BRIGHTNESS",
    "FACESEARCH_QUALITY_MAX_BRIGHTNESS",
    "FACESEARCH_QUALITY_MAX_CLIPPED",
    "FACESEARCH_QUALITY_MAX_YAW",
    "FACESEARCH_QUALITY_MAX_PITCH",
    "FACESEARCH_QUALITY_MIN_DETECTOR_SCORE",
];

/// The parameters of `POST /face/search` that go in the query string, not the form.
const SEARCH_QUERY_PARAMETERS: &[&str] = &["perform_liveness_check", "include", "faces"];

// ---------------------------------------------------------------------------------
// Photos
// ---------------------------------------------------------------------------------

/// A file of the evaluation set, `../shared/eval/<rel>` from the repository root.
pub fn eval(rel: &str) -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/eval/")).join(rel);
    assert!(
        p.is_file(),
        "evaluation photo {} is missing (the tests read ../shared/eval next to the repository)",
        p.display()
    );
    p
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

const LFW: &str = "lfw-deepfunneled/images";

/// The photos of one LFW person, sorted (photo 1 first).
pub fn lfw_photos(name: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/eval/")).join(LFW).join(name);
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    photos.sort();
    assert!(!photos.is_empty(), "no photos of {name} in {}", dir.display());
    photos
}

/// Every LFW person of the evaluation set, sorted.
pub fn lfw_people() -> Vec<String> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/eval/")).join(LFW);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------

/// A response, read in full.
#[derive(Debug)]
pub struct Resp {
    /// `METHOD path` of the request, for assertion messages.
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON; `Value::Null` when it is empty or not JSON.
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and a `{"response": …}` body; returns the `response`.
    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "{}: expected {status}, got {} with body {}",
            self.what, self.status, self.text
        );
        assert!(
            self.json.get("response").is_some(),
            "{}: success body is not {{\"response\": …}}: {}",
            self.what,
            self.text
        );
        assert_json_content_type(self);
        &self.json["response"]
    }

    /// Asserts the status and an error body
    /// `{"error": {"code": CODE, "message": "…", …}}`; returns the `error` object.
    #[track_caller]
    pub fn err(&self, status: u16, code: &str) -> &Value {
        let e = self.error_shape(status);
        assert_eq!(e["code"], code, "{}: expected error code {code}, got {}", self.what, self.text);
        e
    }

    /// Like [`Resp::err`] with any of `codes`.
    #[track_caller]
    pub fn err_any(&self, status: u16, codes: &[&str]) -> &Value {
        let e = self.error_shape(status);
        let code = e["code"].as_str().unwrap_or_default();
        assert!(codes.contains(&code), "{}: expected one of the error codes {codes:?}, got {}", self.what, self.text);
        e
    }

    /// Asserts the status and the error body shape (any code); returns `error`.
    #[track_caller]
    pub fn error_shape(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "{}: expected {status}, got {} with body {}",
            self.what, self.status, self.text
        );
        assert_json_content_type(self);
        let e = &self.json["error"];
        assert!(e.is_object(), "{}: error body is not {{\"error\": {{…}}}}: {}", self.what, self.text);
        assert!(
            self.json.as_object().is_some_and(|o| o.len() == 1),
            "{}: error body has fields besides \"error\": {}",
            self.what,
            self.text
        );
        let code =
            e["code"].as_str().unwrap_or_else(|| panic!("{}: error.code is not a string: {}", self.what, self.text));
        assert!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "{}: error.code {code:?} is not SCREAMING_SNAKE_CASE",
            self.what
        );
        let message = e["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: error.message is not a string: {}", self.what, self.text));
        assert!(!message.trim().is_empty(), "{}: error.message is empty", self.what);
        e
    }
}

#[track_caller]
fn assert_json_content_type(r: &Resp) {
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{}: Content-Type is {ct:?}, not JSON (body {})", r.what, r.text);
}

// ---------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------

/// Runs each named test function (taking a [`StoreKind`]) once per store, as
/// `sqlite::NAME` and `postgres::NAME`; the calling file imports `StoreKind`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::StoreKind::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(super::StoreKind::Postgres)
            })*
        }
    };
}

/// Which database a test server keeps its data in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded default: SQLite in the data directory.
    #[default]
    Sqlite,
    /// A new database on the test process's PostgreSQL server (`facesearch-pgfixture`).
    Postgres,
}

/// How to start a server.
#[derive(Debug, Default, Clone)]
pub struct ServerOptions {
    /// Where the data is kept.
    pub store: StoreKind,
    /// A PostgreSQL database URL to use (e.g. another node's); `None` with
    /// [`StoreKind::Postgres`] creates a new database.
    pub database_url: Option<String>,
    /// Use this data directory (e.g. to restart on the data of an earlier server);
    /// `None`: a new temporary one, removed when the server is dropped.
    pub data_dir: Option<PathBuf>,
    /// Extra `serve` arguments, e.g. `["--max-image-bytes", "100000"]`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Write the server's standard error (its log) to this file instead of the test's.
    pub stderr: Option<PathBuf>,
}

impl ServerOptions {
    pub fn store(mut self, store: StoreKind) -> Self {
        self.store = store;
        self
    }
    /// Keep the data in this PostgreSQL database (several servers can share one).
    pub fn database_url(mut self, url: &str) -> Self {
        self.store = StoreKind::Postgres;
        self.database_url = Some(url.to_string());
        self
    }
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }
    pub fn stderr_to(mut self, file: &Path) -> Self {
        self.stderr = Some(file.to_path_buf());
        self
    }
}

/// A running `facesearch serve` child process.
pub struct Server {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    /// The server's `facesearch ready (…)` line.
    pub ready_line: String,
    pub data_dir: PathBuf,
    /// The PostgreSQL database the server keeps its data in, if not SQLite.
    pub database_url: Option<String>,
    child: Child,
    _dir: Option<TempDir>,
    client: Client,
}

/// A temporary directory under the target directory's scratch space, named after
/// this test process. A directory that is never dropped (that of a shared `static`
/// server) is removed by a later test process once this one is gone.
pub fn temp_dir() -> TempDir {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(sweep_stale_temp_dirs);
    tempfile::Builder::new()
        .prefix(&format!("facesearch-e2e-{}-", std::process::id()))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("creating a temporary directory")
}

/// Removes the temporary directories of test processes that no longer run (only
/// where `/proc` tells which processes run; a directory of a live process, or of an
/// unknown one, is left alone).
fn sweep_stale_temp_dirs() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("facesearch-e2e-") else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn client() -> Client {
    Client::builder().timeout(REQUEST_TIMEOUT).build().expect("building the HTTP client")
}

impl Server {
    /// A server on a new, empty data directory with default settings.
    pub fn start() -> Server {
        Self::start_with(ServerOptions::default())
    }

    /// A server on an existing data directory (which outlives the server).
    pub fn start_in(data_dir: &Path) -> Server {
        Self::start_with(ServerOptions::default().data_dir(data_dir))
    }

    pub fn start_with(opts: ServerOptions) -> Server {
        let (dir, data_dir) = match &opts.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = temp_dir();
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_facesearch"));
        cmd.arg("serve")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--exit-on-stdin-close")
            .arg("--workers")
            .arg("2")
            .args(&opts.args);
        for key in SCRUBBED_ENV {
            cmd.env_remove(key);
        }
        if std::env::var_os("FACESEARCH_LOG").is_none() {
            cmd.env("FACESEARCH_LOG", "warn,ort=error");
        }
        cmd.env("FACESEARCH_ADMIN_PASSWORD", ADMIN_PASSWORD);
        let database_url = (opts.store == StoreKind::Postgres)
            .then(|| opts.database_url.clone().unwrap_or_else(|| facesearch_pgfixture::shared().fresh_database()));
        if let Some(url) = &database_url {
            cmd.env("FACESEARCH_DATABASE_URL", url);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let stderr = match &opts.stderr {
            Some(path) => {
                Stdio::from(std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display())))
            }
            None => Stdio::inherit(),
        };
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("starting the facesearch binary");

        // One thread reads stdout for the whole life of the child: it hands the lines
        // to the channel while we wait for readiness, and keeps draining afterwards
        // (sends then fail silently) so that the child never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("facesearch-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            })
            .expect("spawning the stdout reader");

        let deadline = Instant::now() + READY_DEADLINE;
        let mut seen: Vec<String> = Vec::new();
        let mut base: Option<String> = None;
        let ready_line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("facesearch listening on ") {
                        let url = rest.split_whitespace().next().unwrap_or_default();
                        base = Some(url.trim_end_matches('/').to_string());
                    }
                    let ready = line.starts_with("facesearch ready (model pack");
                    seen.push(line.clone());
                    if ready {
                        break line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the server was not ready within {READY_DEADLINE:?}; its stdout so far:\n{}",
                        seen.join("\n")
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!("the server exited before it was ready ({status:?}); its stdout:\n{}", seen.join("\n"));
                }
            }
        };
        let Some(base) = base.filter(|b| b.starts_with("http://")) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server never said where it listens; its stdout:\n{}", seen.join("\n"));
        };
        Server { base, ready_line, data_dir, database_url, child, _dir: dir, client: client() }
    }

    /// Stops the server gracefully (closes its stdin, as a service manager's stop
    /// would signal it) and waits for it to exit; asserts a clean exit.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("waiting for the server");
        assert!(status.success(), "the server exited with {status:?}");
    }

    /// Kills the server with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("killing the server");
        self.child.wait().expect("reaping the server");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The HTTP client (no credentials attached).
    pub fn http(&self) -> &Client {
        &self.client
    }

    /// Sends a request and reads the whole response.
    pub fn send(&self, what: impl Into<String>, req: RequestBuilder) -> Resp {
        let what = what.into();
        let resp = req.send().unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().unwrap_or_else(|e| panic!("{what}: reading the body failed: {e:?}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { what, status, headers, text, json }
    }

    fn admin(&self, req: RequestBuilder) -> RequestBuilder {
        req.basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
    }

    // ----- generic admin requests -----

    pub fn get(&self, path: &str) -> Resp {
        self.send(format!("GET {path}"), self.admin(self.client.get(self.url(path))))
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.send(format!("DELETE {path}"), self.admin(self.client.delete(self.url(path))))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.send(format!("POST {path}"), self.admin(self.client.post(self.url(path))).json(body))
    }

    pub fn patch_json(&self, path: &str, body: &Value) -> Resp {
        self.send(format!("PATCH {path}"), self.admin(self.client.patch(self.url(path))).json(body))
    }

    pub fn post_form(&self, path: &str, form: Form) -> Resp {
        self.send(format!("POST {path}"), with_form(self.admin(self.client.post(self.url(path))), form))
    }

    // ----- the API -----

    /// `POST /face/index`; asserts 201 and returns the index object.
    pub fn create_index(&self, name: &str) -> Value {
        self.post_json(
            "/face/index",
            &serde_json::json!({
                "index_name": name,
                "title": format!("{name} (title)"),
                "description": format!("e2e test index {name}"),
                "index_type": "INTERNAL",
            }),
        )
        .ok(201)
        .clone()
    }

    /// `POST /face/index` and the new index's id.
    pub fn create_index_id(&self, name: &str) -> String {
        let index = self.create_index(name);
        index["id"].as_str().expect("index id").to_string()
    }

    /// `GET /face/index/{id}`.
    pub fn index(&self, index_id: &str) -> Resp {
        self.get(&format!("/face/index/{index_id}"))
    }

    /// `GET /face/index/details` (FACE_SEARCH); asserts 200 and returns the list.
    pub fn details(&self) -> Vec<Value> {
        self.get("/face/index/details?action_type=FACE_SEARCH")
            .ok(200)
            .as_array()
            .expect("details response is an array")
            .clone()
    }

    /// The index's `record_count`, read from `GET /face/index/{id}` and from
    /// `GET /face/index/details`, asserted to agree.
    #[track_caller]
    pub fn record_count(&self, index_id: &str) -> u64 {
        let one = self.index(index_id).ok(200)["record_count"].as_u64().expect("record_count is a whole number");
        let listed = self
            .details()
            .into_iter()
            .find(|i| i["id"] == index_id)
            .unwrap_or_else(|| panic!("index {index_id} is not in /face/index/details"));
        assert_eq!(
            listed["record_count"].as_u64(),
            Some(one),
            "record_count differs between GET /face/index/{{id}} and /face/index/details"
        );
        one
    }

    /// `POST /face/index/{id}/records` with `photo` and text fields.
    pub fn enrol(&self, index_id: &str, photo: &Path, fields: &[(&str, &str)]) -> Resp {
        let mut form = Form::new().part("image", file_part(photo));
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        self.post_form(&format!("/face/index/{index_id}/records"), form)
    }

    /// [`Server::enrol`], asserting 201; returns the record object.
    #[track_caller]
    pub fn enrol_ok(&self, index_id: &str, photo: &Path, fields: &[(&str, &str)]) -> Value {
        self.enrol(index_id, photo, fields).ok(201).clone()
    }

    /// `POST /face/index/{id}/records/{record_id}/images`.
    pub fn add_image(&self, index_id: &str, record_id: &str, photo: &Path) -> Resp {
        let form = Form::new().part("image", file_part(photo));
        self.post_form(&format!("/face/index/{index_id}/records/{record_id}/images"), form)
    }

    /// `POST /face/search` with `photo` over `index_ids`. `params` are form fields
    /// (`min_match_score`, `max_results`, …), except `perform_liveness_check`, which
    /// goes in the query string as the API defines it.
    pub fn search(&self, index_ids: &[&str], photo: &Path, params: &[(&str, &str)]) -> Resp {
        self.search_part(index_ids, file_part(photo), params)
    }

    /// [`Server::search`] with image bytes from memory.
    pub fn search_bytes(&self, index_ids: &[&str], bytes: Vec<u8>, file_name: &str, params: &[(&str, &str)]) -> Resp {
        let part = Part::bytes(bytes).file_name(file_name.to_string());
        self.search_part(index_ids, part, params)
    }

    fn search_part(&self, index_ids: &[&str], image: Part, params: &[(&str, &str)]) -> Resp {
        let mut path = "/face/search".to_string();
        let mut form = Form::new().part("source_image", image).text("target_index_ids", index_ids.join(","));
        let mut query = Vec::new();
        for (k, v) in params {
            if SEARCH_QUERY_PARAMETERS.contains(k) {
                query.push(format!("{k}={v}"));
            } else {
                form = form.text(k.to_string(), v.to_string());
            }
        }
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        self.post_form(&path, form)
    }

    /// [`Server::search`] asserting 200; returns the matches.
    #[track_caller]
    pub fn search_ok(&self, index_ids: &[&str], photo: &Path, params: &[(&str, &str)]) -> Vec<Value> {
        self.search(index_ids, photo, params).ok(200).as_array().expect("search response is an array").clone()
    }

    /// `GET /media/file/download/{file_id}`.
    pub fn download(&self, file_id: &str) -> Resp {
        self.get(&format!("/media/file/download/{file_id}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Attaches a multipart body, rendered to bytes first. (reqwest's blocking client
/// streams a `multipart()` body from a side channel and reports an error instead of
/// the response when the server answers before reading the whole body, e.g. a 401 or
/// a 413; a byte body lets the response through.)
pub fn with_form(req: RequestBuilder, form: Form) -> RequestBuilder {
    let content_type = format!("multipart/form-data; boundary={}", form.boundary());
    let mut body = Vec::new();
    form.into_reader().read_to_end(&mut body).expect("rendering the multipart body");
    req.header(reqwest::header::CONTENT_TYPE, content_type).body(body)
}

/// A multipart file part with the photo's bytes and base name.
pub fn file_part(photo: &Path) -> Part {
    let name = photo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "photo".into());
    Part::bytes(read(photo)).file_name(name)
}

// ---------------------------------------------------------------------------------
// Process and raw-connection helpers (robustness tests)
// ---------------------------------------------------------------------------------

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address the server listens on (from [`Server::base`]).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the server's base URL {} is not http://IP:PORT", self.base))
    }

    /// The server's resident set size in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS line in {path}:\n{status}"))
    }
}

/// The value of an `Authorization` header with the admin's credentials.
pub fn admin_basic_auth() -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN_USER}:{ADMIN_PASSWORD}")))
}

/// Polls `GET /face/index/{index_id}/reembed` until `done(job)`: each poll is a request,
/// no sleeping. A job that stops running without `done`, or runs for more than five
/// minutes, fails the test instead of hanging it.
pub fn poll_reembed(s: &Server, index_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let job = s.get(&format!("/face/index/{index_id}/reembed")).ok(200).clone();
        if done(&job) {
            return job;
        }
        assert_eq!(job["state"], "running", "the job ended unexpectedly: {job}");
        assert!(Instant::now() < deadline, "the job is still running after five minutes: {job}");
    }
}
