//! The opt-in parts of a search answer, beside the published `response` (which they
//! never change): `include=probe` adds `probe`, what was searched — the face, the rule
//! that chose it, its quality, the liveness verdict and the packs used — so that an
//! operator can see what the matches are matches of; `faces=all` adds `faces`, every
//! face of the photo with its own matches, for screening a group photo or a CCTV still.
//!
//! The types here are what the handler serialises and what the OpenAPI document shows,
//! so the two cannot drift apart.

use facesearch_engine::{FaceResult, SearchOutcome};
use facesearch_face::{Detection, FaceQuality, Liveness};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::search::match_object;
use crate::error::{ApiError, round};
use crate::extract::QueryParams;
#[allow(unused_imports)] // named by the schema attributes below
use crate::responses::record::FaceQualityObject;
use crate::responses::search::detection_score as score;
pub use crate::responses::search::{FaceBox, ScoredBox};
use crate::responses::{ExpectedFalseMatches, MatchResult};

/// The opt-in parts a search request asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchOptions {
    /// `include=probe`.
    pub probe: bool,
    /// `faces=all`.
    pub every_face: bool,
}

impl SearchOptions {
    /// Reads `include` (a comma-separated list; `probe` is the only item) and `faces`
    /// (`largest`, the default, or `all`); anything else is `400 INVALID_PARAMETER`.
    pub fn from_query(query: &QueryParams) -> Result<Self, ApiError> {
        let mut options = SearchOptions::default();
        if let Some(list) = query.get("include") {
            for item in list.split(',').map(str::trim) {
                match item {
                    "probe" => options.probe = true,
                    other => {
                        return Err(ApiError::invalid_parameter(
                            "include",
                            format!("unknown include {other:?}; the only one is probe"),
                        ));
                    }
                }
            }
        }
        match query.get("faces").map(str::trim) {
            None | Some("largest") => {}
            Some("all") => options.every_face = true,
            Some(other) => {
                return Err(ApiError::invalid_parameter(
                    "faces",
                    format!("unknown faces {other:?}; use largest (the default) or all"),
                ));
            }
        }
        Ok(options)
    }

    /// Whether the answer is the published body alone.
    pub fn is_default(&self) -> bool {
        *self == SearchOptions::default()
    }
}

fn landmarks(d: &Detection) -> Vec<[f64; 2]> {
    d.landmarks.iter().map(|[x, y]| [round(f64::from(*x), 2), round(f64::from(*y), 2)]).collect()
}

/// The face that was searched.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FoundFace {
    #[serde(rename = "box")]
    #[schema(rename = "box")]
    pub face_box: FaceBox,
    /// Five points `[x, y]`, pixels: right eye, left eye (as seen in the image: the
    /// subject's right eye is on the image's left), nose tip, right and left mouth corners.
    pub landmarks: Vec<[f64; 2]>,
    /// Detector confidence, 0–1.
    pub detection_score: f64,
}

/// How the searched face was chosen among the faces found.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceRule {
    /// The largest face (by box area).
    Largest,
}

/// Whether and how liveness was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LivenessStatus {
    /// The model judged the face (`score`).
    Judged,
    /// Too little context around the face to judge (`context`, `min_context`).
    CannotJudge,
    /// Not asked for (`perform_liveness_check=false`) or not applicable (`faces=all`): `reason`.
    NotChecked,
}

/// The liveness verdict of the searched face.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LivenessDetails {
    pub status: LivenessStatus,
    /// The live probability, 0–1, when judged; `null` otherwise.
    pub score: Option<f64>,
    /// The live probability a probe needs (`--liveness-threshold`).
    pub threshold: f64,
    /// `cannot_judge`: context around the face, crop side / face side.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub context: Option<f64>,
    /// `cannot_judge`: the context needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub min_context: Option<f64>,
    /// `not_checked`: `perform_liveness_check=false` or `faces=all`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

