//! What only the PostgreSQL store does: vector search inside the database, several
//! nodes (connection pools) on one database, migrations racing at start, and outages.

use std::sync::Arc;
use std::time::Duration;

use facesearch_pgfixture::TestPostgres;
use facesearch_store::prelude::*;
use facesearch_store::{
    EnrolOutcome, IndexType, NewImage, NewIndex, Pack, PostgresConfig, PostgresStore, RecordFields, StoreError,
    VectorQuery, VectorStore,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 128;

fn new_index(name: &str) -> NewIndex {
    NewIndex {
        index_name: name.into(),
        title: name.into(),
        description: String::new(),
        index_type: IndexType::Internal,
        pack: Pack::Open,
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn random_vector(rng: &mut StdRng) -> Vec<f32> {
    unit((0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect())
}

fn image(embedding: Vec<f32>) -> NewImage {
    NewImage {
        bytes: vec![0xFF, 0xD8, 1, 0xFF, 0xD9],
        mime: "image/jpeg".into(),
        file_name: "face.jpg".into(),
        embedding,
        pack: Pack::Open,
        face: serde_json::json!({}),
        quality: None,
    }
}

fn person(name: &str) -> RecordFields {
    RecordFields { name: name.into(), ..RecordFields::default() }
}

async fn connect(url: &str) -> PostgresStore {
    PostgresStore::connect(&PostgresConfig::new(url)).await.expect("connect")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_faces_match_an_exact_scan_one_per_record_within_the_indexes_asked() {
    let store = connect(&facesearch_pgfixture::shared().fresh_database()).await;
    let (a, b) = (store.create_index(new_index("a")).await.unwrap(), store.create_index(new_index("b")).await.unwrap());
    let mut rng = StdRng::seed_from_u64(5);
    // (index, record, image, vector) of everything enrolled.
    let mut all: Vec<(String, String, String, Vec<f32>)> = Vec::new();
    for i in 0..300 {
        let index = if i % 3 == 0 { &b } else { &a };
        let batch = vec![(person(&format!("p{i}")), None, image(random_vector(&mut rng)))];
        let record = store.enrol_batch(&index.id, batch).await.unwrap().unwrap().remove(0).into_record();
        let vector = random_vector(&mut rng);
        // A second image for some records: each record must still come back once.
        if i % 5 == 0 {
            let (_, image_id) =
                store.add_image(&index.id, &record.record_id, image(vector.clone())).await.unwrap().unwrap();
            all.push((index.id.clone(), record.record_id.clone(), image_id, vector));
        }
        let first = store.embeddings(Pack::Open).await.unwrap().into_iter().find(|e| e.image_id == record.image_ids[0]);
        let first = first.expect("stored");
        all.push((index.id.clone(), record.record_id, first.image_id, first.vector));
    }
    // Both ways of searching: the exact scan (a small gallery, by default) and the
    // HNSW graph (forced), which on 300 faces with ef_search 400 sees every face.
    let graph = store.clone().with_search(400, 0);
    for q in 0..40 {
        let store = if q % 4 < 2 { &store } else { &graph };
        // Half the queries are near an enrolled face, half anywhere.
        let query = if q % 2 == 0 {
            let base = &all[rng.random_range(0..all.len())].3;
            unit(base.iter().map(|x| x + rng.random_range(-0.02f32..0.02)).collect())
        } else {
            random_vector(&mut rng)
        };
        let found = store
            .nearest_faces(VectorQuery {
                pack: Pack::Open,
                index_ids: vec![a.id.clone()],
                vector: query.clone(),
                min_similarity: -1.0,
                limit: 10,
            })
            .await
            .unwrap();
        // The exact answer: best image per record of index a.
        let mut best: std::collections::HashMap<&str, f32> = std::collections::HashMap::new();
        for (index, record, _, v) in &all {
            if *index == a.id {
                let s = cosine(&query, v);
                let e = best.entry(record.as_str()).or_insert(f32::MIN);
                *e = e.max(s);
            }
        }
        let mut exact: Vec<(&str, f32)> = best.into_iter().collect();
        exact.sort_by(|x, y| y.1.total_cmp(&x.1));
        assert_eq!(found.len(), 10);
        let records: std::collections::HashSet<&str> = found.iter().map(|f| f.record_id.as_str()).collect();
        assert_eq!(records.len(), 10, "each record once");
        assert!(found.iter().all(|f| f.index_id == a.id), "only the index asked for");
        assert!(found.windows(2).all(|w| w[0].similarity >= w[1].similarity), "best first");
        // 300 faces are far below any graph shortcut: the answer is the exact one.
        for (got, want) in found.iter().zip(&exact) {
            assert!((got.similarity - want.1).abs() < 1e-4, "query {q}: {} vs {}", got.similarity, want.1);
        }
        assert_eq!(found[0].record_id, exact[0].0);
    }
    // The minimum similarity filters; a probe of another pack is refused.
    let strict = VectorQuery {
        pack: Pack::Open,
        index_ids: vec![a.id.clone(), b.id.clone()],
        vector: all[0].3.clone(),
        min_similarity: 0.999,
        limit: 10,
    };
    let found = store.nearest_faces(strict.clone()).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].image_id, all[0].2);
    match store.nearest_faces(VectorQuery { pack: Pack::Insightface, ..strict }).await {
        Err(StoreError::PackMismatch { index_pack, .. }) => assert_eq!(index_pack, "open"),
        other => panic!("expected PackMismatch, got {other:?}"),
    }
    // An image of another pack cannot join the index either.
    let mut foreign = image(vec![0.1; 512]);
    foreign.pack = Pack::Insightface;
    assert!(matches!(store.enrol(&a.id, person("x"), None, foreign).await, Err(StoreError::PackMismatch { .. })));
    store.integrity_check().await.unwrap();
}

/// A search over several indexes is one statement (`index_id = ANY($1)`); its answer
/// is the one of searching each index alone and merging (best first, ties by record):
/// each record once, with its best image, the same similarities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_search_over_many_indexes_equals_searching_each_and_merging() {
    let store = connect(&facesearch_pgfixture::shared().fresh_database()).await;
    let mut rng = StdRng::seed_from_u64(17);
    let mut ids = Vec::new();
    for j in 0..12 {
        ids.push(store.create_index(new_index(&format!("part{j}"))).await.unwrap().id);
    }
    // Every index gets a copy of one face: ties across indexes at the top.
    let shared = random_vector(&mut rng);
    let mut vectors = Vec::new();
    for (j, id) in ids.iter().enumerate() {
        let n = 10 + 9 * j;
        let mut batch = vec![(person(&format!("shared{j}")), None, image(shared.clone()))];
        for i in 0..n {
            batch.push((person(&format!("p{j}-{i}")), None, image(random_vector(&mut rng))));
        }
        let made = store.enrol_batch(id, batch).await.unwrap().unwrap();
        // Some records get a second image: still one result each, with the best image.
        for outcome in made.into_iter().skip(1).step_by(4) {
            let record = outcome.into_record();
            let v = random_vector(&mut rng);
            store.add_image(id, &record.record_id, image(v.clone())).await.unwrap().unwrap();
            vectors.push(v);
        }
    }
    let search = |store: PostgresStore, index_ids: Vec<String>, vector: Vec<f32>, min: f32, limit: usize| async move {
        store
            .nearest_faces(VectorQuery { pack: Pack::Open, index_ids, vector, min_similarity: min, limit })
            .await
            .unwrap()
    };
    let mut compared = 0;
    for q in 0..24 {
        let query = match q % 3 {
            0 => shared.clone(),
            1 => unit(vectors[q % vectors.len()].iter().map(|x| x + rng.random_range(-0.05f32..0.05)).collect()),
            _ => random_vector(&mut rng),
        };
        for (min, limit) in [(-1.0, 5), (-1.0, 20), (0.1, 10)] {
            for chosen in [&ids[..], &ids[3..5], &ids[7..8]] {
                let one = search(store.clone(), chosen.to_vec(), query.clone(), min, limit).await;
                let mut merged = Vec::new();
                for id in chosen {
                    merged.extend(search(store.clone(), vec![id.clone()], query.clone(), min, limit).await);
                }
                merged
                    .sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then_with(|| a.record_id.cmp(&b.record_id)));
                merged.truncate(limit);
                assert_eq!(one, merged, "query {q}, min {min}, limit {limit}, {} indexes", chosen.len());
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 24 * 3 * 3);
    let top = search(store.clone(), ids.clone(), shared.clone(), -1.0, 12).await;
    assert!(top.iter().all(|f| f.similarity > 0.999), "the shared face ties across all 12 indexes: {top:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_enrolling_one_reference_at_once_store_one_record() {
    let url = facesearch_pgfixture::shared().fresh_database();
    // Two pools = two facesearch nodes on one database.
    let (node_a, node_b) = (Arc::new(connect(&url).await), Arc::new(connect(&url).await));
    let index = node_a.create_index(new_index("kyc")).await.unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let node: Arc<PostgresStore> = if i % 2 == 0 { node_a.clone() } else { node_b.clone() };
        let (index_id, vector) = (index.id.clone(), random_vector(&mut rng));
        tasks.push(tokio::spawn(async move {
            let reference = format!("customer-{}", i % 4);
            node.enrol(&index_id, person("c"), Some(reference), image(vector)).await.unwrap().unwrap()
        }));
    }
    let mut ids_by_reference: std::collections::HashMap<String, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    let mut created = 0;
    for task in tasks {
        let outcome = task.await.unwrap();
        created += usize::from(matches!(outcome, EnrolOutcome::Created(_)));
        let record = outcome.into_record();
        ids_by_reference.entry(record.reference.clone().unwrap()).or_default().insert(record.record_id);
    }
    assert_eq!(created, 4, "one record per reference");
    assert!(ids_by_reference.values().all(|ids| ids.len() == 1), "every caller got the one record");
    assert_eq!(node_b.get_index(&index.id).await.unwrap().unwrap().record_count, 4);
    assert_eq!(node_b.embeddings(Pack::Open).await.unwrap().len(), 4, "no stray vectors");
    // A delete on one node is seen by the other at once.
    let some = ids_by_reference.values().next().unwrap().iter().next().unwrap().clone();
    assert!(node_a.delete_record(&index.id, &some).await.unwrap().is_some());
    assert!(node_b.get_record(&index.id, &some).await.unwrap().is_none());
    node_b.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let url = facesearch_pgfixture::shared().fresh_database();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&PostgresConfig::new(url)).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().expect("every node starts");
    }
    let applied = facesearch_pgfixture::shared()
        .psql(url.rsplit('/').next().unwrap(), "SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .unwrap();
    let steps = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    assert_eq!(applied.trim(), steps.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_a_clear_error_and_the_store_reconnects_by_itself() {
    // A server of its own: this test stops it.
    let pg = TestPostgres::start().expect("PostgreSQL starts");
    let url = pg.create_database("outage").unwrap();
    let mut config = PostgresConfig::new(&url);
    config.acquire_timeout = Duration::from_secs(2);
    let store = PostgresStore::connect(&config).await.unwrap();
    let index = store.create_index(new_index("i")).await.unwrap();

    pg.stop_server().unwrap();
    match store.get_index(&index.id).await {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable { .. })));

    pg.start_server().unwrap();
    store.ping().await.expect("reconnected");
    assert_eq!(store.get_index(&index.id).await.unwrap().unwrap().index_name, "i");

    // A database that is not there at all is refused at start with the same error.
    drop(pg);
    match PostgresStore::connect(&config).await {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_error_and_stores_nothing() {
    // A URL that is not one: refused before any connection, the password not echoed.
    match PostgresStore::connect(&PostgresConfig::new("postgres://u:secret@[::1")).await {
        Err(StoreError::InvalidInput(message)) => assert!(!message.contains("secret"), "{message}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    let store = connect(&facesearch_pgfixture::shared().fresh_database()).await;
    let index = store.create_index(new_index("bad")).await.unwrap();
    let query = |vector: Vec<f32>| VectorQuery {
        pack: Pack::Open,
        index_ids: vec![index.id.clone()],
        vector,
        min_similarity: -1.0,
        limit: 5,
    };
    for vector in [vec![], vec![f32::NAN; DIM]] {
        assert!(matches!(store.nearest_faces(query(vector)).await, Err(StoreError::InvalidInput(_))));
    }
    // An image without bytes or with a non-finite vector: nothing is stored.
    let mut empty = image(vec![0.1; DIM]);
    empty.bytes.clear();
    let mut infinite = image(vec![0.1; DIM]);
    infinite.embedding[3] = f32::INFINITY;
    for bad in [empty, infinite] {
        assert!(matches!(store.enrol(&index.id, person("x"), None, bad).await, Err(StoreError::InvalidInput(_))));
    }
    assert_eq!(store.get_index(&index.id).await.unwrap().unwrap().record_count, 0);
    assert!(store.embeddings(Pack::Open).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_moves_every_table_and_a_second_run_writes_nothing() {
    use facesearch_store::{NewAuditEvent, Role, SqliteStore, copy};
    let dir = tempfile::tempdir().unwrap();
    let from = SqliteStore::open(&dir.path().join("data")).unwrap();
    let index = from.create_index(new_index("copied")).await.unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let mut records = Vec::new();
    for i in 0..5 {
        let mut fields = person(&format!("p{i}"));
        fields.watch_list = vec!["pep".into()];
        let outcome = from.enrol(&index.id, fields, Some(format!("ref-{i}")), image(random_vector(&mut rng))).await;
        records.push(outcome.unwrap().unwrap().into_record());
    }
    from.create_user("ann", "ann-Secret-123", Role::Operator).await.unwrap();
    assert!(from.grant("ann", &index.id).await.unwrap());
    let event = NewAuditEvent {
        actor: "ann".into(),
        action: "record.enrol".into(),
        outcome: "ok".into(),
        index_ids: vec![index.id.clone()],
        record_ids: vec![records[0].record_id.clone()],
        details: serde_json::json!({"n": 1}),
    };
    from.append_audit(event).await.unwrap();
    // A re-embedding job halfway: one staged vector, one staged failure.
    from.start_reembed(&index.id, Pack::Insightface, "ann").await.unwrap().unwrap();
    let pending = from.pending_images(&index.id, Pack::Insightface, 2).await.unwrap();
    assert!(from.stage_vector(&pending[0].image_id, Pack::Insightface, Ok(vec![0.5; 512])).await.unwrap());
    assert!(from.stage_vector(&pending[1].image_id, Pack::Insightface, Err("NO_FACE_DETECTED".into())).await.unwrap());

    let to = connect(&facesearch_pgfixture::shared().fresh_database()).await;
    let report = copy::copy(&from, &to, |_, _| {}).await.unwrap();
    let written = |table: &str| report.iter().find(|t| t.table == table).map(|t| t.written);
    assert_eq!(written("records"), Some(5));
    assert_eq!(written("staged_embeddings"), Some(2));
    assert_eq!(written("reembed_jobs"), Some(1));
    let checks = copy::verify(&from, &to).await.unwrap();
    assert!(checks.iter().all(|c| c.matches() && c.sqlite_rows > 0), "{checks:?}");
    assert!(
        copy::copy(&from, &to, |_, _| {}).await.unwrap().iter().all(|t| t.written == 0),
        "resumes, copies nothing twice"
    );
    // What arrived reads back through the store like the original.
    let got = to.get_record(&index.id, &records[2].record_id).await.unwrap().unwrap();
    assert_eq!(
        (got.fields, got.reference, got.image_ids),
        (records[2].fields.clone(), records[2].reference.clone(), records[2].image_ids.clone())
    );
    let job = to.reembed_job(&index.id).await.unwrap().unwrap();
    assert_eq!((job.done, job.failed, job.total), (2, 1, 5));
    assert!(
        to.verify_password("ann", "ann-Secret-123").await.unwrap().is_some_and(|u| u.grants == vec![index.id.clone()])
    );
    to.integrity_check().await.unwrap();
}
