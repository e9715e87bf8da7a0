//! Writes that change faces: enrolment, another image of a record, and the deletes of
//! records and indexes. Each commits in the store first and then updates the vectors,
//! under the write lock, so the vectors never hold a face the store does not.

use std::sync::Arc;

use facesearch_face::{Pack, ProbeFace};
use facesearch_store::{EnrolOutcome, IndexInfo, NewImage, Record, RecordFields, Store};

use crate::engine::{Attempt, Engine, until_settled};
use crate::error::EngineError;
use crate::files::stored_file_name;
use crate::observer::Analysis;
use crate::snapshot::forget_snapshots;
use crate::vectors::Vectors;

/// Inside the write lock: refuses a face that already matches another record of
/// `index_id` at or above the duplicate score `bar` (similarity, score).
async fn refuse_duplicate(
    store: &Arc<dyn Store>,
    vectors: &Arc<Vectors>,
    pack: Pack,
    index_id: &str,
    own_record: Option<&str>,
    embedding: &[f32],
    (min_similarity, min_score): (f32, f64),
) -> Result<(), EngineError> {
    // Two candidates: one may be the record the image is being added to.
    let hits = vectors.nearest(store, pack, index_id, embedding, min_similarity, 2).await?;
    let slot = vectors.slot(pack);
    match hits.into_iter().find(|h| Some(h.record_id.as_str()) != own_record) {
        Some(hit) if slot.score(hit.similarity) >= min_score => Err(EngineError::DuplicateFace {
            score: slot.score(hit.similarity),
            record_id: hit.record_id,
            image_id: hit.image_id,
        }),
        _ => Ok(()),
    }
}

fn new_image(pack: Pack, probe: &ProbeFace, bytes: Vec<u8>, file_name: String) -> NewImage {
    NewImage {
        pack,
        bytes,
        mime: probe.mime.to_string(),
        file_name,
        embedding: probe.embedding.clone(),
        face: serde_json::json!({
            "bbox": probe.detection.bbox,
            "landmarks": probe.detection.landmarks,
            "score": probe.detection.score,
            "faces_in_image": probe.faces_in_image,
            // The quarter turn that showed the face upright: re-embedding turns the
            // photo the same way before looking for the face again.
            "rotation": probe.quality.rotation,
        }),
        quality: serde_json::to_value(probe.quality).ok(),
    }
}

impl Engine {
    /// Enrols a new record from one photo. A `reference` already in the index returns
    /// that record and stores nothing, so a retried enrolment never duplicates. With
    /// `check_duplicates`, a face that already matches another record of the index at
    /// or above the duplicate score is refused ([`EngineError::DuplicateFace`]); the
    /// check and the write happen under the write lock, so two concurrent enrolments of
    /// one face cannot both pass it.
    pub async fn enrol(
        &self,
        index: &IndexInfo,
        fields: RecordFields,
        reference: Option<String>,
        bytes: Vec<u8>,
        file_name: Option<String>,
        check_duplicates: bool,
    ) -> Result<EnrolOutcome, EngineError> {
        if let Some(reference) = reference.as_deref().filter(|r| !r.is_empty())
            && let Some(existing) = self.store.find_by_reference(&index.id, reference).await?
        {
            return Ok(EnrolOutcome::Existing(existing));
        }
        until_settled(&[index.id.as_str()], bytes, |bytes| async {
            let (pack, probe, image) = self.enrolment_image(index, bytes, file_name.as_deref()).await?;
            let (index, fields, reference) = (index.clone(), fields.clone(), reference.clone());
            let duplicates = self.duplicate_bar(pack, check_duplicates);
            self.committed(move |store, vectors| async move {
                if vectors.pack_of(&index)? != pack {
                    return Ok(Attempt::Moved(image.bytes));
                }
                if let Some(bar) = duplicates {
                    refuse_duplicate(&store, &vectors, pack, &index.id, None, &probe.embedding, bar).await?;
                }
                let outcome = store
                    .enrol(&index.id, fields, reference, image)
                    .await?
                    .ok_or(EngineError::IndexNotFound(index.id.clone()))?;
                if let EnrolOutcome::Created(record) = &outcome
                    && let Some(image_id) = record.image_ids.first()
                {
                    vectors.insert(pack, &index.id, &record.record_id, image_id, &probe.embedding)?;
                }
                Ok(Attempt::Done(outcome))
            })
            .await
        })
        .await
    }

