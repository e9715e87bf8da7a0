//! Records, their images and embeddings in PostgreSQL: the record rows and the
//! [`RecordStore`] methods.

use super::*;

/// Completes record rows with their images (oldest first), keeping the row order.
pub(super) async fn attach_images(
    conn: &mut sqlx::PgConnection,
    rows: Vec<RecordRow>,
) -> Result<Vec<Record>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let images: Vec<(String, String, Option<Json<serde_json::Value>>)> = sqlx::query_as(
        "SELECT record_id, id, quality FROM images WHERE record_id = ANY($1) ORDER BY record_id, created_at, seq",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("loading image ids"))?;
    let images = images
        .into_iter()
        .map(|(record_id, image_id, quality)| (record_id, ImageSummary { image_id, quality: quality.map(|q| q.0) }))
        .collect();
    Ok(with_images(rows, images))
}

pub(super) async fn load_record(
    conn: &mut sqlx::PgConnection,
    index_id: &str,
    record_id: &str,
) -> Result<Option<Record>, StoreError> {
    let rows: Vec<RecordRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {RECORD_COLS} FROM records r WHERE r.id = $1 AND r.index_id = $2"
    )))
    .bind(record_id)
    .bind(index_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("loading a record"))?;
    Ok(attach_images(conn, rows).await?.pop())
}

pub(super) async fn load_record_by_reference(
    conn: &mut sqlx::PgConnection,
    index_id: &str,
    reference: &str,
) -> Result<Option<Record>, StoreError> {
    let rows: Vec<RecordRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {RECORD_COLS} FROM records r WHERE r.index_id = $1 AND r.reference = $2"
    )))
    .bind(index_id)
    .bind(reference)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("loading a record by reference"))?;
    Ok(attach_images(conn, rows).await?.pop())
}

/// The index's pack, with a key-share lock on its row until the transaction ends, so
/// that it cannot move to another pack (which takes the row's update lock) meanwhile.
pub(super) async fn lock_index_pack(
    conn: &mut sqlx::PgConnection,
    index_id: &str,
) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar("SELECT pack FROM indexes WHERE id = $1 FOR KEY SHARE")
        .bind(index_id)
        .fetch_optional(conn)
        .await
        .map_err(db("loading the index pack"))
}

#[async_trait::async_trait]
impl RecordStore for PostgresStore {
    async fn enrol(
        &self,
        index_id: &str,
        fields: RecordFields,
        reference: Option<String>,
        image: NewImage,
    ) -> Result<Option<EnrolOutcome>, StoreError> {
        check_image(&image)?;
        let mut tx = self.begin("enrolling").await?;
        let Some(pack) = lock_index_pack(&mut tx, index_id).await? else {
            return Ok(None);
        };
        let outcome = enrol_in(&mut tx, index_id, &pack, fields, reference, image).await?;
        if outcome.is_created() {
            tx.commit().await.map_err(db("committing an enrolment"))?;
        }
        Ok(Some(outcome))
    }

    async fn enrol_batch(
        &self,
        index_id: &str,
        batch: Vec<(RecordFields, Option<String>, NewImage)>,
    ) -> Result<Option<Vec<EnrolOutcome>>, StoreError> {
        batch.iter().try_for_each(|(_, _, image)| check_image(image))?;
        let mut tx = self.begin("enrolling a batch").await?;
        let Some(pack) = lock_index_pack(&mut tx, index_id).await? else {
            return Ok(None);
        };
        // Items without a reference cannot meet an existing record: they go in by a few
        // multi-row statements (`enrol_many`), in order; an item with a reference takes
        // the one-by-one path, which looks the reference up first.
        let mut out = Vec::with_capacity(batch.len());
        let mut plain = Vec::new();
        for (fields, reference, image) in batch {
            match reference.filter(|r| !r.is_empty()) {
                None => plain.push((fields, image)),
                reference => {
                    out.extend(enrol_many(&mut tx, index_id, &pack, std::mem::take(&mut plain)).await?);
                    out.push(enrol_in(&mut tx, index_id, &pack, fields, reference, image).await?);
                }
            }
        }
        out.extend(enrol_many(&mut tx, index_id, &pack, plain).await?);
        tx.commit().await.map_err(db("committing an enrolment batch"))?;
        Ok(Some(out))
    }

