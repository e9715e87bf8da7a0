//! The scale-out [`Store`](crate::Store): PostgreSQL with the pgvector extension.
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

//!
//! One file per concern: [`indexes`], [`records`] (with [`images`]), [`users`],
//! [`audit`], [`jobs`] (re-embedding), [`vectors`] (the search). This file connects,
//! migrates and maps driver errors.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use pgvector::Vector;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow, PgPool, Postgres, Transaction};

use crate::Pack;
use crate::common::{
    INDEX_COLS, IndexColumns, JOB_COLS, JobRow, RECORD_COLS, RecordRow, USER_COLS, UserColumns, check_image,
    check_pack, check_vector, count_u64, decode_cursor, encode_cursor, hash_password, index_from_columns, live_figures,
    new_id, patch_record, reference_in_use, reference_taken, user_from_columns, users_with_grants, validate_username,
    verified, with_images,
};
use crate::error::BackendError;
use crate::time::now_rfc3339;
use crate::traits::{AuditStore, BackendStore, IndexStore, RecordStore, ReembedStore, UserStore, VectorStore};
use crate::{
    AuditEvent, AuditQuery, EmbeddingRow, EnrolOutcome, ImageSummary, IndexInfo, IndexPatch, JobState,
    MAX_LISTED_FAILURES, NearestFace, NewAuditEvent, NewImage, NewIndex, PackSwitch, PendingImage, Record,
    RecordFields, RecordPatch, ReembedFailure, ReembedJob, ReembedStart, Role, StoreError, StoredImage, User,
    VectorQuery,
};

mod audit;
mod images;
mod indexes;
mod jobs;
mod records;
mod users;
mod vectors;

use self::{images::*, records::*};

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
            // Exact at every size: even at ef_search 1000 (pgvector's most) the graph
            // misses matches at score 70 (threshold recall 0.9988 mated, 0.978
            // non-mated at 100,000 faces; 0.906 and 0.705 at 1,000,000; README).
            // The graph is the operator's choice.
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

/// The PostgreSQL implementation of [`Store`](crate::Store). Cheap to clone (a pool handle).
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
            Err(e) => return Err(StoreError::Backend(BackendError::new("postgres", "applying migrations", false, e))),
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
    async fn scan_embeddings(&self, pack: Pack, index_ids: Option<&[String]>) -> Result<Vec<EmbeddingRow>, StoreError> {
        let rows: Vec<EmbeddingDbRow> = sqlx::query_as(
            "SELECT e.image_id, e.record_id, e.index_id, e.vector FROM embeddings e
             JOIN images i ON i.id = e.image_id
             WHERE e.pack = $1 AND ($2::text[] IS NULL OR e.index_id = ANY($2)) ORDER BY i.seq",
        )
        .bind(pack.name())
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
            // Serialisation failure, deadlock, lock not available: a lost race.
            let transient = matches!(sql_state(&e).as_deref(), Some("40001" | "40P01" | "55P03"));
            StoreError::Backend(BackendError::new("postgres", context, transient, e))
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

// ---------------------------------------------------------------------------------
// The backend

#[async_trait::async_trait]
impl BackendStore for PostgresStore {
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

    fn vector_search(&self) -> Option<&dyn VectorStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sql_error_is_a_fault_not_an_outage() {
        let sql = db("testing")(sqlx::Error::RowNotFound);
        assert!(!sql.is_transient());
        assert!(sql.to_string().starts_with("postgres error while testing"));
        assert!(db("testing")(sqlx::Error::PoolTimedOut).is_transient());
    }
}
