//! Crash safety under load: a server doing a bulk enrolment from several clients is
//! killed with SIGKILL at random moments, 50 times over, on one data directory.
//!
//! After every kill, before anything else touches the data, the store is opened
//! directly and must pass its integrity check (`PRAGMA integrity_check`, foreign keys,
//! record counters). After every restart every enrolment that was ever acknowledged
//! (answered 2xx) must be there, intact: the record by id with its reference and name,
//! its image byte for byte, and (every 10 rounds) its face vector, i.e. a search with
//! the enrolled photo finds it. An enrolment that was in flight when the server died
//! may or may not have been committed; if it was, it must be intact too, and retrying
//! its reference must return the existing record (200) rather than a duplicate. No
//! record may exist that no client asked for, and no reference may be stored twice.
//!
//! The kill moments come from a seeded RNG (the seed is printed); the interleaving of
//! the client threads is not reproducible, the kill points are.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{ADMIN_PASSWORD, ADMIN_USER, Server, ServerOptions, lfw_people, lfw_photos, temp_dir, with_form};
use facesearch_store::SqliteStore;
use facesearch_store::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;

const SEED: u64 = 0x00C0_FFEE_D1E5_2026;
const ROUNDS: usize = 50;
/// Size of the photo pool (first photo of that many LFW people, spread over the set).
const POOL: usize = 60;
/// Most enrolments one client thread sends in one round (the round normally ends with
/// the kill long before).
const MAX_REQUESTS_PER_THREAD: usize = 40;
/// Acknowledged enrolments after which the server is killed: 1..=KILL_AFTER_MAX.
const KILL_AFTER_MAX: usize = 6;
/// A safety net for a round whose clients stop getting answers; not a timing assertion.
const ROUND_DEADLINE: Duration = Duration::from_secs(300);
/// In-flight enrolments found committed whose reference is retried after the restart.
const RETRIES_WANTED: usize = 10;

struct Photo {
    path: PathBuf,
    bytes: Arc<Vec<u8>>,
}

/// An enrolment the store must keep forever.
#[derive(Debug, Clone)]
struct Known {
    reference: String,
    name: String,
    record_id: String,
    image_id: String,
    photo: usize,
    /// Acknowledged with 2xx (false: in flight at the kill, found committed later).
    acknowledged: bool,
}

/// What one enrolment attempt came to.
enum Outcome {
    Acked {
        reference: String,
        name: String,
        photo: usize,
        status: u16,
        body: Value,
    },
    /// Sent (or possibly sent) when the server died: may or may not be committed.
    InFlight {
        reference: String,
        name: String,
        photo: usize,
        error: String,
    },
    /// The connection was refused: the server was already gone, nothing was sent.
    NotSent,
    /// Anything else (a 422 too: the load uses only photos screened as enrollable): a bug.
    Unexpected {
        reference: String,
        status: u16,
        body: String,
    },
}

struct RoundCtx {
    base: String,
    index_id: String,
    round: usize,
    pool: Arc<Vec<Photo>>,
    /// The photos of the pool that enrol (screened once before the first kill).
    usable: Arc<Vec<usize>>,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicUsize>,
}

fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("building a client")
}

fn enrol_form(pool: &[Photo], photo: usize, reference: &str, name: &str) -> Form {
    let p = &pool[photo];
    let file_name = p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "photo.jpg".into());
    Form::new()
        .part("image", Part::bytes(p.bytes.as_ref().clone()).file_name(file_name))
        .text("reference", reference.to_string())
        .text("name", name.to_string())
}

/// One client thread: enrols as fast as it can until told to stop or the server dies.
fn client_thread(ctx: &RoundCtx, seed: u64, acks: mpsc::Sender<()>) -> Vec<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed);
    let http = http_client();
    let url = format!("{}/face/index/{}/records", ctx.base, ctx.index_id);
    let mut out = Vec::new();
    for _ in 0..MAX_REQUESTS_PER_THREAD {
        if ctx.stop.load(Ordering::SeqCst) {
            break;
        }
        let photo = ctx.usable[rng.random_range(0..ctx.usable.len())];
        let n = ctx.next.fetch_add(1, Ordering::SeqCst);
        let reference = format!("r{}-{n}", ctx.round);
        let name = format!("Crash Person {}-{n}", ctx.round);
        let req = http.post(&url).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD));
        let result = with_form(req, enrol_form(&ctx.pool, photo, &reference, &name)).send().and_then(|r| {
            let status = r.status().as_u16();
            r.text().map(|t| (status, t))
        });
        match result {
            Ok((status @ (200 | 201), text)) => {
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                out.push(Outcome::Acked { reference, name, photo, status, body });
                let _ = acks.send(());
            }
            Ok((status, text)) => out.push(Outcome::Unexpected { reference, status, body: text }),
            Err(e) if e.is_connect() => {
                out.push(Outcome::NotSent);
                break;
            }
            Err(e) => {
                out.push(Outcome::InFlight { reference, name, photo, error: format!("{e}") });
                break;
            }
        }
    }
    out
}

