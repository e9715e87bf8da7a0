//! The face search engine: what the service does, independent of HTTP, and the only
//! way to change data.
//!
//! It ties three parts together — the face pipeline (photo → embedding), the vectors
//! (embedding → nearest records) and the store (the durable truth) — and keeps the
//! vectors in step with the store: loaded from the store at start, added after a write
//! is committed and removed after a delete is committed, so a search never returns a
//! record the store no longer has.
//!
//! [`Service`] is what a server holds from its start: every write goes through it. The
//! [`Engine`] — search, enrolment, re-embedding, duplicate search — joins it once the
//! models are loaded ([`Service::load`]).
//!
//! # Where the vectors live
//!
//! In memory, one vector index per model pack, or, with a store that searches vectors
//! itself (PostgreSQL with pgvector), in the database: the engine then holds no vectors,
//! sends every search and duplicate check to the store, and saves no snapshot, so any
//! number of nodes can share one database and each sees the others' writes at once.
//! Which pack an index holds is then read from the store with every request, and the
//! store refuses a vector of another pack (`StoreError::PackMismatch`): a search
//! embeds the probe again with the new pack; an enrolment (its photo already handed to
//! the store) is answered "retry". See `vectors.rs`.
//!
//! CPU-heavy pipeline work runs on the blocking thread pool, bounded by a semaphore so
//! that a burst of requests queues (and can be refused) instead of piling up threads.
//!
//! # Several model packs
//!
//! Every index records the model pack its vectors come from, and the engine serves
//! indexes of every pack this build knows: per pack it keeps the vectors (one
//! embedding dimension each), the pack's score calibration, and the pack's face
//! pipeline. The server's configured pipeline is handed in at start; the others are
//! loaded on first need (their models fetched on first use, as always), so a server
//! whose indexes are all of its own pack never loads a second pack.
//!
//! Vectors of different packs are never compared. A search over indexes of several
//! packs embeds the probe once per pack involved (the liveness check runs once, on the
//! first), searches each pack's indexes with that pack's embedding, and merges the
//! matches by `match_score`, which is calibrated per pack to the same false-match
//! rates and so means the same thing whichever pack produced it.
//!
//! Which pack an index is searched with is decided under one lock together with the
//! scan, and an index moves to another pack (see [`reembed`]) under the same lock in
//! its write mode, so a search sees an index's vectors all of one pack, never a mix
//! and never none. A probe or an enrolment embedded with a pack the index has just
//! left is embedded again with the new one.
//!
//! # Files
//!
//! `service.rs` the write path; `engine.rs` the loaded engine and what requests share;
//! `search.rs`, `every_face.rs` searching; `write.rs` enrolment and deletes;
//! `vectors.rs` the vector backends; `snapshot.rs` vectors between runs; `reembed.rs`,
//! `duplicates.rs`, `false_matches.rs`; `users.rs` the account rules; `config.rs`,
//! `error.rs`, `observer.rs`, `files.rs`.

mod config;
mod duplicates;
mod engine;
mod error;
mod every_face;
mod false_matches;
mod files;
mod observer;
pub mod reembed;
mod search;
mod service;
mod snapshot;
pub mod users;
mod vectors;
mod write;

pub use config::{DEFAULT_DUPLICATE_SCORE, EngineConfig, PipelineLoader};
pub use duplicates::{
    DuplicateGroup, DuplicatePair, DuplicateProgress, DuplicateRecord, DuplicateReport, MAX_DUPLICATE_PAIRS,
    same_identity,
};
pub use engine::Engine;
pub use error::{EngineError, decode_error_code, photo_error_code};
pub use false_matches::HINT_FPIR;
pub use files::{extension_of, stored_file_name};
pub use observer::{Analysis, EngineObserver, LivenessRefusal};
pub use search::{FaceResult, Match, SearchOutcome, SearchQuery};
pub use service::Service;
pub use snapshot::IndexOrigin;

pub(crate) use error::task_failed;
pub(crate) use vectors::{checked, round2};
