//! End-to-end tests of the HTTP API (`/work/shared/API.md`): the real `facesearch`
//! binary, real models, real photos from `../shared/eval`, over HTTP.
//!
//! Most tests share one server (started once, on first use) and one gallery index
//! filled with real people; tests that change data work in indexes of their own, so
//! they stay independent of each other and of the order they run in. Tests that need
//! other server settings start their own server.
//!
//! The whole suite runs twice, once per store: the embedded SQLite store (module
//! `sqlite`) and PostgreSQL with pgvector (module `postgres`, a real server started by
//! the test process), each with its own shared server and gallery.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine as _;
use common::{ADMIN_PASSWORD, ADMIN_USER, Server, ServerOptions, StoreKind, eval, lfw_people, lfw_photos};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

/// Default `min_match_score` of the published API.
const DEFAULT_MIN_SCORE: f64 = 70.0;

fn server(store: StoreKind) -> &'static Server {
    static SQLITE: OnceLock<Server> = OnceLock::new();
    static POSTGRES: OnceLock<Server> = OnceLock::new();
    let cell = match store {
        StoreKind::Sqlite => &SQLITE,
        StoreKind::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| Server::start_with(ServerOptions::default().store(store)))
}

// ---------------------------------------------------------------------------------
// The gallery: real people enrolled once in the shared server
// ---------------------------------------------------------------------------------

/// One enrolled person.
struct Person {
    /// Identity label (LFW form `First_Last`).
    identity: &'static str,
    record_id: String,
    image_id: String,
    /// The enrolled photo.
    enrolled: PathBuf,
    /// Other photos of the same person, to search with.
    probes: Vec<PathBuf>,
    /// The fields sent at enrolment.
    fields: Vec<(&'static str, String)>,
}

struct Gallery {
    index_id: String,
    index_name: String,
    people: Vec<Person>,
}

impl Gallery {
    fn person(&self, identity: &str) -> &Person {
        self.people
            .iter()
            .find(|p| p.identity == identity)
            .unwrap_or_else(|| panic!("{identity} is not in the gallery"))
    }

    fn by_record(&self, record_id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.record_id == record_id)
    }
}

/// LFW people with at least three photos: photo 1 is enrolled, photos 2 and 3 probe.
/// (name, dob, nationality, gender, watch_list)
const LFW_PEOPLE: &[(&str, &str, &str, &str, &str)] = &[
    ("John_Bolton", "1948-11-20", "US", "M", "pep"),
    ("Tang_Jiaxuan", "1938-01-17", "CN", "M", "pep,diplomat"),
    ("Leonid_Kuchma", "1938-08-09", "UA", "M", ""),
    ("Mohamed_ElBaradei", "1942-06-17", "EG", "M", "pep"),
    ("Paul_Burrell", "1958-06-06", "GB", "M", ""),
    ("Vincent_Brooks", "1958-10-24", "US", "M", "military"),
    ("Tom_Cruise", "1962-07-03", "US", "M", ""),
    ("Muhammad_Ali", "1942-01-17", "US", "M", "sport, boxing"),
];

/// Phone-camera photos from the deepface set: (identity, enrolled, probe).
const DEEPFACE_PEOPLE: &[(&str, &str, &str)] = &[
    ("Angelina_Jolie", "deepface/img1.jpg", "deepface/img4.jpg"),
    ("Mark_Zuckerberg", "deepface/img13.jpg", "deepface/img14.jpg"),
    ("Jack_Dorsey", "deepface/img16.jpg", "deepface/img17.jpg"),
    ("Elon_Musk", "deepface/img18.jpg", "deepface/img19.jpg"),
];

/// People of the deepface set who are NOT enrolled: one photo each.
const DEEPFACE_STRANGERS: &[(&str, &str)] = &[
    ("George_Clooney", "deepface/img38.jpg"),
    ("Jeff_Bezos", "deepface/img20.jpg"),
    ("Jennifer_Aniston", "deepface/img12.jpg"),
    ("Katy_Perry", "deepface/img26.jpg"),
    ("Leonardo_DiCaprio", "deepface/img34.jpg"),
    ("Marissa_Mayer", "deepface/img22.jpg"),
    ("Matt_Damon", "deepface/img29.jpg"),
    ("Scarlett_Johansson", "deepface/img47.jpg"),
    ("Sundar_Pichai", "deepface/img24.jpg"),
];

fn gallery(store: StoreKind) -> &'static Gallery {
    static SQLITE: OnceLock<Gallery> = OnceLock::new();
    static POSTGRES: OnceLock<Gallery> = OnceLock::new();
    let cell = match store {
        StoreKind::Sqlite => &SQLITE,
        StoreKind::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| {
        let s = server(store);
        let index_name = "e2e-gallery".to_string();
        let index_id = s.create_index_id(&index_name);
        let mut people = Vec::new();
        let mut enrol =
            |identity: &'static str, enrolled: PathBuf, probes: Vec<PathBuf>, fields: Vec<(&'static str, String)>| {
                let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let record = s.enrol_ok(&index_id, &enrolled, &refs);
                let image_ids = record["image_ids"].as_array().expect("image_ids");
                assert_eq!(image_ids.len(), 1, "a new record has one image: {record}");
                people.push(Person {
                    identity,
                    record_id: record["record_id"].as_str().expect("record_id").to_string(),
                    image_id: image_ids[0].as_str().expect("image id").to_string(),
                    enrolled,
                    probes,
                    fields,
                });
            };
        for (i, &(name, dob, nat, gender, watch)) in LFW_PEOPLE.iter().enumerate() {
            let photos = lfw_photos(name);
            assert!(photos.len() >= 3, "{name} has fewer than 3 photos");
            enrol(
                name,
                photos[0].clone(),
                photos[1..3].to_vec(),
                vec![
                    ("name", name.replace('_', " ")),
                    ("dob", dob.to_string()),
                    ("nationality", nat.to_string()),
                    ("gender", gender.to_string()),
                    ("id_no", format!("ID-{:04}", i + 1)),
                    ("address", format!("{} Test Street, Testville", i + 1)),
                    ("watch_list", watch.to_string()),
                    ("additional_info", format!("LFW {name}")),
                ],
            );
        }
        for (i, &(name, enrolled, probe)) in DEEPFACE_PEOPLE.iter().enumerate() {
            enrol(
                name,
                eval(enrolled),
                vec![eval(probe)],
                vec![
                    ("name", name.replace('_', " ")),
                    ("nationality", "US".to_string()),
                    ("gender", if i == 0 { "F" } else { "M" }.to_string()),
                    ("id_no", format!("DF-{:04}", i + 1)),
                    ("additional_info", format!("deepface {name}")),
                ],
            );
        }
        assert_eq!(s.record_count(&index_id), people.len() as u64, "record_count after enrolling the gallery");
        Gallery { index_id, index_name, people }
    })
}

fn no_liveness() -> [(&'static str, &'static str); 1] {
    [("perform_liveness_check", "false")]
}

fn score(m: &Value) -> f64 {
    m["match_score"].as_f64().unwrap_or_else(|| panic!("match_score is not a number: {m}"))
}

fn st<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

/// Asserts every field of a Part 1 search result with its JSON type.
#[track_caller]
fn assert_match_shape(m: &Value) {
    let o = m.as_object().unwrap_or_else(|| panic!("match is not an object: {m}"));
    for f in ["match_score", "distance"] {
        assert!(o.get(f).is_some_and(Value::is_number), "{f} is not a number in {m}");
    }
    for f in [
        "match_image_id",
        "name",
        "dob",
        "nationality",
        "gender",
        "id_no",
        "address",
        "additional_info",
        "index_name",
        "index_type",
    ] {
        assert!(o.get(f).is_some_and(Value::is_string), "{f} is not a string in {m}");
    }
    let wl =
        o.get("watch_list").and_then(Value::as_array).unwrap_or_else(|| panic!("watch_list is not an array in {m}"));
    assert!(wl.iter().all(Value::is_string), "watch_list holds non-strings: {m}");
    let sc = score(m);
    assert!((0.0..=100.0).contains(&sc), "match_score {sc} is outside 0–100");
    assert!(["INTERNAL", "EXTERNAL"].contains(&st(m, "index_type")), "index_type is {}", m["index_type"]);
    assert!(!st(m, "match_image_id").is_empty(), "empty match_image_id");
}

