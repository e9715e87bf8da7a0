//! Copying an embedded (SQLite) store into PostgreSQL: `facesearch migrate`.
//!
//! Everything is copied with its ids, so links (`image_ids`, download URLs, grants,
//! audit references) stay valid: indexes, records, images (bytes), vectors, users
//! (password hashes as they are), grants, the audit log and re-embedding jobs with
//! their staged vectors. Tables are copied in foreign-key order, in batches of one
//! transaction each; a row already in PostgreSQL (same primary key) is skipped, so a
//! copy that stops anywhere (crash, ^C, lost connection) continues where it was when
//! run again. Record counts are kept by PostgreSQL's own triggers as records arrive.
//!
//! The HNSW graphs are dropped while vectors are copied and built once at the end
//! (much faster than growing them row by row); an interrupted copy rebuilds them
//! when run again.
//!
//! [`verify`] then compares both sides table by table: row counts, and SHA-256 digests
//! over the rows in primary-key order — for images over the SHA-256 of the bytes
//! PostgreSQL holds (recomputed there, not copied), for vectors over their exact bits.

use std::collections::HashMap;

use pgvector::Vector;
use rusqlite::params;
use sha2::{Digest, Sha256};
use sqlx::types::Json;

use crate::postgres::db;
use crate::sqlite::sqlite_err;
use crate::{PostgresStore, SqliteStore, StoreError};

/// Rows per transaction (images: fewer, they carry their bytes).
const BATCH: i64 = 2000;
const IMAGE_BATCH: i64 = 100;
/// Rows per page when digesting.
const DIGEST_PAGE: i64 = 10_000;

/// Tables in copy (foreign-key) order.
pub const TABLES: [&str; 9] =
    ["indexes", "records", "images", "embeddings", "users", "grants", "audit_log", "reembed_jobs", "staged_embeddings"];

/// How many rows of one table a copy wrote (rows already there are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCopy {
    pub table: &'static str,
    pub read: u64,
    pub written: u64,
}

/// One table compared on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    pub table: &'static str,
    pub sqlite_rows: u64,
    pub postgres_rows: u64,
    /// Hex SHA-256 over the rows in key order; `None` where only counts are compared.
    pub sqlite_digest: Option<String>,
    pub postgres_digest: Option<String>,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.sqlite_rows == self.postgres_rows && self.sqlite_digest == self.postgres_digest
    }
}

