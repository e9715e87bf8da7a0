//! `facesearch index|enrol|search`: a command-line client of a running server's HTTP
//! API (docs/API.md), over HTTP Basic. Exit codes: 0 done, 1 a usage or local error
//! (e.g. an unreadable photo, no password), 2 the server refused the request (4xx; its
//! error code and message are printed), 3 a server or network failure (5xx, no
//! connection).

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use facesearch_eval::table;
use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::form::{FormBody, WithForm};

/// Where the server is and who we are; shared by every client subcommand. Each value
/// comes from its flag, else its environment variable, else the client config file,
/// else the default.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// Server root [default: http://127.0.0.1:8080].
    #[arg(long, env = "FACESEARCH_URL", global = true)]
    pub url: Option<String>,
    /// User name (HTTP Basic) [default: admin].
    #[arg(long, env = "FACESEARCH_USER", global = true)]
    pub user: Option<String>,
    /// Password (HTTP Basic).
    #[arg(long, env = "FACESEARCH_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// TOML file with `url`, `user` and `password` [default: $XDG_CONFIG_HOME/facesearch/client.toml
    /// or ~/.config/facesearch/client.toml, when it exists]. Keep it readable by you only.
    #[arg(long, env = "FACESEARCH_CLIENT_CONFIG", global = true)]
    pub client_config: Option<std::path::PathBuf>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

impl Conn {
    fn config_file(&self) -> Result<ClientConfig, Failure> {
        let default = || {
            let base = std::env::var_os("XDG_CONFIG_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config")))?;
            Some(base.join("facesearch/client.toml")).filter(|p| p.is_file())
        };
        let Some(path) = self.client_config.clone().or_else(default) else { return Ok(ClientConfig::default()) };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::local("USAGE", format!("reading {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Failure::local("USAGE", format!("{}: {e}", path.display())))
    }
}

/// Why a client command failed; decides the exit code.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Usage or local error (exit 1); `code` names it in import reports.
    Local { code: &'static str, message: String },
    /// The server refused the request (4xx, exit 2).
    Refused { status: u16, code: String, message: String },
    /// The server failed or could not be reached (5xx, network; exit 3).
    Server { code: String, message: String },
}

impl Failure {
    pub fn local(code: &'static str, message: impl Into<String>) -> Failure {
        Failure::Local { code, message: message.into() }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Local { .. } => 1,
            Failure::Refused { .. } => 2,
            Failure::Server { .. } => 3,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Failure::Local { code, .. } => code,
            Failure::Refused { code, .. } | Failure::Server { code, .. } => code,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Local { message, .. } | Failure::Refused { message, .. } | Failure::Server { message, .. } => {
                message
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Local { message, .. } => write!(f, "{message}"),
            Failure::Refused { status, code, message } => write!(f, "the server refused ({status} {code}): {message}"),
            Failure::Server { code, message } => write!(f, "server or network failure ({code}): {message}"),
        }
    }
}

/// The code of a failure to write to a standard output whose reader has gone (`| head`):
/// not an error, the command ends quietly with success.
pub const OUTPUT_CLOSED: &str = "OUTPUT_CLOSED";

/// Ends the process with the failure's exit code (after printing it), or returns.
pub fn finish(result: Result<(), Failure>) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(Failure::Local { code: OUTPUT_CLOSED, .. }) => exit(0),
        Err(f) => {
            eprintln!("error: {f}");
            exit(f.exit_code())
        }
    }
}

pub fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

