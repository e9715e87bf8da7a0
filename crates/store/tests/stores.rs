//! The [`Store`] contract, run on both stores: the embedded SQLite one and PostgreSQL
//! with pgvector (a real server from `facesearch-pgfixture`, one database per test).
//! Behaviour only SQLite has (reopening a file, its schema version) is tested on
//! SQLite alone.

use std::collections::HashSet;
use std::sync::Arc;

use facesearch_store::prelude::*;
use facesearch_store::{
    EnrolOutcome, IndexPatch, IndexType, NewImage, NewIndex, Pack, PackName, PostgresConfig, PostgresStore,
    RecordFields, RecordPatch, Role, SQLITE_FILE, SqliteStore, Store, StoreConfig, StoreError, VectorQuery,
};

fn new_index(name: &str) -> NewIndex {
    NewIndex {
        index_name: name.into(),
        title: format!("{name} title"),
        description: format!("{name} description"),
        index_type: IndexType::Internal,
        pack: Pack::Open,
    }
}

fn image(seed: u8) -> NewImage {
    NewImage {
        bytes: vec![0xFF, 0xD8, seed, seed.wrapping_mul(3), 0xFF, 0xD9],
        mime: "image/jpeg".into(),
        file_name: format!("face_{seed}.jpg"),
        embedding: (0..8).map(|i| f32::from(seed) * 0.25 + i as f32 / 7.0).collect(),
        pack: Pack::Open,
        face: serde_json::json!({"box": [1, 2, 30, 40], "score": 0.99}),
        quality: seed.is_multiple_of(2).then(|| serde_json::json!({"sharpness": f32::from(seed), "yaw": -3.5})),
    }
}

fn fields(name: &str) -> RecordFields {
    RecordFields {
        name: name.into(),
        dob: "1990-01-15".into(),
        nationality: "IN".into(),
        gender: "M".into(),
        id_no: format!("ID-{name}"),
        address: "1 Main St".into(),
        watch_list: vec!["vip".into()],
        additional_info: String::new(),
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// An empty store of the kind; the directory (SQLite) lives as long as the guard.
/// Opened the way every command opens its store: `facesearch_store::open`.
async fn open(backend: Backend) -> (Option<tempfile::TempDir>, Arc<dyn Store>) {
    let (dir, store, _) = open_at(backend).await;
    (dir, store)
}

/// Where a store's database is, to change it behind the store's back as another build
/// sharing it would.
enum Location {
    Sqlite(std::path::PathBuf),
    /// The database's name on the shared test server.
    Postgres(String),
}

/// [`open`], and where the database is.
async fn open_at(backend: Backend) -> (Option<tempfile::TempDir>, Arc<dyn Store>, Location) {
    let (dir, config, location) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let data_dir = dir.path().join("data");
            let location = Location::Sqlite(data_dir.join(SQLITE_FILE));
            (Some(dir), StoreConfig::Sqlite { data_dir }, location)
        }
        Backend::Postgres => {
            let url = facesearch_pgfixture::shared().fresh_database();
            let name = url.rsplit('/').next().expect("a database name").to_owned();
            (None, StoreConfig::Postgres(PostgresConfig::new(url)), Location::Postgres(name))
        }
    };
    (dir, facesearch_store::open(&config).await.expect("open"), location)
}

/// Runs `sql` on the database directly, not through the store.
fn execute(location: &Location, sql: &str) {
    match location {
        Location::Sqlite(file) => {
            rusqlite::Connection::open(file).expect("open the file").execute_batch(sql).expect("SQL runs");
        }
        Location::Postgres(name) => {
            facesearch_pgfixture::shared().psql(name, sql).expect("SQL runs");
        }
    }
}

/// Two stores on one database, as two processes or nodes would have: two SQLite
/// connections to one file, or two PostgreSQL connection pools.
async fn open_twice(backend: Backend) -> (Option<tempfile::TempDir>, Arc<dyn Store>, Arc<dyn Store>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let a = SqliteStore::open(&dir.path().join("data")).expect("open");
            let b = SqliteStore::open(&dir.path().join("data")).expect("open again");
            (Some(dir), Arc::new(a), Arc::new(b))
        }
        Backend::Postgres => {
            let url = facesearch_pgfixture::shared().fresh_database();
            let a = PostgresStore::connect(&PostgresConfig::new(url.clone())).await.expect("connect");
            let b = PostgresStore::connect(&PostgresConfig::new(url)).await.expect("connect again");
            (None, Arc::new(a), Arc::new(b))
        }
    }
}

async fn enrol_new(
    store: &dyn Store,
    index_id: &str,
    name: &str,
    reference: Option<&str>,
    seed: u8,
) -> facesearch_store::Record {
    match store
        .enrol(index_id, fields(name), reference.map(str::to_owned), image(seed))
        .await
        .expect("enrol")
        .expect("index exists")
    {
        EnrolOutcome::Created(r) => r,
        EnrolOutcome::Existing(r) => panic!("unexpected existing record {r:?}"),
    }
}

