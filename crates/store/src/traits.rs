//! The store's contract, one trait per concern: [`IndexStore`], [`RecordStore`],
//! [`UserStore`], [`AuditStore`], [`ReembedStore`] and [`BackendStore`] (health and the
//! optional capabilities), with vector search as the optional [`VectorStore`].
//! [`Store`] is all of them together; `Arc<dyn Store>` is the handle the engine and the
//! HTTP layer hold. Implementations must make every successful write durable before
//! returning.

use facesearch_models::Pack;

use crate::{
    AuditEvent, AuditQuery, EmbeddingRow, EnrolOutcome, IndexInfo, IndexPatch, NearestFace, NewAuditEvent, NewImage,
    NewIndex, PackSwitch, PendingImage, Record, RecordFields, RecordPatch, ReembedJob, ReembedStart, Role, StoreError,
    StoredImage, User, VectorQuery,
};

/// Face indexes (databases): their names, descriptions and model pack.
#[async_trait::async_trait]
pub trait IndexStore: Send + Sync + 'static {
    /// Creates an index. [`StoreError::DuplicateIndexName`] if `index_name` is taken.
    async fn create_index(&self, new: NewIndex) -> Result<IndexInfo, StoreError>;
    async fn get_index(&self, id: &str) -> Result<Option<IndexInfo>, StoreError>;
    /// All indexes in creation order (ties within a millisecond broken by insertion order).
    async fn list_indexes(&self) -> Result<Vec<IndexInfo>, StoreError>;
    /// `None` if there is no such index.
    async fn update_index(&self, id: &str, patch: IndexPatch) -> Result<Option<IndexInfo>, StoreError>;
    /// Deletes the index with all its records, images, embeddings and grants.
    /// `false` if there was no such index.
    async fn delete_index(&self, id: &str) -> Result<bool, StoreError>;
}

/// Records (enrolled people), their images and the images' embeddings.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Creates a record with its first image in ONE transaction. If `reference` is
    /// `Some` and a record with that reference exists in the index, returns
    /// `Existing(that record)` and stores nothing. An empty reference counts as none.
    /// `None` = index not found.
    async fn enrol(
        &self,
        index_id: &str,
        fields: RecordFields,
        reference: Option<String>,
        image: NewImage,
    ) -> Result<Option<EnrolOutcome>, StoreError>;
    /// Enrols many records in one transaction, all or nothing (bulk loading); `None`
    /// when the index does not exist. Each item is (fields, reference, image).
    async fn enrol_batch(
        &self,
        index_id: &str,
        batch: Vec<(RecordFields, Option<String>, NewImage)>,
    ) -> Result<Option<Vec<EnrolOutcome>>, StoreError>;
    async fn find_by_reference(&self, index_id: &str, reference: &str) -> Result<Option<Record>, StoreError>;
    /// `None` also when the record exists but in another index.
    async fn get_record(&self, index_id: &str, record_id: &str) -> Result<Option<Record>, StoreError>;
    /// The records with these ids, from any index (for search results); unknown ids
    /// are skipped; order not guaranteed.
    async fn get_records(&self, record_ids: &[String]) -> Result<Vec<Record>, StoreError>;
    /// A page of at most `limit` records (at least 1) of the index, ordered by
    /// (`created_at`, `record_id`), and the cursor of the next page (`None` on the last
    /// page). The cursor is opaque; a malformed one is [`StoreError::InvalidCursor`].
    /// An unknown index gives an empty page.
    async fn list_records(
        &self,
        index_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Record>, Option<String>), StoreError>;
    /// `None` if no such record in the index; a `reference` already used by another
    /// record of the index is [`StoreError::Conflict`].
    async fn update_record(
        &self,
        index_id: &str,
        record_id: &str,
        patch: RecordPatch,
    ) -> Result<Option<Record>, StoreError>;
    /// Returns the image ids that were deleted (so the caller can drop their vectors),
    /// `None` if no such record.
    async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<Option<Vec<String>>, StoreError>;
    /// Adds an image (and its embedding) to a record; returns the updated record and the
    /// new image id, `None` if no such record in the index.
    async fn add_image(
        &self,
        index_id: &str,
        record_id: &str,
        image: NewImage,
    ) -> Result<Option<(Record, String)>, StoreError>;
    async fn get_image(&self, image_id: &str) -> Result<Option<StoredImage>, StoreError>;
    /// Every embedding of the given pack, for loading the in-memory index at start.
    async fn embeddings(&self, pack: Pack) -> Result<Vec<EmbeddingRow>, StoreError>;
    /// The embeddings of the given pack in these indexes only (duplicate jobs on a store
    /// that searches its own vectors). The default filters [`RecordStore::embeddings`].
    async fn embeddings_in(&self, pack: Pack, index_ids: &[String]) -> Result<Vec<EmbeddingRow>, StoreError> {
        let mut rows = self.embeddings(pack).await?;
        rows.retain(|r| index_ids.contains(&r.index_id));
        Ok(rows)
    }
    /// A counter that changes whenever any embedding is added, changed or removed (in
    /// the same transaction), so a saved copy of the vector index can be checked
    /// against the store at start.
    async fn vectors_version(&self) -> Result<u64, StoreError>;
}

