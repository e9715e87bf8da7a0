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
    for table in TABLES {
        let mut done = TableCopy { table, ..TableCopy::default() };
        let mut after: i64 = 0;
        loop {
            let (rows, last) = copy_batch(from, to, table, after).await?;
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

/// One batch of `table` after SQLite rowid `after` (tables without a rowid are read
/// whole in one batch): ((read, written), last rowid).
async fn copy_batch(
    from: &SqliteStore,
    to: &PostgresStore,
    table: &'static str,
    after: i64,
) -> Result<((u64, u64), i64), StoreError> {
    let mut tx = to.pool().begin().await.map_err(db("starting a copy batch"))?;
    let mut written = 0u64;
    let (read, last) = match table {
        "indexes" => {
            type Row = (i64, String, String, String, String, String, String, String, String);
            let rows: Vec<Row> = from
                .read_raw(move |c| {
                    c.prepare(
                        "SELECT rowid, id, index_name, index_type, title, description, pack, created_at, updated_at
                               FROM indexes WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![after, BATCH], |r| {
                            Ok((
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                                r.get(6)?,
                                r.get(7)?,
                                r.get(8)?,
                            ))
                        })?
                        .collect()
                    })
                    .map_err(sqlite_err("reading indexes"))
                })
                .await?;
            for (_, id, name, kind, title, description, pack, created, updated) in &rows {
                // record_count starts at 0: the records' trigger counts them as they arrive.
                let done = sqlx::query(
                    "INSERT INTO indexes (id, index_name, index_type, title, description, pack, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(name)
                .bind(kind)
                .bind(title)
                .bind(description)
                .bind(pack)
                .bind(created)
                .bind(updated)
                .execute(&mut *tx)
                .await
                .map_err(db("copying an index"))?;
                written += done.rows_affected();
            }
            (rows.len(), rows.last().map_or(after, |r| r.0))
        }
        "records" => {
            type Row = (i64, [String; 8], String, String, Option<String>, String, String);
            let rows: Vec<Row> = from
                .read_raw(move |c| {
                    c.prepare(
                        "SELECT rowid, id, index_id, name, dob, nationality, gender, id_no, address, watch_list,
                                additional_info, reference, created_at, updated_at
                         FROM records WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![after, BATCH], |r| {
                            Ok((
                                r.get(0)?,
                                [
                                    r.get(1)?,
                                    r.get(2)?,
                                    r.get(3)?,
                                    r.get(4)?,
                                    r.get(5)?,
                                    r.get(6)?,
                                    r.get(7)?,
                                    r.get(8)?,
                                ],
                                r.get(9)?,
                                r.get(10)?,
                                r.get(11)?,
                                r.get(12)?,
                                r.get(13)?,
                            ))
                        })?
                        .collect()
                    })
                    .map_err(sqlite_err("reading records"))
                })
                .await?;
            for (_, [id, index_id, name, dob, nat, gender, id_no, address], watch, info, reference, created, updated) in
                &rows
            {
                let done = sqlx::query(
                    "INSERT INTO records (id, index_id, name, dob, nationality, gender, id_no, address, watch_list,
                                          additional_info, reference, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(index_id)
                .bind(name)
                .bind(dob)
                .bind(nat)
                .bind(gender)
                .bind(id_no)
                .bind(address)
                .bind(Json(json(watch, "watch_list")?))
                .bind(info)
                .bind(reference)
                .bind(created)
                .bind(updated)
                .execute(&mut *tx)
                .await
                .map_err(db("copying a record"))?;
                written += done.rows_affected();
            }
            (rows.len(), rows.last().map_or(after, |r| r.0))
        }
        "images" => {
            type Row = (i64, [String; 6], Option<String>, String, Vec<u8>);
            let rows: Vec<Row> = from
                .read_raw(move |c| {
                    c.prepare(
                        "SELECT rowid, id, record_id, mime, file_name, sha256, face, quality, created_at, bytes
                         FROM images WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![after, IMAGE_BATCH], |r| {
                            Ok((
                                r.get(0)?,
                                [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
                                r.get(7)?,
                                r.get(8)?,
                                r.get(9)?,
                            ))
                        })?
                        .collect()
                    })
                    .map_err(sqlite_err("reading images"))
                })
                .await?;
            for (_, [id, record_id, mime, file_name, sha256, face], quality, created, bytes) in &rows {
                let quality = quality.as_deref().map(|q| json(q, "quality")).transpose()?;
                let done = sqlx::query(
                    "INSERT INTO images (id, record_id, mime, file_name, sha256, face, quality, created_at, bytes)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(record_id)
                .bind(mime)
                .bind(file_name)
                .bind(sha256)
                .bind(Json(json(face, "face")?))
                .bind(quality.map(Json))
                .bind(created)
                .bind(bytes)
                .execute(&mut *tx)
                .await
                .map_err(db("copying an image"))?;
                written += done.rows_affected();
            }
            (rows.len(), rows.last().map_or(after, |r| r.0))
        }
        "embeddings" => {
            type Row = (i64, String, String, String, String, i32, Vec<u8>);
            let rows: Vec<Row> = from
                .read_raw(move |c| {
                    c.prepare(
                        "SELECT e.rowid, e.image_id, i.record_id, r.index_id, e.pack, e.dim, e.vector
                         FROM embeddings e JOIN images i ON i.id = e.image_id JOIN records r ON r.id = i.record_id
                         WHERE e.rowid > ?1 ORDER BY e.rowid LIMIT ?2",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![after, BATCH], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                        })?
                        .collect()
                    })
                    .map_err(sqlite_err("reading embeddings"))
                })
                .await?;
            for (_, image_id, record_id, index_id, pack, dim, vector) in &rows {
                let done = sqlx::query(
                    "INSERT INTO embeddings (image_id, record_id, index_id, pack, dim, vector)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (image_id) DO NOTHING",
                )
                .bind(image_id)
                .bind(record_id)
                .bind(index_id)
                .bind(pack)
                .bind(dim)
                .bind(Vector::from(decode_f32(vector)))
                .execute(&mut *tx)
                .await
                .map_err(db("copying a vector"))?;
                written += done.rows_affected();
            }
            (rows.len(), rows.last().map_or(after, |r| r.0))
        }
        "users" => {
            let rows: Vec<(i64, String, String, String, String)> = from
                .read_raw(move |c| {
                    c.prepare(
                        "SELECT rowid, username, role, password_hash, created_at FROM users
                         WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![after, BATCH], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                        })?
                        .collect()
                    })
                    .map_err(sqlite_err("reading users"))
                })
                .await?;
            for (_, username, role, hash, created) in &rows {
                let done = sqlx::query(
                    "INSERT INTO users (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (username) DO NOTHING",
                )
                .bind(username)
                .bind(role)
                .bind(hash)
                .bind(created)
                .execute(&mut *tx)
                .await
                .map_err(db("copying a user"))?;
                written += done.rows_affected();
            }
            (rows.len(), rows.last().map_or(after, |r| r.0))
        }
        "grants" if after == 0 => {
            let rows: Vec<(String, String, String)> = from
                .read_raw(|c| {
                    c.prepare("SELECT username, index_id, created_at FROM grants ORDER BY username, index_id")
                        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
                        .map_err(sqlite_err("reading grants"))
                })
                .await?;
            for (username, index_id, created) in &rows {
                let done = sqlx::query(
                    "INSERT INTO grants (username, index_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(username)
                .bind(index_id)
                .bind(created)
                .execute(&mut *tx)
                .await
                .map_err(db("copying a grant"))?;
                written += done.rows_affected();
            }
            (rows.len(), 1)
        }
        "audit_log" => {
            type Row = (i64, [String; 4], [String; 3]);
            let rows: Vec<Row> = from
                .read_raw(move |c| {
                    c.prepare(
                        "SELECT id, at, actor, action, outcome, index_ids, record_ids, details FROM audit_log
                         WHERE id > ?1 ORDER BY id LIMIT ?2",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![after, BATCH], |r| {
                            Ok((
                                r.get(0)?,
                                [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
                                [r.get(5)?, r.get(6)?, r.get(7)?],
                            ))
                        })?
                        .collect()
                    })
                    .map_err(sqlite_err("reading the audit log"))
                })
                .await?;
            for (id, [at, actor, action, outcome], [index_ids, record_ids, details]) in &rows {
                let done = sqlx::query(
                    "INSERT INTO audit_log (id, at, actor, action, outcome, index_ids, record_ids, details)
                     OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(at)
                .bind(actor)
                .bind(action)
                .bind(outcome)
                .bind(Json(json(index_ids, "audit index_ids")?))
                .bind(Json(json(record_ids, "audit record_ids")?))
                .bind(Json(json(details, "audit details")?))
                .execute(&mut *tx)
                .await
                .map_err(db("copying an audit entry"))?;
                written += done.rows_affected();
            }
            (rows.len(), rows.last().map_or(after, |r| r.0))
        }
        "reembed_jobs" if after == 0 => {
            type Row = ([String; 5], [i64; 3], String, Option<String>, String, String, Option<String>);
            let rows: Vec<Row> = from
                .read_raw(|c| {
                    c.prepare(
                        "SELECT index_id, id, pack, from_pack, state, total, done, failed, failures, error,
                                requested_by, created_at, updated_at, finished_at FROM reembed_jobs ORDER BY index_id",
                    )
                    .and_then(|mut s| {
                        s.query_map([], |r| {
                            Ok((
                                [r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
                                [r.get(5)?, r.get(6)?, r.get(7)?],
                                r.get(8)?,
                                r.get(9)?,
                                r.get(10)?,
                                r.get(11)?,
                                r.get(13)?,
                            ))
                        })?
                        .collect()
                    })
                    .map_err(sqlite_err("reading re-embedding jobs"))
                })
                .await?;
            for (
                [index_id, id, pack, from_pack, state],
                [total, done_n, failed],
                failures,
                error,
                by,
                created,
                finished,
            ) in &rows
            {
                let done = sqlx::query(
                    "INSERT INTO reembed_jobs (index_id, id, pack, from_pack, state, total, done, failed, failures,
                                               error, requested_by, created_at, updated_at, finished_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13)
                     ON CONFLICT (index_id) DO NOTHING",
                )
                .bind(index_id)
                .bind(id)
                .bind(pack)
                .bind(from_pack)
                .bind(state)
                .bind(total)
                .bind(done_n)
                .bind(failed)
                .bind(Json(json(failures, "job failures")?))
                .bind(error)
                .bind(by)
                .bind(created)
                .bind(finished)
                .execute(&mut *tx)
                .await
                .map_err(db("copying a re-embedding job"))?;
                written += done.rows_affected();
            }
            (rows.len(), 1)
        }
        "staged_embeddings" if after == 0 => {
            type Row = (String, String, Option<i32>, Option<Vec<u8>>, Option<String>);
            let rows: Vec<Row> = from
                .read_raw(|c| {
                    c.prepare(
                        "SELECT image_id, pack, dim, vector, failure FROM staged_embeddings ORDER BY image_id, pack",
                    )
                    .and_then(|mut s| {
                        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?.collect()
                    })
                    .map_err(sqlite_err("reading staged vectors"))
                })
                .await?;
            for (image_id, pack, dim, vector, failure) in &rows {
                let done = sqlx::query(
                    "INSERT INTO staged_embeddings (image_id, pack, dim, vector, failure) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT DO NOTHING",
                )
                .bind(image_id)
                .bind(pack)
                .bind(dim)
                .bind(vector.as_deref().map(|v| Vector::from(decode_f32(v))))
                .bind(failure)
                .execute(&mut *tx)
                .await
                .map_err(db("copying a staged vector"))?;
                written += done.rows_affected();
            }
            (rows.len(), 1)
        }
        // Tables read whole were done in their first batch.
        _ => (0, after),
    };
    tx.commit().await.map_err(db("committing a copy batch"))?;
    Ok(((read as u64, written), last))
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