    async fn find_by_reference(&self, index_id: &str, reference: &str) -> Result<Option<Record>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        load_record_by_reference(&mut tx, index_id, reference).await
    }

    async fn get_record(&self, index_id: &str, record_id: &str) -> Result<Option<Record>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        load_record(&mut tx, index_id, record_id).await
    }

    async fn get_records(&self, record_ids: &[String]) -> Result<Vec<Record>, StoreError> {
        if record_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin("starting a read").await?;
        let rows: Vec<RecordRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {RECORD_COLS} FROM records r WHERE r.id = ANY($1)")))
                .bind(record_ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("loading records"))?;
        attach_images(&mut tx, rows).await
    }

    async fn list_records(
        &self,
        index_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Record>, Option<String>), StoreError> {
        let after = cursor.map(decode_cursor).transpose()?;
        let limit = limit.max(1);
        // One extra row tells whether another page follows.
        let fetch = as_i64(limit.saturating_add(1));
        let (created_at, record_id) = after.unwrap_or_default();
        let mut tx = self.begin("starting a read").await?;
        let rows: Vec<RecordRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {RECORD_COLS} FROM records r
             WHERE r.index_id = $1 AND ($2 = '' OR (r.created_at, r.id) > ($2, $3))
             ORDER BY r.created_at, r.id LIMIT $4"
        )))
        .bind(index_id)
        .bind(&created_at)
        .bind(&record_id)
        .bind(fetch)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("listing records"))?;
        let mut records = attach_images(&mut tx, rows).await?;
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| encode_cursor(&r.created_at, &r.record_id))
        } else {
            None
        };
        Ok((records, next))
    }

    async fn update_record(
        &self,
        index_id: &str,
        record_id: &str,
        patch: RecordPatch,
    ) -> Result<Option<Record>, StoreError> {
        if patch.is_empty() {
            return self.get_record(index_id, record_id).await;
        }
        let mut tx = self.begin("updating a record").await?;
        // Lock the row: two nodes patching one record apply one patch after the other.
        let locked: Option<String> =
            sqlx::query_scalar("SELECT id FROM records WHERE id = $1 AND index_id = $2 FOR UPDATE")
                .bind(record_id)
                .bind(index_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("locking a record"))?;
        if locked.is_none() {
            return Ok(None);
        }
        let Some(record) = load_record(&mut tx, index_id, record_id).await? else {
            return Ok(None);
        };
        let (record, claimed) = patch_record(record, patch);
        if let Some(reference) = &claimed
            && load_record_by_reference(&mut tx, index_id, reference).await?.is_some()
        {
            return Err(reference_taken(reference));
        }
        let f = &record.fields;
        let result = sqlx::query(
            "UPDATE records SET name = $3, dob = $4, nationality = $5, gender = $6, id_no = $7, address = $8,
                                watch_list = $9, additional_info = $10, reference = $11, updated_at = $12
             WHERE id = $1 AND index_id = $2",
        )
        .bind(&record.record_id)
        .bind(&record.index_id)
        .bind(&f.name)
        .bind(&f.dob)
        .bind(&f.nationality)
        .bind(&f.gender)
        .bind(&f.id_no)
        .bind(&f.address)
        .bind(Json(&f.watch_list))
        .bind(&f.additional_info)
        .bind(&record.reference)
        .bind(&record.updated_at)
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(e) if sql_state(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                return Err(reference_in_use());
            }
            Err(e) => return Err(db("updating a record")(e)),
        }
        tx.commit().await.map_err(db("committing a record update"))?;
        Ok(Some(record))
    }

    async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.begin("deleting a record").await?;
        let Some(record) = load_record(&mut tx, index_id, record_id).await? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM records WHERE id = $1 AND index_id = $2")
            .bind(record_id)
            .bind(index_id)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting a record"))?;
        tx.commit().await.map_err(db("committing a record deletion"))?;
        Ok(Some(record.image_ids))
    }

    async fn add_image(
        &self,
        index_id: &str,
        record_id: &str,
        image: NewImage,
    ) -> Result<Option<(Record, String)>, StoreError> {
        check_image(&image)?;
        let mut tx = self.begin("adding an image").await?;
        let Some(pack) = lock_index_pack(&mut tx, index_id).await? else {
            return Ok(None);
        };
        let Some(mut record) = load_record(&mut tx, index_id, record_id).await? else {
            return Ok(None);
        };
        check_pack(index_id, &pack, image.pack)?;
        let now = now_rfc3339();
        let summary = insert_image(&mut tx, index_id, record_id, image, &now).await?;
        sqlx::query("UPDATE records SET updated_at = $2 WHERE id = $1")
            .bind(record_id)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db("touching a record"))?;
        tx.commit().await.map_err(db("committing a new image"))?;
        let image_id = summary.image_id.clone();
        record.image_ids.push(image_id.clone());
        record.images.push(summary);
        record.updated_at = now;
        Ok(Some((record, image_id)))
    }

    async fn get_image(&self, image_id: &str) -> Result<Option<StoredImage>, StoreError> {
        let row: Option<(String, String, String, Vec<u8>, String, String, String)> = sqlx::query_as(
            "SELECT i.id, i.record_id, r.index_id, i.bytes, i.mime, i.file_name, i.sha256
             FROM images i JOIN records r ON r.id = i.record_id WHERE i.id = $1",
        )
        .bind(image_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("loading an image"))?;
        Ok(row.map(|(image_id, record_id, index_id, bytes, mime, file_name, sha256)| StoredImage {
            image_id,
            record_id,
            index_id,
            bytes,
            mime,
            file_name,
            sha256,
        }))
    }

    async fn embeddings(&self, pack: Pack) -> Result<Vec<EmbeddingRow>, StoreError> {
        self.scan_embeddings(pack, None).await
    }

    async fn embeddings_in(&self, pack: Pack, index_ids: &[String]) -> Result<Vec<EmbeddingRow>, StoreError> {
        self.scan_embeddings(pack, Some(index_ids)).await
    }

    async fn vectors_version(&self) -> Result<u64, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM vector_version")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the vector version"))?;
        count_u64(v, "vector version")
    }
}
