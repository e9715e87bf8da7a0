//! First contact with a new server, before any model is loaded: the bare address opens
//! the console, the start-up lines say where everything is, the expected `/readyz` 503
//! of a start is no warning, logs written to a pipe carry no colour codes, and the
//! operator's CLI commands name indexes by name, print no log lines unless asked, and
//! end quietly when their reader goes away (`| head`).
//!
//! The server runs with an empty models directory and no registry clients, so it
//! serves everything that needs no model and never becomes ready.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

const PASSWORD: &str = "first-contact-Secret-1";

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    base: String,
    start_lines: Vec<String>,
}

impl Server {
    fn start(data: &Path, models: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_facesearch"))
            .args(["serve", "--bind", "127.0.0.1:0", "--exit-on-stdin-close", "--data-dir"])
            .arg(data)
            .env("FACESEARCH_MODELS_DIR", models)
            .env("FACESEARCH_PIP", "/nonexistent/pip")
            .env("FACESEARCH_NPM", "/nonexistent/npm")
            .env("FACESEARCH_ADMIN_PASSWORD", PASSWORD)
            .env_remove("FACESEARCH_LOG")
            .env_remove("FACESEARCH_LOG_JSON")
            .env_remove("FACESEARCH_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start facesearch serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut start_lines = Vec::new();
        let mut base = None;
        // The last start-up line names the health endpoints.
        while !start_lines.last().is_some_and(|l: &String| l.trim_start().starts_with("health:")) {
            let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|e| {
                panic!("no start-up line ({e}); so far: {start_lines:?}");
            });
            if let Some(rest) = line.strip_prefix("facesearch listening on ") {
                base = rest.split_whitespace().next().map(str::to_string);
            }
            start_lines.push(line);
        }
        let stdin = child.stdin.take();
        Server { child, stdin, base: base.expect("listening line"), start_lines }
    }

    /// Stops the server (closing its stdin) and returns everything it logged.
    fn stop(mut self) -> String {
        drop(self.stdin.take());
        let mut stderr = String::new();
        self.child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
        let _ = self.child.wait();
        stderr
    }
}

fn cli(server: &Server, data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_facesearch"))
        .args(args)
        .env("FACESEARCH_URL", &server.base)
        .env("FACESEARCH_USER", "admin")
        .env("FACESEARCH_PASSWORD", PASSWORD)
        .env("FACESEARCH_DATA_DIR", data)
        .env_remove("FACESEARCH_LOG")
        .env_remove("FACESEARCH_CLIENT_CONFIG")
        .env_remove("FACESEARCH_NEW_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run facesearch");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for facesearch")
}

