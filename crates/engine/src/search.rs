//! 1:N search: the probe analysed once per pack involved (liveness judged on the
//! first), each index scanned with its pack's embedding, the hits merged by
//! calibrated score and turned into matches with their records.

use facesearch_face::{Liveness, Pack, ProbeFace};
use facesearch_store::{IndexInfo, Record};
use facesearch_vectors::Hit;
use serde::Serialize;

use crate::engine::{Attempt, Engine, until_settled};
use crate::error::EngineError;
use crate::observer::{Analysis, LivenessRefusal};

/// Parameters of one search.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// The indexes to search, as the caller read them (each read once per request).
    pub indexes: Vec<IndexInfo>,
    pub min_score: f64,
    pub max_results: usize,
    pub liveness: bool,
    /// Search every face of the photo, at most this many (largest first), each with
    /// its own matches (`faces=all`); liveness is then not judged. `None`: the
    /// largest face only.
    pub every_face: Option<usize>,
}

impl SearchQuery {
    pub(crate) fn index_ids(&self) -> Vec<&str> {
        self.indexes.iter().map(|i| i.id.as_str()).collect()
    }
}

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct Match {
    pub record: Record,
    pub index_name: String,
    pub index_type: String,
    pub image_id: String,
    pub similarity: f32,
    /// Calibrated score, rounded to two decimals (the value the threshold applies to).
    pub score: f64,
    pub distance: f64,
}

/// The result of a search, with what was found out about the probe.
#[derive(Debug, Clone, Serialize)]
pub struct SearchOutcome {
    /// The matches of the largest face.
    pub matches: Vec<Match>,
    /// The largest face, analysed by the first of `packs`.
    pub probe: ProbeFace,
    /// The quality measures of `probe` below the enrolment minimums (the engine's
    /// verdict: a search reports them, an enrolment would refuse the face).
    pub low_quality: Vec<&'static str>,
    /// The packs the probe was embedded with, the one that found `probe` first.
    pub packs: Vec<Pack>,
    /// With [`SearchQuery::every_face`]: every face searched, largest first (the first
    /// is `probe`, its matches `matches`); empty otherwise.
    pub faces: Vec<FaceResult>,
}

/// One face of a photo searched face by face.
#[derive(Debug, Clone, Serialize)]
pub struct FaceResult {
    pub detection: facesearch_face::Detection,
    /// `None` when the face could not be aligned.
    pub quality: Option<facesearch_face::FaceQuality>,
    /// The measures of `quality` below the enrolment minimums.
    pub low_quality: Vec<&'static str>,
    /// Its matches, best first, or why it was not searched.
    pub matches: Result<Vec<Match>, facesearch_face::Unembedded>,
}

impl Engine {
    /// 1:N search of the largest face of `bytes` in `query.indexes`.
    pub async fn search(&self, bytes: Vec<u8>, query: &SearchQuery) -> Result<SearchOutcome, EngineError> {
        if let Some(max_faces) = query.every_face {
            return self.search_every_face(bytes, query, max_faces).await;
        }
        let probes: Vec<(Pack, ProbeFace)> = Vec::new();
        until_settled(&query.index_ids(), (bytes, probes), |(bytes, probes)| self.try_search(bytes, probes, query))
            .await
    }