/// Opens the store directly (no server running) and runs its integrity check.
fn integrity_check(data_dir: &Path, round: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    rt.block_on(async {
        let store = SqliteStore::open(data_dir)
            .unwrap_or_else(|e| panic!("round {round}: the store does not open after kill -9: {e}"));
        store
            .integrity_check()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the store fails its integrity check after kill -9: {e}"));
        drop(store);
    });
}

/// Every record of the index, by reference, read page by page.
fn list_records(s: &Server, index_id: &str) -> BTreeMap<String, Value> {
    let mut by_ref = BTreeMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let path = match &cursor {
            Some(c) => format!("/face/index/{index_id}/records?limit=1000&cursor={c}"),
            None => format!("/face/index/{index_id}/records?limit=1000"),
        };
        let page = s.get(&path).ok(200).clone();
        for rec in page["records"].as_array().expect("records array") {
            let reference = rec["reference"]
                .as_str()
                .unwrap_or_else(|| panic!("a record without the reference it was enrolled with: {rec}"))
                .to_string();
            let dup = by_ref.insert(reference.clone(), rec.clone());
            assert!(dup.is_none(), "reference {reference} is stored twice: {rec} and {}", dup.unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => return by_ref,
        }
    }
    panic!("more than 1000 pages of records");
}

fn decode_download(s: &Server, image_id: &str) -> Vec<u8> {
    let r = s.download(image_id);
    let d = r.ok(200);
    assert_eq!(d["file_id"], image_id);
    base64::engine::general_purpose::STANDARD.decode(d["file_base64"].as_str().expect("file_base64")).expect("base64")
}

/// Checks one record that must be there: by id, its fields, its image bytes.
fn check_intact(s: &Server, index_id: &str, pool: &[Photo], k: &Known, round: usize) {
    let rec = s.get(&format!("/face/index/{index_id}/records/{}", k.record_id)).ok(200).clone();
    assert_eq!(rec["record_id"], k.record_id.as_str(), "round {round}: {}", k.reference);
    assert_eq!(rec["reference"], k.reference.as_str(), "round {round}: reference of record {}", k.record_id);
    assert_eq!(rec["name"], k.name.as_str(), "round {round}: name of {}", k.reference);
    assert_eq!(
        rec["image_ids"],
        serde_json::json!([k.image_id.as_str()]),
        "round {round}: images of {} (acknowledged: {})",
        k.reference,
        k.acknowledged
    );
    let bytes = decode_download(s, &k.image_id);
    assert!(
        bytes == *pool[k.photo].bytes,
        "round {round}: the image of {} came back different after kill -9 ({} bytes, uploaded {})",
        k.reference,
        bytes.len(),
        pool[k.photo].bytes.len()
    );
}

/// A search with each enrolled photo finds every record enrolled with it (score >= 70).
fn check_searchable(s: &Server, index_id: &str, pool: &[Photo], known: &BTreeMap<String, Known>, round: usize) {
    let mut by_photo: BTreeMap<usize, Vec<&Known>> = BTreeMap::new();
    for k in known.values() {
        by_photo.entry(k.photo).or_default().push(k);
    }
    for (photo, records) in by_photo {
        let matches = s.search_ok(
            &[index_id],
            &pool[photo].path,
            &[("perform_liveness_check", "false"), ("max_results", "100"), ("min_match_score", "70")],
        );
        for k in records {
            let m = matches.iter().find(|m| m["record_id"] == k.record_id.as_str()).unwrap_or_else(|| {
                panic!(
                    "round {round}: {} (record {}) is not found by a search with its own photo {}: {matches:?}",
                    k.reference,
                    k.record_id,
                    pool[photo].path.display()
                )
            });
            let score = m["match_score"].as_f64().expect("match_score");
            assert!(score >= 70.0, "round {round}: {} matched its own photo with score {score}", k.reference);
        }
    }
}

#[derive(Default)]
struct Totals {
    acknowledged: usize,
    in_flight: usize,
    in_flight_committed: usize,
    in_flight_lost: usize,
    not_sent: usize,
    retried: usize,
    searches_checked: usize,
}