/// An authenticated HTTP client of one server.
pub struct Api {
    client: Client,
    base: String,
    user: String,
    password: String,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

impl Api {
    pub fn new(conn: &Conn) -> Result<Api, Failure> {
        let file = conn.config_file()?;
        let url = conn.url.clone().or(file.url).unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let user = conn.user.clone().or(file.user).unwrap_or_else(|| "admin".into());
        let password = conn.password.clone().or(file.password).ok_or_else(|| {
            Failure::local(
                "USAGE",
                "no password: pass --password, set FACESEARCH_PASSWORD or put it in the client config file",
            )
        })?;
        let client = Client::builder()
            .timeout(Duration::from_secs(300))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Failure::local("USAGE", format!("building the HTTP client: {}", error_chain(&e))))?;
        Ok(Api { client, base: url.trim_end_matches('/').to_string(), user, password })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base)).basic_auth(&self.user, Some(&self.password))
    }

    /// Sends a request; on success the status and the `response` member (Null for 204).
    /// The id of the index `given` names: its id, else its unique name (exact, else
    /// ignoring case). An unknown or ambiguous name is a usage error listing the
    /// candidates the caller can see.
    pub fn index_id(&self, given: &str) -> Result<String, Failure> {
        let (_, list) = self.send(self.request(Method::GET, "/face/index/details?action_type=FACE_SEARCH"))?;
        let indexes = list.as_array().map(Vec::as_slice).unwrap_or_default();
        resolve_index(indexes, given)
    }

    /// [`Api::index_id`] for each of `given`.
    pub fn index_ids(&self, given: &[String]) -> Result<Vec<String>, Failure> {
        let (_, list) = self.send(self.request(Method::GET, "/face/index/details?action_type=FACE_SEARCH"))?;
        let indexes = list.as_array().map(Vec::as_slice).unwrap_or_default();
        given.iter().map(|g| resolve_index(indexes, g)).collect()
    }

    pub fn send(&self, req: RequestBuilder) -> Result<(u16, Value), Failure> {
        self.send_with_headers(req).map(|(status, _, v)| (status, v))
    }

    /// [`Api::send`], also handing back the response headers of a success (a search's
    /// `X-Liveness-Score` and `X-Face-Quality`).
    pub fn send_with_headers(&self, req: RequestBuilder) -> Result<(u16, HeaderMap, Value), Failure> {
        let network = |e: reqwest::Error| Failure::Server {
            code: "NETWORK_ERROR".into(),
            message: format!("{}: {}", self.base, error_chain(&e)),
        };
        let resp = req.send().map_err(network)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().map_err(network)?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok((status, headers, body.get("response").cloned().unwrap_or(Value::Null)));
        }
        let code = body["error"]["code"].as_str().map_or_else(|| format!("HTTP_{status}"), str::to_string);
        let message =
            body["error"]["message"].as_str().map_or_else(|| text.chars().take(200).collect(), str::to_string);
        if status < 500 {
            Err(Failure::Refused { status, code, message })
        } else {
            Err(Failure::Server { code, message })
        }
    }
}

/// Reads a photo to upload (an unreadable file is a local failure, nothing is sent).
pub fn read_photo(path: &Path) -> Result<Photo, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::local("FILE_NOT_READABLE", format!("reading {}: {e}", path.display())))?;
    let name = path.file_name().map_or_else(|| "image".to_string(), |n| n.to_string_lossy().into_owned());
    Ok(Photo { name, bytes })
}

/// A photo read for upload: its file name and bytes.
pub struct Photo {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The record fields of a `POST /face/index/{id}/records` form, in API order.
pub const RECORD_FIELDS: [&str; 9] =
    ["name", "dob", "nationality", "gender", "id_no", "address", "watch_list", "additional_info", "reference"];

/// A record-creation form: the image and the non-empty fields.
pub fn record_form(fields: &[(String, String)], image: Photo) -> FormBody {
    let mut form = FormBody::new().file("image", image.name, image.bytes);
    for (k, v) in fields {
        if !v.is_empty() {
            form = form.text(k.clone(), v.clone());
        }
    }
    form
}

/// A JSON value as display text ("" for null, arrays joined with ", ").
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

// ---------------------------------------------------------------------------------
// index
// ---------------------------------------------------------------------------------

#[derive(Args)]
pub struct IndexArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    what: IndexWhat,
}