/// Asserts matches are sorted best first (score down, distance up).
#[track_caller]
fn assert_sorted(matches: &[Value]) {
    for w in matches.windows(2) {
        assert!(score(&w[0]) >= score(&w[1]), "results are not sorted by match_score: {} before {}", w[0], w[1]);
        let (d0, d1) = (w[0]["distance"].as_f64(), w[1]["distance"].as_f64());
        assert!(d0 <= d1, "distance does not grow as match_score falls: {} before {}", w[0], w[1]);
    }
}

fn is_opaque_id(id: &str) -> bool {
    id.len() >= 16 && id.parse::<u128>().is_err()
}

// ---------------------------------------------------------------------------------
// 1. Enrolled people are found
// ---------------------------------------------------------------------------------

fn enrolled_people_are_found_first_with_a_passing_score(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    let (mut probes, mut rank1) = (0, 0);
    let mut misses = Vec::new();
    for p in &g.people {
        for probe in &p.probes {
            let matches = s.search_ok(&[&g.index_id], probe, &no_liveness());
            probes += 1;
            assert_sorted(&matches);
            let top = matches.first();
            let hit = top.is_some_and(|m| m["record_id"] == p.record_id.as_str());
            if hit {
                rank1 += 1;
                let top = top.unwrap();
                assert_match_shape(top);
                assert!(
                    score(top) >= DEFAULT_MIN_SCORE,
                    "{}: top score {} below the default threshold",
                    p.identity,
                    score(top)
                );
                eprintln!(
                    "genuine {:<20} {:<28} rank-1 score {:6.2}",
                    p.identity,
                    probe.file_name().unwrap().to_string_lossy(),
                    score(top)
                );
            } else {
                let got: Vec<String> = matches.iter().map(|m| format!("{} {}", m["name"], m["match_score"])).collect();
                eprintln!("genuine {:<20} {:<28} MISS: {got:?}", p.identity, probe.display());
                misses.push(format!("{} with {}: {got:?}", p.identity, probe.display()));
            }
        }
    }
    eprintln!(
        "rank-1 at the default threshold: {rank1}/{probes} ({:.1}%) over {} enrolled people",
        100.0 * rank1 as f64 / probes as f64,
        g.people.len()
    );
    assert!(misses.is_empty(), "rank-1 misses: {misses:#?}");
}

fn search_with_liveness_on_returns_the_match_for_a_live_photo(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    let aj = g.person("Angelina_Jolie");
    // deepface/img2.jpg: a photo with context around the face; liveness is the default.
    let r = s.search(&[&g.index_id], &eval("deepface/img2.jpg"), &[]);
    let matches = r.ok(200).as_array().expect("array");
    assert!(!matches.is_empty(), "no match for a live photo of Angelina Jolie: {}", r.text);
    assert_match_shape(&matches[0]);
    assert_eq!(matches[0]["record_id"], aj.record_id.as_str(), "{}", r.text);
    assert!(score(&matches[0]) >= DEFAULT_MIN_SCORE);
    // Explicitly on gives the same answer.
    let again = s.search_ok(&[&g.index_id], &eval("deepface/img2.jpg"), &[("perform_liveness_check", "true")]);
    assert_eq!(again[0]["record_id"], aj.record_id.as_str());
}

fn liveness_refuses_to_judge_a_tight_face_crop(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    for photo in ["pyimagesearch-liveness/fake/108.png", "pyimagesearch-liveness/fake/135.png"] {
        let r = s.search(&[&g.index_id], &eval(photo), &[]);
        r.err(422, "LIVENESS_CANNOT_JUDGE");
    }
    // The same kind of photo is searchable with liveness off.
    let r = s.search(&[&g.index_id], &eval("pyimagesearch-liveness/fake/108.png"), &no_liveness());
    r.ok(200);
}

// ---------------------------------------------------------------------------------
// 2. Strangers are not matched
// ---------------------------------------------------------------------------------

fn strangers_get_an_empty_response_at_the_default_threshold(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    let enrolled: HashSet<&str> = g.people.iter().map(|p| p.identity).collect();
    let mut strangers: Vec<(String, PathBuf)> = lfw_people()
        .into_iter()
        .filter(|n| !enrolled.contains(n.as_str()))
        .step_by(12)
        .map(|n| {
            let photo = lfw_photos(&n).remove(0);
            (n, photo)
        })
        .collect();
    for &(n, p) in DEEPFACE_STRANGERS {
        assert!(!enrolled.contains(n));
        strangers.push((n.to_string(), eval(p)));
    }
    assert!(strangers.len() >= 100, "only {} stranger probes", strangers.len());
    let mut false_matches = Vec::new();
    for (name, photo) in &strangers {
        let r = s.search(&[&g.index_id], photo, &no_liveness());
        let matches = r.ok(200).as_array().expect("array");
        for m in matches {
            eprintln!(
                "FALSE MATCH: stranger {name} ({}) matched {} with score {}",
                photo.display(),
                m["name"],
                m["match_score"]
            );
            false_matches.push(format!("{name} -> {} ({})", m["name"], m["match_score"]));
        }
        if matches.is_empty() {
            assert_eq!(r.json, json!({"response": []}), "no match is {{\"response\": []}}");
        }
    }
    eprintln!(
        "strangers: {} probes against {} enrolled people, {} false matches at the default threshold",
        strangers.len(),
        g.people.len(),
        false_matches.len()
    );
    assert!(false_matches.is_empty(), "false matches: {false_matches:#?}");
}

// ---------------------------------------------------------------------------------
// 3. The shape of a match
// ---------------------------------------------------------------------------------

