//! What a minimum score means for the indexes a search covers: the expected number of
//! strangers at or above it (the `X-Expected-False-Matches` header) and, per index, the
//! lowest score that keeps the FPIR at 1e-3 at its current size. The rates come from
//! each pack's calibration ([`facesearch_face::false_matches`]); the sizes from the
//! faces the engine actually compares a probe with.

use facesearch_face::Pack;
use facesearch_face::false_matches::Estimate;
use facesearch_store::IndexInfo;

use crate::{Engine, EngineError};

/// The FPIR the per-index hint is given for (`min_score_fpir_1e3`).
pub const HINT_FPIR: f64 = 1e-3;

impl Engine {
    /// The pack whose calibration scores a search of `index`, and the number of faces
    /// the probe is compared with: the vectors held in memory, or, when the database
    /// searches the vectors (PostgreSQL), its record count (what the store itself sizes
    /// a search by; a record with several images makes more comparisons than that).
    pub fn faces_searched(&self, index: &IndexInfo) -> Result<(Pack, u64), EngineError> {
        self.vectors.faces_searched(index)
    }

    /// Expected false matches of one search of a person not enrolled at `min_score`
    /// over `indexes`: the faces of each pack times that pack's false-match rate,
    /// summed over the packs (an upper bound when any part is one).
    pub fn expected_false_matches(&self, indexes: &[IndexInfo], min_score: f64) -> Result<Estimate, EngineError> {
        let mut per_pack: Vec<(Pack, u64)> = Vec::new();
        for index in indexes {
            let (pack, faces) = self.faces_searched(index)?;
            match per_pack.iter_mut().find(|(p, _)| *p == pack) {
                Some((_, total)) => *total = total.saturating_add(faces),
                None => per_pack.push((pack, faces)),
            }
        }
        Ok(per_pack
            .into_iter()
            .map(|(pack, faces)| self.calibration(pack).expected_false_matches(min_score, faces))
            .fold(Estimate::ZERO, Estimate::plus))
    }

    /// The lowest score at which a search of `index` alone returns a stranger with
    /// probability at most [`HINT_FPIR`], at its current size; `None` when that needs a
    /// false-match rate below the lowest its pack's calibration measured.
    pub fn min_score_for_fpir(&self, index: &IndexInfo) -> Result<Option<f64>, EngineError> {
        let (pack, faces) = self.faces_searched(index)?;
        Ok(self.calibration(pack).score_for_fpir(HINT_FPIR, faces))
    }
}
