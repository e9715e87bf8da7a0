//! Image and embedding rows in SQLite: enrolment of a record with its first image,
//! image inserts, and reading vectors back.

use super::*;

/// An image made ready for insertion outside the write lock (hashing, encoding).
pub(super) struct PreparedImage {
    pub(super) id: String,
    /// The pack that computed the vector (checked against the index's).
    pub(super) pack: Pack,
    pub(super) bytes: Vec<u8>,
    pub(super) mime: String,
    pub(super) file_name: String,
    pub(super) sha256: String,
    pub(super) face: String,
    pub(super) quality: Option<String>,
    pub(super) dim: i64,
    pub(super) vector: Vec<u8>,
}

/// One enrolment inside the caller's write transaction.
pub(super) fn enrol_in(
    tx: &rusqlite::Transaction<'_>,
    index_id: &str,
    pack: &str,
    fields: RecordFields,
    reference: Option<String>,
    image: PreparedImage,
) -> Result<EnrolOutcome, StoreError> {
    check_pack(index_id, pack, image.pack)?;
    let reference = reference.filter(|r| !r.is_empty());
    let watch_list = to_json(&fields.watch_list)?;
    if let Some(reference) = &reference
        && let Some(existing) = load_record_by_reference(tx, index_id, reference)?
    {
        return Ok(EnrolOutcome::Existing(existing));
    }
    let record_id = new_id();
    let now = now_rfc3339();
    tx.prepare_cached(
        "INSERT INTO records (id, index_id, name, dob, nationality, gender, id_no, address,
                              watch_list, additional_info, reference, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            record_id,
            index_id,
            fields.name,
            fields.dob,
            fields.nationality,
            fields.gender,
            fields.id_no,
            fields.address,
            watch_list,
            fields.additional_info,
            reference,
            now
        ])
    })
    .map_err(
        |e| {
            if is_unique_violation(&e) { reference_in_use() } else { backend_error("inserting a record", e) }
        },
    )?;
    insert_image(tx, &record_id, pack, &image, &now)?;
    Ok(EnrolOutcome::Created(Record {
        record_id,
        index_id: index_id.to_string(),
        fields,
        reference,
        image_ids: vec![image.id.clone()],
        images: vec![ImageSummary {
            image_id: image.id,
            quality: image.quality.as_deref().and_then(|q| serde_json::from_str(q).ok()),
        }],
        created_at: now.clone(),
        updated_at: now,
    }))
}

pub(super) fn prepare_image(image: NewImage) -> Result<PreparedImage, StoreError> {
    check_image(&image)?;
    let dim =
        i64::try_from(image.embedding.len()).map_err(|_| StoreError::InvalidInput("embedding too long".into()))?;
    let vector = image.embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
    Ok(PreparedImage {
        id: new_id(),
        sha256: hex::encode(Sha256::digest(&image.bytes)),
        face: to_json(&image.face)?,
        quality: image.quality.as_ref().map(to_json).transpose()?,
        bytes: image.bytes,
        mime: image.mime,
        file_name: image.file_name,
        pack: image.pack,
        dim,
        vector,
    })
}

pub(super) fn insert_image(
    conn: &Connection,
    record_id: &str,
    pack: &str,
    image: &PreparedImage,
    now: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO images (id, record_id, mime, file_name, sha256, face, created_at, bytes, quality)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            image.id,
            record_id,
            image.mime,
            image.file_name,
            image.sha256,
            image.face,
            now,
            image.bytes,
            image.quality
        ])
    })
    .ctx("inserting an image")?;
    conn.prepare_cached("INSERT INTO embeddings (image_id, pack, dim, vector) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| s.execute(params![image.id, pack, image.dim, image.vector]))
        .ctx("inserting an embedding")?;
    Ok(())
}

pub(super) fn index_pack(conn: &Connection, index_id: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT pack FROM indexes WHERE id = ?1")
        .and_then(|mut s| s.query_row([index_id], |r| r.get(0)).optional())
        .ctx("loading the index pack")
}

pub(super) fn decode_vector(image_id: &str, dim: i64, blob: &[u8]) -> Result<Vec<f32>, StoreError> {
    let expected = usize::try_from(dim).ok().and_then(|d| d.checked_mul(4));
    if expected != Some(blob.len()) {
        return Err(StoreError::Corrupt(format!("embedding of image {image_id}: {} bytes for dim {dim}", blob.len())));
    }
    Ok(blob.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// The live vectors matching `filter` (an SQL condition on `e`, `i`, `r` with one
/// parameter `?1`). One statement = one consistent snapshot; rows are decoded as they
/// are stepped, so only the decoded vectors are held in memory.
pub(super) fn scan_embeddings(conn: &Connection, filter: &str, param: &str) -> Result<Vec<EmbeddingRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT e.image_id, i.record_id, r.index_id, e.dim, e.vector
             FROM embeddings e
             JOIN images i ON i.id = e.image_id
             JOIN records r ON r.id = i.record_id
             WHERE {filter} ORDER BY e.rowid"
        ))
        .ctx("preparing the embedding scan")?;
    let mut rows = stmt.query([param]).ctx("scanning embeddings")?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx("scanning embeddings")? {
        let image_id: String = row.get(0).ctx("reading an embedding")?;
        let dim: i64 = row.get(3).ctx("reading an embedding")?;
        let blob = row
            .get_ref(4)
            .ctx("reading an embedding")?
            .as_blob()
            .map_err(|e| StoreError::Corrupt(format!("embedding of image {image_id}: {e}")))?;
        let vector = decode_vector(&image_id, dim, blob)?;
        out.push(EmbeddingRow {
            record_id: row.get(1).ctx("reading an embedding")?,
            index_id: row.get(2).ctx("reading an embedding")?,
            image_id,
            vector,
        });
    }
    Ok(out)
}
