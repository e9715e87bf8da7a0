//! `facesearch import`: enrols the rows of a CSV or JSON-lines file into an index with
//! bounded parallel uploads. Idempotent through `reference`: the server answers an
//! existing reference with the existing record, counted as "already present". Row
//! errors are reported (stderr and `--report`) and do not stop the import.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::Method;
use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

use super::client::{Api, Conn, Failure, RECORD_FIELDS, exit, finish, read_photo, record_form};
use super::form::{FormBody, WithForm};

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    conn: Conn,
    /// Index to enrol into: its id or unique name.
    #[arg(long)]
    index: String,
    /// CSV with a header row, or JSON lines (`.jsonl`, `.ndjson`). Columns: the record
    /// fields and `image` (one or more paths separated by `;`).
    file: PathBuf,
    /// Directory that relative image paths are resolved against (default: the current directory).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Write the failed rows here as CSV (row, reference, code, message).
    #[arg(long)]
    report: Option<PathBuf>,
}

/// One data row: its 1-based number (the CSV header not counted), record fields, images.
struct Row {
    no: usize,
    fields: Vec<(String, String)>,
    images: Vec<String>,
}

impl Row {
    fn reference(&self) -> &str {
        self.fields.iter().find(|(k, _)| k == "reference").map_or("", |(_, v)| v.as_str())
    }
}

/// A row that could not even be read.
type Parsed = Result<Row, (usize, String, Failure)>;

enum Outcome {
    Created,
    Present,
    Failed(Failure),
}

/// One CSV field, quoted where needed.
pub(super) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// Columns that `facesearch export` writes for information and an import ignores, so
/// that an export can be read back.
const EXPORT_ONLY: [&str; 5] = ["record_id", "index_id", "image_ids", "created_at", "updated_at"];

fn build_row(no: usize, pairs: Vec<(String, String)>) -> Parsed {
    let mut fields = Vec::new();
    let mut images = Vec::new();
    for (k, v) in pairs {
        if k == "image" {
            images.extend(v.split(';').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string));
        } else if RECORD_FIELDS.contains(&k.as_str()) {
            fields.push((k, v));
        } else if !EXPORT_ONLY.contains(&k.as_str()) {
            return Err((no, String::new(), Failure::local("INVALID_ROW", format!("unknown field {k:?}"))));
        }
    }
    Ok(Row { no, fields, images })
}

fn read_rows(file: &Path) -> Result<Vec<Parsed>, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::local("FILE_NOT_READABLE", format!("reading {}: {e}", file.display())))?;
    let ext = file.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if ext == "jsonl" || ext == "ndjson" {
        let lines = text.lines().filter(|l| !l.trim().is_empty());
        return Ok(lines.enumerate().map(|(i, line)| json_row(i + 1, line)).collect());
    }
    let records =
        facesearch_eval::parse_csv(&text).map_err(|e| Failure::local("USAGE", format!("{}: {e}", file.display())))?;
    let mut records = records.into_iter();
    let header: Vec<String> = records.next().unwrap_or_default().into_iter().map(|h| h.trim().to_string()).collect();
    for h in &header {
        if h != "image" && !RECORD_FIELDS.contains(&h.as_str()) && !EXPORT_ONLY.contains(&h.as_str()) {
            return Err(Failure::local(
                "USAGE",
                format!("{}: unknown column {h:?} (known: image, {})", file.display(), RECORD_FIELDS.join(", ")),
            ));
        }
    }
    if !header.iter().any(|h| h == "image") {
        return Err(Failure::local("USAGE", format!("{}: no \"image\" column", file.display())));
    }
    Ok(records
        .enumerate()
        .map(|(i, rec)| {
            if rec.len() != header.len() {
                let msg = format!("{} fields, the header has {}", rec.len(), header.len());
                return Err((i + 1, String::new(), Failure::local("INVALID_ROW", msg)));
            }
            build_row(i + 1, header.iter().cloned().zip(rec).collect())
        })
        .collect())
}

