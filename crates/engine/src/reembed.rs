//! Moving an index to another model pack by re-embedding its stored images.
//!
//! Images are stored with their records, so an index can change packs without anyone
//! enrolling again. A job runs in the background of the server:
//!
//! 1. **Stage.** Batch after batch, the index's images that have no vector of the
//!    new pack yet are embedded with the new pack's pipeline and the vectors staged in
//!    the store beside the live ones ([`Store::stage_vector`](facesearch_store::Store::stage_vector)). Each image takes one
//!    analysis slot on the blocking pool, like a request, so the job shares the
//!    machine with searches instead of starving them. Searches meanwhile use the
//!    index's live vectors of the old pack.
//! 2. **Resume.** Staged vectors are durable, so a job stopped anywhere (crash,
//!    restart, error) continues with the images that have none: running jobs resume
//!    when the server starts, and starting a failed job again picks up its staging.
//! 3. **Switch.** When no image is left, the engine takes its write lock (so no
//!    enrolment or delete runs), and [`Store::switch_pack`](facesearch_store::Store::switch_pack) replaces the index's vectors
//!    with the staged ones and sets its pack in one transaction; if an image was
//!    enrolled since the last batch, nothing changes and the job goes on embedding.
//!    Still under the write lock, the in-memory vectors are swapped under the lock that
//!    every search holds for its scan: a search sees the index all old or all new.
//!
//! The new pack's detector looks for the enrolled face again, in the photo turned by
//! the quarter turn stored at enrolment (a sideways photo is embedded upright, as it
//! was then): the detected face that overlaps most the box stored at enrolment (so the
//! person enrolled, not a bystander, is embedded). An image in which it finds no such face (or only one too small) is
//! not an error of the job: it is staged as a failure with its error code, its record
//! and image are kept, it has no vector under the new pack (so it is not found by
//! searches), and it is listed in the job's report and the audit entry, for an
//! operator to add a better photo. A model or runtime failure stops the job instead
//! (`failed`, with the reason); nothing is switched.
//!
//! Records deleted during the job take their staged vectors along (foreign keys); a
//! deleted index takes its job. The switch is audited (`index.reembed.finish`, as the
//! admin who started the job).

use std::sync::{Arc, PoisonError};

use facesearch_face::{BBox, FacePipeline, Pack, PipelineError, Rotation};
use facesearch_store::{NewAuditEvent, PackSwitch, PendingImage, ReembedJob, ReembedStart};

use crate::{Engine, EngineError, photo_error_code, task_failed};

/// Images fetched from the store at once.
const BATCH: usize = 16;
/// A face found by the new detector is the enrolled one when its box overlaps the
/// stored box at least this much (intersection over union).
const SAME_FACE_IOU: f32 = 0.3;

/// How a job's task ended.
enum JobEnd {
    /// The index now holds the new pack's vectors.
    Switched(Box<ReembedJob>),
    /// Stopped by the test-only pause; the job is still running and resumes at the
    /// next start.
    Paused,
    /// The job no longer exists or runs (the index was deleted, or a newer job took over).
    Gone,
}

impl Engine {
    /// Starts a job moving the index to `pack` in the background, or returns the one
    /// already running to that pack. `IndexNotFound` if there is no such index; a job
    /// to another pack running is a store conflict.
    pub async fn start_reembed(
        self: &Arc<Self>,
        index_id: &str,
        pack: Pack,
        requested_by: &str,
    ) -> Result<ReembedJob, EngineError> {
        let job = match self.store.start_reembed(index_id, pack, requested_by).await? {
            Some(ReembedStart::Started(job) | ReembedStart::Running(job)) => job,
            None => return Err(EngineError::IndexNotFound(index_id.to_string())),
        };
        self.spawn_job(job.clone());
        Ok(job)
    }

    /// The index's latest re-embedding job, with its progress.
    pub async fn reembed_job(&self, index_id: &str) -> Result<Option<ReembedJob>, EngineError> {
        Ok(self.store.reembed_job(index_id).await?)
    }

    /// Resumes every job left running by an earlier process; returns how many. A job
    /// moving to a pack this binary does not know is left alone, still running: a
    /// newer node sharing the database may be running it, and failing it from here
    /// would undo that node's work.
    pub async fn resume_reembeds(self: &Arc<Self>) -> Result<usize, EngineError> {
        let jobs = self.store.running_reembeds().await?;
        let mut n = 0;
        for job in jobs {
            if job.pack.known().is_none() {
                tracing::warn!(index = %job.index_id, pack = %job.pack, "not resuming a re-embedding job to a model pack this binary does not know");
                continue;
            }
            tracing::info!(index = %job.index_id, pack = %job.pack, done = job.done, total = job.total, "resuming a re-embedding job");
            self.spawn_job(job);
            n += 1;
        }
        Ok(n)
    }