#[derive(Subcommand)]
enum IndexWhat {
    /// Create an index.
    Create {
        /// Unique name (at most 128 characters).
        name: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// An EXTERNAL index (read-only to everyone but admins) instead of INTERNAL.
        #[arg(long)]
        external: bool,
    },
    /// List the indexes the user may search.
    List,
    /// Show one index.
    Show {
        /// The index's id or unique name.
        index: String,
    },
    /// Delete an index with its records, images and vectors. Asks first on a terminal.
    Delete {
        /// The index's id or unique name.
        index: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Picks the index `given` names among `indexes` (objects with `id` and `index_name`).
fn resolve_index(indexes: &[Value], given: &str) -> Result<String, Failure> {
    use super::index_name::{Candidate, NotOne, resolve, uuid_like};
    let candidates: Vec<Candidate> =
        indexes.iter().map(|i| Candidate { id: text(&i["id"]), name: text(&i["index_name"]) }).collect();
    match resolve(&candidates, given) {
        Ok(id) => Ok(id),
        // Not a name the caller can see: an id is left to the server to answer (it may be
        // an index the caller can read but not search); anything else is unknown.
        Err(NotOne::Unknown { .. }) if uuid_like(given) => Ok(given.to_string()),
        Err(NotOne::Unknown { listing }) => Err(Failure::Refused {
            status: 404,
            code: "INDEX_NOT_FOUND".into(),
            message: format!("no index has the id or name {given:?}; indexes you can see: {listing}"),
        }),
        Err(NotOne::Ambiguous { listing }) => {
            Err(Failure::local("AMBIGUOUS_INDEX", format!("{given:?} names several indexes: {listing}; give the id")))
        }
    }
}

fn index_rows(indexes: &[Value]) -> String {
    let rows: Vec<Vec<String>> = indexes
        .iter()
        .map(|i| {
            ["id", "index_name", "index_type", "record_count", "title", "pack", "created_at"]
                .iter()
                .map(|k| text(&i[*k]))
                .collect()
        })
        .collect();
    table::render(&["id", "name", "type", "records", "title", "pack", "created"], &rows)
}

pub fn index(args: IndexArgs) -> anyhow::Result<()> {
    finish(index_inner(args))
}

fn index_inner(args: IndexArgs) -> Result<(), Failure> {
    let api = Api::new(&args.conn)?;
    let json = args.conn.json;
    let show = |v: &Value| {
        if json {
            print_json(v);
        } else {
            println!("{}", index_rows(std::slice::from_ref(v)));
        }
    };
    match args.what {
        IndexWhat::Create { name, title, description, external } => {
            let mut body = json!({"index_name": name, "index_type": if external { "EXTERNAL" } else { "INTERNAL" }});
            if let Some(t) = title {
                body["title"] = json!(t);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            let (_, v) = api.send(api.request(Method::POST, "/face/index").json(&body))?;
            show(&v);
        }
        IndexWhat::List => {
            let (_, v) = api.send(api.request(Method::GET, "/face/index/details?action_type=FACE_SEARCH"))?;
            if json {
                print_json(&v);
            } else {
                println!("{}", index_rows(v.as_array().map(Vec::as_slice).unwrap_or_default()));
            }
        }
        IndexWhat::Show { index } => {
            let id = api.index_id(&index)?;
            let (_, v) = api.send(api.request(Method::GET, &format!("/face/index/{id}")))?;
            show(&v);
        }
        IndexWhat::Delete { index, yes } => {
            use std::io::IsTerminal;
            let id = api.index_id(&index)?;
            if !yes && std::io::stdin().is_terminal() {
                let (_, v) = api.send(api.request(Method::GET, &format!("/face/index/{id}")))?;
                let records = v["record_count"].as_u64().unwrap_or_default();
                eprint!(
                    "Delete index {} ({id}) and its {records} record(s) with their images and vectors? [y/N] ",
                    text(&v["index_name"])
                );
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                std::io::stdin()
                    .read_line(&mut answer)
                    .map_err(|e| Failure::local("USAGE", format!("reading the answer: {e}")))?;
                if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
                    return Err(Failure::local("CANCELLED", "nothing was deleted"));
                }
            }
            api.send(api.request(Method::DELETE, &format!("/face/index/{id}")))?;
            if json {
                print_json(&json!({"deleted": id}));
            } else {
                println!("deleted index {id}");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// enrol
// ---------------------------------------------------------------------------------

#[derive(Args)]
pub struct EnrolArgs {
    #[command(flatten)]
    conn: Conn,
    /// Index to enrol into: its id or unique name.
    #[arg(long)]
    index: String,
    /// The photo (one clear face).
    photo: std::path::PathBuf,
    #[arg(long)]
    name: Option<String>,
    /// Date of birth, YYYY-MM-DD.
    #[arg(long)]
    dob: Option<String>,
    /// ISO 3166-1 alpha-2 country code, e.g. IN.
    #[arg(long)]
    nationality: Option<String>,
    #[arg(long)]
    gender: Option<String>,
    #[arg(long)]
    id_no: Option<String>,
    #[arg(long)]
    address: Option<String>,
    /// Watch-list categories, comma-separated.
    #[arg(long)]
    watch_list: Option<String>,
    #[arg(long)]
    additional_info: Option<String>,
    /// Your own id of the record (unique per index): enrolling it again returns the existing record.
    #[arg(long)]
    reference: Option<String>,
    /// Refuse the photo (409 DUPLICATE_FACE) if its face already matches another record of the index.
    #[arg(long)]
    check_duplicates: bool,
}

fn record_rows(records: &[Value]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row: Vec<String> = ["record_id", "name", "reference", "dob", "nationality", "watch_list"]
                .iter()
                .map(|k| text(&r[*k]))
                .collect();
            row.push(r["image_ids"].as_array().map_or(0, Vec::len).to_string());
            row
        })
        .collect();
    table::render(&["record id", "name", "reference", "dob", "nationality", "watch lists", "images"], &rows)
}

pub fn enrol(args: EnrolArgs) -> anyhow::Result<()> {
    finish(enrol_inner(args))
}

fn enrol_inner(args: EnrolArgs) -> Result<(), Failure> {
    let api = Api::new(&args.conn)?;
    let image = read_photo(&args.photo)?;
    let values = [
        &args.name,
        &args.dob,
        &args.nationality,
        &args.gender,
        &args.id_no,
        &args.address,
        &args.watch_list,
        &args.additional_info,
        &args.reference,
    ];
    let fields: Vec<(String, String)> =
        RECORD_FIELDS.iter().zip(values).filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone()))).collect();
    let mut path = format!("/face/index/{}/records", api.index_id(&args.index)?);
    if args.check_duplicates {
        path.push_str("?check_duplicates=true");
    }
    let (status, v) = api.send(api.request(Method::POST, &path).form_body(&record_form(&fields, image)))?;
    if args.conn.json {
        print_json(&v);
    } else {
        println!("{}", if status == 201 { "created" } else { "already present (a record with this reference exists)" });
        println!("{}", record_rows(std::slice::from_ref(&v)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// search
// ---------------------------------------------------------------------------------

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    conn: Conn,
    /// The probe photo; its largest face is searched.
    photo: std::path::PathBuf,
    /// Indexes to search (ids or unique names), comma-separated or repeated.
    #[arg(long, required = true, value_delimiter = ',')]
    index: Vec<String>,
    /// Lowest match score (0-100; server default 70).
    #[arg(long)]
    min_score: Option<f64>,
    /// Most matches (server default 5).
    #[arg(long)]
    max_results: Option<u32>,
    /// Skip the passive liveness check of the probe.
    #[arg(long)]
    no_liveness: bool,
}

pub fn search(args: SearchArgs) -> anyhow::Result<()> {
    finish(search_inner(args))
}

fn search_inner(args: SearchArgs) -> Result<(), Failure> {
    let api = Api::new(&args.conn)?;
    let photo = read_photo(&args.photo)?;
    let mut form = FormBody::new()
        .file("source_image", photo.name, photo.bytes)
        .text("target_index_ids", api.index_ids(&args.index)?.join(","));
    if let Some(s) = args.min_score {
        form = form.text("min_match_score", s.to_string());
    }
    if let Some(n) = args.max_results {
        form = form.text("max_results", n.to_string());
    }
    let path = format!("/face/search?perform_liveness_check={}", !args.no_liveness);
    let (_, headers, v) =
        api.send_with_headers(api.request(Method::POST, &path).form_body(&form)).map_err(search_refusal)?;
    // On stderr, so that the table and --json on stdout stay as scripts read them.
    let expected = headers.get("x-expected-false-matches").and_then(|h| h.to_str().ok());
    if let Some(warning) = expected.and_then(|e| false_match_warning(e, args.min_score)) {
        eprintln!("{warning}");
    }
    if args.conn.json {
        print_json(&v);
        return Ok(());
    }
    let matches = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if matches.is_empty() {
        println!("no match");
        print_probe(&headers, args.no_liveness);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = matches
        .iter()
        .map(|m| {
            vec![
                m["match_score"].as_f64().map_or_else(String::new, |s| format!("{s:.2}")),
                m["distance"].as_f64().map_or_else(String::new, |d| format!("{d:.4}")),
                text(&m["name"]),
                text(&m["dob"]),
                text(&m["nationality"]),
                text(&m["watch_list"]),
                text(&m["index_name"]),
                text(&m["record_id"]),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(&["score", "distance", "name", "dob", "nationality", "watch lists", "index", "record id"], &rows)
    );
    print_probe(&headers, args.no_liveness);
    Ok(())
}

/// Above this many expected false matches per search, `search` warns.
const FALSE_MATCH_WARNING: f64 = 0.01;

/// The warning for an `X-Expected-False-Matches` value (`0.123`, or `<=0.123` for a
/// bound) above [`FALSE_MATCH_WARNING`]; `None` at or below it, or for a value that is
/// not a number.
fn false_match_warning(header: &str, min_score: Option<f64>) -> Option<String> {
    let value: f64 = header.trim().trim_start_matches("<=").parse().ok()?;
    if value <= FALSE_MATCH_WARNING {
        return None;
    }
    let score = min_score.map_or_else(|| "the server default (70)".to_string(), |s| s.to_string());
    Some(format!(
        "warning: {header} false matches expected per search of a person not enrolled at min score {score} for the \
         faces in these indexes; raise --min-score to lower it (see docs/API.md, Scores)"
    ))
}

/// What the operator should do after a refused search, by error code; appended to the
/// server's message.
fn search_advice(code: &str) -> Option<&'static str> {
    Some(match code {
        "LIVENESS_CANNOT_JUDGE" => {
            "step back (or zoom out) so that the head and shoulders show and take the photo again; where your \
             policy allows a search without the liveness check, run it with --no-liveness (a server started \
             with --require-liveness allows that to admins only)"
        }
        "LIVENESS_CHECK_FAILED" => {
            "the photo was judged a presentation attack (a print, a screen or a mask); take a live photo of the \
             person, not of a picture"
        }
        "LIVENESS_REQUIRED" => "this server requires the liveness check: search without --no-liveness",
        "NO_FACE_DETECTED" => "use a photo in which the face is clearly visible and upright",
        "FACE_TOO_SMALL" => "use a larger photo, or one taken closer to the face",
        _ => return None,
    })
}

/// A refused search, with what to do about it where the code says.
fn search_refusal(f: Failure) -> Failure {
    match f {
        Failure::Refused { status, code, message } => {
            let message = match search_advice(&code) {
                Some(advice) => format!("{message}\nwhat to do: {advice}"),
                None => message,
            };
            Failure::Refused { status, code, message }
        }
        other => other,
    }
}

/// The probe's liveness verdict and quality, from a search's headers, under the table.
fn print_probe(headers: &HeaderMap, no_liveness: bool) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    for line in probe_lines(header("x-liveness-score"), header("x-face-quality"), header("x-low-quality"), no_liveness)
    {
        println!("{line}");
    }
}

/// The lines [`print_probe`] prints: the liveness verdict and score, the quality
/// measures an operator reads (size, sharpness, pose, turn), and the measures that
/// miss the enrolment minimums.
fn probe_lines(liveness: Option<&str>, quality: Option<&str>, low: Option<&str>, no_liveness: bool) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(match (no_liveness, liveness) {
        (true, _) => "liveness: not checked (--no-liveness)".to_string(),
        // A spoof is refused before any search: a judged probe that reached the
        // results passed the check.
        (false, Some(score)) => format!("liveness: live (score {score})"),
        (false, None) => "liveness: checked, no score returned".to_string(),
    });
    if let Some(q) = quality {
        let measures: Vec<(&str, &str)> = q.split("; ").filter_map(|m| m.split_once('=')).collect();
        let get = |name: &str| measures.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let mut shown: Vec<String> = [
            ("face_size", "face", " px"),
            ("sharpness", "sharpness", ""),
            ("yaw", "yaw", "°"),
            ("pitch", "pitch", "°"),
            ("detector_score", "detector score", ""),
        ]
        .iter()
        .filter_map(|(key, label, unit)| get(key).map(|v| format!("{label} {v}{unit}")))
        .collect();
        if let Some(turn) = get("rotation").filter(|r| *r != "0") {
            shown.push(format!("photo turned {turn}° clockwise to make the face upright"));
        }
        lines.push(format!("quality: {}", shown.join(", ")));
    }
    if let Some(low) = low {
        lines.push(format!("below the enrolment quality minimums: {low} (ask for a better photo)"));
    }
    lines
}

// ---------------------------------------------------------------------------------
// export
// ---------------------------------------------------------------------------------

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    conn: Conn,
    /// The index to export: its id or unique name.
    #[arg(long)]
    index: String,
    /// Output file (default: standard output). `.jsonl`/`.ndjson` write JSON lines, anything else CSV.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Also download every image into this folder (as IMAGE_ID.EXT); the `image` column
    /// then lists them relative to it, so `facesearch import --images DIR` reads the export back.
    #[arg(long)]
    images: Option<std::path::PathBuf>,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    finish(export_inner(args))
}

fn export_inner(args: ExportArgs) -> Result<(), Failure> {
    use super::import::csv_field;
    use base64::Engine as _;
    let api = Api::new(&args.conn)?;
    let jsonl = args.out.as_ref().and_then(|p| p.extension()).is_some_and(|e| e == "jsonl" || e == "ndjson");
    let local = |what: &str, e: std::io::Error| {
        // `export … | head`: the reader has all it wanted; end quietly.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::local(OUTPUT_CLOSED, "")
        } else {
            Failure::local("FILE_NOT_WRITABLE", format!("{what}: {e}"))
        }
    };
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| local(&path.display().to_string(), e))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    if let Some(dir) = &args.images {
        std::fs::create_dir_all(dir).map_err(|e| local(&dir.display().to_string(), e))?;
    }
    let columns = ["record_id", "reference", "name", "dob", "nationality", "gender", "id_no", "address", "watch_list"];
    if !jsonl {
        let header = columns.iter().chain(&["additional_info", "image", "image_ids", "created_at"]).copied();
        writeln!(out, "{}", header.collect::<Vec<_>>().join(",")).map_err(|e| local("writing", e))?;
    }
    let index = api.index_id(&args.index)?;
    let (mut cursor, mut count) = (None::<String>, 0usize);
    loop {
        let mut path = format!("/face/index/{index}/records?limit=500");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (_, page) = api.send(api.request(Method::GET, &path))?;
        for record in page["records"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let ids: Vec<String> =
                record["image_ids"].as_array().map(Vec::as_slice).unwrap_or_default().iter().map(text).collect();
            let mut files = Vec::new();
            if let Some(dir) = &args.images {
                for id in &ids {
                    let (_, file) = api.send(api.request(Method::GET, &format!("/media/file/download/{id}")))?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(file["file_base64"].as_str().unwrap_or_default())
                        .map_err(|e| Failure::Server { code: "BAD_RESPONSE".into(), message: e.to_string() })?;
                    let name = format!(
                        "{id}.{}",
                        facesearch_engine::extension_of(file["file_type"].as_str().unwrap_or_default())
                    );
                    std::fs::write(dir.join(&name), bytes).map_err(|e| local(&name, e))?;
                    files.push(name);
                }
            }
            let line = if jsonl {
                let mut r = record.clone();
                if args.images.is_some() {
                    r["image"] = json!(files);
                }
                r.to_string()
            } else {
                let mut fields: Vec<String> = columns.iter().map(|c| csv_field(&text(&record[*c]))).collect();
                fields.push(csv_field(&text(&record["additional_info"])));
                fields.push(csv_field(&files.join(";")));
                fields.push(csv_field(&ids.join(";")));
                fields.push(csv_field(&text(&record["created_at"])));
                fields.join(",")
            };
            writeln!(out, "{line}").map_err(|e| local("writing", e))?;
            count += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    out.flush().map_err(|e| local("writing", e))?;
    eprintln!("exported {count} records");
    Ok(())
}

// ---------------------------------------------------------------------------------
// reembed
// ---------------------------------------------------------------------------------

#[derive(Args)]
pub struct ReembedArgs {
    #[command(flatten)]
    conn: Conn,
    /// The index to move: its id or unique name.
    #[arg(long)]
    index: String,
    /// The model pack to move it to: open or insightface.
    #[arg(long)]
    pack: String,
    /// Start the job (or find the running one) and return without waiting for it.
    #[arg(long)]
    no_wait: bool,
    /// Seconds between two progress polls while waiting.
    #[arg(long, default_value_t = 1.0)]
    poll_interval: f64,
}

pub fn reembed(args: ReembedArgs) -> anyhow::Result<()> {
    finish(reembed_inner(args))
}

fn job_line(job: &Value) -> String {
    format!(
        "{} → {}: {} of {} images, {} without a usable face ({})",
        text(&job["from_pack"]),
        text(&job["pack"]),
        text(&job["done"]),
        text(&job["total"]),
        text(&job["failed"]),
        text(&job["state"]),
    )
}

fn reembed_inner(args: ReembedArgs) -> Result<(), Failure> {
    let api = Api::new(&args.conn)?;
    let path = format!("/face/index/{}/reembed", api.index_id(&args.index)?);
    let (_, mut job) = api.send(api.request(Method::POST, &path).json(&json!({"pack": args.pack})))?;
    let interval = Duration::from_secs_f64(args.poll_interval.clamp(0.05, 60.0));
    let progress = !args.conn.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    while !args.no_wait && job["state"] == "running" {
        if progress {
            eprint!("\r{}", job_line(&job));
            let _ = std::io::stderr().flush();
        }
        std::thread::sleep(interval);
        job = api.send(api.request(Method::GET, &path))?.1;
    }
    if progress {
        eprintln!();
    }
    if args.conn.json {
        print_json(&job);
    } else {
        println!("{}", job_line(&job));
        let failures = job["failures"].as_array().map(Vec::as_slice).unwrap_or_default();
        if !failures.is_empty() {
            println!("images without a usable face for the new pack (their records are kept, not searchable):");
            let rows: Vec<Vec<String>> =
                failures.iter().map(|f| vec![text(&f["image_id"]), text(&f["record_id"]), text(&f["code"])]).collect();
            println!("{}", table::render(&["image id", "record id", "code"], &rows));
        }
    }
    if job["state"] == "failed" {
        return Err(Failure::Server { code: "REEMBED_FAILED".into(), message: text(&job["error"]) });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// duplicates
// ---------------------------------------------------------------------------------

#[derive(Args)]
pub struct DuplicatesArgs {
    #[command(flatten)]
    conn: Conn,
    /// Index to search for duplicate identities (id or unique name); repeat (or
    /// comma-separate) to compare several indexes with each other.
    #[arg(long, required = true, value_delimiter = ',')]
    index: Vec<String>,
    /// Lowest match score (0-100, the scale of search) for two faces to count as one
    /// person [server default: 80].
    #[arg(long)]
    min_score: Option<f64>,
}

pub fn duplicates(args: DuplicatesArgs) -> anyhow::Result<()> {
    finish(duplicates_inner(args))
}

fn duplicates_inner(args: DuplicatesArgs) -> Result<(), Failure> {
    let api = Api::new(&args.conn)?;
    let ids = api.index_ids(&args.index)?;
    let (first, others) = ids.split_first().ok_or_else(|| Failure::local("USAGE", "--index is required"))?;
    let mut path = format!("/face/index/{first}/duplicates?");
    if let Some(s) = args.min_score {
        path.push_str(&format!("min_score={s}&"));
    }
    if !others.is_empty() {
        path.push_str(&format!("index_ids={}", others.join(",")));
    }
    let (_, job) = api.send(api.request(Method::POST, path.trim_end_matches(['?', '&'])))?;
    let id = job["job_id"].as_str().unwrap_or_default().to_string();
    let bar = indicatif::ProgressBar::new(job["progress"]["total"].as_u64().unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} comparing faces {bar:40} {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Long polls of one second: the server answers as soon as the job ends, and the bar
    // moves at least once a second meanwhile.
    let job = loop {
        let (_, job) = api.send(api.request(Method::GET, &format!("/face/index/{first}/duplicates/{id}?wait=1")))?;
        bar.set_length(job["progress"]["total"].as_u64().unwrap_or(0));
        bar.set_position(job["progress"]["done"].as_u64().unwrap_or(0));
        if job["status"] != "running" {
            break job;
        }
    };
    bar.finish_and_clear();
    if job["status"] == "failed" {
        return Err(Failure::Server { code: "JOB_FAILED".into(), message: text(&job["error"]) });
    }
    if args.conn.json {
        print_json(&job);
        return Ok(());
    }
    let groups = job["groups"].as_array().map(Vec::as_slice).unwrap_or_default();
    println!(
        "{} faces compared at min score {}: {} group(s) of different records with matching faces",
        text(&job["faces"]),
        text(&job["min_score"]),
        groups.len()
    );
    if job["truncated"] == true {
        println!("warning: too many matching pairs; some were left out (raise --min-score)");
    }
    for (n, group) in groups.iter().enumerate() {
        let records = group["records"].as_array().map(Vec::as_slice).unwrap_or_default();
        let name_of =
            |id: &Value| records.iter().find(|r| r["record_id"] == *id).map_or_else(String::new, |r| text(&r["name"]));
        println!("\ngroup {} ({} records)", n + 1, records.len());
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| vec![text(&r["record_id"]), text(&r["name"]), text(&r["id_no"]), text(&r["index_id"])])
            .collect();
        println!("{}", table::render(&["record id", "name", "id_no", "index"], &rows));
        let rows: Vec<Vec<String>> = group["pairs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                vec![
                    p["match_score"].as_f64().map_or_else(String::new, |s| format!("{s:.2}")),
                    name_of(&p["record_a"]),
                    name_of(&p["record_b"]),
                    text(&p["image_a"]),
                    text(&p["image_b"]),
                ]
            })
            .collect();
        println!("{}", table::render(&["score", "record a", "record b", "image a", "image b"], &rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_lines_show_liveness_quality_and_the_turn() {
        let quality = "face_size=609.5; eye_distance=290.7; sharpness=1895.1; compression=1.01; brightness=141.8; \
                       dark_fraction=0.013; bright_fraction=0.002; yaw=2.5; pitch=-14.2; roll=0.3; \
                       detector_score=0.958; rotation=90";
        let lines = probe_lines(Some("0.9712"), Some(quality), Some("sharpness"), false);
        assert_eq!(lines[0], "liveness: live (score 0.9712)");
        assert_eq!(
            lines[1],
            "quality: face 609.5 px, sharpness 1895.1, yaw 2.5°, pitch -14.2°, detector score 0.958, \
             photo turned 90° clockwise to make the face upright"
        );
        assert_eq!(lines[2], "below the enrolment quality minimums: sharpness (ask for a better photo)");
        let upright = quality.replace("rotation=90", "rotation=0");
        let lines = probe_lines(None, Some(&upright), None, true);
        assert_eq!(lines[0], "liveness: not checked (--no-liveness)");
        assert!(!lines[1].contains("turned"), "{lines:?}");
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn a_refusal_says_what_to_do_where_the_code_allows() {
        let refused = |code: &str| Failure::Refused { status: 422, code: code.into(), message: "m".into() };
        let f = search_refusal(refused("LIVENESS_CANNOT_JUDGE"));
        assert!(f.message().starts_with("m\nwhat to do: step back"), "{f}");
        assert!(f.message().contains("--no-liveness"), "{f}");
        assert_eq!(f.exit_code(), 2);
        assert_eq!(search_refusal(refused("INDEX_NOT_FOUND")).message(), "m");
    }

    #[test]
    fn warns_only_above_a_hundredth() {
        assert_eq!(false_match_warning("0.00998", Some(70.0)), None);
        assert_eq!(false_match_warning("0.0100", None), None);
        let w = false_match_warning("0.271", Some(50.0)).unwrap_or_default();
        assert!(w.starts_with("warning: 0.271 false matches") && w.contains("min score 50"), "{w}");
        assert!(false_match_warning("<=0.0982", Some(90.0)).is_some_and(|w| w.contains("<=0.0982")));
        assert!(false_match_warning("1.23e5", None).is_some_and(|w| w.contains("server default")));
        assert_eq!(false_match_warning("not a number", None), None);
    }
}
