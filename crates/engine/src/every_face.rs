//! Searching every face of a photo (`faces=all`): watch-list screening of a group photo
//! or a CCTV still, where the question is who is in it.
//!
//! The faces are those the first pack's detector finds (largest first, at most the
//! number asked for); each is embedded by every pack involved and searched like the
//! probe of an ordinary search, so the largest face's matches are exactly what an
//! ordinary search of a single-pack query answers. Liveness is not judged (see
//! [`facesearch_face::every_face`]).

use facesearch_face::{Detection, EveryFace, Pack, ProbeFace, Unembedded};

use crate::engine::{Attempt, Engine, until_settled};
use crate::error::{EngineError, task_failed};
use crate::observer::Analysis;
use crate::search::{FaceResult, SearchOutcome, SearchQuery};

/// One face's embedding by each pack, or why it has none.
type Embeddings = Result<Vec<(Pack, Vec<f32>)>, Unembedded>;

impl Engine {
    /// [`Engine::search`] with [`SearchQuery::every_face`] set.
    pub(crate) async fn search_every_face(
        &self,
        bytes: Vec<u8>,
        query: &SearchQuery,
        max_faces: usize,
    ) -> Result<SearchOutcome, EngineError> {
        until_settled(&query.index_ids(), bytes, move |bytes| self.try_every_face(bytes, query, max_faces)).await
    }

    /// One try of [`Engine::search_every_face`].
    async fn try_every_face(
        &self,
        bytes: Vec<u8>,
        query: &SearchQuery,
        max_faces: usize,
    ) -> Result<Attempt<SearchOutcome, Vec<u8>>, EngineError> {
        let mut packs = self.packs_of(&query.indexes)?;
        if packs.is_empty() {
            packs.push(self.default_pack);
        }
        let (every, mut bytes) = self.analyse_every_face(packs[0], bytes, max_faces).await?;
        let probe = every.largest()?;
        let mut embeddings: Vec<Embeddings> =
            every.faces.iter().map(|f| f.embedding.clone().map(|v| vec![(packs[0], v)])).collect();
        let detections: Vec<Detection> = every.faces.iter().map(|f| f.detection.clone()).collect();
        for &pack in &packs[1..] {
            let (theirs, back) = self.embed_faces(pack, bytes, detections.clone()).await?;
            bytes = back;
            for (mine, theirs) in embeddings.iter_mut().zip(theirs) {
                // The same box and landmarks: a face embeds with every pack or none.
                if let (Ok(list), Ok(v)) = (mine.as_mut(), theirs) {
                    list.push((pack, v));
                }
            }
        }
        let Some(faces) = self.search_faces(query, &every, &probe, embeddings).await? else {
            return Ok(Attempt::Moved(bytes));
        };
        let matches = match faces.first().map(|f| &f.matches) {
            Some(Ok(matches)) => matches.clone(),
            _ => Vec::new(),
        };
        let low_quality = self.low_quality(Some(&probe.quality));
        Ok(Attempt::Done(SearchOutcome { matches, probe, low_quality, packs, faces }))
    }

    /// Each face searched on its own; `None` when an index moved to another pack meanwhile.
    async fn search_faces(
        &self,
        query: &SearchQuery,
        every: &EveryFace,
        probe: &ProbeFace,
        embeddings: Vec<Embeddings>,
    ) -> Result<Option<Vec<FaceResult>>, EngineError> {
        let mut faces = Vec::with_capacity(every.faces.len());
        for (face, embedded) in every.faces.iter().zip(embeddings) {
            let matches = match embedded {
                Ok(per_pack) => {
                    // The scan reads only each pack's embedding of the face.
                    let probes: Vec<(Pack, ProbeFace)> = per_pack
                        .into_iter()
                        .map(|(pack, embedding)| (pack, ProbeFace { embedding, ..probe.clone() }))
                        .collect();
                    let Some(hits) = self.scan(query, &probes).await? else { return Ok(None) };
                    Ok(self.matches(query, hits).await?)
                }
                Err(why) => Err(why),
            };
            let low_quality = self.low_quality(face.quality.as_ref());
            faces.push(FaceResult { detection: face.detection.clone(), quality: face.quality, low_quality, matches });
        }
        Ok(Some(faces))
    }

    /// Every face of the photo analysed on the blocking pool under one analysis slot
    /// (see [`Engine::analyse`]); the photo is handed back.
    async fn analyse_every_face(
        &self,
        pack: Pack,
        bytes: Vec<u8>,
        max_faces: usize,
    ) -> Result<(EveryFace, Vec<u8>), EngineError> {
        let pipeline = self.pipeline(pack).await?;
        let permit = self.analysis_slot().await?;
        let (every, bytes) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            (pipeline.every_face(&bytes, max_faces), bytes)
        })
        .await
        .map_err(task_failed)?;
        let every = every?;
        self.observe(|o| o.photo_analysed(Analysis::Search, &every.timings));
        Ok((every, bytes))
    }

    /// The faces found by another pack's detector, embedded with `pack`.
    async fn embed_faces(
        &self,
        pack: Pack,
        bytes: Vec<u8>,
        faces: Vec<Detection>,
    ) -> Result<(Vec<Result<Vec<f32>, Unembedded>>, Vec<u8>), EngineError> {
        let pipeline = self.pipeline(pack).await?;
        let permit = self.analysis_slot().await?;
        let (embedded, bytes) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            (pipeline.embed_faces(&bytes, &faces), bytes)
        })
        .await
        .map_err(task_failed)?;
        Ok((embedded?, bytes))
    }
}