    /// Runs the job in a task of its own, unless this process already runs it.
    fn spawn_job(self: &Arc<Self>, job: ReembedJob) {
        let mut running = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if !running.insert(job.job_id.clone()) {
            return;
        }
        drop(running);
        let engine = self.clone();
        tokio::spawn(async move {
            let result = engine.run_job(&job).await;
            engine.jobs.lock().unwrap_or_else(PoisonError::into_inner).remove(&job.job_id);
            match result {
                Ok(JobEnd::Switched(done)) => {
                    tracing::info!(index = %done.index_id, pack = %done.pack, total = done.total, no_face = done.failed, "index moved to another model pack");
                    engine.audit_end(&done, "ok", None).await;
                }
                Ok(JobEnd::Paused) => tracing::info!(index = %job.index_id, "re-embedding paused (test setting)"),
                Ok(JobEnd::Gone) => tracing::info!(index = %job.index_id, "re-embedding job no longer running"),
                Err(e) => {
                    tracing::error!(index = %job.index_id, error = %e, "re-embedding failed");
                    let reason = e.to_string();
                    if let Err(e) = engine.store.fail_reembed(&job.index_id, &job.job_id, &reason).await {
                        tracing::error!(error = %e, "could not record the re-embedding failure");
                    }
                    engine.audit_end(&job, "REEMBED_FAILED", Some(&reason)).await;
                }
            }
        });
    }

    async fn run_job(&self, job: &ReembedJob) -> Result<JobEnd, EngineError> {
        let pack = job
            .pack
            .known()
            .ok_or_else(|| EngineError::UnknownPack { index: job.index_id.clone(), pack: job.pack.to_string() })?;
        loop {
            let batch = self.store.pending_images(&job.index_id, pack, BATCH).await?;
            if batch.is_empty() {
                match self.switch(job, pack).await? {
                    Some(end) => return Ok(end),
                    // Enrolled since the last batch: embed those too.
                    None => continue,
                }
            }
            let pipeline = self.pipeline(pack).await?;
            for image in batch {
                if self.pause_reached(job).await? {
                    return Ok(JobEnd::Paused);
                }
                let image_id = image.image_id.clone();
                let vector = self.embed_stored(&pipeline, image).await?;
                self.store.stage_vector(&image_id, pack, vector).await?;
            }
        }
    }

    /// Whether the test-only pause applies: the job has staged its share (checked
    /// before each image, so a task started again stages nothing more).
    async fn pause_reached(&self, job: &ReembedJob) -> Result<bool, EngineError> {
        let Some(limit) = self.config.reembed_pause_after() else { return Ok(false) };
        let progress = self.store.reembed_job(&job.index_id).await?;
        Ok(progress.is_none_or(|p| p.done >= limit))
    }

    /// The vector of a stored image under `pipeline`'s pack, or the code of why it has
    /// none. A model or runtime failure is an error of the job.
    async fn embed_stored(
        &self,
        pipeline: &Arc<FacePipeline>,
        image: PendingImage,
    ) -> Result<Result<Vec<f32>, String>, EngineError> {
        // A background job waits its turn as long as it takes: no queue timeout.
        let permit = self.analyses.clone().acquire_owned().await.map_err(|_| EngineError::Busy)?;
        let pipeline = pipeline.clone();
        let enrolled = stored_box(&image.face);
        let rotation = stored_rotation(&image.face);
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            embed_same_face(&pipeline, &image.bytes, enrolled, rotation)
        })
        .await
        .map_err(task_failed)?;
        match result {
            Ok(vector) => Ok(Ok(vector)),
            Err(e) => match photo_error_code(&e) {
                Some(code) => Ok(Err(code.to_string())),
                None => Err(EngineError::Face(e)),
            },
        }
    }

    /// Switches the index to the staged vectors if none is missing; `None` if some are.
    async fn switch(&self, job: &ReembedJob, pack: Pack) -> Result<Option<JobEnd>, EngineError> {
        // No enrolment or delete may run between the store's switch and the memory's.
        let _writes = self.writes.lock().await;
        match self.store.switch_pack(&job.index_id, &job.job_id).await? {
            PackSwitch::Pending(_) => Ok(None),
            PackSwitch::NoJob => Ok(Some(JobEnd::Gone)),
            PackSwitch::Switched { job, vectors } => {
                // Nothing to swap when the store searches its own vectors.
                self.vectors.switch(&job.index_id, pack, &vectors)?;
                Ok(Some(JobEnd::Switched(job)))
            }
        }
    }

    /// Appends the job's end to the audit log, as the admin who started it.
    async fn audit_end(&self, job: &ReembedJob, outcome: &str, error: Option<&str>) {
        let no_face: Vec<&str> = job.failures.iter().map(|f| f.image_id.as_str()).collect();
        let event = NewAuditEvent {
            actor: job.requested_by.clone(),
            action: "index.reembed.finish".into(),
            outcome: outcome.into(),
            index_ids: vec![job.index_id.clone()],
            record_ids: job.failures.iter().map(|f| f.record_id.clone()).collect(),
            details: serde_json::json!({
                "job_id": job.job_id,
                "pack": job.pack,
                "from_pack": job.from_pack,
                "total": job.total,
                "done": job.done,
                "no_face": job.failed,
                "no_face_image_ids": no_face,
                "error": error,
            }),
        };
        if let Err(e) = self.store.append_audit(event).await {
            tracing::error!(error = %e, "could not append to the audit log");
        }
    }
}