/// Users, their password hashes and their grants on indexes.
#[async_trait::async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Argon2id hash with a random salt; [`StoreError::DuplicateUser`] if taken.
    /// Usernames are case-sensitive, non-empty and may not contain `:`.
    async fn create_user(&self, username: &str, password: &str, role: Role) -> Result<User, StoreError>;
    /// `Some(user)` only if the password matches. Unknown users take about as long
    /// as a wrong password (a dummy hash is verified), so timing does not reveal
    /// which usernames exist.
    async fn verify_password(&self, username: &str, password: &str) -> Result<Option<User>, StoreError>;
    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// All users, ordered by username.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// `false` if no such user.
    async fn set_password(&self, username: &str, password: &str) -> Result<bool, StoreError>;
    /// Grants access to an index; idempotent. `false` if the user or index is unknown.
    async fn grant(&self, username: &str, index_id: &str) -> Result<bool, StoreError>;
    /// `true` if a grant was removed.
    async fn revoke(&self, username: &str, index_id: &str) -> Result<bool, StoreError>;
    /// Deletes the user and their grants; `false` if no such user;
    /// [`StoreError::LastAdmin`] (nothing deleted) if they are the only admin. The check
    /// and the delete are one transaction: concurrent deletes, from this process or
    /// another sharing the database, never leave the store without an admin.
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError>;
    async fn user_count(&self) -> Result<u64, StoreError>;
}

/// The append-only audit log.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends to the audit log (append-only; nothing updates an entry).
    async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StoreError>;
    /// Reads the audit log, newest first.
    async fn query_audit(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Retention: deletes entries older than `before` (RFC 3339); returns how many.
    async fn prune_audit(&self, before: &str) -> Result<u64, StoreError>;
}

/// Re-embedding (moving an index to another model pack). The new pack's vectors are
/// staged beside the live ones, keyed by (image, pack), so that the job can stop
/// anywhere and continue, and searches keep using the live vectors until
/// [`ReembedStore::switch_pack`] replaces them in one transaction.
#[async_trait::async_trait]
pub trait ReembedStore: Send + Sync + 'static {
    /// Starts a job moving `index_id` to `pack`, or returns the one already running to
    /// the same pack. A job to another pack running is [`StoreError::Conflict`].
    /// Staged vectors of other packs for the index (left by an abandoned job) are
    /// deleted. `None` if there is no such index.
    async fn start_reembed(
        &self,
        index_id: &str,
        pack: Pack,
        requested_by: &str,
    ) -> Result<Option<ReembedStart>, StoreError>;
    /// The index's latest job, with live progress while it runs.
    async fn reembed_job(&self, index_id: &str) -> Result<Option<ReembedJob>, StoreError>;
    /// Every running job (to resume them at start).
    async fn running_reembeds(&self) -> Result<Vec<ReembedJob>, StoreError>;
    /// Up to `limit` images of the index without a staged vector of `pack`, oldest first.
    async fn pending_images(&self, index_id: &str, pack: Pack, limit: usize) -> Result<Vec<PendingImage>, StoreError>;
    /// Stages the image's vector of `pack`, or the code of why it has none. `false` if
    /// the image no longer exists (deleted meanwhile).
    async fn stage_vector(
        &self,
        image_id: &str,
        pack: Pack,
        vector: Result<Vec<f32>, String>,
    ) -> Result<bool, StoreError>;
    /// In one transaction: if every image of the index has a staged vector of the
    /// job's pack, replaces the index's vectors with them (images with no usable face
    /// keep none), sets the index's pack, clears its staging and marks the job done.
    async fn switch_pack(&self, index_id: &str, job_id: &str) -> Result<PackSwitch, StoreError>;
    /// Marks a running job failed with `error`; staged vectors are kept.
    async fn fail_reembed(&self, index_id: &str, job_id: &str, error: &str) -> Result<(), StoreError>;
}

/// The storage backend itself: is it reachable, is it consistent, and what more can it
/// do than the roles every store has.
#[async_trait::async_trait]
pub trait BackendStore: Send + Sync + 'static {
    /// Full consistency check (database integrity, foreign keys, record counts, every
    /// live vector of its index's pack); [`StoreError::Corrupt`] describing the first
    /// problems.
    async fn integrity_check(&self) -> Result<(), StoreError>;
    /// Cheap liveness check of the storage backend.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The store's own vector search, when it has one (PostgreSQL with pgvector): the
    /// engine then keeps no vectors in memory and sends every search there.
    fn vector_search(&self) -> Option<&dyn VectorStore> {
        None
    }
}

/// Vector search inside the store (PostgreSQL with pgvector). A store that searches
/// its own vectors lets several stateless nodes share one database: none of them holds
/// the vectors in memory, and each sees the others' writes at once. Reached through
/// [`BackendStore::vector_search`].
#[async_trait::async_trait]
pub trait VectorStore: Send + Sync {
    /// The best `query.limit` records of `query.index_ids` with similarity at least
    /// `query.min_similarity`, best first, each once with its best image.
    async fn nearest_faces(&self, query: VectorQuery) -> Result<Vec<NearestFace>, StoreError>;
}

/// Durable storage behind the engine: every role together. Implemented for every type
/// that implements the roles; hold it as `Arc<dyn Store>`.
#[async_trait::async_trait]
pub trait Store: IndexStore + RecordStore + UserStore + AuditStore + ReembedStore + BackendStore {}

impl<T: IndexStore + RecordStore + UserStore + AuditStore + ReembedStore + BackendStore> Store for T {}

/// The traits a caller needs in scope to call store methods on a concrete store
/// (`SqliteStore`, `PostgresStore`); `dyn Store` needs none of them.
pub mod prelude {
    pub use super::{AuditStore, BackendStore, IndexStore, RecordStore, ReembedStore, Store, UserStore};
}