fn a_match_has_every_published_field_with_the_right_type(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    let p = g.person("Tang_Jiaxuan");
    let matches = s.search_ok(
        &[&g.index_id],
        &p.probes[0],
        &[("perform_liveness_check", "false"), ("min_match_score", "0"), ("max_results", "50")],
    );
    assert_eq!(matches.len(), g.people.len(), "min_match_score 0 lists every record once");
    for m in &matches {
        assert_match_shape(m);
        assert_eq!(st(m, "index_name"), g.index_name);
        assert_eq!(st(m, "index_type"), "INTERNAL");
        let d = m["distance"].as_f64().unwrap();
        if let Some(sim) = m.get("similarity").and_then(Value::as_f64) {
            assert!((d - (1.0 - sim)).abs() < 1e-4, "distance {d} is not 1 − similarity ({sim})");
        }
        assert!((-1e-6..=2.0 + 1e-6).contains(&d), "distance {d} is not a cosine distance");
        let owner = g
            .by_record(m["record_id"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("match of an unknown record: {m}"));
        assert_eq!(st(m, "match_image_id"), owner.image_id);
    }
    assert_sorted(&matches);

    // The top match carries exactly the data enrolled.
    let top = &matches[0];
    assert_eq!(top["record_id"], p.record_id.as_str());
    for (k, v) in &p.fields {
        if *k == "watch_list" {
            let want: Vec<&str> = v.split(',').map(str::trim).filter(|x| !x.is_empty()).collect();
            assert_eq!(top["watch_list"], json!(want), "watch_list");
        } else {
            assert_eq!(top[*k], v.as_str(), "field {k}");
        }
    }
    assert_eq!(top["name"], "Tang Jiaxuan");
    assert_eq!(top["watch_list"], json!(["pep", "diplomat"]));
    // A record enrolled without a watch list has an empty array, not null.
    let leonid = matches
        .iter()
        .find(|m| m["record_id"] == g.person("Leonid_Kuchma").record_id.as_str())
        .expect("Leonid Kuchma in the full list");
    assert_eq!(leonid["watch_list"], json!([]));
    // A record enrolled without dob has an empty string.
    let elon = matches
        .iter()
        .find(|m| m["record_id"] == g.person("Elon_Musk").record_id.as_str())
        .expect("Elon Musk in the full list");
    assert_eq!(elon["dob"], "");
    assert_eq!(elon["address"], "");
}

fn index_details_lists_indexes_with_the_published_fields(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    for path in ["/face/index/details", "/face/index/details?action_type=FACE_SEARCH"] {
        let r = s.get(path);
        let list = r.ok(200).as_array().expect("array").clone();
        let mine = list
            .iter()
            .find(|i| i["id"] == g.index_id.as_str())
            .unwrap_or_else(|| panic!("the gallery is not listed: {}", r.text));
        for i in &list {
            let o = i.as_object().expect("index object");
            for f in ["id", "index_name", "index_type", "title", "description"] {
                assert!(o.get(f).is_some_and(Value::is_string), "{f} not a string in {i}");
            }
            assert!(o.get("record_count").is_some_and(Value::is_u64), "record_count is not a whole number in {i}");
            assert!(is_opaque_id(st(i, "id")), "index id {} looks guessable", i["id"]);
        }
        assert_eq!(mine["index_name"], "e2e-gallery");
        assert_eq!(mine["index_type"], "INTERNAL");
        assert_eq!(mine["title"], "e2e-gallery (title)");
        assert_eq!(mine["description"], "e2e test index e2e-gallery");
    }
    s.get("/face/index/details?action_type=OTHER").err(400, "INVALID_PARAMETER");
}

// ---------------------------------------------------------------------------------
// 4. Several indexes, several images: one result per record
// ---------------------------------------------------------------------------------

fn multi_index_search_returns_each_record_once(store: StoreKind) {
    let s = server(store);
    let a = s.create_index_id("e2e-multi-a");
    let b = s.create_index_id("e2e-multi-b");
    let photos = lfw_photos("Jiang_Zemin");
    let in_a = s.enrol_ok(&a, &photos[0], &[("name", "Jiang Zemin (A)")]);
    let in_b = s.enrol_ok(&b, &photos[1], &[("name", "Jiang Zemin (B)")]);
    let a_rid = st(&in_a, "record_id").to_string();
    let b_rid = st(&in_b, "record_id").to_string();
    // A second image for the record in A.
    let r = s.add_image(&a, &a_rid, &photos[2]);
    let rec = r.ok(201);
    assert_eq!(rec["record_id"], a_rid.as_str());
    let a_images: Vec<String> =
        rec["image_ids"].as_array().expect("image_ids").iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(a_images.len(), 2, "{}", r.text);
    assert_eq!(s.record_count(&a), 1, "an extra image is not an extra record");
    // Another person in A, to be sure the person is not matched twice in some way.
    s.enrol_ok(&a, &lfw_photos("Steve_Lavin")[0], &[("name", "Steve Lavin")]);

    let probe = &photos[3];
    let params = [("perform_liveness_check", "false"), ("max_results", "10")];
    let matches = s.search_ok(&[&a, &b], probe, &params);
    assert_sorted(&matches);
    let jiang: Vec<&Value> =
        matches.iter().filter(|m| m["record_id"] == a_rid.as_str() || m["record_id"] == b_rid.as_str()).collect();
    assert_eq!(jiang.len(), 2, "one match per record across both indexes: {matches:#?}");
    let names: HashSet<&str> = jiang.iter().map(|m| st(m, "index_name")).collect();
    assert_eq!(names, HashSet::from(["e2e-multi-a", "e2e-multi-b"]));
    for m in &jiang {
        assert_match_shape(m);
        assert!(score(m) >= DEFAULT_MIN_SCORE);
    }
    let from_a = jiang.iter().find(|m| m["index_name"] == "e2e-multi-a").unwrap();
    assert_eq!(from_a["record_id"], a_rid.as_str());
    assert_eq!(from_a["name"], "Jiang Zemin (A)");
    assert!(
        a_images.iter().any(|i| from_a["match_image_id"] == i.as_str()),
        "match_image_id is one of the record's images"
    );
    let from_b = jiang.iter().find(|m| m["index_name"] == "e2e-multi-b").unwrap();
    assert_eq!(from_b["record_id"], b_rid.as_str());
    assert_eq!(from_b["match_image_id"], in_b["image_ids"][0]);

    // The record with two images appears once even with every candidate listed.
    let all = s.search_ok(
        &[&a],
        probe,
        &[("perform_liveness_check", "false"), ("min_match_score", "0"), ("max_results", "100")],
    );
    let ids: Vec<&str> = all.iter().map(|m| st(m, "record_id")).collect();
    assert_eq!(ids.len(), 2, "two records in A, two results: {all:#?}");
    assert_eq!(ids.iter().filter(|i| **i == a_rid).count(), 1);

    // Naming an index twice does not duplicate its results.
    let twice = s.search_ok(&[&b, &b], probe, &params);
    assert_eq!(twice.len(), 1, "{twice:#?}");
    // Only B: only B's record.
    let only_b = s.search_ok(&[&b], probe, &params);
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0]["record_id"], b_rid.as_str());
}

// ---------------------------------------------------------------------------------
// 5. max_results and min_match_score
// ---------------------------------------------------------------------------------

fn max_results_and_min_match_score_shape_the_result_list(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    let p = g.person("John_Bolton");
    let probe = &p.probes[0];
    let off = ("perform_liveness_check", "false");

    // max_results=1 keeps the best one.
    let one = s.search_ok(&[&g.index_id], probe, &[off, ("min_match_score", "0"), ("max_results", "1")]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["record_id"], p.record_id.as_str());

    // min_match_score=0: every candidate, strangers included at low scores.
    let all = s.search_ok(&[&g.index_id], probe, &[off, ("min_match_score", "0"), ("max_results", "100")]);
    assert_eq!(all.len(), g.people.len(), "{all:#?}");
    assert!(all.iter().all(|m| score(m) >= 0.0));
    assert_sorted(&all);
    assert_eq!(all[0]["record_id"], p.record_id.as_str());
    let strangers: Vec<f64> = all[1..].iter().map(score).collect();
    assert!(
        strangers.iter().all(|&x| x < DEFAULT_MIN_SCORE),
        "other people scored at or above the default threshold: {strangers:?}"
    );
    eprintln!("John Bolton probe: own score {}, other people {strangers:?}", score(&all[0]));

    // The default max_results is 5.
    let default_max = s.search_ok(&[&g.index_id], probe, &[off, ("min_match_score", "0")]);
    assert_eq!(default_max.len(), 5, "default max_results is 5");
    assert_eq!(
        default_max.iter().map(|m| m["record_id"].clone()).collect::<Vec<_>>(),
        all[..5].iter().map(|m| m["record_id"].clone()).collect::<Vec<_>>(),
        "max_results truncates the same ranking"
    );

    // The default min_match_score is 70.
    let default_min = s.search_ok(&[&g.index_id], probe, &[off, ("max_results", "100")]);
    let want: Vec<&Value> = all.iter().filter(|m| score(m) >= DEFAULT_MIN_SCORE).collect();
    assert_eq!(default_min.len(), want.len(), "default min_match_score is 70");
    assert!(default_min.iter().all(|m| score(m) >= DEFAULT_MIN_SCORE));

    // A threshold between the genuine score and the strangers' keeps only the genuine.
    let mid = format!("{}", (score(&all[0]) + score(&all[1])) / 2.0);
    let between = s.search_ok(&[&g.index_id], probe, &[off, ("min_match_score", &mid), ("max_results", "100")]);
    assert_eq!(between.len(), 1);
    // Just at the (rounded) genuine score it still matches; just above, it does not.
    let at = format!("{:.3}", score(&all[0]) - 0.005);
    let kept = s.search_ok(&[&g.index_id], probe, &[off, ("min_match_score", &at)]);
    assert_eq!(kept.len(), 1, "match_score >= min_match_score is kept");
    let above = format!("{:.3}", score(&all[0]) + 0.006);
    if score(&all[0]) + 0.006 <= 100.0 {
        let dropped = s.search_ok(&[&g.index_id], probe, &[off, ("min_match_score", &above)]);
        assert!(dropped.is_empty(), "a score below min_match_score is dropped: {dropped:#?}");
    }

    // min_match_score=100: nothing short of a perfect score.
    let hundred = s.search_ok(&[&g.index_id], probe, &[off, ("min_match_score", "100")]);
    assert!(hundred.iter().all(|m| score(m) >= 100.0), "{hundred:#?}");
    eprintln!("min_match_score=100 gave {} results for a different photo", hundred.len());
    assert!(hundred.is_empty(), "a different photo scored 100: {hundred:#?}");
    // The enrolled photo itself is the one probe that can reach the top of the scale.
    let same = s.search_ok(&[&g.index_id], &p.enrolled, &[off, ("min_match_score", "0"), ("max_results", "1")]);
    assert_eq!(same[0]["record_id"], p.record_id.as_str());
    assert!(score(&same[0]) >= score(&all[0]), "the enrolled photo scores at least as high");
}

