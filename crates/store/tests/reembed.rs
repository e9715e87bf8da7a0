//! Re-embedding jobs in the SQLite store: staging, resuming after a reopen, the
//! all-or-nothing pack switch, and staged vectors going with their images.

use std::sync::Arc;

use facesearch_store::prelude::*;
use facesearch_store::{
    EnrolOutcome, IndexType, JobState, NewImage, NewIndex, Pack, PackSwitch, RecordFields, ReembedStart, SqliteStore,
    StoreError,
};

fn new_index(name: &str) -> NewIndex {
    NewIndex {
        index_name: name.into(),
        title: name.into(),
        description: String::new(),
        index_type: IndexType::Internal,
        pack: Pack::Open,
    }
}

fn image(seed: u8) -> NewImage {
    NewImage {
        bytes: vec![0xFF, 0xD8, seed, 0xFF, 0xD9],
        mime: "image/jpeg".into(),
        file_name: format!("face_{seed}.jpg"),
        embedding: vec![f32::from(seed); 4],
        pack: Pack::Open,
        face: serde_json::json!({"bbox": {"x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0}}),
        quality: None,
    }
}

/// A vector of the new pack (another dimension than the old pack's 4).
fn new_vector(seed: u8) -> Vec<f32> {
    vec![f32::from(seed) + 0.5; 6]
}

fn open_at(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(&dir.join("data")).expect("open")
}

async fn enrol(store: &SqliteStore, index_id: &str, seed: u8) -> facesearch_store::Record {
    let fields = RecordFields { name: format!("person {seed}"), ..RecordFields::default() };
    match store.enrol(index_id, fields, None, image(seed)).await.expect("enrol").expect("index exists") {
        EnrolOutcome::Created(r) => r,
        EnrolOutcome::Existing(r) => panic!("unexpected existing record {r:?}"),
    }
}

fn started(outcome: Option<ReembedStart>) -> facesearch_store::ReembedJob {
    match outcome.expect("index exists") {
        ReembedStart::Started(job) => job,
        ReembedStart::Running(job) => panic!("expected a new job, got the running {job:?}"),
    }
}

/// Stages every pending image of the index; the image with seed `no_face` (if any)
/// as a failure. Returns how many were staged.
async fn stage_all(store: &SqliteStore, index_id: &str, pack: Pack, no_face: Option<&str>) -> usize {
    let mut n = 0;
    loop {
        let batch = store.pending_images(index_id, pack, 2).await.unwrap();
        if batch.is_empty() {
            return n;
        }
        for img in batch {
            let seed = img.bytes[2];
            let vector = if Some(img.image_id.as_str()) == no_face {
                Err("NO_FACE_DETECTED".to_string())
            } else {
                Ok(new_vector(seed))
            };
            assert!(store.stage_vector(&img.image_id, pack, vector).await.unwrap());
            n += 1;
        }
    }
}

#[tokio::test]
async fn staged_vectors_survive_a_reopen_and_the_switch_replaces_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(dir.path());
    let moving = store.create_index(new_index("moving")).await.unwrap();
    let other = store.create_index(new_index("other")).await.unwrap();
    let mut records = Vec::new();
    for seed in 1..=3u8 {
        records.push(enrol(&store, &moving.id, seed).await);
    }
    let (_, extra_image) = store.add_image(&moving.id, &records[0].record_id, image(4)).await.unwrap().unwrap();
    let bystander = enrol(&store, &other.id, 9).await;

    let job = started(store.start_reembed(&moving.id, Pack::Insightface, "admin").await.unwrap());
    assert_eq!((job.state, job.total, job.done, job.failed), (JobState::Running, 4, 0, 0));
    assert_eq!(
        (job.pack, job.from_pack, job.requested_by.as_str()),
        (Pack::Insightface.into(), Pack::Open.into(), "admin")
    );

    // Half of the images, one of them without a face for the new pack.
    let first = store.pending_images(&moving.id, Pack::Insightface, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].face["bbox"]["x2"], 30.0, "the stored detection comes with the image");
    assert!(
        store.stage_vector(&first[0].image_id, Pack::Insightface, Ok(new_vector(first[0].bytes[2]))).await.unwrap()
    );
    assert!(store.stage_vector(&first[1].image_id, Pack::Insightface, Err("NO_FACE_DETECTED".into())).await.unwrap());
    let failed_image = first[1].image_id.clone();
    drop(store);

    // A restart: the job is still running, its progress kept, and only the rest is pending.
    let store = open_at(dir.path());
    let running = store.running_reembeds().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!((running[0].job_id.as_str(), running[0].done, running[0].failed), (job.job_id.as_str(), 2, 1));
    assert_eq!(running[0].failures[0].image_id, failed_image);
    assert_eq!(running[0].failures[0].code, "NO_FACE_DETECTED");
    let rest: Vec<String> = store
        .pending_images(&moving.id, Pack::Insightface, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.image_id)
        .collect();
    assert_eq!(rest.len(), 2);
    assert!(first.iter().all(|f| !rest.contains(&f.image_id)), "staged images are not embedded again");

    // Asking again for the same pack returns the running job; another pack is refused.
    match store.start_reembed(&moving.id, Pack::Insightface, "someone").await.unwrap().unwrap() {
        ReembedStart::Running(j) => assert_eq!(j.job_id, job.job_id),
        ReembedStart::Started(j) => panic!("a second job was started: {j:?}"),
    }
    assert!(matches!(store.start_reembed(&moving.id, Pack::Open, "admin").await, Err(StoreError::Conflict(_))));

    // Not everything staged: the switch changes nothing.
    assert!(matches!(store.switch_pack(&moving.id, &job.job_id).await.unwrap(), PackSwitch::Pending(2)));
    assert_eq!(store.get_index(&moving.id).await.unwrap().unwrap().pack, Pack::Open);
    assert_eq!(store.embeddings(Pack::Open).await.unwrap().len(), 5);
    assert!(store.embeddings(Pack::Insightface).await.unwrap().is_empty());

    // The rest staged, then a new enrolment arrives before the switch: still pending.
    assert_eq!(stage_all(&store, &moving.id, Pack::Insightface, None).await, 2);
    let late = enrol(&store, &moving.id, 5).await;
    assert!(matches!(store.switch_pack(&moving.id, &job.job_id).await.unwrap(), PackSwitch::Pending(1)));
    assert_eq!(stage_all(&store, &moving.id, Pack::Insightface, None).await, 1);

    let PackSwitch::Switched { job: done, vectors } = store.switch_pack(&moving.id, &job.job_id).await.unwrap() else {
        panic!("the switch did not happen");
    };
    assert_eq!((done.state, done.total, done.done, done.failed), (JobState::Done, 5, 5, 1));
    assert_eq!(done.failures.len(), 1);
    assert_eq!(done.failures[0].image_id, failed_image);
    assert!(done.finished_at.is_some());
    // Every image but the faceless one has its new vector; none is of the old pack.
    assert_eq!(vectors.len(), 4);
    assert!(vectors.iter().all(|v| v.index_id == moving.id && v.vector.len() == 6));
    assert!(vectors.iter().any(|v| v.image_id == extra_image));
    assert!(vectors.iter().any(|v| v.image_id == late.image_ids[0]));
    assert!(vectors.iter().all(|v| v.image_id != failed_image));
    let old = store.embeddings(Pack::Open).await.unwrap();
    assert_eq!(old.len(), 1, "only the other index keeps open vectors");
    assert_eq!(old[0].record_id, bystander.record_id);
    assert_eq!(store.embeddings(Pack::Insightface).await.unwrap().len(), 4);
    assert_eq!(store.get_index(&moving.id).await.unwrap().unwrap().pack, Pack::Insightface);
    // The record whose image had no face is kept, with its image.
    let kept = store.get_records(&[records[1].record_id.clone(), records[0].record_id.clone()]).await.unwrap();
    assert_eq!(kept.len(), 2);
    // The staging is cleared: every image would be pending for a next job.
    assert_eq!(store.pending_images(&moving.id, Pack::Insightface, 10).await.unwrap().len(), 5);
    // The finished job reads back the same, and cannot be switched twice.
    let reread = store.reembed_job(&moving.id).await.unwrap().unwrap();
    assert_eq!((reread.state, reread.done, reread.failed), (JobState::Done, 5, 1));
    assert!(matches!(store.switch_pack(&moving.id, &job.job_id).await.unwrap(), PackSwitch::NoJob));
    assert!(store.running_reembeds().await.unwrap().is_empty());
    store.integrity_check().await.unwrap();
}

#[tokio::test]
async fn staged_vectors_go_with_their_images_records_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(dir.path());
    let index = store.create_index(new_index("cascade")).await.unwrap();
    let a = enrol(&store, &index.id, 1).await;
    let b = enrol(&store, &index.id, 2).await;
    let job = started(store.start_reembed(&index.id, Pack::Insightface, "admin").await.unwrap());
    assert_eq!(stage_all(&store, &index.id, Pack::Insightface, None).await, 2);

    // Deleting a record takes its staged vector along.
    store.delete_record(&index.id, &a.record_id).await.unwrap().unwrap();
    let j = store.reembed_job(&index.id).await.unwrap().unwrap();
    assert_eq!((j.total, j.done), (1, 1));
    // An image deleted while it was being embedded: staging it is a no-op.
    assert!(!store.stage_vector(&a.image_ids[0], Pack::Insightface, Ok(new_vector(1))).await.unwrap());
    store.integrity_check().await.unwrap();

    // Deleting the index takes the job and the staging along.
    assert!(store.delete_index(&index.id).await.unwrap());
    assert!(store.reembed_job(&index.id).await.unwrap().is_none());
    assert!(store.running_reembeds().await.unwrap().is_empty());
    assert!(!store.stage_vector(&b.image_ids[0], Pack::Insightface, Ok(new_vector(2))).await.unwrap());
    assert!(matches!(store.switch_pack(&index.id, &job.job_id).await.unwrap(), PackSwitch::NoJob));
    store.integrity_check().await.unwrap();
}