fn decode_f32(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn json(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Copies every table; `progress(table, rows read so far)` after each batch.
pub async fn copy(
    from: &SqliteStore,
    to: &PostgresStore,
    mut progress: impl FnMut(&'static str, u64),
) -> Result<Vec<TableCopy>, StoreError> {
    let mut report = Vec::new();
    // Vectors load far faster without their HNSW graphs, built once at the end.
    for dim in crate::postgres::INDEXED_DIMS {
        to.drop_vector_graph(dim).await?;
    }
    for spec in &SPECS {
        let table = spec.table;
        let mut done = TableCopy { table, ..TableCopy::default() };
        let mut after: i64 = 0;
        loop {
            let (rows, last) = copy_batch(from, to, spec, after).await?;
            if rows.0 == 0 {
                break;
            }
            done.read += rows.0;
            done.written += rows.1;
            after = last;
            progress(table, done.read);
        }
        report.push(done);
    }
    // Explicit audit ids were inserted: the id sequence continues after them.
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('audit_log', 'id'), GREATEST((SELECT MAX(id) FROM audit_log), 1))",
    )
    .execute(to.pool())
    .await
    .map_err(db("advancing the audit id"))?;
    progress("vector graphs (HNSW)", 0);
    for dim in crate::postgres::INDEXED_DIMS {
        to.build_vector_graph(dim).await?;
    }
    Ok(report)
}

/// How a column travels from SQLite to PostgreSQL.
#[derive(Clone, Copy)]
enum Kind {
    /// TEXT (nullable).
    Text,
    /// INTEGER → integer.
    I32,
    /// INTEGER → bigint.
    I64,
    /// JSON text → jsonb.
    Json,
    /// JSON text or NULL → jsonb or NULL.
    OptJson,
    /// BLOB → bytea.
    Bytes,
    /// Little-endian f32 BLOB (or NULL) → pgvector `vector`.
    Vector,
}

/// One value read from SQLite, ready to bind.
enum Cell {
    Text(Option<String>),
    I32(Option<i32>),
    I64(Option<i64>),
    Json(Option<serde_json::Value>),
    Bytes(Vec<u8>),
    Vector(Option<Vector>),
}

/// How one table is copied. `select` returns a paging key first (SQLite's rowid, or
/// a constant for small tables read whole), then the columns `insert` takes as
/// `$1…$n`, in that order; `?1` is the key to start after and `?2` the batch size.
struct TableSpec {
    table: &'static str,
    select: &'static str,
    insert: &'static str,
    kinds: &'static [Kind],
    batch: i64,
}

use Kind::{Bytes, I32, I64, Json as J, OptJson, Text as T, Vector as V};

/// In [`TABLES`] order: foreign keys are satisfied table by table.
const SPECS: [TableSpec; 9] = [
    // record_count is left at 0: the records' trigger counts them as they arrive.
    TableSpec {
        table: "indexes",
        select: "SELECT rowid, id, index_name, index_type, title, description, pack, created_at, updated_at
                 FROM indexes WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        insert: "INSERT INTO indexes (id, index_name, index_type, title, description, pack, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        kinds: &[T, T, T, T, T, T, T, T],
        batch: BATCH,
    },
    TableSpec {
        table: "records",
        select: "SELECT rowid, id, index_id, name, dob, nationality, gender, id_no, address, watch_list,
                        additional_info, reference, created_at, updated_at
                 FROM records WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        insert: "INSERT INTO records (id, index_id, name, dob, nationality, gender, id_no, address, watch_list,
                                      additional_info, reference, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING",
        kinds: &[T, T, T, T, T, T, T, T, J, T, T, T, T],
        batch: BATCH,
    },
    TableSpec {
        table: "images",
        select: "SELECT rowid, id, record_id, mime, file_name, sha256, face, quality, created_at, bytes
                 FROM images WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        insert: "INSERT INTO images (id, record_id, mime, file_name, sha256, face, quality, created_at, bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        kinds: &[T, T, T, T, T, J, OptJson, T, Bytes],
        batch: IMAGE_BATCH,
    },
    // record_id and index_id are copied onto the vector, as the PostgreSQL schema keeps them.
    TableSpec {
        table: "embeddings",
        select: "SELECT e.rowid, e.image_id, i.record_id, r.index_id, e.pack, e.dim, e.vector
                 FROM embeddings e JOIN images i ON i.id = e.image_id JOIN records r ON r.id = i.record_id
                 WHERE e.rowid > ?1 ORDER BY e.rowid LIMIT ?2",
        insert: "INSERT INTO embeddings (image_id, record_id, index_id, pack, dim, vector)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (image_id) DO NOTHING",
        kinds: &[T, T, T, T, I32, V],
        batch: BATCH,
    },
    TableSpec {
        table: "users",
        select: "SELECT rowid, username, role, password_hash, created_at FROM users
                 WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        insert: "INSERT INTO users (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (username) DO NOTHING",
        kinds: &[T, T, T, T],
        batch: BATCH,
    },
    TableSpec {
        table: "grants",
        select: "SELECT 1, username, index_id, created_at FROM grants WHERE ?1 < 1 AND ?2 > 0
                 ORDER BY username, index_id",
        insert: "INSERT INTO grants (username, index_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        kinds: &[T, T, T],
        batch: BATCH,
    },
    // Explicit ids, so references to entries stay valid; the sequence is moved past them.
    TableSpec {
        table: "audit_log",
        select: "SELECT id, id, at, actor, action, outcome, index_ids, record_ids, details FROM audit_log
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
        insert: "INSERT INTO audit_log (id, at, actor, action, outcome, index_ids, record_ids, details)
                 OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        kinds: &[I64, T, T, T, T, J, J, J],
        batch: BATCH,
    },
    TableSpec {
        table: "reembed_jobs",
        select: "SELECT 1, index_id, id, pack, from_pack, state, total, done, failed, failures, error,
                        requested_by, created_at, updated_at, finished_at
                 FROM reembed_jobs WHERE ?1 < 1 AND ?2 > 0 ORDER BY index_id",
        insert: "INSERT INTO reembed_jobs (index_id, id, pack, from_pack, state, total, done, failed, failures,
                                           error, requested_by, created_at, updated_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (index_id) DO NOTHING",
        kinds: &[T, T, T, T, T, I64, I64, I64, J, T, T, T, T, T],
        batch: BATCH,
    },
    TableSpec {
        table: "staged_embeddings",
        select: "SELECT 1, image_id, pack, dim, vector, failure FROM staged_embeddings
                 WHERE ?1 < 1 AND ?2 > 0 ORDER BY image_id, pack",
        insert: "INSERT INTO staged_embeddings (image_id, pack, dim, vector, failure) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
        kinds: &[T, T, I32, V, T],
        batch: BATCH,
    },
];

/// Reads one column of an SQLite row as its kind says.
fn read_cell(row: &rusqlite::Row<'_>, i: usize, kind: Kind, table: &str) -> Result<Cell, StoreError> {
    let err = sqlite_err("reading a row to copy");
    let text = |row: &rusqlite::Row<'_>| row.get::<_, Option<String>>(i).map_err(sqlite_err("reading a row to copy"));
    let json = |t: Option<String>| t.as_deref().map(|t| json(t, table)).transpose();
    Ok(match kind {
        Kind::Text => Cell::Text(text(row)?),
        Kind::I32 => Cell::I32(row.get(i).map_err(err)?),
        Kind::I64 => Cell::I64(row.get(i).map_err(err)?),
        Kind::Json => match json(text(row)?)? {
            Some(value) => Cell::Json(Some(value)),
            None => return Err(StoreError::Corrupt(format!("{table}: a JSON column is NULL"))),
        },
        Kind::OptJson => Cell::Json(json(text(row)?)?),
        Kind::Bytes => Cell::Bytes(row.get(i).map_err(err)?),
        Kind::Vector => {
            Cell::Vector(row.get::<_, Option<Vec<u8>>>(i).map_err(err)?.map(|b| Vector::from(decode_f32(&b))))
        }
    })
}

/// One batch of a table after paging key `after`: ((rows read, rows written), last key).
async fn copy_batch(
    from: &SqliteStore,
    to: &PostgresStore,
    spec: &'static TableSpec,
    after: i64,
) -> Result<((u64, u64), i64), StoreError> {
    let rows: Vec<(i64, Vec<Cell>)> = from
        .read_raw(move |c| {
            let mut stmt = c.prepare(spec.select).map_err(sqlite_err("reading rows to copy"))?;
            let mut rows = stmt.query(params![after, spec.batch]).map_err(sqlite_err("reading rows to copy"))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(sqlite_err("reading rows to copy"))? {
                let key: i64 = row.get(0).map_err(sqlite_err("reading rows to copy"))?;
                let cells = spec
                    .kinds
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| read_cell(row, i + 1, *kind, spec.table))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push((key, cells));
            }
            Ok(out)
        })
        .await?;
    let mut tx = to.pool().begin().await.map_err(db("starting a copy batch"))?;
    let mut written = 0;
    for (_, cells) in &rows {
        let mut query = sqlx::query(spec.insert);
        for cell in cells {
            query = match cell {
                Cell::Text(v) => query.bind(v),
                Cell::I32(v) => query.bind(v),
                Cell::I64(v) => query.bind(v),
                Cell::Json(v) => query.bind(v.as_ref().map(Json)),
                Cell::Bytes(v) => query.bind(v),
                Cell::Vector(v) => query.bind(v),
            };
        }
        written += query.execute(&mut *tx).await.map_err(db("copying a row"))?.rows_affected();
    }
    tx.commit().await.map_err(db("committing a copy batch"))?;
    Ok(((rows.len() as u64, written), rows.last().map_or(after, |r| r.0)))
}