// ---------------------------------------------------------------------------------
// 6. Errors
// ---------------------------------------------------------------------------------

fn credentials_are_required_everywhere_but_health(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    let realm = "Basic realm=\"facesearch\"";
    let c = s.http();
    let form = || {
        Form::new()
            .part("source_image", common::file_part(&lfw_photos("John_Bolton")[1]))
            .text("target_index_ids", g.index_id.clone())
    };
    let requests = [
        ("GET details", c.get(s.url("/face/index/details"))),
        ("POST search", common::with_form(c.post(s.url("/face/search")), form())),
        ("GET download", c.get(s.url(&format!("/media/file/download/{}", g.people[0].image_id)))),
        ("POST index", c.post(s.url("/face/index")).json(&json!({"index_name": "e2e-anon"}))),
        ("GET index", c.get(s.url(&format!("/face/index/{}", g.index_id)))),
        ("GET records", c.get(s.url(&format!("/face/index/{}/records", g.index_id)))),
    ];
    for (what, req) in requests {
        let r = s.send(format!("anonymous {what}"), req);
        r.err(401, "UNAUTHORIZED");
        assert_eq!(r.header("www-authenticate"), Some(realm), "{what}");
    }
    let bad_credentials = [(ADMIN_USER, "wrong-password"), ("nobody", ADMIN_PASSWORD), (ADMIN_USER, "")];
    for (user, pw) in bad_credentials {
        for (what, req) in [
            ("GET details", c.get(s.url("/face/index/details"))),
            ("POST search", common::with_form(c.post(s.url("/face/search")), form())),
        ] {
            let r = s.send(format!("{what} as {user}:{pw}"), req.basic_auth(user, Some(pw)));
            r.err(401, "UNAUTHORIZED");
            assert_eq!(r.header("www-authenticate"), Some(realm));
        }
    }
    for header in ["Bearer abc", "Basic !!!not-base64", "Basic YWRtaW4="] {
        let r = s.send(
            format!("GET details with Authorization: {header}"),
            c.get(s.url("/face/index/details")).header("authorization", header),
        );
        r.err(401, "UNAUTHORIZED");
        assert_eq!(r.header("www-authenticate"), Some(realm));
    }
    // Nothing was created by the anonymous POST.
    assert!(!s.details().iter().any(|i| i["index_name"] == "e2e-anon"));
    // Health endpoints need no credentials.
    for path in ["/healthz", "/readyz"] {
        let r = s.send(format!("anonymous GET {path}"), c.get(s.url(path)));
        r.ok(200);
    }
}

fn search_parameters_are_validated(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    let photo = eval("deepface/img14.jpg");
    let idx = g.index_id.as_str();
    let off = ("perform_liveness_check", "false");

    // Unknown index, alone or next to a known one: 404 naming it.
    for ids in [vec!["no-such-index"], vec![idx, "no-such-index"]] {
        let r = s.search(&ids, &photo, &[off]);
        let e = r.err(404, "INDEX_NOT_FOUND");
        assert!(
            st(e, "message").contains("no-such-index") || e["index_id"] == "no-such-index",
            "the error names the unknown index: {}",
            r.text
        );
    }
    // Empty target list.
    for ids in ["", " ", " , ,"] {
        s.search(&[ids], &photo, &[off]).err(400, "INVALID_PARAMETER");
    }
    // min_match_score out of range or not a number.
    for v in ["abc", "-1", "101", "100.01", "NaN", "inf", "1,5"] {
        let r = s.search(&[idx], &photo, &[off, ("min_match_score", v)]);
        r.err(400, "INVALID_PARAMETER");
    }
    // max_results below 1, above the cap (100 by default), or not a whole number.
    for v in ["0", "101", "-1", "abc", "2.5", "1e3"] {
        let r = s.search(&[idx], &photo, &[off, ("max_results", v)]);
        r.err(400, "INVALID_PARAMETER");
    }
    // The bounds themselves are fine.
    for (k, v) in [
        ("min_match_score", "0"),
        ("min_match_score", "100"),
        ("min_match_score", "70.5"),
        ("max_results", "1"),
        ("max_results", "100"),
    ] {
        s.search(&[idx], &photo, &[off, (k, v)]).ok(200);
    }
    // perform_liveness_check must be a boolean.
    for v in ["maybe", "yes", "2"] {
        let r = s.search(&[idx], &photo, &[("perform_liveness_check", v)]);
        r.err(400, "INVALID_PARAMETER");
    }
    // More indexes than a search may name.
    let many: Vec<String> = (0..101).map(|i| format!("idx-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    s.search(&many, &photo, &[off]).err(400, "INVALID_PARAMETER");
}

fn search_requires_its_fields(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    // No source_image.
    let form = Form::new().text("target_index_ids", g.index_id.clone());
    let e = s.post_form("/face/search?perform_liveness_check=false", form).err(400, "MISSING_FIELD").clone();
    assert!(e.to_string().contains("source_image"), "{e}");
    // No target_index_ids.
    let form = Form::new().part("source_image", common::file_part(&eval("deepface/img14.jpg")));
    let e = s.post_form("/face/search?perform_liveness_check=false", form).err(400, "MISSING_FIELD").clone();
    assert!(e.to_string().contains("target_index_ids"), "{e}");
    // source_image as a text field rather than a file.
    let form = Form::new().text("source_image", "not a file").text("target_index_ids", g.index_id.clone());
    s.post_form("/face/search?perform_liveness_check=false", form).error_shape(400);
    // A well-formed multipart body with no fields at all.
    let r = s.send(
        "POST /face/search empty multipart",
        s.http()
            .post(s.url("/face/search"))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body("--XyZ--\r\n"),
    );
    r.err(400, "MISSING_FIELD");
}

fn search_refuses_bad_images_and_bodies(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    let idx = g.index_id.as_str();
    let off = ("perform_liveness_check", "false");
    // A photo without a face.
    s.search(&[idx], &eval("compreface/sample_images/017_0.jpg"), &[off]).err(422, "NO_FACE_DETECTED");
    // ... also with liveness on: there is no face to judge.
    s.search(&[idx], &eval("compreface/sample_images/017_0.jpg"), &[]).err(422, "NO_FACE_DETECTED");
    // Corrupt, truncated and empty files.
    for f in [
        "compreface/format_tests/corrupted.png",
        "compreface/format_tests/truncated.jpg",
        "compreface/format_tests/empty.png",
    ] {
        s.search(&[idx], &eval(f), &[off]).err(400, "INVALID_IMAGE");
    }
    // Bytes that are no image at all, and a zero-length upload.
    s.search_bytes(&[idx], b"this is not an image".to_vec(), "x.jpg", &[off]).err(400, "INVALID_IMAGE");
    s.search_bytes(&[idx], Vec::new(), "x.jpg", &[off]).err(400, "INVALID_IMAGE");
    // A JPEG header followed by garbage.
    let mut fake = vec![0xFF, 0xD8, 0xFF, 0xE0];
    fake.extend(std::iter::repeat_n(0x5A, 4000));
    s.search_bytes(&[idx], fake, "x.jpg", &[off]).err(400, "INVALID_IMAGE");
    // A JSON body instead of multipart.
    s.post_json("/face/search", &json!({"target_index_ids": idx})).err(415, "UNSUPPORTED_MEDIA_TYPE");
    // Plain text.
    let r = s.send(
        "POST /face/search text/plain",
        s.http()
            .post(s.url("/face/search"))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .header("content-type", "text/plain")
            .body("hello"),
    );
    r.err(415, "UNSUPPORTED_MEDIA_TYPE");
    // A multipart body that ends in the middle.
    let r = s.send(
        "POST /face/search broken multipart",
        s.http()
            .post(s.url("/face/search"))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body("--XyZ\r\nContent-Disposition: form-data; name=\"target_index_ids\"\r\n\r\nabc"),
    );
    r.error_shape(400);
}

fn unknown_routes_and_methods_get_json_errors(store: StoreKind) {
    let s = server(store);
    for path in ["/nope", "/face/nope", "/face/search/extra", "/media/file/download/"] {
        let r = s.get(path);
        assert_eq!(r.status, 404, "GET {path}: {}", r.text);
        r.error_shape(404);
    }
    let r =
        s.send("PUT /face/search", s.http().put(s.url("/face/search")).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)));
    r.error_shape(405);
    // Unknown index and record ids on the management routes.
    s.get("/face/index/no-such-index").err(404, "INDEX_NOT_FOUND");
    s.get("/face/index/no-such-index/records").err(404, "INDEX_NOT_FOUND");
    s.delete("/face/index/no-such-index").err(404, "INDEX_NOT_FOUND");
    s.patch_json("/face/index/no-such-index", &json!({"title": "x"})).err(404, "INDEX_NOT_FOUND");
    s.enrol("no-such-index", &eval("deepface/img14.jpg"), &[]).err(404, "INDEX_NOT_FOUND");
    let g = gallery(store);
    s.get(&format!("/face/index/{}/records/no-such-record", g.index_id)).err(404, "RECORD_NOT_FOUND");
    s.delete(&format!("/face/index/{}/records/no-such-record", g.index_id)).err(404, "RECORD_NOT_FOUND");
    s.patch_json(&format!("/face/index/{}/records/no-such-record", g.index_id), &json!({"name": "x"}))
        .err(404, "RECORD_NOT_FOUND");
    s.add_image(&g.index_id, "no-such-record", &eval("deepface/img14.jpg")).err(404, "RECORD_NOT_FOUND");
}

