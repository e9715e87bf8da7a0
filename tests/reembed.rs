//! Moving an index to another model pack, end to end: the real binary, real models,
//! real LFW photos, over HTTP.
//!
//! An index is filled on the `open` pack and moved to `insightface`. The server is
//! started with the hidden test setting `--reembed-pause-after 3`, which makes the
//! job stop (still `running`) once three images are staged: the interruption happens
//! at a known point, found by polling the job's status, without any timing. The
//! server is then killed with SIGKILL and restarted without the setting; it resumes
//! the job, which finishes. Throughout, every enrolled person is searched: the index
//! must answer at every moment — with the old vectors until the switch, the new ones
//! after — and never be unsearchable.

mod common;

use std::path::{Path, PathBuf};

use common::{Server, ServerOptions, lfw_people, lfw_photos, poll_reembed, temp_dir};
use facesearch_face::Pack;
use facesearch_face::calibration::Calibration;
use facesearch_store::prelude::*;
use facesearch_store::{JobState, SqliteStore};
use serde_json::{Value, json};

/// Images staged before the job pauses in the first server.
const PAUSE_AFTER: u64 = 3;
/// People enrolled before the job starts.
const PEOPLE: usize = 8;

struct Person {
    name: String,
    record_id: String,
    image_id: String,
    enrolled: PathBuf,
    /// Another photo of the same person.
    probe: PathBuf,
}

/// Enrols LFW people with at least two photos (photo 1 enrolled) until `n` are in,
/// skipping people from `skip` and photos the pipeline refuses (e.g. two faces).
fn enrol_people(s: &Server, index_id: &str, n: usize, skip: &[String]) -> Vec<Person> {
    let mut people = Vec::new();
    for name in lfw_people() {
        if people.len() == n {
            break;
        }
        let photos = lfw_photos(&name);
        if photos.len() < 2 || skip.contains(&name) {
            continue;
        }
        let r = s.enrol(index_id, &photos[0], &[("name", &name)]);
        if r.status == 422 {
            continue;
        }
        let record = r.ok(201);
        people.push(Person {
            name: name.clone(),
            record_id: record["record_id"].as_str().expect("record_id").to_string(),
            image_id: record["image_ids"][0].as_str().expect("image id").to_string(),
            enrolled: photos[0].clone(),
            probe: photos[1].clone(),
        });
    }
    assert_eq!(people.len(), n, "not enough LFW people could be enrolled");
    people
}

/// Searches every person with their enrolled photo: each must come first. The index
/// must answer (200) — never be unsearchable.
#[track_caller]
fn all_found_first(s: &Server, index_id: &str, people: &[&Person], when: &str) {
    for p in people {
        let matches = s.search_ok(&[index_id], &p.enrolled, &[("perform_liveness_check", "false")]);
        assert!(!matches.is_empty(), "{when}: {} is not found at all", p.name);
        assert_eq!(matches[0]["record_id"], p.record_id.as_str(), "{when}: {} is not first: {matches:?}", p.name);
    }
}

/// The job object, via `GET /face/index/{id}/reembed`.
fn job(s: &Server, index_id: &str) -> Value {
    s.get(&format!("/face/index/{index_id}/reembed")).ok(200).clone()
}

/// The match of `record_id` when searching with `probe` at `min_match_score` 0.
fn match_of(s: &Server, index_id: &str, probe: &Path, record_id: &str) -> Option<Value> {
    let params = [("perform_liveness_check", "false"), ("min_match_score", "0"), ("max_results", "50")];
    s.search_ok(&[index_id], probe, &params).into_iter().find(|m| m["record_id"] == record_id)
}

fn score_of(m: &Value) -> (f64, f64) {
    (m["match_score"].as_f64().expect("match_score"), m["similarity"].as_f64().expect("similarity"))
}

