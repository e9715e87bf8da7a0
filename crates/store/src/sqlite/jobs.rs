//! Re-embedding jobs in SQLite: staged vectors and the switch to another pack.

use super::*;

/// The ids of an index's images, as a subquery on parameter `?1`.
pub(super) const INDEX_IMAGES: &str =
    "SELECT i.id FROM images i JOIN records r ON r.id = i.record_id WHERE r.index_id = ?1";

/// A job row and its recorded failures (JSON, read once the job is done).
pub(super) fn raw_job(r: &Row<'_>) -> rusqlite::Result<(JobRow, String)> {
    let row = JobRow {
        id: r.get(0)?,
        index_id: r.get(1)?,
        pack: r.get(2)?,
        from_pack: r.get(3)?,
        state: r.get(4)?,
        recorded: (r.get(5)?, r.get(6)?, r.get(7)?),
        error: r.get(9)?,
        requested_by: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        finished_at: r.get(13)?,
    };
    Ok((row, r.get(8)?))
}

/// (images, images with a staged row of `pack`, of which failures) of an index.
pub(super) fn staging_progress(conn: &Connection, index_id: &str, pack: &str) -> Result<(i64, i64, i64), StoreError> {
    conn.prepare_cached(
        "SELECT COUNT(*), COUNT(s.image_id), COUNT(s.failure)
         FROM images i JOIN records r ON r.id = i.record_id
         LEFT JOIN staged_embeddings s ON s.image_id = i.id AND s.pack = ?2
         WHERE r.index_id = ?1",
    )
    .and_then(|mut s| s.query_row([index_id, pack], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
    .ctx("counting staged vectors")
}

/// The images of an index in which `pack` found no usable face (staged failures).
pub(super) fn staged_failures(
    conn: &Connection,
    index_id: &str,
    pack: &str,
) -> Result<Vec<ReembedFailure>, StoreError> {
    let limit = i64::try_from(MAX_LISTED_FAILURES).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "SELECT s.image_id, i.record_id, s.failure
         FROM staged_embeddings s JOIN images i ON i.id = s.image_id JOIN records r ON r.id = i.record_id
         WHERE r.index_id = ?1 AND s.pack = ?2 AND s.failure IS NOT NULL
         ORDER BY i.created_at, i.rowid LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![index_id, pack, limit], |r| {
            Ok(ReembedFailure { image_id: r.get(0)?, record_id: r.get(1)?, code: r.get(2)? })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .ctx("listing staged failures")
}

/// The index's job; the counts of a running one are read live from the staging.
pub(super) fn load_job(conn: &Connection, index_id: &str) -> Result<Option<ReembedJob>, StoreError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {JOB_COLS} FROM reembed_jobs WHERE index_id = ?1"))
        .and_then(|mut s| s.query_row([index_id], raw_job).optional())
        .ctx("loading a re-embedding job")?;
    raw.map(|raw| job_from_raw(conn, raw)).transpose()
}

pub(super) fn job_from_raw(conn: &Connection, (row, failures): (JobRow, String)) -> Result<ReembedJob, StoreError> {
    let state = row.state()?;
    let figures = if state == JobState::Done {
        let failures = serde_json::from_str(&failures).map_err(|e| row.corrupt(format!("failures: {e}")))?;
        row.recorded(failures)?
    } else {
        let counts = staging_progress(conn, &row.index_id, &row.pack)?;
        live_figures(counts, staged_failures(conn, &row.index_id, &row.pack)?)?
    };
    Ok(row.into_job(state, figures))
}

pub(super) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

#[async_trait::async_trait]
impl ReembedStore for SqliteStore {
    async fn start_reembed(
        &self,
        index_id: &str,
        pack: Pack,
        requested_by: &str,
    ) -> Result<Option<ReembedStart>, StoreError> {
        let (index_id, pack, requested_by) = (index_id.to_owned(), pack.name(), requested_by.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "starting a re-embedding job")?;
                let Some(from_pack) = index_pack(&tx, &index_id)? else {
                    return Ok(None);
                };
                if let Some(job) = load_job(&tx, &index_id)?.filter(|j| j.state == JobState::Running) {
                    if job.pack.name() == pack {
                        return Ok(Some(ReembedStart::Running(job)));
                    }
                    return Err(StoreError::Conflict(format!(
                        "a re-embedding of this index to the {} pack is running",
                        job.pack
                    )));
                }
                // Vectors staged for another pack by an abandoned job are of no use now.
                tx.execute(
                    &format!("DELETE FROM staged_embeddings WHERE pack <> ?2 AND image_id IN ({INDEX_IMAGES})"),
                    [index_id.as_str(), pack],
                )
                .ctx("clearing stale staged vectors")?;
                let now = now_rfc3339();
                tx.execute(
                    "INSERT OR REPLACE INTO reembed_jobs
                         (index_id, id, pack, from_pack, state, requested_by, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?6)",
                    params![index_id, new_id(), pack, from_pack, requested_by, now],
                )
                .ctx("creating a re-embedding job")?;
                let job = load_job(&tx, &index_id)?
                    .ok_or_else(|| StoreError::Corrupt("the new re-embedding job vanished".into()))?;
                tx.commit().ctx("committing a new re-embedding job")?;
                Ok(Some(ReembedStart::Started(job)))
            })
        })
        .await
    }

    async fn reembed_job(&self, index_id: &str) -> Result<Option<ReembedJob>, StoreError> {
        let index_id = index_id.to_owned();
        self.run(move |inner| inner.read_tx(|tx| load_job(tx, &index_id))).await
    }

    async fn running_reembeds(&self) -> Result<Vec<ReembedJob>, StoreError> {
        self.run(|inner| {
            inner.read_tx(|tx| {
                let raws = tx
                    .prepare_cached(&format!(
                        "SELECT {JOB_COLS} FROM reembed_jobs WHERE state = 'running' ORDER BY created_at"
                    ))
                    .and_then(|mut s| s.query_map([], raw_job)?.collect::<rusqlite::Result<Vec<_>>>())
                    .ctx("listing running re-embedding jobs")?;
                raws.into_iter().map(|raw| job_from_raw(tx, raw)).collect()
            })
        })
        .await
    }

    async fn pending_images(&self, index_id: &str, pack: Pack, limit: usize) -> Result<Vec<PendingImage>, StoreError> {
        let (index_id, pack) = (index_id.to_owned(), pack.name());
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        self.run(move |inner| {
            inner.read(|conn| {
                let raws = conn
                    .prepare_cached(
                        "SELECT i.id, i.record_id, i.face, i.bytes
                         FROM images i JOIN records r ON r.id = i.record_id
                         WHERE r.index_id = ?1
                           AND NOT EXISTS (SELECT 1 FROM staged_embeddings s WHERE s.image_id = i.id AND s.pack = ?2)
                         ORDER BY i.created_at, i.rowid LIMIT ?3",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![index_id, pack, limit], |r| {
                            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .ctx("listing images to re-embed")?;
                raws.into_iter()
                    .map(|(image_id, record_id, face, bytes)| {
                        let face = serde_json::from_str(&face)
                            .map_err(|e| StoreError::Corrupt(format!("image {image_id}: face: {e}")))?;
                        Ok(PendingImage { image_id, record_id, bytes, face })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn stage_vector(
        &self,
        image_id: &str,
        pack: Pack,
        vector: Result<Vec<f32>, String>,
    ) -> Result<bool, StoreError> {
        let (image_id, pack) = (image_id.to_owned(), pack.name());
        let (dim, blob, failure) = match vector {
            Ok(v) => {
                check_vector(&v, "a staged vector")?;
                let dim = i64::try_from(v.len()).map_err(|_| StoreError::InvalidInput("vector too long".into()))?;
                (Some(dim), Some(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()), None)
            }
            Err(code) => (None, None, Some(code)),
        };
        self.run(move |inner| {
            inner.write(|conn| {
                let result = conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO staged_embeddings (image_id, pack, dim, vector, failure)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .and_then(|mut s| s.execute(params![image_id, pack, dim, blob, failure]));
                match result {
                    Ok(_) => Ok(true),
                    // The image was deleted while it was being embedded.
                    Err(e) if is_foreign_key_violation(&e) => Ok(false),
                    Err(e) => Err(backend_error("staging a vector", e)),
                }
            })
        })
        .await
    }

    async fn switch_pack(&self, index_id: &str, job_id: &str) -> Result<PackSwitch, StoreError> {
        let (index_id, job_id) = (index_id.to_owned(), job_id.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "switching an index's pack")?;
                let Some(job) =
                    load_job(&tx, &index_id)?.filter(|j| j.job_id == job_id && j.state == JobState::Running)
                else {
                    return Ok(PackSwitch::NoJob);
                };
                if job.done < job.total {
                    return Ok(PackSwitch::Pending(job.total - job.done));
                }
                tx.execute(&format!("DELETE FROM embeddings WHERE image_id IN ({INDEX_IMAGES})"), [&index_id])
                    .ctx("removing the old vectors")?;
                tx.execute(
                    &format!(
                        "INSERT INTO embeddings (image_id, pack, dim, vector)
                         SELECT image_id, pack, dim, vector FROM staged_embeddings
                         WHERE pack = ?2 AND vector IS NOT NULL AND image_id IN ({INDEX_IMAGES})"
                    ),
                    [index_id.as_str(), job.pack.name()],
                )
                .ctx("installing the new vectors")?;
                tx.execute(&format!("DELETE FROM staged_embeddings WHERE image_id IN ({INDEX_IMAGES})"), [&index_id])
                    .ctx("clearing the staged vectors")?;
                let now = now_rfc3339();
                tx.execute(
                    "UPDATE indexes SET pack = ?2, updated_at = ?3 WHERE id = ?1",
                    [index_id.as_str(), job.pack.name(), now.as_str()],
                )
                .ctx("setting the index's pack")?;
                let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                tx.execute(
                    "UPDATE reembed_jobs SET state = 'done', total = ?2, done = ?3, failed = ?4, failures = ?5,
                                             updated_at = ?6, finished_at = ?6
                     WHERE index_id = ?1",
                    params![
                        index_id,
                        as_i64(job.total),
                        as_i64(job.done),
                        as_i64(job.failed),
                        to_json(&job.failures)?,
                        now
                    ],
                )
                .ctx("finishing a re-embedding job")?;
                let job = load_job(&tx, &index_id)?
                    .ok_or_else(|| StoreError::Corrupt("the finished re-embedding job vanished".into()))?;
                let vectors = scan_embeddings(&tx, "r.index_id = ?1", &index_id)?;
                tx.commit().ctx("committing a pack switch")?;
                // The old vectors are biometric data: do not leave them in the log.
                checkpoint_after_erase(conn);
                Ok(PackSwitch::Switched { job: Box::new(job), vectors })
            })
        })
        .await
    }

    async fn fail_reembed(&self, index_id: &str, job_id: &str, error: &str) -> Result<(), StoreError> {
        let (index_id, job_id, error) = (index_id.to_owned(), job_id.to_owned(), error.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                conn.execute(
                    "UPDATE reembed_jobs SET state = 'failed', error = ?3, updated_at = ?4, finished_at = ?4
                     WHERE index_id = ?1 AND id = ?2 AND state = 'running'",
                    params![index_id, job_id, error, now_rfc3339()],
                )
                .ctx("failing a re-embedding job")?;
                Ok(())
            })
        })
        .await
    }
}