fn refused_enrolments_store_nothing(store: StoreKind) {
    let s = server(store);
    let idx = s.create_index_id("e2e-refusals");
    let check_empty = |what: &str| {
        assert_eq!(s.record_count(&idx), 0, "after {what}");
        let page = s.get(&format!("/face/index/{idx}/records")).ok(200).clone();
        assert_eq!(page["records"], json!([]), "after {what}");
    };
    // No face.
    s.enrol(&idx, &eval("compreface/sample_images/017_0.jpg"), &[("name", "nobody")]).err(422, "NO_FACE_DETECTED");
    check_empty("no face");
    // Several faces of similar size.
    for f in ["compreface/sample_images/010_2.jpg", "deepface/couple.jpg"] {
        s.enrol(&idx, &eval(f), &[("name", "two people")]).err(422, "MULTIPLE_FACES");
        check_empty(f);
    }
    // A face too small to enrol.
    s.enrol(&idx, &eval("derived/deepface_img1/tiny_48px.jpg"), &[("name", "tiny")]).err(422, "LOW_QUALITY_FACE");
    check_empty("tiny face");
    // Corrupt image.
    s.enrol(&idx, &eval("compreface/format_tests/truncated.jpg"), &[]).err(400, "INVALID_IMAGE");
    check_empty("corrupt image");
    // Invalid fields, with a good photo.
    let good = eval("deepface/img14.jpg");
    for (k, v) in [
        ("dob", "15/01/1990"),
        ("dob", "1990-02-30"),
        ("dob", "yesterday"),
        ("nationality", "India"),
        ("nationality", "in"),
        ("nationality", "XYZ"),
    ] {
        let r = s.enrol(&idx, &good, &[("name", "Mark"), (k, v)]);
        let e = r.err(400, "INVALID_PARAMETER");
        assert!(e.to_string().contains(k), "the error names {k}: {}", r.text);
    }
    check_empty("invalid fields");
    // No image at all.
    let form = Form::new().text("name", "no photo");
    s.post_form(&format!("/face/index/{idx}/records"), form).err(400, "MISSING_FIELD");
    // A JSON body.
    s.post_json(&format!("/face/index/{idx}/records"), &json!({"name": "x"})).err(415, "UNSUPPORTED_MEDIA_TYPE");
    check_empty("missing image");
    // Adding a face-less image to an existing record stores nothing either.
    let rec = s.enrol_ok(&idx, &good, &[("name", "Mark")]);
    let rid = st(&rec, "record_id");
    s.add_image(&idx, rid, &eval("compreface/sample_images/017_0.jpg")).err(422, "NO_FACE_DETECTED");
    s.add_image(&idx, rid, &eval("deepface/couple.jpg")).err(422, "MULTIPLE_FACES");
    let after = s.get(&format!("/face/index/{idx}/records/{rid}")).ok(200).clone();
    assert_eq!(after["image_ids"], rec["image_ids"], "no image was added");
    assert_eq!(s.record_count(&idx), 1);
}

fn index_creation_is_validated(store: StoreKind) {
    let s = server(store);
    let first = s.create_index("e2e-dup-name");
    assert_eq!(first["record_count"], 0);
    assert_eq!(first["index_type"], "INTERNAL");
    assert!(is_opaque_id(st(&first, "id")));
    let r = s.post_json("/face/index", &json!({"index_name": "e2e-dup-name"}));
    r.err(409, "INDEX_NAME_TAKEN");
    assert_eq!(s.details().iter().filter(|i| i["index_name"] == "e2e-dup-name").count(), 1);
    s.post_json("/face/index", &json!({"index_name": ""})).err(400, "INVALID_PARAMETER");
    s.post_json("/face/index", &json!({"index_name": "e2e-bad-type", "index_type": "OTHER"}))
        .err(400, "INVALID_PARAMETER");
    s.post_json("/face/index", &json!({"title": "no name"})).error_shape(400);
    s.post_json("/face/index", &json!({"index_name": "e2e-x", "bogus": 1})).error_shape(400);
    let r = s.send(
        "POST /face/index malformed JSON",
        s.http()
            .post(s.url("/face/index"))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .header("content-type", "application/json")
            .body("{\"index_name\":"),
    );
    r.error_shape(400);
    let r = s.post_form("/face/index", Form::new().text("index_name", "e2e-form"));
    r.err(415, "UNSUPPORTED_MEDIA_TYPE");
    // An EXTERNAL index can be created by the admin.
    let ext =
        s.post_json("/face/index", &json!({"index_name": "e2e-external", "index_type": "EXTERNAL"})).ok(201).clone();
    assert_eq!(ext["index_type"], "EXTERNAL");
}

fn limits_server(store: StoreKind) -> Server {
    Server::start_with(ServerOptions::default().store(store).args(&[
        "--max-image-bytes",
        "100000",
        "--max-image-pixels",
        "10000",
    ]))
}