#[test]
fn a_reembed_interrupted_by_kill_9_resumes_and_switches_with_the_index_always_searchable() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let paused = ServerOptions::default().data_dir(&data).args(&["--reembed-pause-after", &PAUSE_AFTER.to_string()]);
    let s = Server::start_with(paused);
    let index_id = s.create_index_id("reembed-e2e");
    let people = enrol_people(&s, &index_id, PEOPLE, &[]);
    let everyone: Vec<&Person> = people.iter().collect();
    all_found_first(&s, &index_id, &everyone, "before the job");
    // Scores of the other photo of each person under the open pack, for comparison.
    let open_scores: Vec<Option<(f64, f64)>> =
        people.iter().map(|p| match_of(&s, &index_id, &p.probe, &p.record_id).map(|m| score_of(&m))).collect();

    // Only admins move indexes; unknown packs are refused.
    s.post_json(&format!("/face/index/{index_id}/reembed"), &json!({"pack": "nope"})).err(400, "INVALID_PARAMETER");
    s.get(&format!("/face/index/{index_id}/reembed")).err(404, "JOB_NOT_FOUND");

    let started = s.post_json(&format!("/face/index/{index_id}/reembed"), &json!({"pack": "insightface"}));
    let started = started.ok(202).clone();
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!((started["pack"].as_str(), started["from_pack"].as_str()), (Some("insightface"), Some("open")));
    assert_eq!(started["total"], PEOPLE as u64);
    let job_id = started["job_id"].as_str().expect("job_id").to_string();
    // Asking again while it runs returns the same job; another pack is refused.
    let again = s.post_json(&format!("/face/index/{index_id}/reembed"), &json!({"pack": "insightface"}));
    assert_eq!(again.ok(202)["job_id"], job_id.as_str());
    s.post_json(&format!("/face/index/{index_id}/reembed"), &json!({"pack": "open"})).err(409, "CONFLICT");

    // Halfway: the job has staged PAUSE_AFTER images and stopped there.
    let halfway = poll_reembed(&s, &index_id, |j| j["done"].as_u64().unwrap_or(0) >= PAUSE_AFTER);
    assert_eq!((halfway["done"].as_u64(), halfway["total"].as_u64()), (Some(PAUSE_AFTER), Some(PEOPLE as u64)));
    assert_eq!(s.index(&index_id).ok(200)["pack"], "open", "the index switched before every image was done");
    // Searches are served from the old vectors, unchanged.
    all_found_first(&s, &index_id, &everyone, "during the job");
    for (p, before) in people.iter().zip(&open_scores) {
        let now = match_of(&s, &index_id, &p.probe, &p.record_id).map(|m| score_of(&m));
        assert_eq!(&now, before, "during the job, {} scores differently than before it", p.name);
    }

    // Changes during the job: a new enrolment must be picked up before the switch; a
    // deleted record (whose image was already staged) takes its staged vector along.
    let newcomer = enrol_people(&s, &index_id, 1, &people.iter().map(|p| p.name.clone()).collect::<Vec<_>>()).remove(0);
    let deleted = &people[0];
    assert_eq!(s.delete(&format!("/face/index/{index_id}/records/{}", deleted.record_id)).status, 204);
    let live: Vec<&Person> = people[1..].iter().chain(std::iter::once(&newcomer)).collect();
    let j = job(&s, &index_id);
    assert_eq!((j["done"].as_u64(), j["total"].as_u64()), (Some(PAUSE_AFTER - 1), Some(PEOPLE as u64)), "{j}");

    // kill -9 halfway through.
    s.kill();
    {
        let store = SqliteStore::open(&data).expect("the store opens after kill -9");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(store.integrity_check()).expect("integrity after kill -9");
        let running = rt.block_on(store.running_reembeds()).expect("running jobs");
        assert_eq!(running.len(), 1);
        assert_eq!(
            (running[0].job_id.as_str(), running[0].state, running[0].done),
            (job_id.as_str(), JobState::Running, PAUSE_AFTER - 1)
        );
    }

    // Restarted without the pause: the job resumes by itself. The index answers at once.
    let s = Server::start_in(&data);
    let resumed = job(&s, &index_id);
    assert_eq!(resumed["job_id"], job_id.as_str(), "the restart started another job");
    assert!(resumed["done"].as_u64() >= Some(PAUSE_AFTER - 1), "staged work was lost: {resumed}");
    // While the resumed job runs and switches, searches keep finding everyone first.
    let mut searches = 0;
    let done = loop {
        all_found_first(&s, &index_id, &[live[searches % live.len()]], "while the resumed job runs");
        searches += 1;
        let j = job(&s, &index_id);
        if j["state"] != "running" {
            break j;
        }
    };
    eprintln!(
        "{searches} searches answered while the resumed job ran (it had {} of {PEOPLE} done at the restart)",
        resumed["done"]
    );
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!((done["total"].as_u64(), done["done"].as_u64()), (Some(PEOPLE as u64), Some(PEOPLE as u64)), "{done}");
    assert!(done["finished_at"].is_string());
    let no_face: Vec<&str> =
        done["failures"].as_array().expect("failures").iter().filter_map(|f| f["record_id"].as_str()).collect();
    assert_eq!(done["failed"].as_u64(), Some(no_face.len() as u64));
    assert!(no_face.is_empty(), "the insightface detector lost faces of LFW photos: {done}");

    // Switched: the index reports the new pack, every record is found first, and the
    // scores are the insightface calibration's.
    let index = s.index(&index_id).ok(200).clone();
    assert_eq!(index["pack"], "insightface");
    let listed = s.details().into_iter().find(|i| i["id"] == index_id.as_str()).expect("listed");
    assert_eq!(listed["pack"], "insightface");
    assert_eq!(index["record_count"], PEOPLE as u64);
    all_found_first(&s, &index_id, &live, "after the switch");
    let insightface = Calibration::shipped(Pack::Insightface).expect("calibration");
    let open = Calibration::shipped(Pack::Open).expect("calibration");
    let mut telling = 0;
    for (p, before) in people[1..].iter().zip(&open_scores[1..]) {
        let Some(m) = match_of(&s, &index_id, &p.probe, &p.record_id) else { continue };
        let (score, similarity) = score_of(&m);
        let expected = insightface.score(similarity as f32);
        assert!((score - expected).abs() < 0.02, "{}: score {score} is not insightface's {expected}", p.name);
        if let Some((_, old_similarity)) = before {
            assert_ne!(similarity, *old_similarity, "{}: the similarity did not change with the pack", p.name);
        }
        if (open.score(similarity as f32) - expected).abs() > 0.1 {
            telling += 1;
        }
    }
    assert!(telling > 0, "no probe tells the two calibrations apart");
    // One search over indexes of both packs: each is searched with its own pack's
    // embedding of the probe, and the matches are merged by score.
    let open_index = s.create_index_id("reembed-e2e-open");
    assert_eq!(s.index(&open_index).ok(200)["pack"], "open");
    let twin = &live[0];
    let twin_record = s.enrol_ok(&open_index, &twin.enrolled, &[("name", &twin.name)])["record_id"].clone();
    let params = [("perform_liveness_check", "false"), ("min_match_score", "0"), ("max_results", "50")];
    let both = s.search_ok(&[&index_id, &open_index], &twin.probe, &params);
    let from = |record: &Value| both.iter().find(|m| &m["record_id"] == record).cloned();
    let in_insightface = from(&json!(twin.record_id)).expect("the insightface index's match");
    let in_open = from(&twin_record).expect("the open index's match");
    let (score, similarity) = score_of(&in_insightface);
    assert!((score - insightface.score(similarity as f32)).abs() < 0.02, "{in_insightface}");
    let (score, similarity) = score_of(&in_open);
    assert!((score - open.score(similarity as f32)).abs() < 0.02, "{in_open}");
    let scores: Vec<f64> = both.iter().map(|m| m["match_score"].as_f64().expect("score")).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "matches are not merged by score: {scores:?}");

    let audit = s.get(&format!("/audit?action=index.reembed.finish&index_id={index_id}")).ok(200).clone();
    let event = &audit["events"][0];
    assert_eq!((event["outcome"].as_str(), event["actor"].as_str()), (Some("ok"), Some(common::ADMIN_USER)), "{audit}");
    assert_eq!(event["details"]["job_id"], job_id.as_str());
    s.kill();

    // In the store: the index's vectors are all insightface, none of the open pack left.
    let store = SqliteStore::open(&data).expect("open the store");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let old = rt.block_on(store.embeddings(Pack::Open)).expect("embeddings");
    assert!(old.iter().all(|e| e.index_id != index_id), "open vectors of the index are left");
    let new: Vec<_> = rt
        .block_on(store.embeddings(Pack::Insightface))
        .expect("embeddings")
        .into_iter()
        .filter(|e| e.index_id == index_id)
        .collect();
    assert_eq!(new.len(), PEOPLE);
    assert!(new.iter().all(|e| e.vector.len() == 512));
    assert!(new.iter().all(|e| e.image_id != deleted.image_id));
    assert!(
        new.iter().any(|e| e.image_id == newcomer.image_id),
        "the enrolment made during the job was not re-embedded"
    );
    rt.block_on(store.integrity_check()).expect("integrity");
}