/// What a digest hashes for each table: SQL for SQLite and for PostgreSQL returning
/// (key, text) in key order after a key, with the same text on both sides.
struct Digest2 {
    table: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Text columns that must agree exactly; vectors and image bytes are handled apart.
const DIGESTS: [Digest2; 4] = [
    Digest2 {
        table: "records",
        sqlite: "SELECT id, index_id || '|' || name || '|' || dob || '|' || id_no || '|' || COALESCE(reference, '') || '|' || updated_at FROM records WHERE id > ?1 ORDER BY id LIMIT ?2",
        postgres: "SELECT id, index_id || '|' || name || '|' || dob || '|' || id_no || '|' || COALESCE(reference, '') || '|' || updated_at FROM records WHERE id > $1 ORDER BY id LIMIT $2",
    },
    Digest2 {
        table: "users",
        sqlite: "SELECT username, role || '|' || password_hash FROM users WHERE username > ?1 ORDER BY username LIMIT ?2",
        postgres: "SELECT username, role || '|' || password_hash FROM users WHERE username > $1 ORDER BY username LIMIT $2",
    },
    Digest2 {
        table: "indexes",
        sqlite: "SELECT id, index_name || '|' || pack || '|' || record_count FROM indexes WHERE id > ?1 ORDER BY id LIMIT ?2",
        postgres: "SELECT id, index_name || '|' || pack || '|' || record_count FROM indexes WHERE id > $1 ORDER BY id LIMIT $2",
    },
    // The stored SHA-256 on the SQLite side; PostgreSQL hashes the bytes it holds.
    Digest2 {
        table: "images",
        sqlite: "SELECT id, record_id || '|' || sha256 FROM images WHERE id > ?1 ORDER BY id LIMIT ?2",
        postgres: "SELECT id, record_id || '|' || encode(sha256(bytes), 'hex') FROM images WHERE id > $1 ORDER BY id LIMIT $2",
    },
];

/// Compares both stores table by table (see the module documentation).
pub async fn verify(from: &SqliteStore, to: &PostgresStore) -> Result<Vec<TableCheck>, StoreError> {
    let mut checks = Vec::new();
    let mut digests: HashMap<&'static str, (String, String)> = HashMap::new();
    for d in &DIGESTS {
        digests
            .insert(d.table, (sqlite_text_digest(from, d.sqlite).await?, postgres_text_digest(to, d.postgres).await?));
    }
    digests.insert("embeddings", (sqlite_vector_digest(from).await?, postgres_vector_digest(to).await?));
    for table in TABLES {
        let sql: &'static str = match table {
            "indexes" => "SELECT COUNT(*) FROM indexes",
            "records" => "SELECT COUNT(*) FROM records",
            "images" => "SELECT COUNT(*) FROM images",
            "embeddings" => "SELECT COUNT(*) FROM embeddings",
            "users" => "SELECT COUNT(*) FROM users",
            "grants" => "SELECT COUNT(*) FROM grants",
            "audit_log" => "SELECT COUNT(*) FROM audit_log",
            "reembed_jobs" => "SELECT COUNT(*) FROM reembed_jobs",
            _ => "SELECT COUNT(*) FROM staged_embeddings",
        };
        let sqlite_rows: i64 =
            from.read_raw(move |c| c.query_row(sql, [], |r| r.get(0)).map_err(sqlite_err("counting rows"))).await?;
        let postgres_rows: i64 = sqlx::query_scalar(sql).fetch_one(to.pool()).await.map_err(db("counting rows"))?;
        let (sqlite_digest, postgres_digest) = match digests.remove(table) {
            Some((a, b)) => (Some(a), Some(b)),
            None => (None, None),
        };
        checks.push(TableCheck {
            table,
            sqlite_rows: sqlite_rows.max(0) as u64,
            postgres_rows: postgres_rows.max(0) as u64,
            sqlite_digest,
            postgres_digest,
        });
    }
    Ok(checks)
}