fn oversize_images_are_refused_with_413(store: StoreKind) {
    let s = limits_server(store);
    let idx = s.create_index_id("e2e-limits");
    let off = [("perform_liveness_check", "false")];
    // 347 KB: above the 100,000-byte image limit.
    let photo = eval("deepface/img2.jpg");
    assert!(std::fs::metadata(&photo).unwrap().len() > 100_000);
    s.search(&[&idx], &photo, &off).err(413, "IMAGE_TOO_LARGE");
    s.enrol(&idx, &photo, &[("name", "too big")]).err(413, "IMAGE_TOO_LARGE");
    // 9 KB but 250×250 pixels, more than 10,000.
    let small_file = lfw_photos("John_Bolton").remove(0);
    assert!(std::fs::metadata(&small_file).unwrap().len() < 100_000);
    s.search(&[&idx], &small_file, &off).err(413, "IMAGE_TOO_LARGE");
    s.enrol(&idx, &small_file, &[("name", "too many pixels")]).err(413, "IMAGE_TOO_LARGE");
    assert_eq!(s.record_count(&idx), 0, "nothing stored");
}

/// A client that uploads a photo far beyond the limit (2.3 MB against 100 KB) must
/// get the 413 (or, without credentials, the 401) as a JSON response, not a reset
/// connection: the server must not close the connection under a client that is still
/// sending. The failure is intermittent (it depends on how far the upload got when
/// the server closed), so the request is repeated on fresh connections.
fn refused_large_uploads_still_get_their_json_response(store: StoreKind) {
    const TRIES: usize = 25;
    let s = limits_server(store);
    let idx = s.create_index_id("e2e-large-upload");
    let photo = eval("deepface/img1.jpg");
    assert!(std::fs::metadata(&photo).unwrap().len() > 2_000_000);
    let bytes = common::read(&photo);
    let form = |field: &str| {
        Form::new()
            .part(field.to_string(), Part::bytes(bytes.clone()).file_name("img1.jpg"))
            .text("target_index_ids", idx.clone())
    };
    let mut failures = Vec::new();
    for (what, field, path, auth, status, code) in [
        (
            "search",
            "source_image",
            "/face/search?perform_liveness_check=false".to_string(),
            true,
            413,
            "IMAGE_TOO_LARGE",
        ),
        ("enrol", "image", format!("/face/index/{idx}/records"), true, 413, "IMAGE_TOO_LARGE"),
        ("anonymous search", "source_image", "/face/search".to_string(), false, 401, "UNAUTHORIZED"),
    ] {
        let mut resets = 0;
        for _ in 0..TRIES {
            // A new client each time: a fresh connection per try.
            let client = reqwest::blocking::Client::new();
            let mut req = common::with_form(client.post(s.url(&path)), form(field));
            if auth {
                req = req.basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD));
            }
            match req.send() {
                Ok(resp) => {
                    let got = resp.status().as_u16();
                    let body: Value = resp.json().unwrap_or(Value::Null);
                    assert_eq!(got, status, "{what}: {body}");
                    assert_eq!(body["error"]["code"], code, "{what}: {body}");
                }
                Err(e) => {
                    resets += 1;
                    eprintln!("{what}: no response: {e:?}");
                }
            }
        }
        eprintln!("{what} of a 2.3 MB photo: {resets}/{TRIES} got no HTTP response");
        if resets > 0 {
            failures.push(format!("{what}: {resets}/{TRIES} tries got no {status} response"));
        }
    }
    assert!(failures.is_empty(), "connection closed before the client could read the error: {failures:?}");
    assert_eq!(s.record_count(&idx), 0);
}

fn max_results_cap_is_configurable(store: StoreKind) {
    // Uses its own server only to check a configured cap; the default cap (100) is
    // checked in search_parameters_are_validated.
    let s = Server::start_with(ServerOptions::default().store(store).args(&["--max-results-cap", "3"]));
    let idx = s.create_index_id("e2e-cap");
    let photo = eval("deepface/img14.jpg");
    let off = ("perform_liveness_check", "false");
    s.search(&[&idx], &photo, &[off, ("max_results", "3")]).ok(200);
    s.search(&[&idx], &photo, &[off, ("max_results", "4")]).err(400, "INVALID_PARAMETER");
}

// ---------------------------------------------------------------------------------
// 7. Download
// ---------------------------------------------------------------------------------

fn decode_download(r: &common::Resp, file_id: &str) -> Vec<u8> {
    let d = r.ok(200);
    assert_eq!(d["file_id"], file_id, "{}", r.text);
    assert!(d["file_name"].is_string(), "file_name is a string");
    assert!(d["file_type"].is_string(), "file_type is a string");
    base64::engine::general_purpose::STANDARD.decode(st(d, "file_base64")).expect("file_base64 is standard base64")
}

fn download_returns_exactly_the_enrolled_bytes(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    // Every gallery image, as enrolled (including the 2.3 MB deepface/img1.jpg).
    for p in &g.people {
        let r = s.download(&p.image_id);
        let bytes = decode_download(&r, &p.image_id);
        assert!(bytes == common::read(&p.enrolled), "{}: downloaded bytes differ", p.identity);
        assert_eq!(r.json["response"]["file_type"], "image/jpeg");
    }
    // The match_image_id of a search downloads the same way.
    let p = g.person("Mark_Zuckerberg");
    let m = s.search_ok(&[&g.index_id], &p.probes[0], &no_liveness());
    let id = st(&m[0], "match_image_id").to_string();
    assert_eq!(id, p.image_id);
    let bytes = decode_download(&s.download(&id), &id);
    assert!(bytes == common::read(&p.enrolled));

    // A PNG keeps its bytes and its type.
    let idx = s.create_index_id("e2e-download");
    let png = eval("compreface/format_tests/einstein.png");
    let rec = s.enrol_ok(&idx, &png, &[("name", "Albert Einstein")]);
    let pid = rec["image_ids"][0].as_str().unwrap().to_string();
    let r = s.download(&pid);
    assert!(decode_download(&r, &pid) == common::read(&png));
    assert_eq!(r.json["response"]["file_type"], "image/png");

    // Unknown ids.
    for id in ["no-such-file", "00000000-0000-0000-0000-000000000000", &p.record_id] {
        s.download(id).err(404, "FILE_NOT_FOUND");
    }
}

fn photos_in_other_formats_and_orientations_are_understood(store: StoreKind) {
    let s = server(store);
    let g = gallery(store);
    let aj = g.person("Angelina_Jolie");
    for f in [
        "exif_orientation_3.jpg",
        "exif_orientation_6.jpg",
        "exif_orientation_8.jpg",
        "gray.jpg",
        "cmyk.jpg",
        "progressive.jpg",
        "rgba.png",
        "lossy.webp",
    ] {
        let m = s.search_ok(&[&g.index_id], &eval(&format!("derived/deepface_img1/{f}")), &no_liveness());
        assert!(!m.is_empty(), "{f}: no match");
        assert_eq!(m[0]["record_id"], aj.record_id.as_str(), "{f}");
    }
    let idx = s.create_index_id("e2e-formats");
    let rec = s.enrol_ok(&idx, &eval("compreface/format_tests/einstein.jpeg"), &[("name", "Einstein")]);
    for ext in ["png", "bmp", "webp", "gif", "tiff"] {
        let m = s.search_ok(&[&idx], &eval(&format!("compreface/format_tests/einstein.{ext}")), &no_liveness());
        assert_eq!(m.len(), 1, "{ext}");
        assert_eq!(m[0]["record_id"], rec["record_id"], "{ext}");
    }
}

// ---------------------------------------------------------------------------------
// 8. Record and index lifecycle
// ---------------------------------------------------------------------------------