fn json_row(no: usize, line: &str) -> Parsed {
    let bad = |m: String| Err((no, String::new(), Failure::local("INVALID_ROW", m)));
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
        return bad("not a JSON object".into());
    };
    let mut pairs = Vec::new();
    for (k, v) in map {
        let sep = if k == "image" { ";" } else { "," };
        let s = match v {
            Value::Null => String::new(),
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Array(a) => {
                let parts: Option<Vec<String>> = a.into_iter().map(|x| x.as_str().map(str::to_string)).collect();
                match parts {
                    Some(p) => p.join(sep),
                    None => return bad(format!("{k}: an array of strings expected")),
                }
            }
            _ => return bad(format!("{k}: a string expected")),
        };
        pairs.push((k, s));
    }
    build_row(no, pairs)
}

fn resolve(dir: Option<&Path>, p: &str) -> PathBuf {
    let p = Path::new(p);
    match dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p.to_path_buf(),
    }
}

/// Sends a request built anew for each try. `503 SERVICE_UNAVAILABLE` (the server did
/// nothing: analysis queue full, too many requests in flight) is tried again after 1,
/// 2 and 4 s (plus up to as much again at random, so that the workers do not come back
/// together); everything else, `503 REQUEST_TIMEOUT` included, is final.
fn send_retrying(api: &Api, build: impl Fn() -> RequestBuilder) -> Result<(u16, Value), Failure> {
    let mut wait = Duration::from_secs(1);
    for _ in 0..3 {
        match api.send(build()) {
            Err(Failure::Server { code, .. }) if code == "SERVICE_UNAVAILABLE" => {
                std::thread::sleep(wait.mul_f64(1.0 + rand::random::<f64>()));
                wait *= 2;
            }
            other => return other,
        }
    }
    api.send(build())
}

/// Enrols one row; `Ok(true)` created, `Ok(false)` the reference existed.
fn import_row(api: &Api, index: &str, dir: Option<&Path>, row: &Row) -> Result<bool, Failure> {
    let Some((first, extra)) = row.images.split_first() else {
        return Err(Failure::local("MISSING_IMAGE", "the row names no image"));
    };
    // Every file is read first, so that a missing extra image creates nothing.
    let first_photo = read_photo(&resolve(dir, first))?;
    let extra_photos =
        extra.iter().map(|p| read_photo(&resolve(dir, p)).map(|photo| (p, photo))).collect::<Result<Vec<_>, _>>()?;
    let path = format!("/face/index/{index}/records");
    let form = record_form(&row.fields, first_photo);
    let (status, record) = send_retrying(api, || api.request(Method::POST, &path).form_body(&form))?;
    if status == 200 {
        return Ok(false);
    }
    let id = record["record_id"].as_str().unwrap_or_default().to_string();
    let images = format!("{path}/{id}/images");
    for (p, photo) in extra_photos {
        let form = FormBody::new().file("image", photo.name, photo.bytes);
        send_retrying(api, || api.request(Method::POST, &images).form_body(&form)).map_err(|f| {
            let message = format!("record {id} was created, but adding image {p}: {}", f.message());
            match f {
                Failure::Local { code, .. } => Failure::Local { code, message },
                Failure::Refused { status, code, .. } => Failure::Refused { status, code, message },
                Failure::Server { code, .. } => Failure::Server { code, message },
            }
        })?;
    }
    Ok(true)
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    finish(run_inner(args))
}