#[tokio::test]
async fn a_failed_job_keeps_its_staging_for_the_next_run_of_the_same_pack_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(dir.path());
    let index = store.create_index(new_index("retry")).await.unwrap();
    for seed in 1..=3u8 {
        enrol(&store, &index.id, seed).await;
    }
    let job = started(store.start_reembed(&index.id, Pack::Insightface, "admin").await.unwrap());
    let img = store.pending_images(&index.id, Pack::Insightface, 1).await.unwrap().remove(0);
    store.stage_vector(&img.image_id, Pack::Insightface, Ok(new_vector(1))).await.unwrap();
    store.fail_reembed(&index.id, &job.job_id, "the models could not be loaded").await.unwrap();
    let failed = store.reembed_job(&index.id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error.as_deref(), Some("the models could not be loaded"));
    assert!(store.running_reembeds().await.unwrap().is_empty(), "a failed job is not resumed by itself");
    assert!(matches!(store.switch_pack(&index.id, &job.job_id).await.unwrap(), PackSwitch::NoJob));

    // Started again for the same pack: a new job that continues from the staging.
    let again = started(store.start_reembed(&index.id, Pack::Insightface, "admin").await.unwrap());
    assert_ne!(again.job_id, job.job_id);
    assert_eq!((again.state, again.done, again.error), (JobState::Running, 1, None));

    // Abandoned for another pack (back to open): the staging of insightface is dropped.
    store.fail_reembed(&index.id, &again.job_id, "stopped").await.unwrap();
    let other = started(store.start_reembed(&index.id, Pack::Open, "admin").await.unwrap());
    assert_eq!((other.done, other.from_pack), (0, Pack::Open.into()));
    assert_eq!(store.pending_images(&index.id, Pack::Insightface, 10).await.unwrap().len(), 3);
    store.integrity_check().await.unwrap();
}