impl LivenessDetails {
    /// The verdict of a search (`None`: not judged), and why it was not judged.
    pub fn of(verdict: Option<Liveness>, threshold: f32, every_face: bool) -> Self {
        let threshold = round(f64::from(threshold), 4);
        let mut details = LivenessDetails {
            status: LivenessStatus::NotChecked,
            score: None,
            threshold,
            context: None,
            min_context: None,
            reason: None,
        };
        match verdict {
            Some(Liveness::Judged { live_probability }) => {
                details.status = LivenessStatus::Judged;
                details.score = Some(round(f64::from(live_probability), 4));
            }
            Some(Liveness::CannotJudge { context, min_context }) => {
                details.status = LivenessStatus::CannotJudge;
                details.context = Some(round(f64::from(context), 2));
                details.min_context = Some(round(f64::from(min_context), 2));
            }
            None => {
                let why = if every_face { "faces=all" } else { "perform_liveness_check=false" };
                details.reason = Some(why.to_string());
            }
        }
        details
    }
}

/// What was searched (`include=probe`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProbeDetails {
    /// Faces the detector found in the photo.
    pub faces_found: usize,
    /// The rule that chose the searched face.
    pub chosen_by: ChoiceRule,
    pub face: FoundFace,
    /// The searched face's quality measures (docs/API.md, Face quality).
    #[schema(value_type = FaceQualityObject)]
    pub quality: FaceQuality,
    /// The enrolment minimums it misses (as in `X-Low-Quality`); the search is done anyway.
    pub quality_failures: Vec<String>,
    pub liveness: LivenessDetails,
    /// The model packs the face was embedded with (one per pack of the indexes
    /// searched); the face was found by the first.
    pub packs: Vec<String>,
    /// The expected number of false matches at the search's `min_match_score` for the
    /// faces searched (as in `X-Expected-False-Matches`; docs/API.md, Scores).
    pub expected_false_matches: ExpectedFalseMatches,
}

/// One face of the photo with its own matches (`faces=all`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchedFace {
    #[serde(rename = "box")]
    #[schema(rename = "box")]
    pub face_box: FaceBox,
    /// Five points `[x, y]`, as in `probe.face.landmarks`.
    pub landmarks: Vec<[f64; 2]>,
    /// Detector confidence, 0–1.
    pub detection_score: f64,
    /// `null` when the face cannot be aligned.
    #[schema(value_type = Option<FaceQualityObject>)]
    pub quality: Option<FaceQuality>,
    /// The enrolment minimums it misses.
    pub quality_failures: Vec<String>,
    /// Its matches, best first, as in `response`; absent when the face was not searched.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    #[schema(value_type = Option<Vec<MatchResult>>)]
    pub matches: Option<Vec<Value>>,
    /// Why the face was not searched: `FACE_TOO_SMALL` or `NO_FACE_DETECTED` (its
    /// landmarks cannot be aligned); absent when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub refused: Option<String>,
    /// The refusal in words; absent when the face was searched.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
}

/// The body of a search that asked for more than the published answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchBody {
    /// The published answer, unchanged: the largest face's matches, best first.
    #[schema(value_type = Vec<MatchResult>)]
    pub response: Vec<Value>,
    /// `include=probe`: what was searched.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub probe: Option<ProbeDetails>,
    /// `faces=all`: every face found (at most `--max-search-faces`), largest first;
    /// the first is the face of `response`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub faces: Option<Vec<SearchedFace>>,
}

/// The names of the enrolment minimums a face misses (the engine's verdict).
fn failure_names(low_quality: &[&str]) -> Vec<String> {
    low_quality.iter().map(|m| m.to_string()).collect()
}

/// `probe` of a search answer.
pub fn probe_details(
    outcome: &SearchOutcome,
    liveness_threshold: f32,
    every_face: bool,
    expected_false_matches: ExpectedFalseMatches,
) -> ProbeDetails {
    let probe = &outcome.probe;
    ProbeDetails {
        faces_found: probe.faces_in_image,
        chosen_by: ChoiceRule::Largest,
        face: FoundFace {
            face_box: FaceBox::of(&probe.detection),
            landmarks: landmarks(&probe.detection),
            detection_score: score(&probe.detection),
        },
        quality: probe.quality,
        quality_failures: failure_names(&outcome.low_quality),
        liveness: LivenessDetails::of(probe.liveness, liveness_threshold, every_face),
        packs: outcome.packs.iter().map(|p| p.name().to_string()).collect(),
        expected_false_matches,
    }
}