async fn sqlite_text_digest(from: &SqliteStore, sql: &'static str) -> Result<String, StoreError> {
    let mut hasher = Sha256::new();
    let mut after = String::new();
    loop {
        let key = after.clone();
        let rows: Vec<(String, String)> = from
            .read_raw(move |c| {
                c.prepare(sql)
                    .and_then(|mut s| s.query_map(params![key, DIGEST_PAGE], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                    .map_err(sqlite_err("digesting a table"))
            })
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        for (k, v) in &rows {
            hasher.update(format!("{k}\t{v}\n"));
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

async fn postgres_text_digest(to: &PostgresStore, sql: &'static str) -> Result<String, StoreError> {
    let mut hasher = Sha256::new();
    let mut after = String::new();
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(sql)
            .bind(&after)
            .bind(DIGEST_PAGE)
            .fetch_all(to.pool())
            .await
            .map_err(db("digesting a table"))?;
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        for (k, v) in &rows {
            hasher.update(format!("{k}\t{v}\n"));
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Over (image id, pack, the vector's f32 bits) in image-id order.
async fn sqlite_vector_digest(from: &SqliteStore) -> Result<String, StoreError> {
    let mut hasher = Sha256::new();
    let mut after = String::new();
    loop {
        let key = after.clone();
        let rows: Vec<(String, String, Vec<u8>)> = from
            .read_raw(move |c| {
                c.prepare(
                    "SELECT image_id, pack, vector FROM embeddings WHERE image_id > ?1 ORDER BY image_id LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![key, DIGEST_PAGE], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
                })
                .map_err(sqlite_err("digesting vectors"))
            })
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        for (id, pack, vector) in &rows {
            hasher.update(format!("{id}\t{pack}\t"));
            hasher.update(vector);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

async fn postgres_vector_digest(to: &PostgresStore) -> Result<String, StoreError> {
    let mut hasher = Sha256::new();
    let mut after = String::new();
    loop {
        let rows: Vec<(String, String, Vector)> = sqlx::query_as(
            "SELECT image_id, pack, vector FROM embeddings WHERE image_id > $1 ORDER BY image_id LIMIT $2",
        )
        .bind(&after)
        .bind(DIGEST_PAGE)
        .fetch_all(to.pool())
        .await
        .map_err(db("digesting vectors"))?;
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        for (id, pack, vector) in &rows {
            hasher.update(format!("{id}\t{pack}\t"));
            for x in vector.as_slice() {
                hasher.update(x.to_le_bytes());
            }
        }
    }
    Ok(hex::encode(hasher.finalize()))
}