/// The box stored at enrolment (`face.bbox`), if readable.
fn stored_box(face: &serde_json::Value) -> Option<BBox> {
    let b = face.get("bbox")?;
    let get = |k: &str| b.get(k).and_then(serde_json::Value::as_f64).map(|v| v as f32);
    Some(BBox { x1: get("x1")?, y1: get("y1")?, x2: get("x2")?, y2: get("y2")? })
}

/// The quarter turn stored at enrolment (`face.rotation`, degrees clockwise); none for
/// images enrolled before photos were turned, or an unreadable value.
fn stored_rotation(face: &serde_json::Value) -> Rotation {
    face.get("rotation").and_then(serde_json::Value::as_i64).and_then(Rotation::from_degrees).unwrap_or_default()
}

/// Detects the faces of a stored photo, turned as it was at enrolment (the stored box
/// is in the photo's own pixels), and embeds the one that was enrolled: the face
/// overlapping `enrolled` most (at least [`SAME_FACE_IOU`]), or the largest when no
/// box was stored.
fn embed_same_face(
    pipeline: &FacePipeline,
    bytes: &[u8],
    enrolled: Option<BBox>,
    rotation: Rotation,
) -> Result<Vec<f32>, PipelineError> {
    let decoded = pipeline.decode(bytes)?;
    let original = (decoded.rgb.width(), decoded.rgb.height());
    let upright = rotation.apply(&decoded.rgb);
    let faces = pipeline.detect(&upright)?;
    let face = match enrolled {
        Some(b) => faces
            .iter()
            .map(|f| (rotation.detection_to_original(f, original).bbox.iou(&b), f))
            .filter(|(iou, _)| *iou >= SAME_FACE_IOU)
            .max_by(|(a, _), (b, _)| a.total_cmp(b))
            .map(|(_, f)| f),
        None => faces.first(),
    }
    .ok_or(PipelineError::NoFace)?;
    pipeline.check_size(face)?;
    pipeline.embed(&upright, face)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_box_is_read_from_the_face_json() {
        let face = serde_json::json!({"bbox": {"x1": 1.5, "y1": 2.0, "x2": 30.0, "y2": 40.25}, "score": 0.9});
        assert_eq!(stored_box(&face), Some(BBox { x1: 1.5, y1: 2.0, x2: 30.0, y2: 40.25 }));
        assert_eq!(stored_box(&serde_json::json!({"box": [1, 2, 3, 4]})), None);
        assert_eq!(stored_box(&serde_json::json!({"bbox": {"x1": 1.0}})), None);
    }

    #[test]
    fn the_stored_rotation_is_read_from_the_face_json() {
        assert_eq!(stored_rotation(&serde_json::json!({"rotation": 270})), Rotation::Cw270);
        assert_eq!(stored_rotation(&serde_json::json!({"rotation": 0})), Rotation::None);
        // Enrolled before photos were turned, or a value no quarter turn has.
        assert_eq!(stored_rotation(&serde_json::json!({"bbox": {}})), Rotation::None);
        assert_eq!(stored_rotation(&serde_json::json!({"rotation": 45})), Rotation::None);
    }
}