/// One entry of `faces`.
pub fn searched_face(face: &FaceResult) -> SearchedFace {
    let (matches, refused, message) = match &face.matches {
        Ok(matches) => (Some(matches.iter().map(match_object).collect()), None, None),
        Err(why) => {
            let e = ApiError::from(facesearch_face::PipelineError::from(*why));
            (None, Some(e.code.to_string()), Some(e.message))
        }
    };
    SearchedFace {
        face_box: FaceBox::of(&face.detection),
        landmarks: landmarks(&face.detection),
        detection_score: score(&face.detection),
        quality: face.quality,
        quality_failures: failure_names(&face.low_quality),
        matches,
        refused,
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use facesearch_face::BBox;

    use super::*;

    fn query(pairs: &[(&str, &str)]) -> QueryParams {
        QueryParams(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>())
    }

    #[test]
    fn options_are_read_strictly() {
        assert!(SearchOptions::from_query(&query(&[])).unwrap().is_default());
        let o = SearchOptions::from_query(&query(&[("include", "probe"), ("faces", "all")])).unwrap();
        assert_eq!(o, SearchOptions { probe: true, every_face: true });
        assert!(SearchOptions::from_query(&query(&[("faces", "largest")])).unwrap().is_default());
        for (k, v) in
            [("include", "probes"), ("include", ""), ("include", "probe,x"), ("faces", "every"), ("faces", "")]
        {
            let e = SearchOptions::from_query(&query(&[(k, v)])).expect_err(v);
            assert_eq!((e.code.as_str(), e.details.parameter.as_deref()), ("INVALID_PARAMETER", Some(k)), "{k}={v}");
        }
    }

    #[test]
    fn boxes_are_pixels_and_the_header_whole_pixels() {
        let d = Detection {
            bbox: BBox { x1: 10.456, y1: 20.5, x2: 110.04, y2: 130.96 },
            landmarks: [[40.0, 60.0], [80.0, 60.0], [60.0, 85.0], [45.0, 105.0], [75.0, 105.0]],
            score: 0.91234,
        };
        let b = FaceBox::of(&d);
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (10.46, 20.5, 110.04, 130.96));
        assert_eq!(b.header(), "10,21,110,131");
        let s = serde_json::to_value(ScoredBox::of(&d)).unwrap();
        assert_eq!(
            s,
            serde_json::json!({"x1": 10.46, "y1": 20.5, "x2": 110.04, "y2": 130.96, "detection_score": 0.9123})
        );
        assert_eq!(landmarks(&d)[2], [60.0, 85.0]);
    }

    #[test]
    fn liveness_says_why_it_was_not_checked() {
        let judged =
            serde_json::to_value(LivenessDetails::of(Some(Liveness::Judged { live_probability: 0.98767 }), 0.5, false))
                .unwrap();
        assert_eq!(judged, serde_json::json!({"status": "judged", "score": 0.9877, "threshold": 0.5}));
        let off = serde_json::to_value(LivenessDetails::of(None, 0.5, false)).unwrap();
        assert_eq!(
            off,
            serde_json::json!({"status": "not_checked", "score": null, "threshold": 0.5, "reason": "perform_liveness_check=false"})
        );
        let all = serde_json::to_value(LivenessDetails::of(None, 0.5, true)).unwrap();
        assert_eq!(all["reason"], "faces=all");
        let close = LivenessDetails::of(Some(Liveness::CannotJudge { context: 1.244, min_context: 1.6 }), 0.5, false);
        assert_eq!(
            serde_json::to_value(close).unwrap(),
            serde_json::json!({"status": "cannot_judge", "score": null, "threshold": 0.5, "context": 1.24, "min_context": 1.6})
        );
    }
}