async fn index_crud_and_duplicate_name(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let a = store.create_index(new_index("alpha")).await.unwrap();
    assert_eq!(a.record_count, 0);
    assert_eq!(a.index_type, IndexType::Internal);
    assert_eq!(a.created_at.len(), 24);
    assert!(a.created_at.ends_with('Z'));
    let b = store.create_index(NewIndex { index_type: IndexType::External, ..new_index("beta") }).await.unwrap();

    match store.create_index(new_index("alpha")).await {
        Err(StoreError::DuplicateIndexName(n)) => assert_eq!(n, "alpha"),
        other => panic!("expected DuplicateIndexName, got {other:?}"),
    }
    assert!(matches!(store.create_index(new_index("  ")).await, Err(StoreError::InvalidInput(_))));

    let got = store.get_index(&a.id).await.unwrap().unwrap();
    assert_eq!(got.index_name, "alpha");
    assert_eq!(got.pack, Pack::Open);
    assert!(store.get_index("nope").await.unwrap().is_none());

    let list = store.list_indexes().await.unwrap();
    assert_eq!(list.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec![a.id.as_str(), b.id.as_str()]);

    let json = serde_json::to_value(&list[1]).unwrap();
    assert_eq!(json["index_type"], "EXTERNAL");
    assert_eq!(json["record_count"], 0);

    let patched = store
        .update_index(&a.id, IndexPatch { title: Some("New title".into()), description: None })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patched.title, "New title");
    assert_eq!(patched.description, "alpha description");
    assert!(patched.updated_at >= patched.created_at);
    assert!(store.update_index("nope", IndexPatch::default()).await.unwrap().is_none());
    assert!(
        store.update_index("nope", IndexPatch { title: Some("x".into()), description: None }).await.unwrap().is_none()
    );

    assert!(store.delete_index(&a.id).await.unwrap());
    assert!(!store.delete_index(&a.id).await.unwrap());
    assert!(store.get_index(&a.id).await.unwrap().is_none());
    // The name is free again.
    store.create_index(new_index("alpha")).await.unwrap();
    store.integrity_check().await.unwrap();
    store.ping().await.unwrap();
}

async fn image_quality_is_stored_and_shown_with_the_record(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let idx = store.create_index(new_index("quality")).await.unwrap();
    let measured = enrol_new(store.as_ref(), &idx.id, "measured", None, 4).await;
    assert_eq!(measured.images.len(), 1);
    assert_eq!(measured.images[0].image_id, measured.image_ids[0]);
    let expected = serde_json::json!({"sharpness": 4.0, "yaw": -3.5});
    assert_eq!(measured.images[0].quality.as_ref(), Some(&expected));
    // Read back, with a second image without quality.
    let (record, second) = store.add_image(&idx.id, &measured.record_id, image(5)).await.unwrap().unwrap();
    assert_eq!(record.image_ids, vec![measured.image_ids[0].clone(), second.clone()]);
    let again = store.get_record(&idx.id, &measured.record_id).await.unwrap().unwrap();
    let got: Vec<(String, Option<serde_json::Value>)> =
        again.images.iter().map(|i| (i.image_id.clone(), i.quality.clone())).collect();
    assert_eq!(got, vec![(measured.image_ids[0].clone(), Some(expected)), (second, None)]);
}