fn record_count_follows_enrolments_and_deletes(store: StoreKind) {
    let s = server(store);
    let idx = s.create_index_id("e2e-lifecycle");
    assert_eq!(s.record_count(&idx), 0);
    let people = ["Naoto_Kan", "Sergey_Lavrov", "Kamal_Kharrazi"];
    let mut recs = Vec::new();
    for (i, name) in people.iter().enumerate() {
        let rec = s.enrol_ok(&idx, &lfw_photos(name)[0], &[("name", name)]);
        assert!(is_opaque_id(st(&rec, "record_id")));
        assert_eq!(rec["index_id"], idx.as_str());
        assert_eq!(s.record_count(&idx), i as u64 + 1);
        recs.push(rec);
    }
    let off = no_liveness();
    // Everyone is found before the delete.
    for (name, rec) in people.iter().zip(&recs) {
        let m = s.search_ok(&[&idx], &lfw_photos(name)[1], &off);
        assert_eq!(m.first().map(|m| &m["record_id"]), Some(&rec["record_id"]), "{name}");
    }
    // Delete the second.
    let gone = &recs[1];
    let rid = st(gone, "record_id");
    let image = gone["image_ids"][0].as_str().unwrap();
    s.download(image).ok(200);
    let r = s.delete(&format!("/face/index/{idx}/records/{rid}"));
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty(), "204 has no body");
    assert_eq!(s.record_count(&idx), 2);
    s.get(&format!("/face/index/{idx}/records/{rid}")).err(404, "RECORD_NOT_FOUND");
    s.delete(&format!("/face/index/{idx}/records/{rid}")).err(404, "RECORD_NOT_FOUND");
    s.download(image).err(404, "FILE_NOT_FOUND");
    // It no longer matches, not even at score 0; the others still do.
    let m = s.search_ok(
        &[&idx],
        &lfw_photos(people[1])[1],
        &[("perform_liveness_check", "false"), ("min_match_score", "0"), ("max_results", "100")],
    );
    assert_eq!(m.len(), 2, "{m:#?}");
    assert!(m.iter().all(|x| x["record_id"] != rid));
    assert!(s.search_ok(&[&idx], &lfw_photos(people[1])[1], &off).is_empty());
    for i in [0, 2] {
        let m = s.search_ok(&[&idx], &lfw_photos(people[i])[1], &off);
        assert_eq!(m.first().map(|m| &m["record_id"]), Some(&recs[i]["record_id"]));
    }
    // Enrolling again after the delete counts again.
    s.enrol_ok(&idx, &lfw_photos(people[1])[0], &[("name", "again")]);
    assert_eq!(s.record_count(&idx), 3);
}

fn deleting_an_index_removes_it_everywhere(store: StoreKind) {
    let s = server(store);
    let idx = s.create_index_id("e2e-doomed");
    let keep = s.create_index_id("e2e-kept");
    let photos = lfw_photos("Vicente_Fernandez");
    let rec = s.enrol_ok(&idx, &photos[0], &[("name", "Vicente")]);
    let kept = s.enrol_ok(&keep, &photos[0], &[("name", "Vicente (kept)")]);
    let image = rec["image_ids"][0].as_str().unwrap().to_string();
    let r = s.delete(&format!("/face/index/{idx}"));
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    s.index(&idx).err(404, "INDEX_NOT_FOUND");
    assert!(!s.details().iter().any(|i| i["id"] == idx.as_str()));
    let e = s.search(&[&idx], &photos[1], &no_liveness()).err(404, "INDEX_NOT_FOUND").clone();
    assert!(e.to_string().contains(&idx));
    s.search(&[&keep, &idx], &photos[1], &no_liveness()).err(404, "INDEX_NOT_FOUND");
    s.download(&image).err(404, "FILE_NOT_FOUND");
    s.get(&format!("/face/index/{idx}/records")).err(404, "INDEX_NOT_FOUND");
    s.enrol(&idx, &photos[0], &[]).err(404, "INDEX_NOT_FOUND");
    s.delete(&format!("/face/index/{idx}")).err(404, "INDEX_NOT_FOUND");
    // The other index is untouched.
    let m = s.search_ok(&[&keep], &photos[1], &no_liveness());
    assert_eq!(m[0]["record_id"], kept["record_id"]);
    assert_eq!(s.record_count(&keep), 1);
    // The name is free again.
    s.create_index("e2e-doomed");
}

fn a_reference_makes_enrolment_idempotent(store: StoreKind) {
    let s = server(store);
    let idx = s.create_index_id("e2e-reference");
    let photos = lfw_photos("Spencer_Abraham");
    let fields = [("name", "Spencer Abraham"), ("reference", "client-42")];
    let first = s.enrol(&idx, &photos[0], &fields);
    let a = first.ok(201).clone();
    assert_eq!(a["reference"], "client-42");
    let second = s.enrol(&idx, &photos[0], &fields);
    let b = second.ok(200).clone();
    assert_eq!(a["record_id"], b["record_id"]);
    assert_eq!(a["image_ids"], b["image_ids"]);
    // Even with another photo, the reference names the existing record.
    let third = s.enrol(&idx, &photos[1], &[("name", "other"), ("reference", "client-42")]);
    let c = third.ok(200).clone();
    assert_eq!(c["record_id"], a["record_id"]);
    assert_eq!(c["name"], "Spencer Abraham", "the existing record is returned unchanged");
    assert_eq!(s.record_count(&idx), 1);
    // A different reference is a new record.
    s.enrol(&idx, &photos[1], &[("reference", "client-43")]).ok(201);
    assert_eq!(s.record_count(&idx), 2);
    // The same reference in another index is independent.
    let other = s.create_index_id("e2e-reference-2");
    s.enrol(&other, &photos[0], &fields).ok(201);
    assert_eq!(s.record_count(&other), 1);
}

fn records_are_listed_page_by_page(store: StoreKind) {
    let s = server(store);
    let idx = s.create_index_id("e2e-paging");
    let people = ["Rick_Perry", "Roy_Moore", "Pedro_Malan", "Marcelo_Rios", "Yoriko_Kawaguchi"];
    let mut want = HashSet::new();
    for name in people {
        let rec = s.enrol_ok(&idx, &lfw_photos(name)[0], &[("name", name)]);
        want.insert(st(&rec, "record_id").to_string());
    }
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            None => format!("/face/index/{idx}/records?limit=2"),
            Some(c) => format!("/face/index/{idx}/records?limit=2&cursor={c}"),
        };
        let page = s.get(&path).ok(200).clone();
        let records = page["records"].as_array().expect("records array");
        sizes.push(records.len());
        for r in records {
            for f in
                ["record_id", "index_id", "name", "dob", "nationality", "gender", "id_no", "address", "additional_info"]
            {
                assert!(r[f].is_string(), "{f} in {r}");
            }
            assert!(r["watch_list"].is_array() && r["image_ids"].is_array());
            got.push(st(r, "record_id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => {
                assert!(page["next_cursor"].is_null(), "{page}");
                cursor = None;
                break;
            }
        }
    }
    assert!(cursor.is_none(), "paging never ended");
    assert_eq!(sizes, vec![2, 2, 1], "pages of at most 2");
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), unique.len(), "no record listed twice: {got:?}");
    assert_eq!(unique, want);
    // A bad limit or cursor is a 400.
    for q in ["limit=0", "limit=abc", "cursor=not-a-cursor"] {
        s.get(&format!("/face/index/{idx}/records?{q}")).err(400, "INVALID_PARAMETER");
    }
}