fn text(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_new_server_and_its_cli_meet_the_operator_without_friction() {
    let dir = tempfile::tempdir().unwrap();
    let (data, models) = (dir.path().join("data"), dir.path().join("models"));
    std::fs::create_dir_all(&models).unwrap();
    let server = Server::start(&data, &models);
    let base = server.base.clone();

    // The start-up lines say where the console, the docs and the health endpoints are.
    let start = server.start_lines.join("\n");
    for wanted in
        [format!("{base}/console"), format!("{base}/docs"), format!("{base}/healthz"), format!("{base}/readyz")]
    {
        assert!(start.contains(&wanted), "{wanted} in the start-up lines:\n{start}");
    }

    // The bare address redirects to the console.
    let http = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let root = http.get(format!("{base}/")).send().unwrap();
    assert_eq!(root.status().as_u16(), 307);
    assert_eq!(root.headers()["location"], "/console");
    let console = reqwest::blocking::get(format!("{base}/")).unwrap();
    assert_eq!(console.status().as_u16(), 200);
    assert!(console.headers()["content-type"].to_str().unwrap().starts_with("text/html"));

    // Not ready (no models): 503, which is how every start begins.
    let ready = http.get(format!("{base}/readyz")).send().unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    // Indexes by name in the CLI.
    let created = cli(&server, &data, &["index", "create", "customers", "--json"], None);
    assert!(created.status.success(), "{}", text(&created));
    let id = serde_json::from_slice::<Value>(&created.stdout).unwrap()["id"].as_str().unwrap().to_string();
    for name in ["Customers-A", "customers-a"] {
        assert!(cli(&server, &data, &["index", "create", name], None).status.success());
    }
    let shown = cli(&server, &data, &["index", "show", "customers", "--json"], None);
    assert!(shown.status.success(), "{}", text(&shown));
    assert_eq!(serde_json::from_slice::<Value>(&shown.stdout).unwrap()["id"], json!(id));
    // Ignoring case when nothing matches exactly, but never guessing between two.
    let shown = cli(&server, &data, &["index", "show", "CUSTOMERS", "--json"], None);
    assert_eq!(serde_json::from_slice::<Value>(&shown.stdout).unwrap()["id"], json!(id), "{}", text(&shown));
    let ambiguous = cli(&server, &data, &["index", "show", "CUSTOMERS-A"], None);
    assert_eq!(ambiguous.status.code(), Some(1), "{}", text(&ambiguous));
    let message = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(
        message.contains("names several indexes") && message.contains("Customers-A") && message.contains("customers-a"),
        "{message}"
    );
    let unknown = cli(&server, &data, &["export", "--index", "suppliers"], None);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(message.contains("INDEX_NOT_FOUND") && message.contains("\"suppliers\""), "{message}");
    assert!(message.contains(&format!("customers ({id})")), "the candidates are listed: {message}");

    // A local user command resolves the name too, and prints no log line unless asked.
    let added = cli(
        &server,
        &data,
        &["user", "add", "sam", "--role", "searcher", "--grant", "customers"],
        Some("sam-Password-123\n"),
    );
    assert!(added.status.success(), "{}", text(&added));
    assert!(String::from_utf8_lossy(&added.stdout).contains(&id), "{}", text(&added));
    assert!(added.stderr.is_empty(), "no log lines: {}", text(&added));
    let listed = cli(&server, &data, &["user", "list"], None);
    assert!(listed.status.success() && listed.stderr.is_empty(), "{}", text(&listed));

    // `export … | head`: the reader goes away before the first line; no error.
    let mut export = Command::new(env!("CARGO_BIN_EXE_facesearch"))
        .args(["export", "--index", "customers"])
        .env("FACESEARCH_URL", &base)
        .env("FACESEARCH_USER", "admin")
        .env("FACESEARCH_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(export.stdout.take());
    let output = export.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(!String::from_utf8_lossy(&output.stderr).to_lowercase().contains("pipe"), "{}", text(&output));

    // On a terminal (`script` gives the command one), `index delete` says how many
    // records go and asks; "n" keeps the index, "y" deletes it.
    assert!(cli(&server, &data, &["index", "create", "scratch"], None).status.success());
    let on_terminal = |answer: &str| {
        let command = format!("{} index delete scratch", env!("CARGO_BIN_EXE_facesearch"));
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("FACESEARCH_URL", &base)
            .env("FACESEARCH_USER", "admin")
            .env("FACESEARCH_PASSWORD", PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs the CLI on a terminal");
        child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let kept = on_terminal("n\n");
    assert!(!kept.status.success(), "{}", text(&kept));
    assert!(String::from_utf8_lossy(&kept.stdout).contains("and its 0 record(s)"), "{}", text(&kept));
    assert!(cli(&server, &data, &["index", "show", "scratch"], None).status.success(), "kept after \"n\"");
    let gone = on_terminal("y\n");
    assert!(gone.status.success(), "{}", text(&gone));
    assert_eq!(cli(&server, &data, &["index", "show", "scratch"], None).status.code(), Some(2), "deleted after \"y\"");

    // Deleting by name, without a terminal: no question asked; it says what it deleted.
    let deleted = cli(&server, &data, &["index", "delete", "customers"], None);
    assert!(deleted.status.success(), "{}", text(&deleted));
    assert!(String::from_utf8_lossy(&deleted.stdout).contains(&id), "{}", text(&deleted));

    let log = server.stop();
    assert!(!log.contains('\u{1b}'), "no colour codes in a log written to a pipe:\n{log}");
    let readyz: Vec<&str> = log.lines().filter(|l| l.contains("/readyz") && l.contains("request answered")).collect();
    assert!(!readyz.is_empty(), "the /readyz request is logged:\n{log}");
    assert!(readyz.iter().all(|l| !l.contains("WARN")), "a start's 503 from /readyz is no warning: {readyz:?}");
}