async fn enrol_get_page_update_delete(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let idx = store.create_index(new_index("people")).await.unwrap();
    assert!(store.enrol("nope", fields("x"), None, image(0)).await.unwrap().is_none());

    let mut created = Vec::new();
    for i in 0..7u8 {
        created.push(enrol_new(store.as_ref(), &idx.id, &format!("person{i}"), None, i).await);
    }
    assert_eq!(store.get_index(&idx.id).await.unwrap().unwrap().record_count, 7);

    let r0 = &created[0];
    assert_eq!(r0.image_ids.len(), 1);
    let got = store.get_record(&idx.id, &r0.record_id).await.unwrap().unwrap();
    assert_eq!(got.fields, fields("person0"));
    assert_eq!(got.image_ids, r0.image_ids);
    assert_eq!(got.reference, None);
    assert!(store.get_record("other", &r0.record_id).await.unwrap().is_none());

    let img = store.get_image(&r0.image_ids[0]).await.unwrap().unwrap();
    assert_eq!(img.bytes, image(0).bytes);
    assert_eq!(img.record_id, r0.record_id);
    assert_eq!(img.index_id, idx.id);
    assert_eq!(img.mime, "image/jpeg");
    assert_eq!(img.file_name, "face_0.jpg");
    assert_eq!(img.sha256.len(), 64);

    // Record JSON: flattened fields.
    let json = serde_json::to_value(&got).unwrap();
    assert_eq!(json["name"], "person0");
    assert_eq!(json["watch_list"], serde_json::json!(["vip"]));
    assert!(json.get("fields").is_none());

    // Three pages of 3, 3, 1.
    let mut seen = Vec::new();
    let (p1, c1) = store.list_records(&idx.id, 3, None).await.unwrap();
    let (p2, c2) = store.list_records(&idx.id, 3, c1.as_deref()).await.unwrap();
    let (p3, c3) = store.list_records(&idx.id, 3, c2.as_deref()).await.unwrap();
    assert_eq!((p1.len(), p2.len(), p3.len()), (3, 3, 1));
    assert!(c1.is_some() && c2.is_some() && c3.is_none());
    for r in p1.iter().chain(&p2).chain(&p3) {
        assert_eq!(r.image_ids.len(), 1);
        seen.push(r.record_id.clone());
    }
    let keys: Vec<_> = p1.iter().chain(&p2).chain(&p3).map(|r| (r.created_at.clone(), r.record_id.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "pages are in (created_at, record_id) order");
    let expected: HashSet<_> = created.iter().map(|r| r.record_id.clone()).collect();
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), expected);
    assert_eq!(seen.len(), 7);
    // Exactly one page when it all fits.
    let (all, none) = store.list_records(&idx.id, 7, None).await.unwrap();
    assert_eq!((all.len(), none), (7, None));
    assert!(matches!(store.list_records(&idx.id, 3, Some("garbage")).await, Err(StoreError::InvalidCursor)));
    assert!(matches!(store.list_records(&idx.id, 3, Some("abcd")).await, Err(StoreError::InvalidCursor)));

    // get_records across the index, unknown ids skipped.
    let ids = vec![created[1].record_id.clone(), created[5].record_id.clone(), "missing".to_owned()];
    let many = store.get_records(&ids).await.unwrap();
    assert_eq!(many.len(), 2);
    assert!(many.iter().all(|r| r.image_ids.len() == 1));

    // add_image
    let (with_two, new_image_id) = store.add_image(&idx.id, &r0.record_id, image(100)).await.unwrap().unwrap();
    assert_eq!(with_two.image_ids, vec![r0.image_ids[0].clone(), new_image_id.clone()]);
    assert!(store.add_image(&idx.id, "missing", image(1)).await.unwrap().is_none());
    assert_eq!(store.get_record(&idx.id, &r0.record_id).await.unwrap().unwrap().image_ids.len(), 2);

    // update
    let patch = RecordPatch {
        name: Some("Renamed".into()),
        watch_list: Some(vec![]),
        reference: Some("ref-0".into()),
        ..Default::default()
    };
    let updated = store.update_record(&idx.id, &r0.record_id, patch).await.unwrap().unwrap();
    assert_eq!(updated.fields.name, "Renamed");
    assert_eq!(updated.fields.dob, "1990-01-15");
    assert!(updated.fields.watch_list.is_empty());
    assert_eq!(updated.reference.as_deref(), Some("ref-0"));
    assert_eq!(updated.image_ids.len(), 2);
    let reread = store.get_record(&idx.id, &r0.record_id).await.unwrap().unwrap();
    assert_eq!(reread.fields, updated.fields);
    assert_eq!(reread.reference.as_deref(), Some("ref-0"));
    assert_eq!(store.find_by_reference(&idx.id, "ref-0").await.unwrap().unwrap().record_id, r0.record_id);
    // Same reference on the same record is fine; on another record a conflict.
    store
        .update_record(&idx.id, &r0.record_id, RecordPatch { reference: Some("ref-0".into()), ..Default::default() })
        .await
        .unwrap()
        .unwrap();
    let clash = store
        .update_record(
            &idx.id,
            &created[1].record_id,
            RecordPatch { reference: Some("ref-0".into()), ..Default::default() },
        )
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    assert!(
        store
            .update_record(&idx.id, "missing", RecordPatch { name: Some("x".into()), ..Default::default() })
            .await
            .unwrap()
            .is_none()
    );
    // Empty reference clears it.
    let cleared = store
        .update_record(&idx.id, &r0.record_id, RecordPatch { reference: Some(String::new()), ..Default::default() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.reference, None);

    // delete: images and embeddings gone.
    let before = store.embeddings(Pack::Open).await.unwrap().len();
    assert_eq!(before, 8);
    let mut deleted = store.delete_record(&idx.id, &r0.record_id).await.unwrap().unwrap();
    deleted.sort();
    let mut expected_images = with_two.image_ids.clone();
    expected_images.sort();
    assert_eq!(deleted, expected_images);
    for id in &deleted {
        assert!(store.get_image(id).await.unwrap().is_none());
    }
    let after = store.embeddings(Pack::Open).await.unwrap();
    assert_eq!(after.len(), 6);
    assert!(after.iter().all(|e| e.record_id != r0.record_id));
    assert!(store.get_record(&idx.id, &r0.record_id).await.unwrap().is_none());
    assert!(store.delete_record(&idx.id, &r0.record_id).await.unwrap().is_none());
    assert_eq!(store.get_index(&idx.id).await.unwrap().unwrap().record_count, 6);
    store.integrity_check().await.unwrap();
}

