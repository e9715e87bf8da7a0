//! The scale-out [`Store`]: PostgreSQL with the pgvector extension.
//!
//! Several stateless facesearch nodes share one database: every write is one
//! transaction, and vectors are searched *in* the database (pgvector HNSW per model
//! dimension, candidates re-ranked exactly), so a node holds no vectors in memory and
//! sees the other nodes' enrolments and deletes as soon as they commit.
//!
//! * **Schema** by versioned migrations embedded in the binary (`migrations/postgres`,
//!   applied by sqlx's migrator under a PostgreSQL advisory lock, so nodes starting
//!   together apply each step once and the others wait).
//! * **Pool**: bounded, with an acquire timeout and a statement timeout; connections
//!   are checked before use, so a node reconnects by itself after the database comes
//!   back. An unreachable database is [`StoreError::Unavailable`], never a hang.
//! * **Concurrency**: an enrolment takes a key-share lock on its index row (moving
//!   an index to another pack takes the row's update lock), so a vector can never
//!   land in an index of another pack; a client reference is unique per index by a
//!   unique index, so two nodes enrolling the same reference at once store one record.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use pgvector::Vector;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow, PgPool, Postgres, Transaction};

use crate::common::{
    INDEX_COLS, JOB_COLS, RECORD_COLS, apply_patch, check_image, check_pack, check_vector, count_u64, decode_cursor,
    encode_cursor, hash_password, new_id, password_matches, reference_taken, validate_username,
};
use crate::time::now_rfc3339;
use crate::{
    AuditEvent, AuditQuery, EmbeddingRow, EnrolOutcome, ImageSummary, IndexInfo, IndexPatch, IndexType, JobState,
    MAX_LISTED_FAILURES, NearestFace, NewAuditEvent, NewImage, NewIndex, PackSwitch, PendingImage, Record,
    RecordFields, RecordPatch, ReembedFailure, ReembedJob, ReembedStart, Role, Store, StoreError, StoredImage, User,
    VectorQuery,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The model dimensions that have an HNSW graph (see the first migration).
pub(crate) const INDEXED_DIMS: [usize; 2] = [128, 512];

/// How to reach and use the database.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?sslmode=…`.
    pub url: String,
    /// Most connections this node opens.
    pub max_connections: u32,
    /// How long a request waits for a connection (or for the database to answer a
    /// new connection) before it fails as unavailable.
    pub acquire_timeout: Duration,
    /// Longest a single statement may run (server-side `statement_timeout`).
    pub statement_timeout: Duration,
    /// pgvector's `hnsw.ef_search`: candidates the graph search keeps (recall vs time).
    pub ef_search: u32,
    /// Searches over fewer records than this scan every vector exactly instead of
    /// walking the HNSW graph: exact recall, at about 50 ms per 100,000 faces on two cores.
    pub exact_below: u64,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("ef_search", &self.ef_search)
            .field("exact_below", &self.exact_below)
            .finish()
    }
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
            // Exact at every size: at 100,000 faces even ef_search 1000 (pgvector's
            // most) misses matches at score 70 (threshold recall 0.9988 mated,
            // 0.978 non-mated; README). The graph is the operator's choice.
            ef_search: 1000,
            exact_below: u64::MAX,
        }
    }
}

/// `url` with any password replaced by `***` (for logs and errors).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// The PostgreSQL implementation of [`Store`]. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    ef_search: u32,
    exact_below: u64,
    /// Verified instead of a real hash for unknown users (timing equalisation).
    dummy_hash: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").field("ef_search", &self.ef_search).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects, and applies pending migrations (under an advisory lock).
    pub async fn connect(config: &PostgresConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::InvalidInput(format!("database URL {}: {e}", redact_url(&config.url))))?;
        let timeout_ms = config.statement_timeout.as_millis().to_string();
        let options = options
            .application_name("facesearch")
            .options([("statement_timeout", timeout_ms.as_str()), ("lock_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout)
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .map_err(db("connecting"))?;
        let applied = MIGRATOR.run(&pool).await;
        match applied {
            Ok(()) => {}
            // Written by a newer build: refuse rather than misread.
            Err(sqlx::migrate::MigrateError::VersionMissing(found)) => {
                let supported = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
                return Err(StoreError::UnsupportedSchema { found, supported });
            }
            Err(e) => return Err(e.into()),
        }
        let dummy_hash = hash_password("facesearch timing-equalisation dummy")?;
        tracing::info!(url = %redact_url(&config.url), "postgres store opened");
        Ok(PostgresStore { pool, ef_search: config.ef_search.max(1), exact_below: config.exact_below, dummy_hash })
    }

    /// The same store searching with another `hnsw.ef_search` and exact-scan bar
    /// (benchmarks).
    pub fn with_search(mut self, ef_search: u32, exact_below: u64) -> Self {
        self.ef_search = ef_search.clamp(1, 1000);
        self.exact_below = exact_below;
        self
    }

    /// Bytes on disk of the embeddings table (with its TOAST and other indexes) and
    /// of the HNSW graph of `dim` dimensions (sizing figures for the docs).
    pub async fn relation_sizes(&self, dim: usize) -> Result<(i64, i64), StoreError> {
        let graph = format!("embeddings_hnsw_{dim}");
        sqlx::query_as(
            "SELECT pg_total_relation_size('embeddings') - COALESCE(pg_relation_size(to_regclass($1)), 0),
                    COALESCE(pg_relation_size(to_regclass($1)), 0)",
        )
        .bind(graph)
        .fetch_one(&self.pool)
        .await
        .map_err(db("measuring table sizes"))
    }

    /// Drops the HNSW graph of `dim`-dimensional vectors, for bulk loading: building it
    /// once afterwards ([`PostgresStore::build_vector_graph`]) is far faster than keeping
    /// it up to date row by row. Searches scan exactly until it is rebuilt.
    pub async fn drop_vector_graph(&self, dim: usize) -> Result<(), StoreError> {
        let dim = indexed_dim(dim)?;
        sqlx::query(AssertSqlSafe(format!("DROP INDEX IF EXISTS embeddings_hnsw_{dim}")))
            .execute(&self.pool)
            .await
            .map_err(db("dropping a vector graph"))?;
        Ok(())
    }

    /// Builds the HNSW graph of `dim`-dimensional vectors if it is missing (the same
    /// definition as the schema's), with up to 1 GB of memory and two parallel workers.
    pub async fn build_vector_graph(&self, dim: usize) -> Result<(), StoreError> {
        let dim = indexed_dim(dim)?;
        let mut conn = self.pool.acquire().await.map_err(db("building a vector graph"))?;
        for sql in [
            "SET maintenance_work_mem = '1GB'".to_string(),
            "SET max_parallel_maintenance_workers = 2".to_string(),
            "SET statement_timeout = 0".to_string(),
            format!(
                "CREATE INDEX IF NOT EXISTS embeddings_hnsw_{dim} ON embeddings
                 USING hnsw ((vector::halfvec({dim})) halfvec_cosine_ops) WITH (m = 16, ef_construction = 128)
                 WHERE dim = {dim}"
            ),
            "RESET ALL".to_string(),
        ] {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await.map_err(db("building a vector graph"))?;
        }
        Ok(())
    }

    /// The connection pool (for tools such as `facesearch migrate`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The live vectors of `pack` (of these indexes only, if given), oldest first.
    async fn scan_embeddings(&self, pack: &str, index_ids: Option<&[String]>) -> Result<Vec<EmbeddingRow>, StoreError> {
        let rows: Vec<EmbeddingDbRow> = sqlx::query_as(
            "SELECT e.image_id, e.record_id, e.index_id, e.vector FROM embeddings e
             JOIN images i ON i.id = e.image_id
             WHERE e.pack = $1 AND ($2::text[] IS NULL OR e.index_id = ANY($2)) ORDER BY i.seq",
        )
        .bind(pack)
        .bind(index_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db("scanning embeddings"))?;
        Ok(rows.into_iter().map(EmbeddingRow::from).collect())
    }

    async fn begin(&self, context: &'static str) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(db(context))
    }
}

/// `dim` if it has a graph in the schema.
fn indexed_dim(dim: usize) -> Result<usize, StoreError> {
    INDEXED_DIMS
        .contains(&dim)
        .then_some(dim)
        .ok_or_else(|| StoreError::InvalidInput(format!("no vector graph for {dim} dimensions")))
}

// ---------------------------------------------------------------------------------
// Errors

/// Maps a driver error: connection trouble is [`StoreError::Unavailable`].
pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| {
        let unavailable = match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                // 08: connection exception; 57P01-03: shutdown / cannot connect now.
                c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable { context, detail: e.to_string() }
        } else {
            StoreError::Postgres { context, source: e }
        }
    }
}

