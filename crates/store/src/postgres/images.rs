//! Image and embedding rows in PostgreSQL: enrolment of a record with its first
//! image, image inserts, and reading vectors back.

use super::*;

pub(super) async fn insert_image(
    conn: &mut sqlx::PgConnection,
    index_id: &str,
    record_id: &str,
    image: NewImage,
    now: &str,
) -> Result<ImageSummary, StoreError> {
    let id = new_id();
    let sha256 = hex::encode(Sha256::digest(&image.bytes));
    sqlx::query(
        "INSERT INTO images (id, record_id, mime, file_name, sha256, face, quality, created_at, bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(record_id)
    .bind(&image.mime)
    .bind(&image.file_name)
    .bind(&sha256)
    .bind(Json(&image.face))
    .bind(image.quality.as_ref().map(Json))
    .bind(now)
    .bind(&image.bytes)
    .execute(&mut *conn)
    .await
    .map_err(db("inserting an image"))?;
    let dim =
        i32::try_from(image.embedding.len()).map_err(|_| StoreError::InvalidInput("embedding too long".into()))?;
    sqlx::query(
        "INSERT INTO embeddings (image_id, record_id, index_id, pack, dim, vector) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(record_id)
    .bind(index_id)
    .bind(image.pack.name())
    .bind(dim)
    .bind(Vector::from(image.embedding))
    .execute(&mut *conn)
    .await
    .map_err(db("inserting an embedding"))?;
    Ok(ImageSummary { image_id: id, quality: image.quality })
}

/// One enrolment inside the caller's transaction, which holds the index row's
/// key-share lock (`pack` is the index's pack).
pub(super) async fn enrol_in(
    tx: &mut sqlx::PgConnection,
    index_id: &str,
    pack: &str,
    fields: RecordFields,
    reference: Option<String>,
    image: NewImage,
) -> Result<EnrolOutcome, StoreError> {
    check_pack(index_id, pack, image.pack)?;
    let reference = reference.filter(|r| !r.is_empty());
    if let Some(reference) = &reference
        && let Some(existing) = load_record_by_reference(tx, index_id, reference).await?
    {
        return Ok(EnrolOutcome::Existing(existing));
    }
    let record_id = new_id();
    let now = now_rfc3339();
    // A concurrent enrolment (on any node) with the same reference: the unique index
    // makes this insert wait for it, then do nothing; its record is returned instead.
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO records (id, index_id, name, dob, nationality, gender, id_no, address,
                              watch_list, additional_info, reference, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
         ON CONFLICT (index_id, reference) WHERE reference IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(&record_id)
    .bind(index_id)
    .bind(&fields.name)
    .bind(&fields.dob)
    .bind(&fields.nationality)
    .bind(&fields.gender)
    .bind(&fields.id_no)
    .bind(&fields.address)
    .bind(Json(&fields.watch_list))
    .bind(&fields.additional_info)
    .bind(&reference)
    .bind(&now)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("inserting a record"))?;
    if inserted.is_none() {
        let reference = reference.as_deref().unwrap_or_default();
        return match load_record_by_reference(tx, index_id, reference).await? {
            Some(existing) => Ok(EnrolOutcome::Existing(existing)),
            None => Err(reference_in_use()),
        };
    }
    let image = insert_image(tx, index_id, &record_id, image, &now).await?;
    Ok(EnrolOutcome::Created(Record {
        record_id,
        index_id: index_id.to_string(),
        fields,
        reference,
        image_ids: vec![image.image_id.clone()],
        images: vec![image],
        created_at: now.clone(),
        updated_at: now,
    }))
}

#[derive(FromRow)]
pub(super) struct EmbeddingDbRow {
    image_id: String,
    record_id: String,
    index_id: String,
    vector: Vector,
}

impl From<EmbeddingDbRow> for EmbeddingRow {
    fn from(r: EmbeddingDbRow) -> Self {
        EmbeddingRow { image_id: r.image_id, record_id: r.record_id, index_id: r.index_id, vector: r.vector.into() }
    }
}