async fn enrol_with_existing_reference_returns_existing_and_stores_nothing(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let idx = store.create_index(new_index("refs")).await.unwrap();
    let other = store.create_index(new_index("other")).await.unwrap();
    let first = enrol_new(store.as_ref(), &idx.id, "alice", Some("client-42"), 1).await;

    let again =
        store.enrol(&idx.id, fields("someone else"), Some("client-42".into()), image(2)).await.unwrap().unwrap();
    assert!(!again.is_created());
    let EnrolOutcome::Existing(existing) = again else { panic!("expected Existing") };
    assert_eq!(existing.record_id, first.record_id);
    assert_eq!(existing.fields.name, "alice");
    assert_eq!(existing.image_ids, first.image_ids);

    assert_eq!(store.get_index(&idx.id).await.unwrap().unwrap().record_count, 1);
    assert_eq!(store.embeddings(Pack::Open).await.unwrap().len(), 1);
    let (page, _) = store.list_records(&idx.id, 10, None).await.unwrap();
    assert_eq!(page.len(), 1);

    // The same reference in another index is a different record.
    enrol_new(store.as_ref(), &other.id, "alice2", Some("client-42"), 3).await;
    // An empty reference is no reference.
    enrol_new(store.as_ref(), &idx.id, "bob", Some(""), 4).await;
    enrol_new(store.as_ref(), &idx.id, "carol", Some(""), 5).await;
    assert_eq!(store.get_index(&idx.id).await.unwrap().unwrap().record_count, 3);

    // Bad embeddings are refused and nothing is stored.
    let mut bad = image(6);
    bad.embedding = vec![];
    assert!(matches!(store.enrol(&idx.id, fields("x"), None, bad).await, Err(StoreError::InvalidInput(_))));
    let mut nan = image(7);
    nan.embedding[0] = f32::NAN;
    assert!(matches!(store.enrol(&idx.id, fields("x"), None, nan).await, Err(StoreError::InvalidInput(_))));
    assert_eq!(store.get_index(&idx.id).await.unwrap().unwrap().record_count, 3);
    store.integrity_check().await.unwrap();
}

async fn delete_index_cascades(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let doomed = store.create_index(new_index("doomed")).await.unwrap();
    let kept = store.create_index(new_index("kept")).await.unwrap();
    let mut doomed_images = Vec::new();
    for i in 0..3u8 {
        let r = enrol_new(store.as_ref(), &doomed.id, &format!("d{i}"), Some(&format!("r{i}")), i).await;
        let (_, extra) = store.add_image(&doomed.id, &r.record_id, image(50 + i)).await.unwrap().unwrap();
        doomed_images.extend(r.image_ids);
        doomed_images.push(extra);
    }
    let keeper = enrol_new(store.as_ref(), &kept.id, "k", None, 9).await;
    store.create_user("op", "pw", Role::Operator).await.unwrap();
    assert!(store.grant("op", &doomed.id).await.unwrap());
    assert!(store.grant("op", &kept.id).await.unwrap());

    assert!(store.delete_index(&doomed.id).await.unwrap());
    for id in &doomed_images {
        assert!(store.get_image(id).await.unwrap().is_none());
    }
    let left = store.embeddings(Pack::Open).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].record_id, keeper.record_id);
    assert!(store.find_by_reference(&doomed.id, "r0").await.unwrap().is_none());
    let (page, next) = store.list_records(&doomed.id, 10, None).await.unwrap();
    assert!(page.is_empty() && next.is_none());
    assert_eq!(store.get_user("op").await.unwrap().unwrap().grants, vec![kept.id.clone()]);
    assert_eq!(store.list_indexes().await.unwrap().len(), 1);
    assert_eq!(store.get_index(&kept.id).await.unwrap().unwrap().record_count, 1);
    store.integrity_check().await.unwrap();
}

async fn embeddings_are_bit_exact_and_filtered_by_pack(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let a = store.create_index(new_index("a")).await.unwrap();
    let b = store.create_index(NewIndex { pack: Pack::Insightface, ..new_index("b") }).await.unwrap();
    let vector = vec![
        0.1f32,
        -0.0,
        1.0e-45, // subnormal
        f32::MIN_POSITIVE,
        f32::MAX,
        -1.0 / 3.0,
        std::f32::consts::PI,
        123_456.79,
    ];
    let mut img = image(1);
    img.embedding = vector.clone();
    let rec = store.enrol(&a.id, fields("v"), None, img).await.unwrap().unwrap().into_record();
    let mut img_b = image(2);
    img_b.embedding = vec![0.5; 4];
    img_b.pack = Pack::Insightface;
    store.enrol(&b.id, fields("w"), None, img_b).await.unwrap().unwrap();

    let rows = store.embeddings(Pack::Open).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].image_id, rec.image_ids[0]);
    assert_eq!(rows[0].record_id, rec.record_id);
    assert_eq!(rows[0].index_id, a.id);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&rows[0].vector), bits(&vector));

    let rows_b = store.embeddings(Pack::Insightface).await.unwrap();
    assert_eq!(rows_b.len(), 1);
    assert_eq!(rows_b[0].vector, vec![0.5; 4]);
}

