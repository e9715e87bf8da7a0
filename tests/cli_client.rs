//! The HTTP client subcommands (`facesearch index|enrol|search|import|export|reembed`) against a real
//! server: table and JSON output, exit codes, and an idempotent CSV import with bad rows.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{ADMIN_PASSWORD, Server};
use serde_json::Value;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start)
}

/// Runs the CLI against `url` as admin with `password`.
fn cli_at(url: &str, password: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facesearch"));
    cmd.args(args)
        .env("FACESEARCH_URL", url)
        .env("FACESEARCH_USER", "admin")
        .env("FACESEARCH_PASSWORD", password)
        .env("FACESEARCH_LOG", "warn")
        .stdin(Stdio::null());
    cmd.output().expect("running facesearch")
}

fn cli(args: &[&str]) -> Output {
    cli_at(&server().base, ADMIN_PASSWORD, args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", stdout(&o), stderr(&o));
    stdout(&o)
}

fn json(o: Output) -> Value {
    let out = ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn lfw(name: &str, n: usize) -> PathBuf {
    common::lfw_photos(name)[n].clone()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn create_index(name: &str) -> String {
    let index = json(cli(&["index", "create", name, "--title", "CLI test", "--json"]));
    assert_eq!(index["index_name"], name);
    index["id"].as_str().expect("an id").to_string()
}

#[test]
fn index_enrol_and_search() {
    let id = create_index("cli-people");
    let list = ok(cli(&["index", "list"]));
    assert!(list.contains("cli-people") && list.contains(&id), "{list}");
    let show = ok(cli(&["index", "show", &id]));
    assert!(show.contains("CLI test"), "{show}");

    let photo = lfw("Alan_Greenspan", 0);
    let enrolled = ok(cli(&[
        "enrol",
        "--index",
        &id,
        p(&photo),
        "--name",
        "Alan Greenspan",
        "--dob",
        "1926-03-06",
        "--nationality",
        "US",
        "--watch-list",
        "pep,vip",
        "--reference",
        "ag-1",
    ]));
    assert!(enrolled.starts_with("created") && enrolled.contains("Alan Greenspan"), "{enrolled}");
    let again = ok(cli(&["enrol", "--index", &id, p(&photo), "--reference", "ag-1"]));
    assert!(again.starts_with("already present"), "{again}");
    ok(cli(&["enrol", "--index", &id, p(&lfw("Al_Pacino", 0)), "--name", "Al Pacino"]));

    let probe = lfw("Alan_Greenspan", 1);
    let table = ok(cli(&["search", p(&probe), "--index", &id, "--no-liveness", "--min-score", "0"]));
    let first = table.lines().nth(2).unwrap_or_default();
    assert!(table.lines().next().unwrap_or_default().contains("score"), "{table}");
    assert!(first.contains("Alan Greenspan") && first.contains("pep, vip") && first.contains("cli-people"), "{table}");
    let matches = json(cli(&["search", p(&probe), "--index", &id, "--no-liveness", "--json"]));
    assert_eq!(matches[0]["name"], "Alan Greenspan", "{matches}");
    assert_eq!(matches[0]["reference"], "ag-1");

    // Refusals: unknown index (2), unreadable photo (1).
    let o = cli(&["search", p(&probe), "--index", "no-such-index", "--no-liveness"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("INDEX_NOT_FOUND"), "{}", stderr(&o));
    let o = cli(&["enrol", "--index", &id, "/no/such/photo.jpg"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    let deleted = ok(cli(&["index", "delete", &id]));
    assert!(deleted.contains(&id));
    let o = cli(&["index", "show", &id]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("INDEX_NOT_FOUND"), "{}", stderr(&o));
}

/// The operator's view of a search: the liveness verdict and score and the probe's
/// quality under the table; a refusal says what to do.
#[test]
fn search_shows_the_liveness_verdict_and_what_to_do_on_a_refusal() {
    let id = create_index("cli-liveness");
    ok(cli(&["enrol", "--index", &id, p(&common::eval("deepface/img1.jpg")), "--name", "Angelina Jolie"]));

    // Liveness on (the default): the verdict and the score of X-Liveness-Score.
    let out = ok(cli(&["search", p(&common::eval("deepface/img2.jpg")), "--index", &id]));
    assert!(out.lines().nth(2).is_some_and(|l| l.contains("Angelina Jolie")), "{out}");
    let verdict = out.lines().find(|l| l.starts_with("liveness: ")).unwrap_or_else(|| panic!("no verdict: {out}"));
    let score: f64 = verdict
        .strip_prefix("liveness: live (score ")
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{verdict}"))
        .parse()
        .expect("a numeric score");
    assert!((0.0..=1.0).contains(&score), "{verdict}");
    let quality = out.lines().find(|l| l.starts_with("quality: ")).unwrap_or_else(|| panic!("no quality: {out}"));
    assert!(quality.contains("face ") && quality.contains("sharpness ") && !quality.contains("turned"), "{quality}");

    // Without the check, it says so; a sideways photo says it was turned.
    let out = ok(cli(&[
        "search",
        p(&common::eval("derived/deepface_img1/rot90_no_exif.jpg")),
        "--index",
        &id,
        "--no-liveness",
    ]));
    assert!(out.contains("liveness: not checked (--no-liveness)"), "{out}");
    assert!(out.contains("photo turned 90° clockwise to make the face upright"), "{out}");
    // No match still shows the probe.
    let out = ok(cli(&["search", p(&lfw("Al_Pacino", 0)), "--index", &id, "--no-liveness"]));
    assert!(out.starts_with("no match\n") && out.contains("quality: "), "{out}");

    // A face that fills the frame cannot be judged: the refusal says what to do.
    let o = cli(&["search", p(&common::eval("pyimagesearch-liveness/fake/108.png")), "--index", &id]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("LIVENESS_CANNOT_JUDGE"), "{err}");
    assert!(err.contains("what to do: step back") && err.contains("head and shoulders"), "{err}");
    assert!(err.contains("--no-liveness"), "{err}");
    // --json keeps the server's body only.
    let matches = json(cli(&["search", p(&common::eval("deepface/img2.jpg")), "--index", &id, "--json"]));
    assert_eq!(matches[0]["name"], "Angelina Jolie", "{matches}");
}

#[test]
fn search_warns_on_stderr_when_false_matches_are_expected() {
    let id = create_index("cli-false-matches");
    ok(cli(&["enrol", "--index", &id, p(&lfw("Alan_Greenspan", 0)), "--name", "Alan Greenspan"]));
    let probe = lfw("Alan_Greenspan", 1);
    // The default minimum score over one face: about 1e-5 expected, no warning.
    let o = cli(&["search", p(&probe), "--index", &id, "--no-liveness"]);
    let quiet = stderr(&o);
    let table = ok(o);
    assert!(!quiet.contains("false matches"), "{quiet}");
    assert!(table.contains("Alan Greenspan"), "{table}");
    // A low minimum score: N × FMR is above 0.01 even for one face; the warning names
    // the server's number (its X-Expected-False-Matches header), on stderr only.
    let expected = facesearch_face::calibration::Calibration::shipped(facesearch_face::Pack::Open)
        .unwrap_or_else(|e| panic!("{e}"))
        .expected_false_matches(20.0, 1);
    assert!(expected.value > 0.01, "{expected:?}");
    let warning = format!("warning: {} false matches expected", expected.header_value());
    let o = cli(&["search", p(&probe), "--index", &id, "--no-liveness", "--min-score", "20"]);
    let err = stderr(&o);
    let table = ok(o);
    assert!(err.contains(&warning) && err.contains("min score 20"), "{err}");
    assert!(table.lines().next().unwrap_or_default().starts_with("score"), "{table}");
    assert!(!table.contains("false matches"), "{table}");
    // Scripts reading --json still get only JSON on stdout.
    let o = cli(&["search", p(&probe), "--index", &id, "--no-liveness", "--min-score", "20", "--json"]);
    let err = stderr(&o);
    let matches = json(o);
    assert_eq!(matches[0]["name"], "Alan Greenspan", "{matches}");
    assert!(err.contains(&warning), "{err}");
}

#[test]
fn exit_codes_for_credentials_and_connection() {
    let s = server();
    let o = cli_at(&s.base, "wrong-password-123", &["index", "list"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("UNAUTHORIZED"), "{}", stderr(&o));

    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("an address").port();
    let o = cli_at(&format!("http://127.0.0.1:{port}"), ADMIN_PASSWORD, &["index", "list"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facesearch"));
    let o = cmd.args(["index", "list", "--url", &s.base]).env_remove("FACESEARCH_PASSWORD").output().expect("running");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// Parses the summary line `N rows: created C, already present P, failed F; …`.
fn summary(out: &str) -> (usize, usize, usize) {
    let line = out.lines().find(|l| l.contains(" rows: created ")).unwrap_or_else(|| panic!("no summary: {out}"));
    let num = |key: &str| -> usize {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).expect("a count")
    };
    (num("created "), num("already present "), num("failed "))
}

/// LFW rows in the import test ("several hundred rows", plus four bad ones).
const IMPORT_ROWS: usize = 300;

#[test]
fn import_is_idempotent_and_reports_bad_rows() {
    let id = create_index("cli-import");
    let dir = common::temp_dir();
    // People with two photos or more; Alex_Penelas's first photo shows two faces.
    let people: Vec<String> = common::lfw_people()
        .into_iter()
        .filter(|n| n != "Alex_Penelas" && common::lfw_photos(n).len() >= 2)
        .skip(10)
        .take(IMPORT_ROWS)
        .collect();
    assert_eq!(people.len(), IMPORT_ROWS, "enough LFW people with two photos");
    let mut csv = String::from("reference,name,additional_info,watch_list,image\n");
    for (i, person) in people.iter().enumerate() {
        let photos = common::lfw_photos(person);
        // Every fifth row has a second image.
        let image = if i % 5 == 0 { format!("{};{}", p(&photos[0]), p(&photos[1])) } else { p(&photos[0]).to_string() };
        let name =
            if i == 0 { format!("{}, \"the first\"", person.replace('_', " ")) } else { person.replace('_', " ") };
        let fields = [format!("r-{i:02}"), name, "line one\nline two".to_string(), "imported".into(), image];
        csv.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        csv.push('\n');
    }
    let bad = [
        ("bad-missing", dir.path().join("no-such-photo.jpg")),
        ("bad-noface", common::eval("compreface/sample_images/017_0.jpg")),
        ("bad-corrupt", common::eval("compreface/format_tests/corrupted.png")),
        ("r-03", lfw(&people[4], 1)),
    ];
    for (reference, photo) in &bad {
        csv.push_str(&format!("{reference},Bad,,,{}\n", p(photo)));
    }
    let file = dir.path().join("people.csv");
    std::fs::write(&file, &csv).expect("writing the CSV");
    let report = dir.path().join("report.csv");
    let args = ["import", "--index", &id, p(&file), "--jobs", "2", "--report", p(&report)];

    let o = cli(&args);
    eprintln!("first import: {}", stdout(&o));
    assert_eq!(o.status.code(), Some(2), "stdout:\n{}\nstderr:\n{}", stdout(&o), stderr(&o));
    let (created, present, failed) = summary(&stdout(&o));
    assert!(stderr(&o).contains("rows/s"), "progress on stderr: {}", stderr(&o));
    let first_report = std::fs::read_to_string(&report).expect("the report");
    assert!(first_report.starts_with("row,reference,code,message\n"), "{first_report}");
    let codes: Vec<(usize, String, String)> = first_report
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ',').collect();
            (f[0].parse().expect("a row number"), f[1].to_string(), f[2].to_string())
        })
        .collect();
    // The four bad rows, at the end of the file, with their reasons.
    let n = IMPORT_ROWS;
    let want = [
        (n + 1, "bad-missing", "FILE_NOT_READABLE"),
        (n + 2, "bad-noface", "NO_FACE_DETECTED"),
        (n + 3, "bad-corrupt", "INVALID_IMAGE"),
        (n + 4, "r-03", "DUPLICATE_REFERENCE"),
    ];
    for (row, reference, code) in want {
        assert!(codes.iter().any(|c| c == &(row, reference.to_string(), code.to_string())), "{first_report}");
    }
    // Some LFW first photos show a second face as large as the first: the server
    // refuses those, and nothing else may fail.
    let lfw_refusals = codes.iter().filter(|c| c.0 <= n).collect::<Vec<_>>();
    assert!(
        lfw_refusals
            .iter()
            .all(|c| ["MULTIPLE_FACES", "NO_FACE_DETECTED", "FACE_TOO_SMALL", "LOW_QUALITY_FACE"]
                .contains(&c.2.as_str())),
        "{first_report}"
    );
    assert!(lfw_refusals.len() <= n / 5, "{first_report}");
    assert_eq!((created, present, failed), (n - lfw_refusals.len(), 0, 4 + lfw_refusals.len()));

    let index = json(cli(&["index", "show", &id, "--json"]));
    assert_eq!(index["record_count"], created, "{index}");
    let r0 = server().get(&format!("/face/index/{id}/records?limit=1000")).ok(200)["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["reference"] == "r-00")
        .cloned();
    if let Some(r0) = r0 {
        assert_eq!(r0["image_ids"].as_array().map(Vec::len), Some(2), "{r0}");
        assert_eq!(r0["name"], format!("{}, \"the first\"", people[0].replace('_', " ")));
        assert_eq!(r0["additional_info"], "line one\nline two");
    }

    // Again: nothing new, the same failures.
    let o = cli(&args);
    eprintln!("second import: {}", stdout(&o));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(summary(&stdout(&o)), (0, created, failed));
    assert_eq!(std::fs::read_to_string(&report).expect("the report"), first_report);
    let index = json(cli(&["index", "show", &id, "--json"]));
    assert_eq!(index["record_count"], created, "{index}");

    // JSON lines, with arrays.
    let jsonl = dir.path().join("more.jsonl");
    let photos = common::lfw_photos(&people[0]);
    let line = serde_json::json!({"reference": "j-1", "name": "J", "watch_list": ["a", "b"], "image": [p(&photos[0])]});
    std::fs::write(&jsonl, format!("{line}\n{{\"reference\": \"r-01\", \"image\": \"{}\"}}\n", p(&photos[1])))
        .expect("writing JSON lines");
    let summary_json = json(cli(&["import", "--index", &id, p(&jsonl), "--json"]));
    assert_eq!(summary_json["created"], 1, "{summary_json}");
    assert_eq!(summary_json["already_present"], 1, "{summary_json}");
    assert_eq!(summary_json["failed"], 0, "{summary_json}");
}

/// An export (CSV with images, and JSON lines) lists every record, and an import of the
/// CSV export into a new index recreates them with the same images.
#[test]
fn export_reads_back_with_import() {
    let id = create_index("cli-export");
    let people: Vec<String> = common::lfw_people()
        .into_iter()
        .filter(|n| n != "Alex_Penelas" && common::lfw_photos(n).len() >= 2)
        .skip(40)
        .take(4)
        .collect();
    for (i, person) in people.iter().enumerate() {
        let reference = format!("e-{i}");
        let name = format!("{}, \"exported\"", person.replace('_', " "));
        ok(cli(&["enrol", "--index", &id, p(&lfw(person, 1)), "--name", &name, "--reference", &reference]));
    }
    let dir = common::temp_dir();
    let (csv, images) = (dir.path().join("export.csv"), dir.path().join("images"));
    ok(cli(&["export", "--index", &id, "--out", p(&csv), "--images", p(&images)]));
    let text = std::fs::read_to_string(&csv).expect("the export");
    assert!(text.starts_with("record_id,reference,name,"), "{text}");
    assert_eq!(std::fs::read_dir(&images).expect("images").count(), people.len());
    for person in &people {
        assert!(text.contains(&format!("\"{}, \"\"exported\"\"\"", person.replace('_', " "))), "{text}");
    }
    // Every downloaded file is byte-identical to the enrolled photo.
    let originals: Vec<Vec<u8>> = people.iter().map(|n| common::read(&lfw(n, 1))).collect();
    for entry in std::fs::read_dir(&images).expect("images").flatten() {
        assert!(originals.contains(&std::fs::read(entry.path()).expect("file")), "{:?}", entry.path());
    }

    let copy = create_index("cli-export-copy");
    let o = cli(&["import", "--index", &copy, p(&csv), "--images", p(&images)]);
    assert_eq!(summary(&stdout(&o)), (people.len(), 0, 0), "{}", stderr(&o));
    let copied = json(cli(&["index", "show", &copy, "--json"]));
    assert_eq!(copied["record_count"], people.len(), "{copied}");

    let jsonl = dir.path().join("export.jsonl");
    ok(cli(&["export", "--index", &id, "--out", p(&jsonl)]));
    let lines: Vec<Value> = std::fs::read_to_string(&jsonl)
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), people.len());
    assert!(lines.iter().all(|r| r["image_ids"].as_array().is_some_and(|a| a.len() == 1)));
}

/// Server and credentials can come from a client config file; flags and environment
/// variables win over it.
#[test]
fn a_client_config_file_supplies_server_and_credentials() {
    let dir = common::temp_dir();
    let config = dir.path().join("client.toml");
    std::fs::write(&config, format!("url = {:?}\nuser = \"admin\"\npassword = {:?}\n", server().base, ADMIN_PASSWORD))
        .expect("writing the config");
    let run = |extra_env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_facesearch"));
        cmd.args(["index", "list", "--json", "--client-config", p(&config)])
            .env_remove("FACESEARCH_URL")
            .env_remove("FACESEARCH_USER")
            .env_remove("FACESEARCH_PASSWORD")
            .env("FACESEARCH_LOG", "warn")
            .stdin(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().expect("running facesearch")
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(serde_json::from_str::<Value>(&stdout(&o)).expect("json").is_array());
    // The environment wins over the file: a wrong password from the environment is refused.
    let o = run(&[("FACESEARCH_PASSWORD", "not-the-password")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("UNAUTHORIZED"), "{}", stderr(&o));
    // A broken config file is a local error naming the file; nothing is sent.
    std::fs::write(&config, "url = \"http://127.0.0.1:1\"\npasword = \"typo\"\n").expect("writing the config");
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("client.toml"), "{}", stderr(&o));
}

#[test]
fn export_of_an_unknown_index_is_refused() {
    let o = cli(&["export", "--index", "no-such-index"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("INDEX_NOT_FOUND"), "{}", stderr(&o));
}

#[test]
fn reembed_moves_an_index_and_waits_for_the_switch() {
    let id = create_index("cli-reembed");
    ok(cli(&["enrol", "--index", &id, p(&lfw("Alan_Greenspan", 0)), "--name", "Alan Greenspan"]));
    ok(cli(&["enrol", "--index", &id, p(&lfw("Al_Pacino", 0)), "--name", "Al Pacino"]));

    // Waits for the job, then prints its result; the index is then of the new pack.
    let out = ok(cli(&["reembed", "--index", &id, "--pack", "insightface", "--poll-interval", "0.05"]));
    assert!(out.contains("open → insightface: 2 of 2 images, 0 without a usable face (done)"), "{out}");
    let index = json(cli(&["index", "show", &id, "--json"]));
    assert_eq!(index["pack"], "insightface");
    let job = json(cli(&["reembed", "--index", &id, "--pack", "open", "--json", "--poll-interval", "0.05"]));
    assert_eq!(
        (job["state"].as_str(), job["from_pack"].as_str(), job["done"].as_u64()),
        (Some("done"), Some("insightface"), Some(2))
    );
    let matches = json(cli(&["search", p(&lfw("Alan_Greenspan", 1)), "--index", &id, "--no-liveness", "--json"]));
    assert_eq!(matches[0]["name"], "Alan Greenspan", "{matches}");

    // Refusals exit 2 with the server's code.
    let o = cli(&["reembed", "--index", &id, "--pack", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("INVALID_PARAMETER"), "{}", stderr(&o));
    let o = cli(&["reembed", "--index", "no-such-index", "--pack", "insightface"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("INDEX_NOT_FOUND"), "{}", stderr(&o));
}