/// Readers running during the switch see the index's vectors all of the old pack or
/// all of the new one, never a mix and never none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_half_switched_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_at(dir.path()));
    let index = store.create_index(new_index("atomic")).await.unwrap();
    for seed in 0..40u8 {
        enrol(&store, &index.id, seed).await;
    }
    let job = started(store.start_reembed(&index.id, Pack::Insightface, "admin").await.unwrap());
    stage_all(&store, &index.id, Pack::Insightface, None).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                let old = store.embeddings(Pack::Open).await.unwrap().len();
                let new = store.embeddings(Pack::Insightface).await.unwrap().len();
                // Two statements may straddle the switch: old then new can read 40/40
                // but never a partial set of either.
                assert!(old == 0 || old == 40, "a read saw {old} old vectors");
                assert!(new == 0 || new == 40, "a read saw {new} new vectors");
                assert!(old + new >= 40, "a read saw the index without vectors ({old} old, {new} new)");
                reads += 1;
            }
            reads
        })
    };
    let switched = store.switch_pack(&index.id, &job.job_id).await.unwrap();
    assert!(matches!(switched, PackSwitch::Switched { .. }));
    // One more read after the switch, then stop.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    assert_eq!(store.embeddings(Pack::Insightface).await.unwrap().len(), 40);
    assert!(store.embeddings(Pack::Open).await.unwrap().is_empty());
}