async fn users_passwords_and_grants(backend: Backend) {
    let (_dir, store) = open(backend).await;
    assert_eq!(store.user_count().await.unwrap(), 0);
    let admin = store.create_user("admin", "correct horse", Role::Admin).await.unwrap();
    assert_eq!(admin.role, Role::Admin);
    assert!(admin.password_hash.starts_with("$argon2id$"));
    assert!(!format!("{admin:?}").contains("argon2"), "Debug redacts the hash");
    let json = serde_json::to_value(&admin).unwrap();
    assert!(json.get("password_hash").is_none());
    assert_eq!(json["role"], "admin");

    match store.create_user("admin", "other", Role::Searcher).await {
        Err(StoreError::DuplicateUser(u)) => assert_eq!(u, "admin"),
        other => panic!("expected DuplicateUser, got {other:?}"),
    }
    assert!(matches!(store.create_user("a:b", "x", Role::Searcher).await, Err(StoreError::InvalidInput(_))));
    assert!(matches!(store.create_user("", "x", Role::Searcher).await, Err(StoreError::InvalidInput(_))));

    // Same password, different salt.
    let s1 = store.create_user("s1", "same", Role::Searcher).await.unwrap();
    let s2 = store.create_user("s2", "same", Role::Auditor).await.unwrap();
    assert_ne!(s1.password_hash, s2.password_hash);
    assert_eq!(store.user_count().await.unwrap(), 3);

    assert_eq!(store.verify_password("admin", "correct horse").await.unwrap().unwrap().username, "admin");
    assert!(store.verify_password("admin", "wrong").await.unwrap().is_none());
    assert!(store.verify_password("nobody", "correct horse").await.unwrap().is_none());
    assert!(store.verify_password("Admin", "correct horse").await.unwrap().is_none());

    assert!(store.set_password("admin", "new pw").await.unwrap());
    assert!(!store.set_password("nobody", "x").await.unwrap());
    assert!(store.verify_password("admin", "correct horse").await.unwrap().is_none());
    assert!(store.verify_password("admin", "new pw").await.unwrap().is_some());

    let i1 = store.create_index(new_index("i1")).await.unwrap();
    let i2 = store.create_index(new_index("i2")).await.unwrap();
    assert!(store.grant("s1", &i1.id).await.unwrap());
    assert!(store.grant("s1", &i1.id).await.unwrap(), "granting twice is fine");
    assert!(store.grant("s1", &i2.id).await.unwrap());
    assert!(!store.grant("nobody", &i1.id).await.unwrap());
    assert!(!store.grant("s1", "no-index").await.unwrap());
    let mut expected = vec![i1.id.clone(), i2.id.clone()];
    expected.sort();
    assert_eq!(store.get_user("s1").await.unwrap().unwrap().grants, expected);
    let verified = store.verify_password("s1", "same").await.unwrap().unwrap();
    assert_eq!(verified.grants, expected);

    assert!(store.revoke("s1", &i1.id).await.unwrap());
    assert!(!store.revoke("s1", &i1.id).await.unwrap());
    assert_eq!(store.get_user("s1").await.unwrap().unwrap().grants, vec![i2.id.clone()]);

    let users = store.list_users().await.unwrap();
    assert_eq!(users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), vec!["admin", "s1", "s2"]);
    assert_eq!(users[1].grants, vec![i2.id.clone()]);
    assert_eq!(users[2].role, Role::Auditor);

    assert!(store.delete_user("s1").await.unwrap());
    assert!(!store.delete_user("s1").await.unwrap());
    assert!(store.get_user("s1").await.unwrap().is_none());
    assert_eq!(store.user_count().await.unwrap(), 2);
    // Re-creating the user does not resurrect old grants.
    assert!(store.create_user("s1", "x", Role::Searcher).await.unwrap().grants.is_empty());
    assert!(store.get_user("s1").await.unwrap().unwrap().grants.is_empty());

    assert_eq!("OPERATOR".parse::<Role>().unwrap(), Role::Operator);
    assert!("root".parse::<Role>().is_err());
    assert_eq!("external".parse::<IndexType>().unwrap(), IndexType::External);
    store.integrity_check().await.unwrap();
}

#[tokio::test]
async fn reopen_after_drop_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("data");
    let (index_id, record, image_id) = {
        let store = SqliteStore::open(&data).unwrap();
        assert!(store.path().ends_with("facesearch.sqlite3"));
        let idx = store.create_index(new_index("persist")).await.unwrap();
        let rec = enrol_new(&store, &idx.id, "p", Some("ref"), 7).await;
        store.create_user("admin", "pw", Role::Admin).await.unwrap();
        store.grant("admin", &idx.id).await.unwrap();
        let image_id = rec.image_ids[0].clone();
        (idx.id, rec, image_id)
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "data dir is private");
    }
    let store = SqliteStore::open(&data).unwrap();
    let idx = store.get_index(&index_id).await.unwrap().unwrap();
    assert_eq!(idx.record_count, 1);
    let got = store.get_record(&index_id, &record.record_id).await.unwrap().unwrap();
    assert_eq!(got.fields, record.fields);
    assert_eq!(got.created_at, record.created_at);
    assert_eq!(store.get_image(&image_id).await.unwrap().unwrap().bytes, image(7).bytes);
    assert_eq!(store.embeddings(Pack::Open).await.unwrap()[0].vector, image(7).embedding);
    let admin = store.verify_password("admin", "pw").await.unwrap().unwrap();
    assert_eq!(admin.grants, vec![index_id.clone()]);
    store.integrity_check().await.unwrap();
    drop(store);
    // And a third time, through a shared handle.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data).unwrap());
    assert_eq!(store.list_indexes().await.unwrap().len(), 1);
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("facesearch.sqlite3")).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    match SqliteStore::open(dir.path()) {
        Err(StoreError::UnsupportedSchema { found: 999, .. }) => {}
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
}