    /// One try of [`Engine::search`]: the probe embedded by every pack involved that
    /// has none yet, then the scan.
    async fn try_search(
        &self,
        mut bytes: Vec<u8>,
        mut probes: Vec<(Pack, ProbeFace)>,
        query: &SearchQuery,
    ) -> Result<Attempt<SearchOutcome, (Vec<u8>, Vec<(Pack, ProbeFace)>)>, EngineError> {
        let mut packs = self.packs_of(&query.indexes)?;
        if packs.is_empty() {
            // No index to search: the probe is still analysed (and judged live).
            packs.push(self.default_pack);
        }
        for pack in packs {
            if probes.iter().any(|(p, _)| *p == pack) {
                continue;
            }
            // Liveness is judged once, on the first analysis.
            let first = probes.is_empty();
            let (probe, back) = self.analyse(pack, bytes, Analysis::Search, query.liveness && first).await?;
            bytes = back;
            if first {
                self.check_liveness(&probe)?;
            }
            probes.push((pack, probe));
        }
        let Some(hits) = self.scan(query, &probes).await? else {
            return Ok(Attempt::Moved((bytes, probes)));
        };
        let matches = self.matches(query, hits).await?;
        let packs = probes.iter().map(|(p, _)| *p).collect();
        let probe = probes.swap_remove(0).1;
        let low_quality = self.low_quality(Some(&probe.quality));
        Ok(Attempt::Done(SearchOutcome { matches, probe, low_quality, packs, faces: Vec::new() }))
    }

    /// The measures of a face's quality below the enrolment minimums.
    pub(crate) fn low_quality(&self, quality: Option<&facesearch_face::FaceQuality>) -> Vec<&'static str> {
        quality.map(|q| q.failures(&self.config.quality).iter().map(|f| f.measure).collect()).unwrap_or_default()
    }

    fn check_liveness(&self, probe: &ProbeFace) -> Result<(), EngineError> {
        let threshold = self.config.liveness_threshold;
        match probe.liveness {
            // Fail closed: a NaN probability is not live.
            Some(Liveness::Judged { live_probability })
                if live_probability.is_nan() || live_probability < threshold =>
            {
                self.observe(|o| o.liveness_refused(LivenessRefusal::Spoof));
                Err(EngineError::LivenessFailed { score: live_probability, threshold })
            }
            Some(Liveness::CannotJudge { context, min_context }) => {
                self.observe(|o| o.liveness_refused(LivenessRefusal::CannotJudge));
                Err(EngineError::LivenessCannotJudge { context, min_context })
            }
            _ => Ok(()),
        }
    }

    /// The vector scan: each index searched with the probe embedded by its pack, the
    /// hits of all packs merged by calibrated score. `None` when an index is now of a
    /// pack that has no probe embedding (it moved since the probe was analysed).
    pub(crate) async fn scan(
        &self,
        query: &SearchQuery,
        probes: &[(Pack, ProbeFace)],
    ) -> Result<Option<Vec<(Hit, f64)>>, EngineError> {
        let embeddings: Vec<(Pack, Vec<f32>)> = probes.iter().map(|(p, f)| (*p, f.embedding.clone())).collect();
        let candidates = query.max_results.saturating_mul(2).max(query.max_results);
        let (hits, elapsed) =
            self.vectors.scan(&self.store, &query.indexes, embeddings, query.min_score, candidates).await?;
        if let Some(elapsed) = elapsed {
            self.observe(|o| o.vectors_searched(elapsed));
        }
        Ok(hits)
    }

    /// The records of the hits, as matches, best first.
    pub(crate) async fn matches(&self, query: &SearchQuery, hits: Vec<(Hit, f64)>) -> Result<Vec<Match>, EngineError> {
        let ids: Vec<String> = hits.iter().map(|(h, _)| h.record_id.clone()).collect();
        let records = self.store.get_records(&ids).await?;
        let mut matches = Vec::new();
        for (hit, score) in hits {
            // A record deleted between the scan and this read is simply not returned.
            let (Some(record), Some(index)) = (
                records.iter().find(|r| r.record_id == hit.record_id),
                query.indexes.iter().find(|i| i.id == hit.collection),
            ) else {
                continue;
            };
            if score < query.min_score {
                continue;
            }
            matches.push(Match {
                record: record.clone(),
                index_name: index.index_name.clone(),
                index_type: index.index_type.as_str().to_string(),
                image_id: hit.image_id,
                similarity: hit.similarity,
                score,
                // 1 − cosine; rounding can push a self-match a hair below zero.
                distance: f64::from(1.0 - hit.similarity).max(0.0) + 0.0,
            });
        }
        matches.truncate(query.max_results);
        Ok(matches)
    }
}
