//! Vector search inside PostgreSQL (pgvector HNSW per model dimension, candidates
//! re-ranked exactly): the optional [`VectorStore`] capability.

use super::*;

#[async_trait::async_trait]
impl VectorStore for PostgresStore {
    async fn nearest_faces(&self, query: VectorQuery) -> Result<Vec<NearestFace>, StoreError> {
        check_vector(&query.vector, "the query vector")?;
        let dim = query.vector.len();
        if query.index_ids.is_empty() || query.limit == 0 {
            return Ok(Vec::new());
        }
        // Repeatable read: the packs checked and the vectors searched are one snapshot.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db("starting a search"))?;
        // Both settings in one round trip, local to this transaction; the iterative scan
        // keeps walking the graph until enough rows pass the index filter.
        sqlx::query(
            "SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)",
        )
        .bind(self.ef_search.min(1000).to_string())
        .execute(&mut *tx)
        .await
        .map_err(db("configuring a search"))?;
        let packs: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, pack, record_count FROM indexes WHERE id = ANY($1)")
                .bind(&query.index_ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("checking index packs"))?;
        for (index_id, pack, _) in &packs {
            check_pack(index_id, pack, query.pack)?;
        }
        let records: i64 = packs.iter().map(|(_, _, n)| n).sum();
        // Records can have several images: fetch more candidates than records wanted.
        let candidates = as_i64(query.limit.saturating_mul(4).max(query.limit + 16));
        let vector = Vector::from(query.vector);
        // The HNSW graph of this dimension proposes candidates by half-precision
        // distance; they are re-ranked by the exact distance on the stored vectors.
        // `dim` is a length, not input text. Small galleries and dimensions without a
        // graph are scanned exactly.
        let exact = u64::try_from(records).unwrap_or(0) < self.exact_below;
        let order = if INDEXED_DIMS.contains(&dim) && !exact {
            format!("e.vector::halfvec({dim}) <=> $2::halfvec({dim})")
        } else {
            "e.vector <=> $2".to_string()
        };
        let rows: Vec<(String, String, String, f64)> = sqlx::query_as(AssertSqlSafe(format!(
            "WITH candidates AS (
                 SELECT e.image_id, e.record_id, e.index_id, e.vector FROM embeddings e
                 WHERE e.dim = {dim} AND e.index_id = ANY($1)
                 ORDER BY {order} LIMIT $3
             )
             SELECT DISTINCT ON (record_id) index_id, record_id, image_id, 1 - (vector <=> $2) AS similarity
             FROM candidates ORDER BY record_id, vector <=> $2, image_id"
        )))
        .bind(&query.index_ids)
        .bind(&vector)
        .bind(candidates)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("searching vectors"))?;
        let mut found: Vec<NearestFace> = rows
            .into_iter()
            .map(|(index_id, record_id, image_id, similarity)| NearestFace {
                index_id,
                record_id,
                image_id,
                similarity: similarity as f32,
            })
            .filter(|f| f.similarity >= query.min_similarity)
            .collect();
        found.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then_with(|| a.record_id.cmp(&b.record_id)));
        found.truncate(query.limit);
        Ok(found)
    }
}