/// An index or job row naming a pack this build does not know (written by another
/// build sharing the database) is read as `PackName::Unknown`: it never fails a whole
/// listing, and a vector of a known pack is refused for that index (`PackMismatch`).
async fn a_row_naming_an_unknown_pack_is_kept_not_refused(backend: Backend) {
    let (_dir, store, location) = open_at(backend).await;
    let kept = store.create_index(new_index("kept")).await.unwrap();
    let odd = store.create_index(new_index("odd")).await.unwrap();
    enrol_new(store.as_ref(), &odd.id, "before", None, 1).await;
    store.start_reembed(&odd.id, Pack::Insightface, "admin").await.unwrap().expect("the index exists");
    execute(
        &location,
        &format!(
            "UPDATE indexes SET pack = 'nonesuch' WHERE id = '{id}'; \
             UPDATE reembed_jobs SET pack = 'newer', from_pack = 'nonesuch' WHERE index_id = '{id}';",
            id = odd.id
        ),
    );

    let listed = store.list_indexes().await.expect("one odd row does not fail the listing");
    let pack_of = |id: &str| listed.iter().find(|i| i.id == id).map(|i| i.pack.clone());
    assert_eq!(pack_of(&kept.id), Some(PackName::Known(Pack::Open)));
    assert_eq!(pack_of(&odd.id), Some(PackName::Unknown("nonesuch".into())));
    let got = store.get_index(&odd.id).await.unwrap().expect("the index is read");
    assert_eq!((got.pack.name(), got.pack.known(), got.record_count), ("nonesuch", None, 1));
    assert_eq!(serde_json::to_value(&got).unwrap()["pack"], "nonesuch", "serialised as the name it replaced");

    match store.enrol(&odd.id, fields("after"), None, image(2)).await {
        Err(StoreError::PackMismatch { index_pack, vector_pack, .. }) => {
            assert_eq!((index_pack.as_str(), vector_pack.as_str()), ("nonesuch", "open"));
        }
        other => panic!("expected PackMismatch, got {other:?}"),
    }
    enrol_new(store.as_ref(), &kept.id, "kept", None, 3).await;

    let jobs = store.running_reembeds().await.expect("one odd job does not fail the listing");
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].pack.name(), jobs[0].from_pack.name()), ("newer", "nonesuch"));
    let job = store.reembed_job(&odd.id).await.unwrap().expect("the job is read");
    assert_eq!((job.pack, job.from_pack), (PackName::Unknown("newer".into()), PackName::Unknown("nonesuch".into())));
}

