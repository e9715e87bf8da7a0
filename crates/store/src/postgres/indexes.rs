//! Face indexes (databases) in PostgreSQL.

use super::*;

#[async_trait::async_trait]
impl IndexStore for PostgresStore {
    async fn create_index(&self, new: NewIndex) -> Result<IndexInfo, StoreError> {
        if new.index_name.trim().is_empty() {
            return Err(StoreError::InvalidInput("index_name must not be empty".into()));
        }
        let id = new_id();
        let now = now_rfc3339();
        let result = sqlx::query(
            "INSERT INTO indexes (id, index_name, index_type, title, description, pack, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&id)
        .bind(&new.index_name)
        .bind(new.index_type.as_str())
        .bind(&new.title)
        .bind(&new.description)
        .bind(new.pack.name())
        .bind(&now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => {}
            Err(e) if sql_state(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                return Err(StoreError::DuplicateIndexName(new.index_name));
            }
            Err(e) => return Err(db("creating an index")(e)),
        }
        Ok(new.created(id, now))
    }

    async fn get_index(&self, id: &str) -> Result<Option<IndexInfo>, StoreError> {
        let row: Option<IndexColumns> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {INDEX_COLS} FROM indexes WHERE id = $1")))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("loading an index"))?;
        row.map(index_from_columns).transpose()
    }

    async fn list_indexes(&self) -> Result<Vec<IndexInfo>, StoreError> {
        let rows: Vec<IndexColumns> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {INDEX_COLS} FROM indexes ORDER BY created_at, seq")))
                .fetch_all(&self.pool)
                .await
                .map_err(db("listing indexes"))?;
        rows.into_iter().map(index_from_columns).collect()
    }

    async fn update_index(&self, id: &str, patch: IndexPatch) -> Result<Option<IndexInfo>, StoreError> {
        if patch.title.is_none() && patch.description.is_none() {
            return self.get_index(id).await;
        }
        let row: Option<IndexColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE indexes SET title = COALESCE($2, title), description = COALESCE($3, description), updated_at = $4
             WHERE id = $1 RETURNING {INDEX_COLS}"
        )))
        .bind(id)
        .bind(&patch.title)
        .bind(&patch.description)
        .bind(now_rfc3339())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("updating an index"))?;
        row.map(index_from_columns).transpose()
    }

    async fn delete_index(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM indexes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("deleting an index"))?;
        Ok(done.rows_affected() > 0)
    }
}
