//! The in-memory vectors between runs: read at start from a snapshot that matches the
//! store (else rebuilt from every stored vector), saved periodically and at shutdown,
//! and deleted after a delete so that no deleted face survives in a file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use facesearch_face::Pack;
use facesearch_store::Store;
use facesearch_vectors::{VectorConfig, VectorIndex};
use serde::Serialize;

use crate::engine::Engine;
use crate::error::{EngineError, task_failed};
use crate::vectors::Vectors;

/// How the vector index came to be at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexOrigin {
    /// Read from a snapshot that matched the store.
    Snapshot,
    /// Re-read from the store (no snapshot, a stale one after a crash, or a damaged one).
    Store,
    /// Not in memory at all: the store searches its own vectors.
    Database,
}

impl IndexOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexOrigin::Snapshot => "snapshot",
            IndexOrigin::Store => "store",
            IndexOrigin::Database => "database",
        }
    }
}

/// Deletes the saved vector index of every pack after faces were deleted, so that no
/// deleted face survives in a file; the next periodic save writes a fresh one (a crash
/// before then costs a rebuild from the store at the next start, never a deleted face).
/// A failure is logged, not returned: the delete itself is committed, and the next
/// save replaces the files anyway.
pub(crate) async fn forget_snapshots(dir: Option<PathBuf>, vectors: &Vectors) {
    let Some(dir) = dir else { return };
    let packs: Vec<PathBuf> = vectors.slots.iter().map(|s| dir.join(s.pack.name())).collect();
    let removed =
        tokio::task::spawn_blocking(move || packs.iter().try_for_each(|d| facesearch_vectors::snapshot::remove(d)))
            .await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "could not delete the saved vector index after a delete"),
        Err(e) => tracing::error!(error = %e, "could not delete the saved vector index after a delete"),
    }
}

/// The vectors of one pack: its snapshot under `dir` when that matches the store's
/// vector `version`, otherwise every stored vector of the pack.
pub(crate) async fn load_vectors(
    store: &Arc<dyn Store>,
    pack: Pack,
    config: VectorConfig,
    dir: Option<&Path>,
    version: u64,
) -> Result<(VectorIndex, IndexOrigin), EngineError> {
    let dim = pack.dimension();
    let loaded = match dir.map(|d| d.join(pack.name())) {
        Some(dir) => {
            tokio::task::spawn_blocking(move || VectorIndex::load(&dir, dim, config)).await.map_err(task_failed)?
        }
        None => Ok(None),
    };
    match loaded {
        Ok(Some((index, tag))) if tag == version => return Ok((index, IndexOrigin::Snapshot)),
        Ok(Some((_, tag))) => {
            tracing::warn!(
                snapshot = tag,
                store = version,
                pack = pack.name(),
                "vector index snapshot is stale; rebuilding from the store"
            )
        }
        Err(e) => {
            // Failed verification (a digest, a non-unit vector) or unreadable: nothing of
            // it is used, and the snapshot saved next is written from the rebuilt index.
            tracing::warn!(
                error = %e,
                pack = pack.name(),
                "vector index snapshot ignored (failed verification or unreadable); rebuilding from the store"
            )
        }
        Ok(None) => {}
    }
    let rows = store.embeddings(pack).await?;
    // The store is the truth and is used as it is; a vector in it that is not of unit
    // length is reported here, and any search that reaches it fails (see `checked`).
    let damaged = rows.iter().filter(|r| !facesearch_vectors::snapshot::is_unit(&r.vector)).count();
    if damaged > 0 {
        tracing::error!(
            vectors = damaged,
            pack = pack.name(),
            "stored vectors are not of unit length (damaged); searches reaching them fail"
        );
    }
    let index = tokio::task::spawn_blocking(move || {
        let index = VectorIndex::with_config(dim, config);
        index
            .insert_bulk(
                rows.iter()
                    .map(|r| (r.index_id.as_str(), r.record_id.as_str(), r.image_id.as_str(), r.vector.as_slice())),
            )
            .map(|()| index)
    })
    .await
    .map_err(task_failed)??;
    Ok((index, IndexOrigin::Store))
}

impl Engine {
    /// Saves the vector index if it changed since the last save, so the next start
    /// reads it instead of every stored vector. Holds off writes (not searches) while
    /// it runs. Returns whether a snapshot was written.
    pub async fn save_snapshot(&self) -> Result<bool, EngineError> {
        let _writes = self.writes.lock().await;
        let version = self.store.vectors_version().await?;
        if self.saved_version.load(Ordering::Acquire) == version {
            return Ok(false);
        }
        self.write_snapshot(version).await
    }

    /// The caller holds the write lock.
    pub(crate) async fn write_snapshot(&self, version: u64) -> Result<bool, EngineError> {
        let Some(dir) = self.snapshot_dir.clone() else {
            return Ok(false);
        };
        let vectors = self.vectors.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || {
            // 0700, whatever the mode of the data directory (tightened if it was looser).
            facesearch_vectors::snapshot::create_private_dir(&dir)?;
            vectors.slots.iter().try_for_each(|slot| slot.vectors.save(&dir.join(slot.pack.name()), version))
        })
        .await
        .map_err(task_failed)??;
        self.saved_version.store(version, Ordering::Release);
        tracing::info!(version, ms = started.elapsed().as_millis() as u64, "vector index snapshot saved");
        Ok(true)
    }

    /// Where the vector index was read from at start.
    pub fn index_origin(&self) -> IndexOrigin {
        self.origin
    }
}