async fn concurrent_enrolments_keep_exact_counts(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let idx = store.create_index(new_index("busy")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..24u8 {
        let store = Arc::clone(&store);
        let index_id = idx.id.clone();
        tasks.push(tokio::spawn(async move {
            // Every reference twice: exactly 12 records must result.
            let reference = format!("ref-{}", i % 12);
            store.enrol(&index_id, fields("c"), Some(reference), image(i)).await.unwrap().unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap().is_created() {
            created += 1;
        }
    }
    assert_eq!(created, 12);
    assert_eq!(store.get_index(&idx.id).await.unwrap().unwrap().record_count, 12);
    assert_eq!(store.embeddings(Pack::Open).await.unwrap().len(), 12);
    store.integrity_check().await.unwrap();
}

async fn audit_log_appends_filters_pages_and_prunes(backend: Backend) {
    use facesearch_store::{AuditQuery, NewAuditEvent};
    let (_dir, store) = open(backend).await;
    let event = |actor: &str, action: &str, index: &str, record: &str| NewAuditEvent {
        actor: actor.into(),
        action: action.into(),
        outcome: "ok".into(),
        index_ids: vec![index.into()],
        record_ids: vec![record.into()],
        details: serde_json::json!({"min_match_score": 70}),
    };
    store.append_audit(event("alice", "face.search", "i1", "r1")).await.unwrap();
    store.append_audit(event("bob", "record.enrol", "i2", "r2")).await.unwrap();
    store.append_audit(event("alice", "image.download", "i1", "r3")).await.unwrap();

    let all = store.query_audit(AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[0].id > all[1].id && all[1].id > all[2].id, "newest first");
    assert_eq!(all[2].details["min_match_score"], 70);

    let q = |f: AuditQuery| store.query_audit(AuditQuery { limit: 10, ..f });
    assert_eq!(q(AuditQuery { actor: Some("alice".into()), ..Default::default() }).await.unwrap().len(), 2);
    assert_eq!(q(AuditQuery { action: Some("record.enrol".into()), ..Default::default() }).await.unwrap().len(), 1);
    assert_eq!(q(AuditQuery { index_id: Some("i1".into()), ..Default::default() }).await.unwrap().len(), 2);
    assert_eq!(q(AuditQuery { record_id: Some("r2".into()), ..Default::default() }).await.unwrap()[0].actor, "bob");
    let page2 = q(AuditQuery { before_id: Some(all[0].id), ..Default::default() }).await.unwrap();
    assert_eq!(page2.len(), 2);
    assert_eq!(q(AuditQuery { since: Some("2999-01-01".into()), ..Default::default() }).await.unwrap().len(), 0);

    assert_eq!(store.prune_audit("1970-01-02").await.unwrap(), 0, "nothing that old");
    assert_eq!(store.prune_audit("2999-01-01").await.unwrap(), 3);
    assert!(store.query_audit(AuditQuery { limit: 10, ..Default::default() }).await.unwrap().is_empty());
    store.integrity_check().await.unwrap();
}

async fn the_vector_version_moves_with_every_embedding_change_and_only_then(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let idx = store.create_index(new_index("v")).await.unwrap();
    let mut last = store.vectors_version().await.unwrap();
    let mut moved = |now: u64, what: &str| {
        assert!(now > last, "{what}: {now} after {last}");
        last = now;
    };
    let r = enrol_new(store.as_ref(), &idx.id, "a", None, 1).await;
    moved(store.vectors_version().await.unwrap(), "enrol");
    store.add_image(&idx.id, &r.record_id, image(2)).await.unwrap().unwrap();
    moved(store.vectors_version().await.unwrap(), "add image");
    // Changes that do not touch vectors leave it alone.
    let unchanged = store.vectors_version().await.unwrap();
    store.create_user("u", "pw", Role::Searcher).await.unwrap();
    store
        .update_record(&idx.id, &r.record_id, RecordPatch { name: Some("b".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(store.vectors_version().await.unwrap(), unchanged);
    store.delete_record(&idx.id, &r.record_id).await.unwrap().unwrap();
    moved(store.vectors_version().await.unwrap(), "delete record (cascade)");
    enrol_new(store.as_ref(), &idx.id, "c", None, 3).await;
    moved(store.vectors_version().await.unwrap(), "enrol again");
    assert!(store.delete_index(&idx.id).await.unwrap());
    moved(store.vectors_version().await.unwrap(), "delete index (cascade)");
}

async fn enrol_batch_is_one_all_or_nothing_transaction(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let idx = store.create_index(new_index("bulk")).await.unwrap();
    let batch = (0..20u8).map(|i| (fields(&format!("b{i}")), Some(format!("ref-{i}")), image(i))).collect();
    let out = store.enrol_batch(&idx.id, batch).await.unwrap().unwrap();
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(EnrolOutcome::is_created));
    assert_eq!(store.embeddings(Pack::Open).await.unwrap().len(), 20);
    // A bad item (no image bytes) refuses the whole batch: nothing of it is stored.
    let mut bad = image(99);
    bad.bytes.clear();
    let batch = vec![(fields("ok"), None, image(30)), (fields("bad"), None, bad)];
    assert!(store.enrol_batch(&idx.id, batch).await.is_err());
    assert_eq!(store.get_index(&idx.id).await.unwrap().unwrap().record_count, 20);
    // Known references come back as existing records; an unknown index is None.
    let again = store.enrol_batch(&idx.id, vec![(fields("x"), Some("ref-3".into()), image(3))]).await.unwrap().unwrap();
    assert!(!again[0].is_created());
    assert!(store.enrol_batch("nope", vec![]).await.unwrap().is_none());
}

/// A batch mixing items without a reference (which PostgreSQL inserts by multi-row
/// statements) with referenced, empty-reference and already-known ones stores, in
/// order, what one-by-one enrolment stores.
async fn enrol_batch_without_references_stores_what_enrol_stores(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let idx = store.create_index(new_index("mixed")).await.unwrap();
    let known = enrol_new(store.as_ref(), &idx.id, "known", Some("ref-known"), 200).await;
    let references = [None, Some(""), None, Some("ref-3"), Some("ref-known"), None, None];
    let batch = references
        .iter()
        .enumerate()
        .map(|(i, r)| (fields(&format!("m{i}")), r.map(str::to_owned), image(i as u8)))
        .collect();
    let out = store.enrol_batch(&idx.id, batch).await.unwrap().unwrap();
    assert_eq!(out.len(), references.len());
    let mut created = Vec::new();
    for (i, (outcome, reference)) in out.into_iter().zip(references).enumerate() {
        if reference == Some("ref-known") {
            assert!(!outcome.is_created());
            assert_eq!(serde_json::to_value(outcome.into_record()).unwrap(), serde_json::to_value(&known).unwrap());
            continue;
        }
        assert!(outcome.is_created(), "item {i}");
        let record = outcome.into_record();
        assert_eq!(record.fields, fields(&format!("m{i}")));
        assert_eq!(record.reference, reference.filter(|r| !r.is_empty()).map(str::to_owned));
        // What the store returned is what it holds.
        let held = store.get_record(&idx.id, &record.record_id).await.unwrap().expect("stored");
        assert_eq!(serde_json::to_value(held).unwrap(), serde_json::to_value(&record).unwrap());
        let stored = store.get_image(&record.image_ids[0]).await.unwrap().unwrap();
        let sent = image(i as u8);
        assert_eq!((stored.bytes.as_slice(), stored.mime.as_str()), (sent.bytes.as_slice(), sent.mime.as_str()));
        assert_eq!((stored.record_id, stored.file_name), (record.record_id.clone(), sent.file_name.clone()));
        assert_eq!(record.images[0].quality, sent.quality);
        created.push((record, sent.embedding));
    }
    let vectors = store.embeddings(Pack::Open).await.unwrap();
    for (record, embedding) in &created {
        let row = vectors.iter().find(|v| v.image_id == record.image_ids[0]).expect("vector stored");
        assert_eq!((row.record_id.as_str(), row.index_id.as_str()), (record.record_id.as_str(), idx.id.as_str()));
        assert_eq!(row.vector, *embedding, "bit-exact");
    }
    assert_eq!(vectors.len(), created.len() + 1);
    assert_eq!(store.get_index(&idx.id).await.unwrap().unwrap().record_count, created.len() as u64 + 1);
    // A vector of another pack refuses the whole batch, even among unreferenced items.
    let mut other = image(50);
    other.pack = Pack::Insightface;
    let batch = vec![(fields("ok"), None, image(51)), (fields("other"), None, other)];
    assert!(matches!(store.enrol_batch(&idx.id, batch).await, Err(StoreError::PackMismatch { .. })));
    assert_eq!(store.embeddings(Pack::Open).await.unwrap().len(), created.len() + 1);
    store.integrity_check().await.unwrap();
}

async fn the_last_admin_is_never_deleted(backend: Backend) {
    let (_dir, store) = open(backend).await;
    store.create_user("root", "pw", Role::Admin).await.unwrap();
    store.create_user("op", "pw", Role::Operator).await.unwrap();
    match store.delete_user("root").await {
        Err(StoreError::LastAdmin(name)) => assert_eq!(name, "root"),
        other => panic!("expected LastAdmin, got {other:?}"),
    }
    assert!(store.get_user("root").await.unwrap().is_some(), "nothing was deleted");
    // Other users, and unknown ones, are not affected by the rule.
    assert!(store.delete_user("op").await.unwrap());
    assert!(!store.delete_user("nobody").await.unwrap());
    // With a second admin, either may go; then the other is the last.
    store.create_user("root2", "pw", Role::Admin).await.unwrap();
    assert!(store.delete_user("root").await.unwrap());
    assert!(matches!(store.delete_user("root2").await, Err(StoreError::LastAdmin(_))));
}

/// Two admins deleting each other at the same moment through two connections (two
/// processes, or two nodes on one PostgreSQL): exactly one delete succeeds, every time.
async fn concurrent_deletes_of_the_last_two_admins_leave_one(backend: Backend) {
    let (_dir, a, b) = open_twice(backend).await;
    let mut survivor: Option<String> = None;
    for round in 0..20 {
        let (x, y) = (format!("admin-x{round}"), format!("admin-y{round}"));
        a.create_user(&x, "pw", Role::Admin).await.unwrap();
        b.create_user(&y, "pw", Role::Admin).await.unwrap();
        // The last round's survivor goes (three admins: allowed): x and y are the only two.
        if let Some(s) = survivor.take() {
            assert!(a.delete_user(&s).await.unwrap());
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let deleting = |store: Arc<dyn Store>, name: String| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.delete_user(&name).await
            })
        };
        // x deletes y on one connection while y deletes x on the other.
        let (rx, ry) = (deleting(a.clone(), y.clone()), deleting(b.clone(), x.clone()));
        let outcomes = [rx.await.unwrap(), ry.await.unwrap()];
        let deleted = outcomes.iter().filter(|o| matches!(o, Ok(true))).count();
        let refused = outcomes.iter().filter(|o| matches!(o, Err(StoreError::LastAdmin(_)))).count();
        assert_eq!((deleted, refused), (1, 1), "round {round}: {outcomes:?}");
        let admins: Vec<String> =
            b.list_users().await.unwrap().into_iter().filter(|u| u.role == Role::Admin).map(|u| u.username).collect();
        assert_eq!(admins.len(), 1, "round {round}: exactly one admin remains, not {admins:?}");
        survivor = admins.into_iter().next();
    }
}

/// Each test above, once per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::Postgres).await
            })*
        }
    };
}