fn sql_state(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

const UNIQUE_VIOLATION: &str = "23505";
const FOREIGN_KEY_VIOLATION: &str = "23503";

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------
// Rows

#[derive(FromRow)]
struct IndexRow {
    id: String,
    index_name: String,
    index_type: String,
    record_count: i64,
    title: String,
    description: String,
    pack: String,
    created_at: String,
    updated_at: String,
}

impl IndexRow {
    fn into_info(self) -> Result<IndexInfo, StoreError> {
        let index_type: IndexType =
            self.index_type.parse().map_err(|e| StoreError::Corrupt(format!("index {}: {e}", self.id)))?;
        Ok(IndexInfo {
            record_count: count_u64(self.record_count, "record_count")?,
            id: self.id,
            index_name: self.index_name,
            index_type,
            title: self.title,
            description: self.description,
            pack: self.pack,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(FromRow)]
struct RecordRow {
    id: String,
    index_id: String,
    name: String,
    dob: String,
    nationality: String,
    gender: String,
    id_no: String,
    address: String,
    watch_list: Json<Vec<String>>,
    additional_info: String,
    reference: Option<String>,
    created_at: String,
    updated_at: String,
}

impl RecordRow {
    fn into_record(self, images: Vec<ImageSummary>) -> Record {
        Record {
            record_id: self.id,
            index_id: self.index_id,
            fields: RecordFields {
                name: self.name,
                dob: self.dob,
                nationality: self.nationality,
                gender: self.gender,
                id_no: self.id_no,
                address: self.address,
                watch_list: self.watch_list.0,
                additional_info: self.additional_info,
            },
            reference: self.reference,
            image_ids: images.iter().map(|i| i.image_id.clone()).collect(),
            images,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Completes record rows with their images (oldest first), keeping the row order.
async fn attach_images(conn: &mut sqlx::PgConnection, rows: Vec<RecordRow>) -> Result<Vec<Record>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let images: Vec<(String, String, Option<Json<serde_json::Value>>)> = sqlx::query_as(
        "SELECT record_id, id, quality FROM images WHERE record_id = ANY($1) ORDER BY record_id, created_at, seq",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("loading image ids"))?;
    let mut by_record: HashMap<String, Vec<ImageSummary>> = HashMap::new();
    for (record_id, image_id, quality) in images {
        by_record.entry(record_id).or_default().push(ImageSummary { image_id, quality: quality.map(|q| q.0) });
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let images = by_record.remove(&row.id).unwrap_or_default();
            row.into_record(images)
        })
        .collect())
}

async fn load_record(
    conn: &mut sqlx::PgConnection,
    index_id: &str,
    record_id: &str,
) -> Result<Option<Record>, StoreError> {
    let rows: Vec<RecordRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {RECORD_COLS} FROM records r WHERE r.id = $1 AND r.index_id = $2"
    )))
    .bind(record_id)
    .bind(index_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("loading a record"))?;
    Ok(attach_images(conn, rows).await?.pop())
}

async fn load_record_by_reference(
    conn: &mut sqlx::PgConnection,
    index_id: &str,
    reference: &str,
) -> Result<Option<Record>, StoreError> {
    let rows: Vec<RecordRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {RECORD_COLS} FROM records r WHERE r.index_id = $1 AND r.reference = $2"
    )))
    .bind(index_id)
    .bind(reference)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("loading a record by reference"))?;
    Ok(attach_images(conn, rows).await?.pop())
}

