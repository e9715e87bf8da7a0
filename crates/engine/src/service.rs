//! [`Service`]: the one way to change data. The server holds it from its first moment;
//! every write — indexes, records and their faces, users and grants, the audit trail —
//! is a method here or on the [`Engine`] it hands out once the models are loaded.
//!
//! Before the models are loaded, whatever needs no model is served: index, record and
//! user changes go to the store, and deletes too (erasure must not wait for the
//! models), under the write lock that the engine loads its vectors under, so a delete
//! lands either before the load (which then never sees the face) or after it (through
//! the engine). Search and enrolment answer [`EngineError::NotReady`].

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use facesearch_face::FacePipeline;
use facesearch_store::{
    IndexInfo, IndexPatch, NewAuditEvent, NewIndex, Record, RecordPatch, Role, Store, StoreError, User,
};
use tokio::sync::MutexGuard;

use crate::config::{EngineConfig, PipelineLoader};
use crate::engine::{Engine, WriteLock};
use crate::error::EngineError;
use crate::observer::EngineObserver;
use crate::users::{check_password, check_password_characters, check_username, parse_role};

pub struct Service {
    store: Arc<dyn Store>,
    writes: WriteLock,
    engine: OnceLock<Arc<Engine>>,
}

impl Service {
    /// A service over `store` without models: see [`Service::load`].
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, writes: WriteLock::default(), engine: OnceLock::new() }
    }

    /// Opens the engine (its vectors loaded from the snapshot or the store) and makes it
    /// available. Writes wait from before the loading until the engine is published,
    /// then go through it. `pipeline` is the server's own; see [`Engine`] for the rest.
    pub async fn load(
        &self,
        pipeline: Arc<FacePipeline>,
        loader: PipelineLoader,
        config: EngineConfig,
        snapshot_dir: Option<PathBuf>,
        observer: Option<Arc<dyn EngineObserver>>,
    ) -> Result<Arc<Engine>, EngineError> {
        let _writes = self.writes.lock().await;
        let mut engine =
            Engine::open(self.store.clone(), pipeline, loader, config, self.writes.clone(), snapshot_dir).await?;
        if let Some(observer) = observer {
            engine = engine.with_observer(observer);
        }
        let engine = Arc::new(engine);
        // Loaded once per process; a second load (none is made) would keep the first.
        let _ = self.engine.set(engine.clone());
        Ok(engine)
    }

    /// The engine, once the models are loaded ([`EngineError::NotReady`] before).
    pub fn engine(&self) -> Result<&Arc<Engine>, EngineError> {
        self.engine.get().ok_or(EngineError::NotReady)
    }

    pub fn is_ready(&self) -> bool {
        self.engine.get().is_some()
    }

    /// Creates an empty index.
    pub async fn create_index(&self, new: NewIndex) -> Result<IndexInfo, EngineError> {
        Ok(self.store.create_index(new).await?)
    }

    /// Changes an index's title or description; `None` if there is no such index.
    pub async fn update_index(&self, id: &str, patch: IndexPatch) -> Result<Option<IndexInfo>, EngineError> {
        Ok(self.store.update_index(id, patch).await?)
    }

    /// Deletes an index with all its records, images and vectors; `false` if there was none.
    pub async fn delete_index(&self, id: &str) -> Result<bool, EngineError> {
        match self.engine_or_write_lock().await {
            Ok(engine) => engine.delete_index(id).await,
            Err(_writes) => Ok(self.store.delete_index(id).await?),
        }
    }

    /// Changes a record's fields (not its faces); `None` if there is no such record.
    pub async fn update_record(
        &self,
        index_id: &str,
        record_id: &str,
        patch: RecordPatch,
    ) -> Result<Option<Record>, EngineError> {
        Ok(self.store.update_record(index_id, record_id, patch).await?)
    }

    /// Deletes a record with its images and vectors; `false` if there was none.
    pub async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<bool, EngineError> {
        match self.engine_or_write_lock().await {
            Ok(engine) => engine.delete_record(index_id, record_id).await,
            Err(_writes) => Ok(self.store.delete_record(index_id, record_id).await?.is_some()),
        }
    }

    /// Creates a user with a role and grants, after the account rules
    /// ([`crate::users`]); every granted index must exist. A grant whose index is
    /// deleted meanwhile removes the new user again: no half-made user is left.
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        role: &str,
        grants: Vec<String>,
    ) -> Result<User, EngineError> {
        check_username(username)?;
        check_password(password)?;
        let role = parse_role(role)?;
        let mut grants = grants;
        grants.sort();
        grants.dedup();
        for id in &grants {
            self.store.get_index(id).await?.ok_or_else(|| EngineError::IndexNotFound(id.clone()))?;
        }
        let user = self.store.create_user(username, password, role).await?;
        for id in &grants {
            if !self.store.grant(&user.username, id).await? {
                let _ = self.store.delete_user(&user.username).await;
                return Err(EngineError::IndexNotFound(id.clone()));
            }
        }
        self.user(username).await
    }

    /// Whether the store has no user yet (a new installation needs its first admin).
    pub async fn has_no_user(&self) -> Result<bool, EngineError> {
        Ok(self.store.user_count().await? == 0)
    }

    /// Creates the first admin of a new installation with `password` (chosen by the
    /// operator or generated: it needs only one printable character). `false` when a
    /// node sharing the database created the user at the same moment.
    pub async fn create_first_admin(&self, username: &str, password: &str) -> Result<bool, EngineError> {
        check_password_characters(password)?;
        match self.store.create_user(username, password, Role::Admin).await {
            Ok(_) => Ok(true),
            Err(StoreError::DuplicateUser(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets a user's password. A role may be named only if it is the user's own: a
    /// role is fixed at creation ([`EngineError::RoleChange`]).
    pub async fn update_user(
        &self,
        username: &str,
        password: Option<&str>,
        role: Option<&str>,
    ) -> Result<User, EngineError> {
        let role = role.map(parse_role).transpose()?;
        if let Some(p) = password {
            check_password(p)?;
        }
        let user = self.user(username).await?;
        if let Some(role) = role
            && role != user.role
        {
            return Err(EngineError::RoleChange { username: username.to_string(), role });
        }
        if let Some(p) = password
            && !self.store.set_password(username, p).await?
        {
            return Err(EngineError::UserNotFound(username.to_string()));
        }
        self.user(username).await
    }

    /// Deletes a user and their grants. Nobody deletes their own account (`acting`:
    /// the signed-in user; `None` for an operator of the machine, `facesearch user
    /// remove`, who has none); the store refuses to delete the last admin
    /// ([`StoreError::LastAdmin`]) in the same transaction as the delete, so two admins
    /// deleting each other at once, on one node or on two sharing PostgreSQL, cannot
    /// leave none.
    pub async fn delete_user(&self, acting: Option<&str>, username: &str) -> Result<(), EngineError> {
        if acting == Some(username) {
            return Err(EngineError::OwnAccount(username.to_string()));
        }
        if !self.store.delete_user(username).await? {
            return Err(EngineError::UserNotFound(username.to_string()));
        }
        Ok(())
    }

    /// Grants an index to a user (idempotent).
    pub async fn grant(&self, username: &str, index_id: &str) -> Result<(), EngineError> {
        self.user(username).await?;
        self.store.get_index(index_id).await?.ok_or_else(|| EngineError::IndexNotFound(index_id.to_string()))?;
        if !self.store.grant(username, index_id).await? {
            // Deleted between the checks and the grant.
            return Err(match self.store.get_user(username).await? {
                None => EngineError::UserNotFound(username.to_string()),
                Some(_) => EngineError::IndexNotFound(index_id.to_string()),
            });
        }
        Ok(())
    }

    /// Revokes a user's grant of an index: idempotent for an existing index (the
    /// answer says whether there was a grant), [`EngineError::IndexNotFound`] for one
    /// that does not exist.
    pub async fn revoke(&self, username: &str, index_id: &str) -> Result<bool, EngineError> {
        self.user(username).await?;
        let removed = self.store.revoke(username, index_id).await?;
        if !removed && self.store.get_index(index_id).await?.is_none() {
            return Err(EngineError::IndexNotFound(index_id.to_string()));
        }
        Ok(removed)
    }

    /// Appends an event to the audit trail.
    pub async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StoreError> {
        self.store.append_audit(event).await
    }

    /// Deletes the audit events older than `before` (RFC 3339); returns how many.
    pub async fn prune_audit(&self, before: &str) -> Result<u64, StoreError> {
        self.store.prune_audit(before).await
    }

    /// The engine if it is loaded; else the write lock, held, so that the engine loads
    /// after the caller's store-only write or not at all. (An engine published while
    /// this waited for the lock is returned, and the lock let go: its vectors must
    /// change too.)
    async fn engine_or_write_lock(&self) -> Result<&Arc<Engine>, MutexGuard<'_, ()>> {
        if let Some(engine) = self.engine.get() {
            return Ok(engine);
        }
        let writes = self.writes.lock().await;
        self.engine.get().ok_or(writes)
    }

    async fn user(&self, username: &str) -> Result<User, EngineError> {
        self.store.get_user(username).await?.ok_or_else(|| EngineError::UserNotFound(username.to_string()))
    }
}