/// After a restart: everything known is intact, in-flight enrolments are resolved, and
/// nothing else is stored.
#[allow(clippy::too_many_arguments)]
fn verify(
    s: &Server,
    index_id: &str,
    pool: &[Photo],
    known: &mut BTreeMap<String, Known>,
    pending: &mut Vec<(String, String, usize)>,
    round: usize,
    search: bool,
    totals: &mut Totals,
) {
    let listed = list_records(s, index_id);

    // In-flight enrolments of the last round: committed or not, never half.
    let mut committed_now = Vec::new();
    for (reference, name, photo) in pending.drain(..) {
        match listed.get(&reference) {
            Some(rec) => {
                let image_ids = rec["image_ids"].as_array().expect("image_ids");
                assert_eq!(image_ids.len(), 1, "round {round}: in-flight {reference} committed with images {rec}");
                let k = Known {
                    reference: reference.clone(),
                    name,
                    record_id: rec["record_id"].as_str().expect("record_id").to_string(),
                    image_id: image_ids[0].as_str().expect("image id").to_string(),
                    photo,
                    acknowledged: false,
                };
                totals.in_flight_committed += 1;
                committed_now.push(reference.clone());
                known.insert(reference, k);
            }
            None => totals.in_flight_lost += 1,
        }
    }

    // Nothing stored that no one knows of.
    for (reference, rec) in &listed {
        assert!(
            known.contains_key(reference),
            "round {round}: record {reference} is stored but was neither acknowledged nor in flight \
             (or was found missing earlier): {rec}"
        );
    }
    // Everything known is stored, by reference and by id, intact.
    for k in known.values() {
        let rec = listed.get(&k.reference).unwrap_or_else(|| {
            panic!(
                "round {round}: {} (record {}, acknowledged: {}) is gone after kill -9",
                k.reference, k.record_id, k.acknowledged
            )
        });
        assert_eq!(rec["record_id"], k.record_id.as_str(), "round {round}: record id of {}", k.reference);
        check_intact(s, index_id, pool, k, round);
    }
    assert_eq!(s.record_count(index_id), known.len() as u64, "round {round}: record_count after restart");

    // Retrying a committed in-flight enrolment returns the existing record.
    for reference in committed_now {
        if totals.retried >= RETRIES_WANTED {
            break;
        }
        let k = &known[&reference];
        let http = s.http().post(s.url(&format!("/face/index/{index_id}/records")));
        let req = with_form(
            http.basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)),
            enrol_form(pool, k.photo, &k.reference, &k.name),
        );
        let again = s.send(format!("retry of {reference}"), req);
        let rec = again.ok(200);
        assert_eq!(rec["record_id"], k.record_id.as_str(), "round {round}: retry of {reference} made a new record");
        totals.retried += 1;
    }
    assert_eq!(s.record_count(index_id), known.len() as u64, "round {round}: record_count after retries");

    if search {
        check_searchable(s, index_id, pool, known, round);
        totals.searches_checked += 1;
    }
}

