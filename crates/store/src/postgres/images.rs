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

/// Rows per multi-row statement, and the image bytes one statement may carry.
const MANY_ROWS: usize = 1000;
const MANY_BYTES: usize = 32 << 20;

/// Enrols records without a reference (so none can already exist), each with its first
/// image, inside the caller's transaction (which holds the index row's key-share lock;
/// `pack` is the index's pack): the rows [`enrol_in`] would write, by three multi-row
/// statements per chunk instead of three statements per record. Per-record round trips
/// were most of the time of a bulk load (README, *pgvector at 1M faces*).
pub(super) async fn enrol_many(
    tx: &mut sqlx::PgConnection,
    index_id: &str,
    pack: &str,
    items: Vec<(RecordFields, NewImage)>,
) -> Result<Vec<EnrolOutcome>, StoreError> {
    items.iter().try_for_each(|(_, image)| check_pack(index_id, pack, image.pack))?;
    let mut out = Vec::with_capacity(items.len());
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for item in items {
        bytes += item.1.bytes.len();
        chunk.push(item);
        if chunk.len() >= MANY_ROWS || bytes >= MANY_BYTES {
            out.extend(insert_chunk(tx, index_id, std::mem::take(&mut chunk)).await?);
            bytes = 0;
        }
    }
    if !chunk.is_empty() {
        out.extend(insert_chunk(tx, index_id, chunk).await?);
    }
    Ok(out)
}

/// One chunk of [`enrol_many`]: records, images and embeddings, one statement each,
/// rows in the chunk's order (so image `seq` follows it, as one by one).
async fn insert_chunk(
    tx: &mut sqlx::PgConnection,
    index_id: &str,
    mut chunk: Vec<(RecordFields, NewImage)>,
) -> Result<Vec<EnrolOutcome>, StoreError> {
    let n = chunk.len();
    let (mut dims, mut vectors) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (_, image) in &mut chunk {
        let embedding = std::mem::take(&mut image.embedding);
        dims.push(i32::try_from(embedding.len()).map_err(|_| StoreError::InvalidInput("embedding too long".into()))?);
        vectors.push(Vector::from(embedding));
    }
    let (mut record_ids, mut image_ids, mut created) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
    let (mut names, mut dobs, mut nationalities, mut genders) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut id_nos, mut addresses, mut watch_lists, mut infos) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut mimes, mut file_names, mut digests, mut faces) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut qualities, mut blobs, mut packs) = (Vec::new(), Vec::new(), Vec::new());
    for (fields, image) in &chunk {
        record_ids.push(new_id());
        image_ids.push(new_id());
        created.push(now_rfc3339());
        names.push(fields.name.as_str());
        dobs.push(fields.dob.as_str());
        nationalities.push(fields.nationality.as_str());
        genders.push(fields.gender.as_str());
        id_nos.push(fields.id_no.as_str());
        addresses.push(fields.address.as_str());
        watch_lists.push(crate::common::to_json(&fields.watch_list)?);
        infos.push(fields.additional_info.as_str());
        mimes.push(image.mime.as_str());
        file_names.push(image.file_name.as_str());
        digests.push(hex::encode(Sha256::digest(&image.bytes)));
        faces.push(crate::common::to_json(&image.face)?);
        qualities.push(image.quality.as_ref().map(crate::common::to_json).transpose()?);
        blobs.push(image.bytes.as_slice());
        packs.push(image.pack.name());
    }
    sqlx::query(
        "INSERT INTO records (id, index_id, name, dob, nationality, gender, id_no, address,
                              watch_list, additional_info, reference, created_at, updated_at)
         SELECT id, $1, name, dob, nationality, gender, id_no, address, watch_list::jsonb, info, NULL, at, at
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::text[], $10::text[], $11::text[])
              WITH ORDINALITY AS t(id, name, dob, nationality, gender, id_no, address, watch_list, info, at, ord)
         ORDER BY ord",
    )
    .bind(index_id)
    .bind(&record_ids)
    .bind(&names)
    .bind(&dobs)
    .bind(&nationalities)
    .bind(&genders)
    .bind(&id_nos)
    .bind(&addresses)
    .bind(&watch_lists)
    .bind(&infos)
    .bind(&created)
    .execute(&mut *tx)
    .await
    .map_err(db("inserting records"))?;
    sqlx::query(
        "INSERT INTO images (id, record_id, mime, file_name, sha256, face, quality, created_at, bytes)
         SELECT id, record_id, mime, file_name, sha256, face::jsonb, quality::jsonb, at, bytes
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::bytea[])
              WITH ORDINALITY AS t(id, record_id, mime, file_name, sha256, face, quality, at, bytes, ord)
         ORDER BY ord",
    )
    .bind(&image_ids)
    .bind(&record_ids)
    .bind(&mimes)
    .bind(&file_names)
    .bind(&digests)
    .bind(&faces)
    .bind(&qualities)
    .bind(&created)
    .bind(&blobs)
    .execute(&mut *tx)
    .await
    .map_err(db("inserting images"))?;
    sqlx::query(
        "INSERT INTO embeddings (image_id, record_id, index_id, pack, dim, vector)
         SELECT image_id, record_id, $1, pack, dim, vector
         FROM unnest($2::text[], $3::text[], $4::text[], $5::int4[], $6::vector[])
              WITH ORDINALITY AS t(image_id, record_id, pack, dim, vector, ord)
         ORDER BY ord",
    )
    .bind(index_id)
    .bind(&image_ids)
    .bind(&record_ids)
    .bind(&packs)
    .bind(&dims)
    .bind(&vectors)
    .execute(&mut *tx)
    .await
    .map_err(db("inserting embeddings"))?;
    let made = chunk.into_iter().zip(record_ids.into_iter().zip(image_ids)).zip(created);
    Ok(made
        .map(|(((fields, image), (record_id, image_id)), now)| {
            let image = ImageSummary { image_id, quality: image.quality };
            EnrolOutcome::Created(Record {
                record_id,
                index_id: index_id.to_string(),
                fields,
                reference: None,
                image_ids: vec![image.image_id.clone()],
                images: vec![image],
                created_at: now.clone(),
                updated_at: now,
            })
        })
        .collect())
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
