//! The audit log in PostgreSQL.

use super::*;

#[async_trait::async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, outcome, index_ids, record_ids, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(now_rfc3339())
        .bind(&event.actor)
        .bind(&event.action)
        .bind(&event.outcome)
        .bind(Json(&event.index_ids))
        .bind(Json(&event.record_ids))
        .bind(Json(&event.details))
        .execute(&self.pool)
        .await
        .map_err(db("appending to the audit log"))?;
        Ok(())
    }

    async fn query_audit(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        type AuditRow =
            (i64, String, String, String, String, Json<Vec<String>>, Json<Vec<String>>, Json<serde_json::Value>);
        let limit = i64::try_from(query.limit.clamp(1, 10_000)).unwrap_or(1000);
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, actor, action, outcome, index_ids, record_ids, details FROM audit_log
             WHERE ($1::text IS NULL OR actor = $1)
               AND ($2::text IS NULL OR action = $2)
               AND ($3::text IS NULL OR jsonb_exists(index_ids, $3))
               AND ($4::text IS NULL OR jsonb_exists(record_ids, $4))
               AND ($5::text IS NULL OR at >= $5)
               AND ($6::text IS NULL OR at < $6)
               AND ($7::bigint IS NULL OR id < $7)
             ORDER BY id DESC LIMIT $8",
        )
        .bind(&query.actor)
        .bind(&query.action)
        .bind(&query.index_id)
        .bind(&query.record_id)
        .bind(&query.since)
        .bind(&query.until)
        .bind(query.before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the audit log"))?;
        Ok(rows
            .into_iter()
            .map(|(id, at, actor, action, outcome, index_ids, record_ids, details)| AuditEvent {
                id,
                at,
                actor,
                action,
                outcome,
                index_ids: index_ids.0,
                record_ids: record_ids.0,
                details: details.0,
            })
            .collect())
    }

    async fn prune_audit(&self, before: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db("pruning the audit log"))?;
        Ok(done.rows_affected())
    }
}