/// Vector search is a capability of the PostgreSQL store only; the embedded store
/// offers none (`vector_search()` is `None`), so no caller can ask it for one.
async fn vector_search_is_a_capability_of_postgres_only(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let index = store.create_index(new_index("vectors")).await.unwrap();
    enrol_new(store.as_ref(), &index.id, "Ann", None, 1).await;
    let query = VectorQuery {
        pack: image(1).pack,
        index_ids: vec![index.id.clone()],
        vector: image(1).embedding,
        min_similarity: -1.0,
        limit: 5,
    };
    match backend {
        Backend::Sqlite => {
            assert!(store.vector_search().is_none());
        }
        Backend::Postgres => {
            let vectors = store.vector_search().expect("PostgreSQL searches its vectors");
            let found = vectors.nearest_faces(query).await.unwrap();
            assert_eq!(found.len(), 1);
        }
    }
}

on_both_stores!(
    vector_search_is_a_capability_of_postgres_only,
    index_crud_and_duplicate_name,
    image_quality_is_stored_and_shown_with_the_record,
    enrol_get_page_update_delete,
    enrol_with_existing_reference_returns_existing_and_stores_nothing,
    delete_index_cascades,
    embeddings_are_bit_exact_and_filtered_by_pack,
    users_passwords_and_grants,
    concurrent_enrolments_keep_exact_counts,
    audit_log_appends_filters_pages_and_prunes,
    the_vector_version_moves_with_every_embedding_change_and_only_then,
    enrol_batch_is_one_all_or_nothing_transaction,
    enrol_batch_without_references_stores_what_enrol_stores,
    the_last_admin_is_never_deleted,
    concurrent_deletes_of_the_last_two_admins_leave_one,
    a_row_naming_an_unknown_pack_is_kept_not_refused,
);