#[test]
fn random_kill_9_during_bulk_enrolment_loses_nothing_acknowledged() {
    let started = Instant::now();
    eprintln!("crash test: seed {SEED:#x}, {ROUNDS} rounds");
    let mut rng = StdRng::seed_from_u64(SEED);

    let people = lfw_people();
    assert!(people.len() >= POOL, "need {POOL} LFW people, have {}", people.len());
    let step = people.len() / POOL;
    let pool: Arc<Vec<Photo>> = Arc::new(
        (0..POOL)
            .map(|i| {
                let path = lfw_photos(&people[i * step])[0].clone();
                let bytes = Arc::new(common::read(&path));
                Photo { path, bytes }
            })
            .collect(),
    );

    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    let mut pending: Vec<(String, String, usize)> = Vec::new();
    let mut totals = Totals::default();
    let mut index_id = String::new();
    let mut usable: Arc<Vec<usize>> = Arc::default();
    let mut round_times = Vec::new();

    for round in 0..=ROUNDS {
        let round_started = Instant::now();
        let server = Server::start_with(ServerOptions::default().data_dir(&data));
        let up = round_started.elapsed();
        if round == 0 {
            index_id = server.create_index_id("crash");
            // Some LFW photos show a second face as large as the first (MULTIPLE_FACES):
            // find them once, in a throw-away index, so that any 422 under load is a bug.
            let screen = server.create_index_id("crash-screen");
            usable = Arc::new(
                (0..pool.len()).filter(|&i| server.enrol(&screen, &pool[i].path, &[]).status == 201).collect(),
            );
            assert!(usable.len() >= POOL * 3 / 4, "only {} of {POOL} pool photos enrol", usable.len());
            assert_eq!(server.delete(&format!("/face/index/{screen}")).status, 204);
        } else {
            let search = round % 10 == 0 || round == ROUNDS;
            verify(&server, &index_id, &pool, &mut known, &mut pending, round, search, &mut totals);
        }
        let verified = round_started.elapsed();
        if round == ROUNDS {
            eprintln!("final restart: {} records verified in {:.1?} (start {:.1?})", known.len(), verified - up, up);
            break;
        }

        // The load: 2-3 clients enrolling; kill -9 after a random number of acks.
        let threads = rng.random_range(2..=3usize);
        let kill_after = rng.random_range(1..=KILL_AFTER_MAX);
        let ctx = Arc::new(RoundCtx {
            base: server.base.clone(),
            index_id: index_id.clone(),
            round,
            pool: pool.clone(),
            usable: usable.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            next: Arc::new(AtomicUsize::new(0)),
        });
        let (ack_tx, ack_rx) = mpsc::channel::<()>();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (ctx, tx, seed) = (ctx.clone(), ack_tx.clone(), rng.random::<u64>());
                std::thread::Builder::new()
                    .name(format!("enrol-{round}-{t}"))
                    .spawn(move || client_thread(&ctx, seed, tx))
                    .expect("spawning a client thread")
            })
            .collect();
        drop(ack_tx);
        let deadline = Instant::now() + ROUND_DEADLINE;
        let mut seen = 0;
        while seen < kill_after {
            match ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => seen += 1,
                // Every client stopped (e.g. out of requests): kill anyway.
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("round {round}: no {kill_after} acks within {ROUND_DEADLINE:?}")
                }
            }
        }
        ctx.stop.store(true, Ordering::SeqCst);
        let killed_at = round_started.elapsed();
        server.kill();

        let mut acked_now = 0;
        let mut in_flight_now = 0;
        for h in handles {
            for outcome in h.join().expect("a client thread panicked") {
                match outcome {
                    Outcome::Acked { reference, name, photo, status, body } => {
                        assert_eq!(status, 201, "round {round}: a new reference {reference} answered {status}: {body}");
                        let rec = &body["response"];
                        assert_eq!(rec["reference"], reference.as_str(), "round {round}: {body}");
                        let image_ids = rec["image_ids"].as_array().expect("image_ids");
                        assert_eq!(image_ids.len(), 1, "round {round}: {body}");
                        known.insert(
                            reference.clone(),
                            Known {
                                reference,
                                name,
                                record_id: rec["record_id"].as_str().expect("record_id").to_string(),
                                image_id: image_ids[0].as_str().expect("image id").to_string(),
                                photo,
                                acknowledged: true,
                            },
                        );
                        acked_now += 1;
                    }
                    Outcome::InFlight { reference, name, photo, error } => {
                        if in_flight_now == 0 && round < 3 {
                            eprintln!("round {round}: in flight at the kill: {reference}: {error}");
                        }
                        pending.push((reference, name, photo));
                        in_flight_now += 1;
                    }
                    Outcome::NotSent => totals.not_sent += 1,
                    Outcome::Unexpected { reference, status, body } => {
                        panic!("round {round}: enrolment of {reference} answered {status}: {body}")
                    }
                }
            }
        }
        totals.acknowledged += acked_now;
        totals.in_flight += in_flight_now;

        integrity_check(&data, round);
        let took = round_started.elapsed();
        round_times.push(took);
        eprintln!(
            "round {round:2}: {threads} clients, kill after {kill_after} acks: {acked_now} acked, \
             {in_flight_now} in flight; start {up:.1?}, verify {:.1?}, load {:.1?}, round {took:.1?}",
            verified - up,
            killed_at - verified,
        );
    }

    let acked_total = known.values().filter(|k| k.acknowledged).count();
    assert_eq!(acked_total, totals.acknowledged);
    let mut sorted = round_times.clone();
    sorted.sort();
    eprintln!(
        "crash test done: seed {SEED:#x}; {ROUNDS} kills; {} acknowledged enrolments all intact; \
         {} in flight at a kill: {} turned out committed (intact; {} retried -> 200 existing), {} not committed; \
         {} refused before sending; search checked {} times; \
         {} records at the end; median round {:.1?}; wall time {:.1?}",
        totals.acknowledged,
        totals.in_flight,
        totals.in_flight_committed,
        totals.retried,
        totals.in_flight_lost,
        totals.not_sent,
        totals.searches_checked,
        known.len(),
        sorted[sorted.len() / 2],
        started.elapsed()
    );
}
