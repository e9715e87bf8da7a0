//! The audit log in SQLite.

use super::*;

#[async_trait::async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StoreError> {
        let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let (index_ids, record_ids, details) =
            (list(&event.index_ids), list(&event.record_ids), event.details.to_string());
        self.run(move |inner| {
            inner.write(|conn| {
                conn.execute(
                    "INSERT INTO audit_log (at, actor, action, outcome, index_ids, record_ids, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![now_rfc3339(), event.actor, event.action, event.outcome, index_ids, record_ids, details],
                )
                .ctx("appending to the audit log")?;
                Ok(())
            })
        })
        .await
    }

    async fn query_audit(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.run(move |inner| {
            inner.read(|conn| {
                let mut stmt = conn
                    .prepare(
                        "SELECT id, at, actor, action, outcome, index_ids, record_ids, details FROM audit_log
                         WHERE (?1 IS NULL OR actor = ?1)
                           AND (?2 IS NULL OR action = ?2)
                           AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(index_ids) WHERE value = ?3))
                           AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(record_ids) WHERE value = ?4))
                           AND (?5 IS NULL OR at >= ?5)
                           AND (?6 IS NULL OR at < ?6)
                           AND (?7 IS NULL OR id < ?7)
                         ORDER BY id DESC LIMIT ?8",
                    )
                    .ctx("preparing the audit query")?;
                let limit = i64::try_from(query.limit.clamp(1, 10_000)).unwrap_or(1000);
                let rows = stmt
                    .query_map(
                        rusqlite::params![
                            query.actor,
                            query.action,
                            query.index_id,
                            query.record_id,
                            query.since,
                            query.until,
                            query.before_id,
                            limit
                        ],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, String>(4)?,
                                r.get::<_, String>(5)?,
                                r.get::<_, String>(6)?,
                                r.get::<_, String>(7)?,
                            ))
                        },
                    )
                    .ctx("reading the audit log")?;
                let mut events = Vec::new();
                for row in rows {
                    let (id, at, actor, action, outcome, index_ids, record_ids, details) =
                        row.ctx("reading an audit row")?;
                    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("audit row {id}: {e}"));
                    let list = |t: &str| serde_json::from_str::<Vec<String>>(t).map_err(corrupt);
                    events.push(AuditEvent {
                        id,
                        at,
                        actor,
                        action,
                        outcome,
                        index_ids: list(&index_ids)?,
                        record_ids: list(&record_ids)?,
                        details: serde_json::from_str(&details).map_err(corrupt)?,
                    });
                }
                Ok(events)
            })
        })
        .await
    }

    async fn prune_audit(&self, before: &str) -> Result<u64, StoreError> {
        let before = before.to_string();
        self.run(move |inner| {
            inner.write(|conn| {
                let n = conn.execute("DELETE FROM audit_log WHERE at < ?1", [before]).ctx("pruning the audit log")?;
                Ok(n as u64)
            })
        })
        .await
    }
}
