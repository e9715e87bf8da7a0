//! Background duplicate-identity jobs (`POST /face/index/{index_id}/duplicates`).
//!
//! Jobs live in memory only: a restart loses them (running and finished alike), and a
//! client then gets `404 JOB_NOT_FOUND` and starts a new one. At most
//! [`MAX_RUNNING`] run at once (each uses every core); the last [`MAX_FINISHED`]
//! finished jobs are kept for reading, older ones are forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use facesearch_engine::{DuplicateProgress, DuplicateReport};
use facesearch_store::now_rfc3339;

use crate::responses::job::{DuplicateGroupObject, DuplicateJob, JobProgress, JobStatus};

/// Jobs running at once.
pub const MAX_RUNNING: usize = 2;
/// Finished jobs kept for reading.
pub const MAX_FINISHED: usize = 32;

enum JobState {
    Running,
    Done(Arc<DuplicateReport>),
    Failed(String),
}

struct Job {
    index_ids: Vec<String>,
    min_score: f64,
    started_by: String,
    started_at: String,
    finished_at: Option<String>,
    progress: Arc<DuplicateProgress>,
    state: JobState,
    /// Turns `true` when the job ends (for callers that wait).
    finished_tx: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct Jobs {
    jobs: HashMap<String, Job>,
    /// Finished job ids, oldest first.
    finished: VecDeque<String>,
}

/// The duplicate jobs of one server.
#[derive(Default)]
pub struct DuplicateJobs {
    inner: Mutex<Jobs>,
}

/// A job that was started: its id and the counters the engine advances.
pub struct Started {
    pub id: String,
    pub progress: Arc<DuplicateProgress>,
}

impl DuplicateJobs {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a running job; `None` when [`MAX_RUNNING`] are running already.
    pub fn start(&self, index_ids: Vec<String>, min_score: f64, started_by: &str) -> Option<Started> {
        let mut jobs = self.lock();
        let running = jobs.jobs.values().filter(|j| matches!(j.state, JobState::Running)).count();
        if running >= MAX_RUNNING {
            return None;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let progress = Arc::new(DuplicateProgress::default());
        jobs.jobs.insert(
            id.clone(),
            Job {
                index_ids,
                min_score,
                started_by: started_by.to_string(),
                started_at: now_rfc3339(),
                finished_at: None,
                progress: progress.clone(),
                state: JobState::Running,
                finished_tx: tokio::sync::watch::Sender::new(false),
            },
        );
        Some(Started { id, progress })
    }

    /// Records how a job ended, and forgets the oldest finished jobs beyond [`MAX_FINISHED`].
    pub fn finish(&self, id: &str, result: Result<DuplicateReport, String>) {
        let mut jobs = self.lock();
        let Some(job) = jobs.jobs.get_mut(id) else { return };
        job.state = match result {
            Ok(report) => JobState::Done(Arc::new(report)),
            Err(e) => JobState::Failed(e),
        };
        job.finished_at = Some(now_rfc3339());
        job.finished_tx.send_replace(true);
        jobs.finished.push_back(id.to_string());
        while jobs.finished.len() > MAX_FINISHED {
            if let Some(old) = jobs.finished.pop_front() {
                jobs.jobs.remove(&old);
            }
        }
    }

    /// A receiver that turns `true` when the job ends.
    pub fn finished(&self, id: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.lock().jobs.get(id).map(|j| j.finished_tx.subscribe())
    }

    /// The indexes a job covers (the first is the one in its path).
    pub fn index_ids(&self, id: &str) -> Option<Vec<String>> {
        self.lock().jobs.get(id).map(|j| j.index_ids.clone())
    }

    /// The job as the API shows it.
    pub fn view(&self, id: &str) -> Option<DuplicateJob> {
        let jobs = self.lock();
        let job = jobs.jobs.get(id)?;
        let (status, report, error) = match &job.state {
            JobState::Running => (JobStatus::Running, None, None),
            JobState::Done(r) => (JobStatus::Done, Some(r.clone()), None),
            JobState::Failed(e) => (JobStatus::Failed, None, Some(e.clone())),
        };
        let report = report.as_deref();
        Some(DuplicateJob {
            job_id: id.to_string(),
            status,
            index_ids: job.index_ids.clone(),
            min_score: job.min_score,
            progress: JobProgress {
                done: job.progress.done.load(Ordering::Relaxed),
                total: job.progress.total.load(Ordering::Relaxed),
            },
            started_by: job.started_by.clone(),
            started_at: job.started_at.clone(),
            finished_at: job.finished_at.clone(),
            error,
            faces: report.map(|r| r.faces as u64),
            truncated: report.map(|r| r.truncated),
            same_identity_skipped: report.map(|r| r.same_identity_skipped as u64),
            groups: report.map(|r| r.groups.iter().map(DuplicateGroupObject::from).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> DuplicateReport {
        DuplicateReport { faces: 3, min_score: 80.0, groups: Vec::new(), truncated: false, same_identity_skipped: 0 }
    }

    #[test]
    fn running_jobs_are_limited_and_finished_ones_bounded() {
        let jobs = DuplicateJobs::default();
        let a = jobs.start(vec!["i".into()], 80.0, "admin").expect("first");
        let b = jobs.start(vec!["i".into()], 80.0, "admin").expect("second");
        assert!(jobs.start(vec!["i".into()], 80.0, "admin").is_none(), "a third running job is refused");
        assert_eq!(jobs.view(&a.id).unwrap().status, JobStatus::Running);
        jobs.finish(&a.id, Ok(report()));
        jobs.finish(&b.id, Err("boom".into()));
        let done = jobs.view(&a.id).unwrap();
        assert_eq!((done.status, done.faces), (JobStatus::Done, Some(3)));
        assert_eq!(jobs.view(&b.id).unwrap().error.as_deref(), Some("boom"));
        let mut ids = Vec::new();
        for _ in 0..MAX_FINISHED {
            let j = jobs.start(vec!["i".into()], 80.0, "admin").expect("room");
            jobs.finish(&j.id, Ok(report()));
            ids.push(j.id);
        }
        assert!(jobs.view(&a.id).is_none() && jobs.view(&b.id).is_none(), "the oldest are forgotten");
        assert!(ids.iter().all(|id| jobs.view(id).is_some()));
        assert!(jobs.view("nope").is_none());
    }
}
