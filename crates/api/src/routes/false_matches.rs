//! What a minimum score means at the size of the indexes searched (issue 17), said where
//! the user decides: the `X-Expected-False-Matches` header of every search, and in the
//! Part 2 index object the score for FPIR 1e-3 at the index's size (and, on request,
//! the expected false matches at a given score). The published details list of Part 1
//! does not carry these: its objects stay exactly as published.

use axum::http::HeaderValue;
use axum::response::Response;
use facesearch_face::false_matches::Estimate;
use facesearch_store::IndexInfo;

use crate::error::{ApiError, round};
use crate::responses::{ExpectedFalseMatches, IndexObject, ManagedIndexObject};
use crate::state::AppState;

/// The response header of every search.
pub const HEADER: &str = "x-expected-false-matches";

/// Sets [`HEADER`] on a search response.
pub fn set_header(response: &mut Response, expected: Estimate) {
    if let Ok(v) = HeaderValue::from_str(&expected.header_value()) {
        response.headers_mut().insert(HEADER, v);
    }
}

/// The `expected_false_matches` object (of a `probe`, or of an index asked about a score).
pub fn at_score(min_match_score: f64, expected: Estimate) -> ExpectedFalseMatches {
    ExpectedFalseMatches { min_match_score, value: expected.value, upper_bound: expected.upper_bound }
}

/// What the engine says about one index for [`managed_fields`].
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexHints {
    pub faces: Option<u64>,
    pub min_score_fpir_1e3: Option<f64>,
    /// `(min_match_score, expectation)`, when a score was asked about.
    pub expected: Option<(f64, Estimate)>,
}

/// The index object of Part 2 responses: [`IndexObject`] plus `faces` (the faces a
/// search compares the probe with) and `min_score_fpir_1e3` (the lowest score at which
/// a search of a stranger in this index alone returns anyone with probability at most
/// 1e-3; `null` when that needs a rate below what the calibration measured). With
/// `min_score`, also `expected_false_matches` at that score. While the models are
/// still loading the engine cannot say: `faces` and `min_score_fpir_1e3` are `null`.
pub fn managed_index_object(
    state: &AppState,
    index: &IndexInfo,
    min_score: Option<f64>,
) -> Result<ManagedIndexObject, ApiError> {
    let hints = match state.engine() {
        Ok(engine) => {
            let (_, faces) = engine.faces_searched(index)?;
            let expected = match min_score {
                Some(score) => Some((score, engine.expected_false_matches(std::slice::from_ref(index), score)?)),
                None => None,
            };
            IndexHints {
                faces: Some(faces),
                min_score_fpir_1e3: engine.min_score_for_fpir(index)?.map(|s| round_up(s, 2)),
                expected,
            }
        }
        Err(_) => IndexHints::default(),
    };
    Ok(managed_fields(index, hints, min_score.is_some()))
}

/// [`IndexObject`] with the fields of `hints`; `expected_false_matches` only when a
/// score was asked about (`null` if the engine could not say).
pub fn managed_fields(index: &IndexInfo, hints: IndexHints, asked: bool) -> ManagedIndexObject {
    ManagedIndexObject {
        index: IndexObject::from(index),
        faces: hints.faces,
        min_score_fpir_1e3: hints.min_score_fpir_1e3,
        expected_false_matches: asked.then(|| hints.expected.map(|(score, e)| at_score(score, e))),
    }
}

/// Rounded up to `decimals`: a minimum score one may type, never below the one needed.
fn round_up(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    // The small slack keeps an exact value (84.0 computed as 84.0000000001) from
    // moving up a step.
    // `+ 0.0`: a zero must not come out as JSON `-0.0` (ceil(-1e-6) is -0).
    round((value * scale - 1e-6).ceil() / scale, decimals) + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_up_never_down() {
        assert_eq!(round_up(69.961, 2), 69.97);
        assert_eq!(round_up(84.0, 2), 84.0);
        assert_eq!(round_up(84.000_000_01, 2), 84.0);
        assert_eq!(round_up(0.0, 2), 0.0);
        assert!(round_up(0.0, 2).is_sign_positive());
        assert_eq!(serde_json::json!(round_up(0.0, 2)).to_string(), "0.0");
    }
}