    /// Analyses a photo to enrol with the index's current pack.
    async fn enrolment_image(
        &self,
        index: &IndexInfo,
        bytes: Vec<u8>,
        file_name: Option<&str>,
    ) -> Result<(Pack, ProbeFace, NewImage), EngineError> {
        let pack = self.vectors.pack_of(index)?;
        let (probe, bytes) = self.analyse(pack, bytes, Analysis::Enrol, false).await?;
        let image = new_image(pack, &probe, bytes, stored_file_name(file_name, probe.mime));
        Ok((pack, probe, image))
    }

    /// The similarity and score a duplicate check needs, if one was asked for.
    fn duplicate_bar(&self, pack: Pack, check: bool) -> Option<(f32, f64)> {
        check.then(|| (self.min_similarity_for(pack, self.config.duplicate_score), self.config.duplicate_score))
    }

    /// Adds a photo to an existing record; `None` if there is no such record. With
    /// `check_duplicates`, a face matching *another* record is refused (see [`Engine::enrol`]).
    pub async fn add_image(
        &self,
        index: &IndexInfo,
        record_id: &str,
        bytes: Vec<u8>,
        file_name: Option<String>,
        check_duplicates: bool,
    ) -> Result<Option<Record>, EngineError> {
        if self.store.get_record(&index.id, record_id).await?.is_none() {
            return Ok(None);
        }
        until_settled(&[index.id.as_str()], bytes, |bytes| async {
            let (pack, probe, image) = self.enrolment_image(index, bytes, file_name.as_deref()).await?;
            let (index, record_id) = (index.clone(), record_id.to_string());
            let duplicates = self.duplicate_bar(pack, check_duplicates);
            self.committed(move |store, vectors| async move {
                if vectors.pack_of(&index)? != pack {
                    return Ok(Attempt::Moved(image.bytes));
                }
                if let Some(bar) = duplicates {
                    let own = Some(record_id.as_str());
                    refuse_duplicate(&store, &vectors, pack, &index.id, own, &probe.embedding, bar).await?;
                }
                let Some((record, image_id)) = store.add_image(&index.id, &record_id, image).await? else {
                    return Ok(Attempt::Done(None));
                };
                vectors.insert(pack, &index.id, &record_id, &image_id, &probe.embedding)?;
                Ok(Attempt::Done(Some(record)))
            })
            .await
        })
        .await
    }

    /// Deletes a record with its images and vectors; `false` if there was none.
    pub async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<bool, EngineError> {
        let (index_id, record_id) = (index_id.to_string(), record_id.to_string());
        let snapshots = self.snapshot_dir.clone();
        self.committed(move |store, vectors| async move {
            let Some(image_ids) = store.delete_record(&index_id, &record_id).await? else {
                return Ok(false);
            };
            vectors.remove_images(&index_id, &image_ids);
            forget_snapshots(snapshots, &vectors).await;
            Ok(true)
        })
        .await
    }

    /// Deletes an index with all its records, images and vectors (and its
    /// re-embedding job and staged vectors).
    pub async fn delete_index(&self, index_id: &str) -> Result<bool, EngineError> {
        let index_id = index_id.to_string();
        let snapshots = self.snapshot_dir.clone();
        self.committed(move |store, vectors| async move {
            let deleted = store.delete_index(&index_id).await?;
            vectors.remove_index(&index_id);
            if deleted {
                forget_snapshots(snapshots, &vectors).await;
            }
            Ok(deleted)
        })
        .await
    }
}