fn records_and_indexes_can_be_patched(store: StoreKind) {
    let s = server(store);
    let idx = s.create_index_id("e2e-patch");
    let photos = lfw_photos("Tommy_Haas");
    let rec = s.enrol_ok(&idx, &photos[0], &[("name", "Before"), ("nationality", "BR"), ("reference", "p-1")]);
    let rid = st(&rec, "record_id").to_string();
    let path = format!("/face/index/{idx}/records/{rid}");
    let patched = s
        .patch_json(
            &path,
            &json!({
                "name": "After",
                "dob": "1945-10-27",
                "watch_list": ["sanctions", "pep"],
                "additional_info": "updated",
            }),
        )
        .ok(200)
        .clone();
    assert_eq!(patched["name"], "After");
    assert_eq!(patched["dob"], "1945-10-27");
    assert_eq!(patched["nationality"], "BR", "fields not in the patch are kept");
    assert_eq!(patched["watch_list"], json!(["sanctions", "pep"]));
    assert_eq!(patched["image_ids"], rec["image_ids"]);
    let fetched = s.get(&path).ok(200).clone();
    assert_eq!(fetched["name"], "After");
    assert_eq!(fetched["additional_info"], "updated");
    // Search shows the new data.
    let m = s.search_ok(&[&idx], &photos[1], &no_liveness());
    assert_eq!(m[0]["record_id"], rid.as_str());
    assert_eq!(m[0]["name"], "After");
    assert_eq!(m[0]["dob"], "1945-10-27");
    assert_eq!(m[0]["watch_list"], json!(["sanctions", "pep"]));
    // Refusals: unknown field, invalid values, wrong types, not JSON.
    s.patch_json(&path, &json!({"bogus": "x"})).error_shape(400);
    s.patch_json(&path, &json!({"record_id": "mine"})).error_shape(400);
    s.patch_json(&path, &json!({"nationality": "Brazil"})).err(400, "INVALID_PARAMETER");
    s.patch_json(&path, &json!({"dob": "27.10.1945"})).err(400, "INVALID_PARAMETER");
    s.patch_json(&path, &json!({"watch_list": "pep"})).error_shape(400);
    s.patch_json(&path, &json!({"name": 5})).error_shape(400);
    let r = s.send(
        "PATCH record as text",
        s.http()
            .patch(s.url(&path))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .header("content-type", "text/plain")
            .body("name=x"),
    );
    r.err(415, "UNSUPPORTED_MEDIA_TYPE");
    let unchanged = s.get(&path).ok(200).clone();
    assert_eq!(unchanged["name"], "After", "refused patches change nothing");
    assert_eq!(unchanged["nationality"], "BR");
    // A reference already used by another record of the index is a conflict.
    let other = s.enrol_ok(&idx, &lfw_photos("Vincent_Brooks")[0], &[("reference", "p-2")]);
    let r =
        s.patch_json(&format!("/face/index/{idx}/records/{}", st(&other, "record_id")), &json!({"reference": "p-1"}));
    r.error_shape(409);

    // PATCH the index title and description.
    let ipath = format!("/face/index/{idx}");
    let before = s.index(&idx).ok(200).clone();
    let after = s.patch_json(&ipath, &json!({"title": "New title"})).ok(200).clone();
    assert_eq!(after["title"], "New title");
    assert_eq!(after["description"], before["description"]);
    assert_eq!(after["index_name"], before["index_name"]);
    assert_eq!(after["record_count"], 2);
    let after = s.patch_json(&ipath, &json!({"description": "New description"})).ok(200).clone();
    assert_eq!(after["title"], "New title");
    assert_eq!(after["description"], "New description");
    let listed = s.details().into_iter().find(|i| i["id"] == idx.as_str()).unwrap();
    assert_eq!(listed["title"], "New title");
    assert_eq!(listed["description"], "New description");
    s.patch_json(&ipath, &json!({"index_name": "renamed"})).error_shape(400);
    s.patch_json(&ipath, &json!({"title": 7})).error_shape(400);
    assert_eq!(s.index(&idx).ok(200)["index_name"], "e2e-patch");
}

/// An index whose stored pack this build does not know (a row written by another build
/// sharing the database) neither stops the server starting nor hides the other
/// indexes: it is listed with the pack name it has, searching, writing into or viewing it
/// alone is `409 INDEX_PACK_MISMATCH`, deletes are served, and the other index works.
fn an_index_of_an_unknown_pack_is_listed_and_refused_alone(store: StoreKind) {
    let dir = common::temp_dir();
    let mut options = ServerOptions::default().data_dir(&dir.path().join("data"));
    if store == StoreKind::Postgres {
        options = options.database_url(&facesearch_pgfixture::shared().fresh_database());
    }
    let first = Server::start_with(options.clone());
    let (kept, odd) = (first.create_index_id("e2e-pack-kept"), first.create_index_id("e2e-pack-odd"));
    let photos = lfw_photos("Vicente_Fernandez");
    let person = first.enrol_ok(&kept, &photos[0], &[("name", "Vicente")]);
    let stranded = first.enrol_ok(&odd, &photos[0], &[("name", "Vicente (odd)")]);
    first.stop();

    // And a job moving the kept index to a pack this binary does not know, running as
    // if a newer node sharing the database were running it: it must be left alone.
    let sql = format!(
        "UPDATE indexes SET pack = 'nonesuch' WHERE id = '{odd}'; \
         INSERT INTO reembed_jobs (index_id, id, pack, from_pack, state, requested_by, created_at, updated_at) \
         VALUES ('{kept}', 'job-of-a-newer-node', 'newer', 'open', 'running', 'admin', \
                 '2026-12-05T00:00:00Z', '2026-12-05T00:00:00Z');"
    );
    match &options.database_url {
        Some(url) => {
            let database = url.rsplit('/').next().expect("a database name");
            facesearch_pgfixture::shared().psql(database, &sql).expect("the row is changed");
        }
        None => {
            let file = dir.path().join("data").join(facesearch_store::SQLITE_FILE);
            rusqlite::Connection::open(file).and_then(|c| c.execute_batch(&sql)).expect("the row is changed");
        }
    }

    let s = Server::start_with(options);
    let listed = s.details();
    let pack_of = |id: &str| listed.iter().find(|i| i["id"] == id).map(|i| i["pack"].clone());
    assert_eq!(pack_of(&kept), Some(json!("open")), "{listed:?}");
    assert_eq!(pack_of(&odd), Some(json!("nonesuch")), "{listed:?}");
    // The one index's own view carries the engine's hints (faces searched, the score
    // for a false-match rate), which need a pack it runs: refused like a search.
    s.index(&odd).err(409, "INDEX_PACK_MISMATCH");

    s.search(&[&odd], &photos[1], &no_liveness()).err(409, "INDEX_PACK_MISMATCH");
    s.search(&[&kept, &odd], &photos[1], &no_liveness()).err(409, "INDEX_PACK_MISMATCH");
    s.enrol(&odd, &photos[1], &[("name", "Vicente (again)")]).err(409, "INDEX_PACK_MISMATCH");
    let stranded_id = stranded["record_id"].as_str().expect("record id");
    s.add_image(&odd, stranded_id, &photos[1]).err(409, "INDEX_PACK_MISMATCH");

    let found = s.search_ok(&[&kept], &photos[1], &no_liveness());
    assert_eq!(found[0]["record_id"], person["record_id"]);
    // By now (the server has long been ready) a resumed job would have failed.
    let job = s.get(&format!("/face/index/{kept}/reembed")).ok(200).clone();
    assert_eq!(
        (job["job_id"].as_str(), job["state"].as_str()),
        (Some("job-of-a-newer-node"), Some("running")),
        "{job}"
    );
    assert_eq!(s.delete(&format!("/face/index/{odd}/records/{stranded_id}")).status, 204);
    assert_eq!(s.delete(&format!("/face/index/{odd}")).status, 204);
    s.index(&odd).err(404, "INDEX_NOT_FOUND");
}

on_both_stores!(
    enrolled_people_are_found_first_with_a_passing_score,
    search_with_liveness_on_returns_the_match_for_a_live_photo,
    liveness_refuses_to_judge_a_tight_face_crop,
    strangers_get_an_empty_response_at_the_default_threshold,
    a_match_has_every_published_field_with_the_right_type,
    index_details_lists_indexes_with_the_published_fields,
    multi_index_search_returns_each_record_once,
    max_results_and_min_match_score_shape_the_result_list,
    credentials_are_required_everywhere_but_health,
    search_parameters_are_validated,
    search_requires_its_fields,
    search_refuses_bad_images_and_bodies,
    unknown_routes_and_methods_get_json_errors,
    refused_enrolments_store_nothing,
    index_creation_is_validated,
    oversize_images_are_refused_with_413,
    refused_large_uploads_still_get_their_json_response,
    max_results_cap_is_configurable,
    download_returns_exactly_the_enrolled_bytes,
    photos_in_other_formats_and_orientations_are_understood,
    record_count_follows_enrolments_and_deletes,
    deleting_an_index_removes_it_everywhere,
    a_reference_makes_enrolment_idempotent,
    records_are_listed_page_by_page,
    records_and_indexes_can_be_patched,
    an_index_of_an_unknown_pack_is_listed_and_refused_alone,
);
