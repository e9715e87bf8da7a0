//! Re-embedding jobs in PostgreSQL: staged vectors and the switch to another pack.

use super::*;

/// A job row as PostgreSQL returns it (the columns [`JOB_COLS`]).
#[derive(FromRow)]
pub(super) struct JobDbRow {
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

impl JobDbRow {
    /// The shared job row and its recorded failures.
    fn split(self) -> (JobRow, Vec<ReembedFailure>) {
        let row = JobRow {
            id: self.id,
            index_id: self.index_id,
            pack: self.pack,
            from_pack: self.from_pack,
            state: self.state,
            recorded: (self.total, self.done, self.failed),
            error: self.error,
            requested_by: self.requested_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        };
        (row, self.failures.0)
    }
}

/// The index's job; the counts of a running one are read live from the staging.
pub(super) async fn load_job(conn: &mut sqlx::PgConnection, index_id: &str) -> Result<Option<ReembedJob>, StoreError> {
    let row: Option<JobDbRow> =
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

pub(super) async fn job_from_row(conn: &mut sqlx::PgConnection, row: JobDbRow) -> Result<ReembedJob, StoreError> {
    let (row, recorded_failures) = row.split();
    let state = row.state()?;
    let figures = if state == JobState::Done {
        row.recorded(recorded_failures)?
    } else {
        let counts: (i64, i64, i64) = sqlx::query_as(
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
        live_figures(counts, failures)?
    };
    Ok(row.into_job(state, figures))
}

#[async_trait::async_trait]
impl ReembedStore for PostgresStore {
    async fn start_reembed(
        &self,
        index_id: &str,
        pack: Pack,
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
        .bind(pack.name())
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
        .bind(pack.name())
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
        let rows: Vec<JobDbRow> = sqlx::query_as(AssertSqlSafe(format!(
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

    async fn pending_images(&self, index_id: &str, pack: Pack, limit: usize) -> Result<Vec<PendingImage>, StoreError> {
        let rows: Vec<(String, String, Json<serde_json::Value>, Vec<u8>)> = sqlx::query_as(
            "SELECT i.id, i.record_id, i.face, i.bytes
             FROM images i JOIN records r ON r.id = i.record_id
             WHERE r.index_id = $1
               AND NOT EXISTS (SELECT 1 FROM staged_embeddings s WHERE s.image_id = i.id AND s.pack = $2)
             ORDER BY i.created_at, i.seq LIMIT $3",
        )
        .bind(index_id)
        .bind(pack.name())
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
        pack: Pack,
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
        .bind(pack.name())
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
        .bind(job.pack.name())
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
            .bind(job.pack.name())
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
}