fn run_inner(mut args: ImportArgs) -> Result<(), Failure> {
    let api = Api::new(&args.conn)?;
    let rows = read_rows(&args.file)?;
    // The credentials and the index, before any row.
    args.index = api.index_id(&args.index)?;
    api.send(api.request(Method::GET, &format!("/face/index/{}", args.index)))?;

    // A reference used by an earlier row of the file is refused here: which row would
    // win a parallel upload is not determined.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let rows: Vec<Parsed> = rows
        .into_iter()
        .map(|r| match r {
            Ok(row) if !row.reference().is_empty() => match seen.get(row.reference()) {
                Some(first) => {
                    let msg = format!("reference {:?} is also used by row {first}", row.reference());
                    Err((row.no, row.reference().to_string(), Failure::local("DUPLICATE_REFERENCE", msg)))
                }
                None => {
                    seen.insert(row.reference().to_string(), row.no);
                    Ok(row)
                }
            },
            other => other,
        })
        .collect();

    let total = rows.len();
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let last_progress = Mutex::new(Instant::now());
    let results: Mutex<Vec<(usize, String, Outcome)>> = Mutex::new(Vec::with_capacity(total));
    let dir = args.images.as_deref();
    std::thread::scope(|s| {
        for _ in 0..args.jobs.clamp(1, 64) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(parsed) = rows.get(i) else { break };
                    let (no, reference, outcome) = match parsed {
                        Err((no, reference, f)) => (*no, reference.clone(), Outcome::Failed(f.clone())),
                        Ok(row) => {
                            let outcome = match import_row(&api, &args.index, dir, row) {
                                Ok(true) => Outcome::Created,
                                Ok(false) => Outcome::Present,
                                Err(f) => Outcome::Failed(f),
                            };
                            (row.no, row.reference().to_string(), outcome)
                        }
                    };
                    if let Outcome::Failed(f) = &outcome {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("row {no} ({reference}): {} {}", f.code(), f.message());
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    results.lock().unwrap_or_else(|e| e.into_inner()).push((no, reference, outcome));
                    let mut last = last_progress.lock().unwrap_or_else(|e| e.into_inner());
                    if last.elapsed().as_secs_f64() >= 1.0 || n == total {
                        *last = Instant::now();
                        let rate = n as f64 / start.elapsed().as_secs_f64().max(1e-9);
                        let eta = (total - n) as f64 / rate.max(1e-9);
                        eprintln!(
                            "import: {n}/{total} rows, {rate:.1} rows/s, ETA {eta:.0} s, {} errors",
                            failed.load(Ordering::Relaxed)
                        );
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.0);

    let created = results.iter().filter(|r| matches!(r.2, Outcome::Created)).count();
    let present = results.iter().filter(|r| matches!(r.2, Outcome::Present)).count();
    let failures: Vec<(usize, &str, &Failure)> = results
        .iter()
        .filter_map(|(no, reference, o)| match o {
            Outcome::Failed(f) => Some((*no, reference.as_str(), f)),
            _ => None,
        })
        .collect();
    if let Some(report) = &args.report {
        let mut out = String::from("row,reference,code,message\n");
        for (no, reference, f) in &failures {
            out.push_str(&format!(
                "{no},{},{},{}\n",
                csv_field(reference),
                csv_field(f.code()),
                csv_field(f.message())
            ));
        }
        std::fs::write(report, out)
            .map_err(|e| Failure::local("USAGE", format!("writing {}: {e}", report.display())))?;
    }
    let rate = total as f64 / elapsed.max(1e-9);
    if args.conn.json {
        let summary = json!({"rows": total, "created": created, "already_present": present, "failed": failures.len(),
            "elapsed_s": elapsed, "rows_per_s": rate});
        println!("{summary}");
    } else {
        println!(
            "{total} rows: created {created}, already present {present}, failed {}; elapsed {elapsed:.1} s, {rate:.1} rows/s",
            failures.len()
        );
    }
    if failures.is_empty() {
        return Ok(());
    }
    // Rows failed: 3 if any was a server or network failure, else 2.
    exit(if failures.iter().any(|f| matches!(f.2, Failure::Server { .. })) { 3 } else { 2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
        // What is written reads back.
        let line = ["x, y", "say \"hi\"", "two\nlines"].map(csv_field).join(",");
        assert_eq!(facesearch_eval::parse_csv(&line).expect("valid"), vec![vec!["x, y", "say \"hi\"", "two\nlines"]]);
    }
}