/// The index's pack, with a key-share lock on its row until the transaction ends, so
/// that it cannot move to another pack (which takes the row's update lock) meanwhile.
async fn lock_index_pack(conn: &mut sqlx::PgConnection, index_id: &str) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar("SELECT pack FROM indexes WHERE id = $1 FOR KEY SHARE")
        .bind(index_id)
        .fetch_optional(conn)
        .await
        .map_err(db("loading the index pack"))
}

// ---------------------------------------------------------------------------------
// Images and embeddings

async fn insert_image(
    conn: &mut sqlx::PgConnection,
    index_id: &str,
    record_id: &str,
    image: NewImage,
    now: &str,
) -> Result<ImageSummary, StoreError> {
    let id = new_id();
    let sha256 = hex::encode(Sha256::digest(&image.bytes));
    sqlx::query(
        "INSERT INTO images (id, record_id, mime, file_name, sha256, face, quality, created_at, bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(record_id)
    .bind(&image.mime)
    .bind(&image.file_name)
    .bind(&sha256)
    .bind(Json(&image.face))
    .bind(image.quality.as_ref().map(Json))
    .bind(now)
    .bind(&image.bytes)
    .execute(&mut *conn)
    .await
    .map_err(db("inserting an image"))?;
    let dim =
        i32::try_from(image.embedding.len()).map_err(|_| StoreError::InvalidInput("embedding too long".into()))?;
    sqlx::query(
        "INSERT INTO embeddings (image_id, record_id, index_id, pack, dim, vector) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(record_id)
    .bind(index_id)
    .bind(&image.pack)
    .bind(dim)
    .bind(Vector::from(image.embedding))
    .execute(&mut *conn)
    .await
    .map_err(db("inserting an embedding"))?;
    Ok(ImageSummary { image_id: id, quality: image.quality })
}

/// One enrolment inside the caller's transaction, which holds the index row's
/// key-share lock (`pack` is the index's pack).
async fn enrol_in(
    tx: &mut sqlx::PgConnection,
    index_id: &str,
    pack: &str,
    fields: RecordFields,
    reference: Option<String>,
    image: NewImage,
) -> Result<EnrolOutcome, StoreError> {
    check_pack(index_id, pack, &image.pack)?;
    let reference = reference.filter(|r| !r.is_empty());
    if let Some(reference) = &reference
        && let Some(existing) = load_record_by_reference(tx, index_id, reference).await?
    {
        return Ok(EnrolOutcome::Existing(existing));
    }
    let record_id = new_id();
    let now = now_rfc3339();
    // A concurrent enrolment (on any node) with the same reference: the unique index
    // makes this insert wait for it, then do nothing; its record is returned instead.
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO records (id, index_id, name, dob, nationality, gender, id_no, address,
                              watch_list, additional_info, reference, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
         ON CONFLICT (index_id, reference) WHERE reference IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(&record_id)
    .bind(index_id)
    .bind(&fields.name)
    .bind(&fields.dob)
    .bind(&fields.nationality)
    .bind(&fields.gender)
    .bind(&fields.id_no)
    .bind(&fields.address)
    .bind(Json(&fields.watch_list))
    .bind(&fields.additional_info)
    .bind(&reference)
    .bind(&now)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("inserting a record"))?;
    if inserted.is_none() {
        let reference = reference.as_deref().unwrap_or_default();
        return match load_record_by_reference(tx, index_id, reference).await? {
            Some(existing) => Ok(EnrolOutcome::Existing(existing)),
            None => Err(StoreError::Conflict("reference already used in this index".into())),
        };
    }
    let image = insert_image(tx, index_id, &record_id, image, &now).await?;
    Ok(EnrolOutcome::Created(Record {
        record_id,
        index_id: index_id.to_string(),
        fields,
        reference,
        image_ids: vec![image.image_id.clone()],
        images: vec![image],
        created_at: now.clone(),
        updated_at: now,
    }))
}

#[derive(FromRow)]
struct EmbeddingDbRow {
    image_id: String,
    record_id: String,
    index_id: String,
    vector: Vector,
}

impl From<EmbeddingDbRow> for EmbeddingRow {
    fn from(r: EmbeddingDbRow) -> Self {
        EmbeddingRow { image_id: r.image_id, record_id: r.record_id, index_id: r.index_id, vector: r.vector.into() }
    }
}

// ---------------------------------------------------------------------------------
// Re-embedding jobs

#[derive(FromRow)]
struct JobRow {
    id: String,
    index_id: String,
    pack: String,
    from_pack: String,
    state: String,
    total: i64,
    done: i64,
    failed: i64,
    failures: Json<Vec<ReembedFailure>>,
    error: Option<String>,
    requested_by: String,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

/// The index's job; the counts of a running one are read live from the staging.
async fn load_job(conn: &mut sqlx::PgConnection, index_id: &str) -> Result<Option<ReembedJob>, StoreError> {
    let row: Option<JobRow> =
        sqlx::query_as(AssertSqlSafe(format!("SELECT {JOB_COLS} FROM reembed_jobs WHERE index_id = $1")))
            .bind(index_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("loading a re-embedding job"))?;
    match row {
        Some(row) => job_from_row(conn, row).await.map(Some),
        None => Ok(None),
    }
}

async fn job_from_row(conn: &mut sqlx::PgConnection, row: JobRow) -> Result<ReembedJob, StoreError> {
    let state = match row.state.as_str() {
        "running" => JobState::Running,
        "done" => JobState::Done,
        "failed" => JobState::Failed,
        other => return Err(StoreError::Corrupt(format!("re-embedding job {}: state {other:?}", row.id))),
    };
    let (total, done, failed, failures) = if state == JobState::Done {
        (count_u64(row.total, "total")?, count_u64(row.done, "done")?, count_u64(row.failed, "failed")?, row.failures.0)
    } else {
        let (total, done, failed): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(s.image_id), COUNT(s.failure)
             FROM images i JOIN records r ON r.id = i.record_id
             LEFT JOIN staged_embeddings s ON s.image_id = i.id AND s.pack = $2
             WHERE r.index_id = $1",
        )
        .bind(&row.index_id)
        .bind(&row.pack)
        .fetch_one(&mut *conn)
        .await
        .map_err(db("counting staged vectors"))?;
        let failures: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT s.image_id, i.record_id, s.failure
             FROM staged_embeddings s JOIN images i ON i.id = s.image_id JOIN records r ON r.id = i.record_id
             WHERE r.index_id = $1 AND s.pack = $2 AND s.failure IS NOT NULL
             ORDER BY i.created_at, i.seq LIMIT $3",
        )
        .bind(&row.index_id)
        .bind(&row.pack)
        .bind(as_i64(MAX_LISTED_FAILURES))
        .fetch_all(&mut *conn)
        .await
        .map_err(db("listing staged failures"))?;
        let failures = failures
            .into_iter()
            .map(|(image_id, record_id, code)| ReembedFailure { image_id, record_id, code })
            .collect();
        (
            count_u64(total, "image count")?,
            count_u64(done, "staged count")?,
            count_u64(failed, "failure count")?,
            failures,
        )
    };
    Ok(ReembedJob {
        job_id: row.id,
        index_id: row.index_id,
        pack: row.pack,
        from_pack: row.from_pack,
        state,
        total,
        done,
        failed,
        failures,
        error: row.error,
        requested_by: row.requested_by,
        created_at: row.created_at,
        updated_at: row.updated_at,
        finished_at: row.finished_at,
    })
}

// ---------------------------------------------------------------------------------
// Users

#[derive(FromRow)]
struct UserRow {
    username: String,
    role: String,
    password_hash: String,
    created_at: String,
}

impl UserRow {
    fn into_user(self, grants: Vec<String>) -> Result<User, StoreError> {
        let role: Role =
            self.role.parse().map_err(|e| StoreError::Corrupt(format!("user {:?}: {e}", self.username)))?;
        Ok(User {
            username: self.username,
            role,
            password_hash: self.password_hash,
            grants,
            created_at: self.created_at,
        })
    }
}

async fn load_user(conn: &mut sqlx::PgConnection, username: &str) -> Result<Option<User>, StoreError> {
    let Some(row): Option<UserRow> =
        sqlx::query_as("SELECT username, role, password_hash, created_at FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("loading a user"))?
    else {
        return Ok(None);
    };
    let grants: Vec<String> = sqlx::query_scalar("SELECT index_id FROM grants WHERE username = $1 ORDER BY index_id")
        .bind(username)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("loading grants"))?;
    row.into_user(grants).map(Some)
}

// ---------------------------------------------------------------------------------
// The trait

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn create_index(&self, new: NewIndex) -> Result<IndexInfo, StoreError> {
        if new.index_name.trim().is_empty() {
            return Err(StoreError::InvalidInput("index_name must not be empty".into()));
        }
        let id = new_id();
        let now = now_rfc3339();
        let result = sqlx::query(
            "INSERT INTO indexes (id, index_name, index_type, title, description, pack, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&id)
        .bind(&new.index_name)
        .bind(new.index_type.as_str())
        .bind(&new.title)
        .bind(&new.description)
        .bind(&new.pack)
        .bind(&now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => {}
            Err(e) if sql_state(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                return Err(StoreError::DuplicateIndexName(new.index_name));
            }
            Err(e) => return Err(db("creating an index")(e)),
        }
        Ok(new.created(id, now))
    }

    async fn get_index(&self, id: &str) -> Result<Option<IndexInfo>, StoreError> {
        let row: Option<IndexRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {INDEX_COLS} FROM indexes WHERE id = $1")))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("loading an index"))?;
        row.map(IndexRow::into_info).transpose()
    }

    async fn list_indexes(&self) -> Result<Vec<IndexInfo>, StoreError> {
        let rows: Vec<IndexRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {INDEX_COLS} FROM indexes ORDER BY created_at, seq")))
                .fetch_all(&self.pool)
                .await
                .map_err(db("listing indexes"))?;
        rows.into_iter().map(IndexRow::into_info).collect()
    }

    async fn update_index(&self, id: &str, patch: IndexPatch) -> Result<Option<IndexInfo>, StoreError> {
        if patch.title.is_none() && patch.description.is_none() {
            return self.get_index(id).await;
        }
        let row: Option<IndexRow> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE indexes SET title = COALESCE($2, title), description = COALESCE($3, description), updated_at = $4
             WHERE id = $1 RETURNING {INDEX_COLS}"
        )))
        .bind(id)
        .bind(&patch.title)
        .bind(&patch.description)
        .bind(now_rfc3339())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("updating an index"))?;
        row.map(IndexRow::into_info).transpose()
    }

    async fn delete_index(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM indexes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("deleting an index"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn enrol(
        &self,
        index_id: &str,
        fields: RecordFields,
        reference: Option<String>,
        image: NewImage,
    ) -> Result<Option<EnrolOutcome>, StoreError> {
        check_image(&image)?;
        let mut tx = self.begin("enrolling").await?;
        let Some(pack) = lock_index_pack(&mut tx, index_id).await? else {
            return Ok(None);
        };
        let outcome = enrol_in(&mut tx, index_id, &pack, fields, reference, image).await?;
        if outcome.is_created() {
            tx.commit().await.map_err(db("committing an enrolment"))?;
        }
        Ok(Some(outcome))
    }

    async fn enrol_batch(
        &self,
        index_id: &str,
        batch: Vec<(RecordFields, Option<String>, NewImage)>,
    ) -> Result<Option<Vec<EnrolOutcome>>, StoreError> {
        batch.iter().try_for_each(|(_, _, image)| check_image(image))?;
        let mut tx = self.begin("enrolling a batch").await?;
        let Some(pack) = lock_index_pack(&mut tx, index_id).await? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(batch.len());
        for (fields, reference, image) in batch {
            out.push(enrol_in(&mut tx, index_id, &pack, fields, reference, image).await?);
        }
        tx.commit().await.map_err(db("committing an enrolment batch"))?;
        Ok(Some(out))
    }

    async fn find_by_reference(&self, index_id: &str, reference: &str) -> Result<Option<Record>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        load_record_by_reference(&mut tx, index_id, reference).await
    }

    async fn get_record(&self, index_id: &str, record_id: &str) -> Result<Option<Record>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        load_record(&mut tx, index_id, record_id).await
    }

    async fn get_records(&self, record_ids: &[String]) -> Result<Vec<Record>, StoreError> {
        if record_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin("starting a read").await?;
        let rows: Vec<RecordRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {RECORD_COLS} FROM records r WHERE r.id = ANY($1)")))
                .bind(record_ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("loading records"))?;
        attach_images(&mut tx, rows).await
    }

    async fn list_records(
        &self,
        index_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Record>, Option<String>), StoreError> {
        let after = cursor.map(decode_cursor).transpose()?;
        let limit = limit.max(1);
        // One extra row tells whether another page follows.
        let fetch = as_i64(limit.saturating_add(1));
        let (created_at, record_id) = after.unwrap_or_default();
        let mut tx = self.begin("starting a read").await?;
        let rows: Vec<RecordRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {RECORD_COLS} FROM records r
             WHERE r.index_id = $1 AND ($2 = '' OR (r.created_at, r.id) > ($2, $3))
             ORDER BY r.created_at, r.id LIMIT $4"
        )))
        .bind(index_id)
        .bind(&created_at)
        .bind(&record_id)
        .bind(fetch)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("listing records"))?;
        let mut records = attach_images(&mut tx, rows).await?;
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| encode_cursor(&r.created_at, &r.record_id))
        } else {
            None
        };
        Ok((records, next))
    }

    async fn update_record(
        &self,
        index_id: &str,
        record_id: &str,
        patch: RecordPatch,
    ) -> Result<Option<Record>, StoreError> {
        if patch.is_empty() {
            return self.get_record(index_id, record_id).await;
        }
        let mut tx = self.begin("updating a record").await?;
        // Lock the row: two nodes patching one record apply one patch after the other.
        let locked: Option<String> =
            sqlx::query_scalar("SELECT id FROM records WHERE id = $1 AND index_id = $2 FOR UPDATE")
                .bind(record_id)
                .bind(index_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("locking a record"))?;
        if locked.is_none() {
            return Ok(None);
        }
        let Some(mut record) = load_record(&mut tx, index_id, record_id).await? else {
            return Ok(None);
        };
        if let Some(reference) = apply_patch(&mut record, patch) {
            if let Some(new_ref) = &reference
                && load_record_by_reference(&mut tx, index_id, new_ref).await?.is_some()
            {
                return Err(reference_taken(new_ref));
            }
            record.reference = reference;
        }
        record.updated_at = now_rfc3339();
        let f = &record.fields;
        let result = sqlx::query(
            "UPDATE records SET name = $3, dob = $4, nationality = $5, gender = $6, id_no = $7, address = $8,
                                watch_list = $9, additional_info = $10, reference = $11, updated_at = $12
             WHERE id = $1 AND index_id = $2",
        )
        .bind(&record.record_id)
        .bind(&record.index_id)
        .bind(&f.name)
        .bind(&f.dob)
        .bind(&f.nationality)
        .bind(&f.gender)
        .bind(&f.id_no)
        .bind(&f.address)
        .bind(Json(&f.watch_list))
        .bind(&f.additional_info)
        .bind(&record.reference)
        .bind(&record.updated_at)
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(e) if sql_state(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                return Err(StoreError::Conflict("reference already used in this index".into()));
            }
            Err(e) => return Err(db("updating a record")(e)),
        }
        tx.commit().await.map_err(db("committing a record update"))?;
        Ok(Some(record))
    }

    async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.begin("deleting a record").await?;
        let Some(record) = load_record(&mut tx, index_id, record_id).await? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM records WHERE id = $1 AND index_id = $2")
            .bind(record_id)
            .bind(index_id)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting a record"))?;
        tx.commit().await.map_err(db("committing a record deletion"))?;
        Ok(Some(record.image_ids))
    }

    async fn add_image(
        &self,
        index_id: &str,
        record_id: &str,
        image: NewImage,
    ) -> Result<Option<(Record, String)>, StoreError> {
        check_image(&image)?;
        let mut tx = self.begin("adding an image").await?;
        let Some(pack) = lock_index_pack(&mut tx, index_id).await? else {
            return Ok(None);
        };
        let Some(mut record) = load_record(&mut tx, index_id, record_id).await? else {
            return Ok(None);
        };
        check_pack(index_id, &pack, &image.pack)?;
        let now = now_rfc3339();
        let summary = insert_image(&mut tx, index_id, record_id, image, &now).await?;
        sqlx::query("UPDATE records SET updated_at = $2 WHERE id = $1")
            .bind(record_id)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db("touching a record"))?;
        tx.commit().await.map_err(db("committing a new image"))?;
        let image_id = summary.image_id.clone();
        record.image_ids.push(image_id.clone());
        record.images.push(summary);
        record.updated_at = now;
        Ok(Some((record, image_id)))
    }

    async fn get_image(&self, image_id: &str) -> Result<Option<StoredImage>, StoreError> {
        let row: Option<(String, String, String, Vec<u8>, String, String, String)> = sqlx::query_as(
            "SELECT i.id, i.record_id, r.index_id, i.bytes, i.mime, i.file_name, i.sha256
             FROM images i JOIN records r ON r.id = i.record_id WHERE i.id = $1",
        )
        .bind(image_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("loading an image"))?;
        Ok(row.map(|(image_id, record_id, index_id, bytes, mime, file_name, sha256)| StoredImage {
            image_id,
            record_id,
            index_id,
            bytes,
            mime,
            file_name,
            sha256,
        }))
    }

    async fn embeddings(&self, pack: &str) -> Result<Vec<EmbeddingRow>, StoreError> {
        self.scan_embeddings(pack, None).await
    }

    async fn embeddings_in(&self, pack: &str, index_ids: &[String]) -> Result<Vec<EmbeddingRow>, StoreError> {
        self.scan_embeddings(pack, Some(index_ids)).await
    }

    async fn vectors_version(&self) -> Result<u64, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM vector_version")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the vector version"))?;
        count_u64(v, "vector version")
    }

    async fn create_user(&self, username: &str, password: &str, role: Role) -> Result<User, StoreError> {
        validate_username(username)?;
        let password = password.to_owned();
        // Argon2 is deliberately slow: keep it off the async workers.
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
        let now = now_rfc3339();
        let result =
            sqlx::query("INSERT INTO users (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4)")
                .bind(username)
                .bind(role.as_str())
                .bind(&password_hash)
                .bind(&now)
                .execute(&self.pool)
                .await;
        match result {
            Ok(_) => {
                Ok(User { username: username.to_owned(), role, password_hash, grants: Vec::new(), created_at: now })
            }
            Err(e) if sql_state(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                Err(StoreError::DuplicateUser(username.to_owned()))
            }
            Err(e) => Err(db("creating a user")(e)),
        }
    }

    async fn verify_password(&self, username: &str, password: &str) -> Result<Option<User>, StoreError> {
        let user = {
            let mut tx = self.begin("starting a read").await?;
            load_user(&mut tx, username).await?
        };
        let (password, dummy) = (password.to_owned(), self.dummy_hash.clone());
        // Unknown users verify against the dummy hash: both paths cost one Argon2 run.
        tokio::task::spawn_blocking(move || match user {
            Some(user) => Ok(password_matches(&password, &user.password_hash)?.then_some(user)),
            None => {
                password_matches(&password, &dummy)?;
                Ok(None)
            }
        })
        .await?
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        load_user(&mut tx, username).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        let rows: Vec<UserRow> =
            sqlx::query_as("SELECT username, role, password_hash, created_at FROM users ORDER BY username")
                .fetch_all(&mut *tx)
                .await
                .map_err(db("listing users"))?;
        let pairs: Vec<(String, String)> =
            sqlx::query_as("SELECT username, index_id FROM grants ORDER BY username, index_id")
                .fetch_all(&mut *tx)
                .await
                .map_err(db("listing grants"))?;
        let mut grants: HashMap<String, Vec<String>> = HashMap::new();
        for (username, index_id) in pairs {
            grants.entry(username).or_default().push(index_id);
        }
        rows.into_iter()
            .map(|row| {
                let g = grants.remove(&row.username).unwrap_or_default();
                row.into_user(g)
            })
            .collect()
    }

    async fn set_password(&self, username: &str, password: &str) -> Result<bool, StoreError> {
        let password = password.to_owned();
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
        let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE username = $1")
            .bind(username)
            .bind(&password_hash)
            .execute(&self.pool)
            .await
            .map_err(db("setting a password"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn grant(&self, username: &str, index_id: &str) -> Result<bool, StoreError> {
        // The insert selects from both tables: an unknown user or index inserts nothing.
        let result = sqlx::query(
            "INSERT INTO grants (username, index_id, created_at)
             SELECT u.username, x.id, $3 FROM users u, indexes x WHERE u.username = $1 AND x.id = $2
             ON CONFLICT DO NOTHING",
        )
        .bind(username)
        .bind(index_id)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => {}
            // The user or index was deleted at the same moment.
            Err(e) if sql_state(&e).as_deref() == Some(FOREIGN_KEY_VIOLATION) => return Ok(false),
            Err(e) => return Err(db("granting")(e)),
        }
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM grants WHERE username = $1 AND index_id = $2)")
                .bind(username)
                .bind(index_id)
                .fetch_one(&self.pool)
                .await
                .map_err(db("checking a grant"))?;
        Ok(exists)
    }

    async fn revoke(&self, username: &str, index_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM grants WHERE username = $1 AND index_id = $2")
            .bind(username)
            .bind(index_id)
            .execute(&self.pool)
            .await
            .map_err(db("revoking"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin("deleting a user").await?;
        // Every admin row is locked, in one order, before they are counted: of two
        // transactions (on any nodes) deleting admins at once, the second waits for the
        // first and then sees the row it deleted gone, so it cannot delete the last one.
        let admins: Vec<String> =
            sqlx::query_scalar("SELECT username FROM users WHERE role = $1 ORDER BY username FOR UPDATE")
                .bind(Role::Admin.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(db("locking the admins"))?;
        if admins.len() <= 1 && admins.iter().any(|a| a == username) {
            return Err(StoreError::LastAdmin(username.to_owned()));
        }
        let done = sqlx::query("DELETE FROM users WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting a user"))?;
        tx.commit().await.map_err(db("committing the user deletion"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(db("counting users"))?;
        count_u64(n, "user count")
    }

    async fn integrity_check(&self) -> Result<(), StoreError> {
        let mut tx = self.begin("starting a read").await?;
        // Foreign keys and checks are enforced by PostgreSQL itself; what remains to
        // verify is what triggers and copies maintain.
        let checks: [(&'static str, &'static str); 3] = [
            (
                "record_count wrong for index(es)",
                "SELECT x.id FROM indexes x
                 WHERE x.record_count <> (SELECT COUNT(*) FROM records r WHERE r.index_id = x.id)",
            ),
            (
                "vectors of another pack than the index's in index(es)",
                "SELECT DISTINCT x.id FROM embeddings e JOIN indexes x ON x.id = e.index_id WHERE e.pack <> x.pack",
            ),
            (
                "embeddings whose record or index disagree with their image's, in index(es)",
                "SELECT DISTINCT e.index_id FROM embeddings e JOIN images i ON i.id = e.image_id
                 JOIN records r ON r.id = i.record_id WHERE e.record_id <> r.id OR e.index_id <> r.index_id",
            ),
        ];
        for (problem, sql) in checks {
            let bad: Vec<String> =
                sqlx::query_scalar(sql).fetch_all(&mut *tx).await.map_err(db("checking integrity"))?;
            if !bad.is_empty() {
                return Err(StoreError::Corrupt(format!("{problem} {}", bad.join(", "))));
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db("pinging"))?;
        Ok(())
    }

    async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, outcome, index_ids, record_ids, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(now_rfc3339())
        .bind(&event.actor)
        .bind(&event.action)
        .bind(&event.outcome)
        .bind(Json(&event.index_ids))
        .bind(Json(&event.record_ids))
        .bind(Json(&event.details))
        .execute(&self.pool)
        .await
        .map_err(db("appending to the audit log"))?;
        Ok(())
    }

    async fn query_audit(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        type AuditRow =
            (i64, String, String, String, String, Json<Vec<String>>, Json<Vec<String>>, Json<serde_json::Value>);
        let limit = i64::try_from(query.limit.clamp(1, 10_000)).unwrap_or(1000);
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, actor, action, outcome, index_ids, record_ids, details FROM audit_log
             WHERE ($1::text IS NULL OR actor = $1)
               AND ($2::text IS NULL OR action = $2)
               AND ($3::text IS NULL OR jsonb_exists(index_ids, $3))
               AND ($4::text IS NULL OR jsonb_exists(record_ids, $4))
               AND ($5::text IS NULL OR at >= $5)
               AND ($6::text IS NULL OR at < $6)
               AND ($7::bigint IS NULL OR id < $7)
             ORDER BY id DESC LIMIT $8",
        )
        .bind(&query.actor)
        .bind(&query.action)
        .bind(&query.index_id)
        .bind(&query.record_id)
        .bind(&query.since)
        .bind(&query.until)
        .bind(query.before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the audit log"))?;
        Ok(rows
            .into_iter()
            .map(|(id, at, actor, action, outcome, index_ids, record_ids, details)| AuditEvent {
                id,
                at,
                actor,
                action,
                outcome,
                index_ids: index_ids.0,
                record_ids: record_ids.0,
                details: details.0,
            })
            .collect())
    }

    async fn prune_audit(&self, before: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db("pruning the audit log"))?;
        Ok(done.rows_affected())
    }

    async fn start_reembed(
        &self,
        index_id: &str,
        pack: &str,
        requested_by: &str,
    ) -> Result<Option<ReembedStart>, StoreError> {
        let mut tx = self.begin("starting a re-embedding job").await?;
        let from_pack: Option<String> = sqlx::query_scalar("SELECT pack FROM indexes WHERE id = $1 FOR UPDATE")
            .bind(index_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("loading the index pack"))?;
        let Some(from_pack) = from_pack else {
            return Ok(None);
        };
        if let Some(job) = load_job(&mut tx, index_id).await?.filter(|j| j.state == JobState::Running) {
            if job.pack == pack {
                return Ok(Some(ReembedStart::Running(job)));
            }
            return Err(StoreError::Conflict(format!(
                "a re-embedding of this index to the {} pack is running",
                job.pack
            )));
        }
        // Vectors staged for another pack by an abandoned job are of no use now.
        sqlx::query(
            "DELETE FROM staged_embeddings s USING images i, records r
             WHERE s.image_id = i.id AND r.id = i.record_id AND r.index_id = $1 AND s.pack <> $2",
        )
        .bind(index_id)
        .bind(pack)
        .execute(&mut *tx)
        .await
        .map_err(db("clearing stale staged vectors"))?;
        let now = now_rfc3339();
        sqlx::query(
            "INSERT INTO reembed_jobs (index_id, id, pack, from_pack, state, requested_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'running', $5, $6, $6)
             ON CONFLICT (index_id) DO UPDATE SET
                 id = EXCLUDED.id, pack = EXCLUDED.pack, from_pack = EXCLUDED.from_pack, state = 'running',
                 total = 0, done = 0, failed = 0, failures = '[]', error = NULL,
                 requested_by = EXCLUDED.requested_by, created_at = EXCLUDED.created_at,
                 updated_at = EXCLUDED.updated_at, finished_at = NULL",
        )
        .bind(index_id)
        .bind(new_id())
        .bind(pack)
        .bind(&from_pack)
        .bind(requested_by)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(db("creating a re-embedding job"))?;
        let job = load_job(&mut tx, index_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the new re-embedding job vanished".into()))?;
        tx.commit().await.map_err(db("committing a new re-embedding job"))?;
        Ok(Some(ReembedStart::Started(job)))
    }

    async fn reembed_job(&self, index_id: &str) -> Result<Option<ReembedJob>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        load_job(&mut tx, index_id).await
    }

    async fn running_reembeds(&self) -> Result<Vec<ReembedJob>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        let rows: Vec<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM reembed_jobs WHERE state = 'running' ORDER BY created_at"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(db("listing running re-embedding jobs"))?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            jobs.push(job_from_row(&mut tx, row).await?);
        }
        Ok(jobs)
    }

    async fn pending_images(&self, index_id: &str, pack: &str, limit: usize) -> Result<Vec<PendingImage>, StoreError> {
        let rows: Vec<(String, String, Json<serde_json::Value>, Vec<u8>)> = sqlx::query_as(
            "SELECT i.id, i.record_id, i.face, i.bytes
             FROM images i JOIN records r ON r.id = i.record_id
             WHERE r.index_id = $1
               AND NOT EXISTS (SELECT 1 FROM staged_embeddings s WHERE s.image_id = i.id AND s.pack = $2)
             ORDER BY i.created_at, i.seq LIMIT $3",
        )
        .bind(index_id)
        .bind(pack)
        .bind(as_i64(limit.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing images to re-embed"))?;
        Ok(rows
            .into_iter()
            .map(|(image_id, record_id, face, bytes)| PendingImage { image_id, record_id, bytes, face: face.0 })
            .collect())
    }

    async fn stage_vector(
        &self,
        image_id: &str,
        pack: &str,
        vector: Result<Vec<f32>, String>,
    ) -> Result<bool, StoreError> {
        let (dim, vector, failure) = match vector {
            Ok(v) => {
                check_vector(&v, "a staged vector")?;
                let dim = i32::try_from(v.len()).map_err(|_| StoreError::InvalidInput("vector too long".into()))?;
                (Some(dim), Some(Vector::from(v)), None)
            }
            Err(code) => (None, None, Some(code)),
        };
        let result = sqlx::query(
            "INSERT INTO staged_embeddings (image_id, pack, dim, vector, failure) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (image_id, pack) DO UPDATE SET dim = EXCLUDED.dim, vector = EXCLUDED.vector,
                                                       failure = EXCLUDED.failure",
        )
        .bind(image_id)
        .bind(pack)
        .bind(dim)
        .bind(vector)
        .bind(failure)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(true),
            // The image was deleted while it was being embedded.
            Err(e) if sql_state(&e).as_deref() == Some(FOREIGN_KEY_VIOLATION) => Ok(false),
            Err(e) => Err(db("staging a vector")(e)),
        }
    }

    async fn switch_pack(&self, index_id: &str, job_id: &str) -> Result<PackSwitch, StoreError> {
        let mut tx = self.begin("switching an index's pack").await?;
        // The update lock waits for enrolments in flight (they hold key-share locks)
        // and keeps new ones out until the switch commits.
        let locked: Option<String> = sqlx::query_scalar("SELECT id FROM indexes WHERE id = $1 FOR UPDATE")
            .bind(index_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("locking the index"))?;
        if locked.is_none() {
            return Ok(PackSwitch::NoJob);
        }
        let Some(job) =
            load_job(&mut tx, index_id).await?.filter(|j| j.job_id == job_id && j.state == JobState::Running)
        else {
            return Ok(PackSwitch::NoJob);
        };
        if job.done < job.total {
            return Ok(PackSwitch::Pending(job.total - job.done));
        }
        sqlx::query("DELETE FROM embeddings WHERE index_id = $1")
            .bind(index_id)
            .execute(&mut *tx)
            .await
            .map_err(db("removing the old vectors"))?;
        sqlx::query(
            "INSERT INTO embeddings (image_id, record_id, index_id, pack, dim, vector)
             SELECT s.image_id, i.record_id, r.index_id, s.pack, s.dim, s.vector
             FROM staged_embeddings s JOIN images i ON i.id = s.image_id JOIN records r ON r.id = i.record_id
             WHERE r.index_id = $1 AND s.pack = $2 AND s.vector IS NOT NULL",
        )
        .bind(index_id)
        .bind(&job.pack)
        .execute(&mut *tx)
        .await
        .map_err(db("installing the new vectors"))?;
        sqlx::query(
            "DELETE FROM staged_embeddings s USING images i, records r
             WHERE s.image_id = i.id AND r.id = i.record_id AND r.index_id = $1",
        )
        .bind(index_id)
        .execute(&mut *tx)
        .await
        .map_err(db("clearing the staged vectors"))?;
        let now = now_rfc3339();
        sqlx::query("UPDATE indexes SET pack = $2, updated_at = $3 WHERE id = $1")
            .bind(index_id)
            .bind(&job.pack)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db("setting the index's pack"))?;
        let as_count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE reembed_jobs SET state = 'done', total = $2, done = $3, failed = $4, failures = $5,
                                     updated_at = $6, finished_at = $6
             WHERE index_id = $1",
        )
        .bind(index_id)
        .bind(as_count(job.total))
        .bind(as_count(job.done))
        .bind(as_count(job.failed))
        .bind(Json(&job.failures))
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(db("finishing a re-embedding job"))?;
        let job = load_job(&mut tx, index_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the finished re-embedding job vanished".into()))?;
        tx.commit().await.map_err(db("committing a pack switch"))?;
        // Searches run in the database: there is no in-memory copy to hand back.
        Ok(PackSwitch::Switched { job: Box::new(job), vectors: Vec::new() })
    }

    async fn fail_reembed(&self, index_id: &str, job_id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE reembed_jobs SET state = 'failed', error = $3, updated_at = $4, finished_at = $4
             WHERE index_id = $1 AND id = $2 AND state = 'running'",
        )
        .bind(index_id)
        .bind(job_id)
        .bind(error)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(db("failing a re-embedding job"))?;
        Ok(())
    }

    fn searches_vectors(&self) -> bool {
        true
    }

    async fn nearest_faces(&self, query: VectorQuery) -> Result<Vec<NearestFace>, StoreError> {
        check_vector(&query.vector, "the query vector")?;
        let dim = query.vector.len();
        if query.index_ids.is_empty() || query.limit == 0 {
            return Ok(Vec::new());
        }
        // Repeatable read: the packs checked and the vectors searched are one snapshot.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db("starting a search"))?;
        // Both settings in one round trip, local to this transaction; the iterative scan
        // keeps walking the graph until enough rows pass the index filter.
        sqlx::query(
            "SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)",
        )
        .bind(self.ef_search.min(1000).to_string())
        .execute(&mut *tx)
        .await
        .map_err(db("configuring a search"))?;
        let packs: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, pack, record_count FROM indexes WHERE id = ANY($1)")
                .bind(&query.index_ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("checking index packs"))?;
        for (index_id, pack, _) in &packs {
            check_pack(index_id, pack, &query.pack)?;
        }
        let records: i64 = packs.iter().map(|(_, _, n)| n).sum();
        // Records can have several images: fetch more candidates than records wanted.
        let candidates = as_i64(query.limit.saturating_mul(4).max(query.limit + 16));
        let vector = Vector::from(query.vector);
        // The HNSW graph of this dimension proposes candidates by half-precision
        // distance; they are re-ranked by the exact distance on the stored vectors.
        // `dim` is a length, not input text. Small galleries and dimensions without a
        // graph are scanned exactly.
        let exact = u64::try_from(records).unwrap_or(0) < self.exact_below;
        let order = if INDEXED_DIMS.contains(&dim) && !exact {
            format!("e.vector::halfvec({dim}) <=> $2::halfvec({dim})")
        } else {
            "e.vector <=> $2".to_string()
        };
        let rows: Vec<(String, String, String, f64)> = sqlx::query_as(AssertSqlSafe(format!(
            "WITH candidates AS (
                 SELECT e.image_id, e.record_id, e.index_id, e.vector FROM embeddings e
                 WHERE e.dim = {dim} AND e.index_id = ANY($1)
                 ORDER BY {order} LIMIT $3
             )
             SELECT DISTINCT ON (record_id) index_id, record_id, image_id, 1 - (vector <=> $2) AS similarity
             FROM candidates ORDER BY record_id, vector <=> $2, image_id"
        )))
        .bind(&query.index_ids)
        .bind(&vector)
        .bind(candidates)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("searching vectors"))?;
        let mut found: Vec<NearestFace> = rows
            .into_iter()
            .map(|(index_id, record_id, image_id, similarity)| NearestFace {
                index_id,
                record_id,
                image_id,
                similarity: similarity as f32,
            })
            .filter(|f| f.similarity >= query.min_similarity)
            .collect();
        found.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then_with(|| a.record_id.cmp(&b.record_id)));
        found.truncate(query.limit);
        Ok(found)
    }
}
