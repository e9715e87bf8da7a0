//! Records, their images and embeddings in SQLite: the record rows and the
//! [`RecordStore`] methods.

use super::*;

/// A record row and its watch list as stored (JSON text), decoded by [`attach_images`].
pub(super) type RawRecord = (RecordRow, String);

pub(super) fn raw_record(r: &Row<'_>) -> rusqlite::Result<RawRecord> {
    let row = RecordRow {
        id: r.get(0)?,
        index_id: r.get(1)?,
        name: r.get(2)?,
        dob: r.get(3)?,
        nationality: r.get(4)?,
        gender: r.get(5)?,
        id_no: r.get(6)?,
        address: r.get(7)?,
        watch_list: Vec::new(),
        additional_info: r.get(9)?,
        reference: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    };
    Ok((row, r.get(8)?))
}

/// Completes raw rows with their images (oldest first; images added within one
/// millisecond in the order they were added), keeping the row order.
pub(super) fn attach_images(conn: &Connection, raws: Vec<RawRecord>) -> Result<Vec<Record>, StoreError> {
    if raws.is_empty() {
        return Ok(Vec::new());
    }
    let rows = raws
        .into_iter()
        .map(|(mut row, watch_list)| {
            row.watch_list = serde_json::from_str(&watch_list)
                .map_err(|e| StoreError::Corrupt(format!("record {}: watch_list: {e}", row.id)))?;
            Ok(row)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let ids = to_json(&rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())?;
    let pairs = conn
        .prepare_cached(
            "SELECT record_id, id, quality FROM images
             WHERE record_id IN (SELECT value FROM json_each(?1))
             ORDER BY record_id, created_at, rowid",
        )
        .and_then(|mut s| {
            s.query_map([ids], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .ctx("loading image ids")?;
    let images = pairs
        .into_iter()
        .map(|(record_id, image_id, quality)| {
            let quality = quality
                .map(|q| serde_json::from_str(&q))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("image {image_id}: quality: {e}")))?;
            Ok((record_id, ImageSummary { image_id, quality }))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(with_images(rows, images))
}

pub(super) fn query_records(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    context: &'static str,
) -> Result<Vec<Record>, StoreError> {
    let raws = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_map(params, raw_record)?.collect::<rusqlite::Result<Vec<_>>>())
        .ctx(context)?;
    attach_images(conn, raws)
}

pub(super) fn load_record(conn: &Connection, index_id: &str, record_id: &str) -> Result<Option<Record>, StoreError> {
    let sql = format!("SELECT {RECORD_COLS} FROM records r WHERE r.id = ?1 AND r.index_id = ?2");
    Ok(query_records(conn, &sql, params![record_id, index_id], "loading a record")?.pop())
}

pub(super) fn load_record_by_reference(
    conn: &Connection,
    index_id: &str,
    reference: &str,
) -> Result<Option<Record>, StoreError> {
    let sql = format!("SELECT {RECORD_COLS} FROM records r WHERE r.index_id = ?1 AND r.reference = ?2");
    Ok(query_records(conn, &sql, params![index_id, reference], "loading a record by reference")?.pop())
}

#[async_trait::async_trait]
impl RecordStore for SqliteStore {
    async fn enrol(
        &self,
        index_id: &str,
        fields: RecordFields,
        reference: Option<String>,
        image: NewImage,
    ) -> Result<Option<EnrolOutcome>, StoreError> {
        let index_id = index_id.to_owned();
        self.run(move |inner| {
            let image = prepare_image(image)?;
            inner.write(|conn| {
                let tx = immediate(conn, "enrolling")?;
                let Some(pack) = index_pack(&tx, &index_id)? else {
                    return Ok(None);
                };
                let outcome = enrol_in(&tx, &index_id, &pack, fields, reference, image)?;
                tx.commit().ctx("committing an enrolment")?;
                Ok(Some(outcome))
            })
        })
        .await
    }

    async fn enrol_batch(
        &self,
        index_id: &str,
        batch: Vec<(RecordFields, Option<String>, NewImage)>,
    ) -> Result<Option<Vec<EnrolOutcome>>, StoreError> {
        let index_id = index_id.to_owned();
        self.run(move |inner| {
            let batch = batch
                .into_iter()
                .map(|(f, r, i)| prepare_image(i).map(|i| (f, r, i)))
                .collect::<Result<Vec<_>, _>>()?;
            inner.write(|conn| {
                let tx = immediate(conn, "enrolling a batch")?;
                let Some(pack) = index_pack(&tx, &index_id)? else {
                    return Ok(None);
                };
                let mut out = Vec::with_capacity(batch.len());
                for (fields, reference, image) in batch {
                    out.push(enrol_in(&tx, &index_id, &pack, fields, reference, image)?);
                }
                tx.commit().ctx("committing an enrolment batch")?;
                Ok(Some(out))
            })
        })
        .await
    }

    async fn find_by_reference(&self, index_id: &str, reference: &str) -> Result<Option<Record>, StoreError> {
        let (index_id, reference) = (index_id.to_owned(), reference.to_owned());
        self.run(move |inner| inner.read_tx(|tx| load_record_by_reference(tx, &index_id, &reference))).await
    }

    async fn get_record(&self, index_id: &str, record_id: &str) -> Result<Option<Record>, StoreError> {
        let (index_id, record_id) = (index_id.to_owned(), record_id.to_owned());
        self.run(move |inner| inner.read_tx(|tx| load_record(tx, &index_id, &record_id))).await
    }

    async fn get_records(&self, record_ids: &[String]) -> Result<Vec<Record>, StoreError> {
        if record_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = to_json(&record_ids)?;
        self.run(move |inner| {
            inner.read_tx(|tx| {
                let sql =
                    format!("SELECT {RECORD_COLS} FROM records r WHERE r.id IN (SELECT value FROM json_each(?1))");
                query_records(tx, &sql, [ids], "loading records")
            })
        })
        .await
    }

    async fn list_records(
        &self,
        index_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Record>, Option<String>), StoreError> {
        let after = cursor.map(decode_cursor).transpose()?;
        let index_id = index_id.to_owned();
        let limit = limit.max(1);
        // One extra row tells whether another page follows.
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        self.run(move |inner| {
            inner.read_tx(|tx| {
                let mut records = match &after {
                    None => query_records(
                        tx,
                        &format!(
                            "SELECT {RECORD_COLS} FROM records r WHERE r.index_id = ?1
                             ORDER BY r.created_at, r.id LIMIT ?2"
                        ),
                        params![index_id, fetch],
                        "listing records",
                    )?,
                    Some((created_at, record_id)) => query_records(
                        tx,
                        &format!(
                            "SELECT {RECORD_COLS} FROM records r
                             WHERE r.index_id = ?1 AND (r.created_at, r.id) > (?2, ?3)
                             ORDER BY r.created_at, r.id LIMIT ?4"
                        ),
                        params![index_id, created_at, record_id, fetch],
                        "listing records",
                    )?,
                };
                let next = if records.len() > limit {
                    records.truncate(limit);
                    records.last().map(|r| encode_cursor(&r.created_at, &r.record_id))
                } else {
                    None
                };
                Ok((records, next))
            })
        })
        .await
    }

    async fn update_record(
        &self,
        index_id: &str,
        record_id: &str,
        patch: RecordPatch,
    ) -> Result<Option<Record>, StoreError> {
        let (index_id, record_id) = (index_id.to_owned(), record_id.to_owned());
        if patch.is_empty() {
            return self.get_record(&index_id, &record_id).await;
        }
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "updating a record")?;
                let Some(record) = load_record(&tx, &index_id, &record_id)? else {
                    return Ok(None);
                };
                let (record, claimed) = patch_record(record, patch);
                if let Some(reference) = &claimed
                    && load_record_by_reference(&tx, &index_id, reference)?.is_some()
                {
                    return Err(reference_taken(reference));
                }
                let f = &record.fields;
                let watch_list_json = to_json(&f.watch_list)?;
                tx.prepare_cached(
                    "UPDATE records SET name = ?3, dob = ?4, nationality = ?5, gender = ?6, id_no = ?7,
                                        address = ?8, watch_list = ?9, additional_info = ?10,
                                        reference = ?11, updated_at = ?12
                     WHERE id = ?1 AND index_id = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        record.record_id,
                        record.index_id,
                        f.name,
                        f.dob,
                        f.nationality,
                        f.gender,
                        f.id_no,
                        f.address,
                        watch_list_json,
                        f.additional_info,
                        record.reference,
                        record.updated_at
                    ])
                })
                .map_err(|e| {
                    if is_unique_violation(&e) { reference_in_use() } else { backend_error("updating a record", e) }
                })?;
                tx.commit().ctx("committing a record update")?;
                Ok(Some(record))
            })
        })
        .await
    }

    async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let (index_id, record_id) = (index_id.to_owned(), record_id.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "deleting a record")?;
                let Some(record) = load_record(&tx, &index_id, &record_id)? else {
                    return Ok(None);
                };
                tx.execute("DELETE FROM records WHERE id = ?1 AND index_id = ?2", [&record_id, &index_id])
                    .ctx("deleting a record")?;
                tx.commit().ctx("committing a record deletion")?;
                checkpoint_after_erase(conn);
                Ok(Some(record.image_ids))
            })
        })
        .await
    }

    async fn add_image(
        &self,
        index_id: &str,
        record_id: &str,
        image: NewImage,
    ) -> Result<Option<(Record, String)>, StoreError> {
        let (index_id, record_id) = (index_id.to_owned(), record_id.to_owned());
        self.run(move |inner| {
            let image = prepare_image(image)?;
            inner.write(|conn| {
                let tx = immediate(conn, "adding an image")?;
                let Some(mut record) = load_record(&tx, &index_id, &record_id)? else {
                    return Ok(None);
                };
                let pack = index_pack(&tx, &index_id)?
                    .ok_or_else(|| StoreError::Corrupt(format!("record {record_id} has no index")))?;
                check_pack(&index_id, &pack, image.pack)?;
                let now = now_rfc3339();
                insert_image(&tx, &record_id, &pack, &image, &now)?;
                tx.execute("UPDATE records SET updated_at = ?2 WHERE id = ?1", [&record_id, &now])
                    .ctx("touching a record")?;
                tx.commit().ctx("committing a new image")?;
                record.image_ids.push(image.id.clone());
                record.updated_at = now;
                Ok(Some((record, image.id)))
            })
        })
        .await
    }

    async fn get_image(&self, image_id: &str) -> Result<Option<StoredImage>, StoreError> {
        let image_id = image_id.to_owned();
        self.run(move |inner| {
            inner.read(|conn| {
                conn.prepare_cached(
                    "SELECT i.id, i.record_id, r.index_id, i.bytes, i.mime, i.file_name, i.sha256
                     FROM images i JOIN records r ON r.id = i.record_id WHERE i.id = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([&image_id], |r| {
                        Ok(StoredImage {
                            image_id: r.get(0)?,
                            record_id: r.get(1)?,
                            index_id: r.get(2)?,
                            bytes: r.get(3)?,
                            mime: r.get(4)?,
                            file_name: r.get(5)?,
                            sha256: r.get(6)?,
                        })
                    })
                    .optional()
                })
                .ctx("loading an image")
            })
        })
        .await
    }

    async fn vectors_version(&self) -> Result<u64, StoreError> {
        self.run(|inner| {
            inner.read(|conn| {
                let v: i64 = conn
                    .query_row("SELECT version FROM vector_version WHERE id = 1", [], |r| r.get(0))
                    .ctx("reading the vector version")?;
                Ok(v as u64)
            })
        })
        .await
    }

    async fn embeddings(&self, pack: Pack) -> Result<Vec<EmbeddingRow>, StoreError> {
        self.run(move |inner| inner.read(|conn| scan_embeddings(conn, "e.pack = ?1", pack.name()))).await
    }
}
