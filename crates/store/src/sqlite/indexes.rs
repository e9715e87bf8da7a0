//! Face indexes (databases) in SQLite.

use super::*;

pub(super) fn raw_index(r: &Row<'_>) -> rusqlite::Result<IndexColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
}

pub(super) fn load_index(conn: &Connection, id: &str) -> Result<Option<IndexInfo>, StoreError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {INDEX_COLS} FROM indexes WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], raw_index).optional())
        .ctx("loading an index")?;
    raw.map(index_from_columns).transpose()
}

pub(super) fn list_indexes(conn: &Connection) -> Result<Vec<IndexInfo>, StoreError> {
    let raws = conn
        .prepare_cached(&format!("SELECT {INDEX_COLS} FROM indexes ORDER BY created_at, rowid"))
        .and_then(|mut s| s.query_map([], raw_index)?.collect::<rusqlite::Result<Vec<_>>>())
        .ctx("listing indexes")?;
    raws.into_iter().map(index_from_columns).collect()
}

#[async_trait::async_trait]
impl IndexStore for SqliteStore {
    async fn create_index(&self, new: NewIndex) -> Result<IndexInfo, StoreError> {
        if new.index_name.trim().is_empty() {
            return Err(StoreError::InvalidInput("index_name must not be empty".into()));
        }
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "creating an index")?;
                let taken = tx
                    .prepare_cached("SELECT 1 FROM indexes WHERE index_name = ?1")
                    .and_then(|mut s| s.exists([&new.index_name]))
                    .ctx("checking the index name")?;
                if taken {
                    return Err(StoreError::DuplicateIndexName(new.index_name));
                }
                let id = new_id();
                let now = now_rfc3339();
                tx.prepare_cached(
                    "INSERT INTO indexes (id, index_name, index_type, title, description, pack, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        new.index_name,
                        new.index_type.as_str(),
                        new.title,
                        new.description,
                        new.pack.name(),
                        now
                    ])
                })
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::DuplicateIndexName(new.index_name.clone())
                    } else {
                        backend_error("creating an index", e)
                    }
                })?;
                tx.commit().ctx("committing a new index")?;
                Ok(new.created(id, now))
            })
        })
        .await
    }

    async fn get_index(&self, id: &str) -> Result<Option<IndexInfo>, StoreError> {
        let id = id.to_owned();
        self.run(move |inner| inner.read(|conn| load_index(conn, &id))).await
    }

    async fn list_indexes(&self) -> Result<Vec<IndexInfo>, StoreError> {
        self.run(|inner| inner.read(|conn| list_indexes(conn))).await
    }

    async fn update_index(&self, id: &str, patch: IndexPatch) -> Result<Option<IndexInfo>, StoreError> {
        let id = id.to_owned();
        if patch.title.is_none() && patch.description.is_none() {
            return self.get_index(&id).await;
        }
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "updating an index")?;
                let changed = tx
                    .prepare_cached(
                        "UPDATE indexes SET title = COALESCE(?2, title),
                                            description = COALESCE(?3, description),
                                            updated_at = ?4
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, patch.title, patch.description, now_rfc3339()]))
                    .ctx("updating an index")?;
                if changed == 0 {
                    return Ok(None);
                }
                let info = load_index(&tx, &id)?;
                tx.commit().ctx("committing an index update")?;
                Ok(info)
            })
        })
        .await
    }

    async fn delete_index(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "deleting an index")?;
                let changed = tx.execute("DELETE FROM indexes WHERE id = ?1", [&id]).ctx("deleting an index")?;
                tx.commit().ctx("committing an index deletion")?;
                if changed > 0 {
                    checkpoint_after_erase(conn);
                }
                Ok(changed > 0)
            })
        })
        .await
    }
}
