//! Score calibration: `match_score` (0–100) is a published, monotone function of the
//! cosine similarity, fitted per model pack on genuine and impostor pairs of real
//! photos so that a score says how often a stranger reaches it.
//!
//! Scale: every 14 points is a ten times lower false-match rate — a stranger reaches
//! 14 with probability 1e-1, 70 with probability 1e-5 (the default threshold), 84
//! with 1e-6. Between measured points the score is linear in similarity; above the
//! last measurable rate it rises linearly to 100 at similarity 1.
//!
//! The tables are data in `calibration/PACK.json`, regenerated with
//! `facesearch eval calibrate --pack PACK --manifest ../shared/eval/manifest.csv --out crates/face/calibration/PACK.json`.

use serde::{Deserialize, Serialize};

use crate::pipeline::Pack;

/// Points per tenfold drop of the false-match rate.
pub const POINTS_PER_DECADE: f64 = 14.0;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationPoint {
    pub score: f64,
    /// Cosine similarity at which this score starts.
    pub similarity: f64,
    /// Measured fraction of impostor pairs at or above this similarity.
    pub fmr: Option<f64>,
    /// Measured fraction of genuine pairs at or above this similarity.
    pub tmr: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub pack: String,
    pub command: String,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    /// Ascending in both score and similarity.
    pub points: Vec<CalibrationPoint>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("too few impostor pairs ({0}) to calibrate; at least 100000 are needed")]
    TooFewImpostors(usize),
    #[error("no genuine pairs to calibrate with")]
    NoGenuine,
    #[error("the shipped calibration table for {pack} is invalid: {detail}")]
    Invalid { pack: String, detail: String },
}

fn rate_at_or_above(sorted_desc: &[f32], t: f64) -> f64 {
    let above = sorted_desc.partition_point(|&s| f64::from(s) >= t);
    above as f64 / sorted_desc.len() as f64
}

impl Calibration {
    /// Fits the table from genuine and impostor similarities.
    pub fn fit(pack: &str, genuine: &[f32], impostor: &[f32], command: &str) -> Result<Self, CalibrationError> {
        if impostor.len() < 100_000 {
            return Err(CalibrationError::TooFewImpostors(impostor.len()));
        }
        if genuine.is_empty() {
            return Err(CalibrationError::NoGenuine);
        }
        let mut imp = impostor.to_vec();
        imp.sort_by(|a, b| b.total_cmp(a));
        let mut genu = genuine.to_vec();
        genu.sort_by(|a, b| b.total_cmp(a));
        let mut points = vec![CalibrationPoint { score: 0.0, similarity: -1.0, fmr: Some(1.0), tmr: Some(1.0) }];
        // Measurable decades: at least 3 impostor pairs must lie above the threshold.
        for decade in 1..=9 {
            let fmr = 10f64.powi(-decade);
            let k = (fmr * imp.len() as f64).floor() as usize;
            if k < 3 {
                break;
            }
            // The smallest similarity with at most fmr·N impostors at or above it:
            // just above the (k+1)-th highest impostor score.
            let t = f64::from(imp[k]).next_up();
            let last = points.last().map_or(-1.0, |p| p.similarity);
            let similarity = t.max(last + 1e-6);
            points.push(CalibrationPoint {
                score: POINTS_PER_DECADE * decade as f64,
                similarity,
                fmr: Some(rate_at_or_above(&imp, similarity)),
                tmr: Some(rate_at_or_above(&genu, similarity)),
            });
        }
        let last = points.last().map_or(-1.0, |p| p.similarity);
        points.push(CalibrationPoint { score: 100.0, similarity: 1.0f64.max(last + 1e-6), fmr: None, tmr: None });
        Ok(Self {
            pack: pack.to_string(),
            command: command.to_string(),
            genuine_pairs: genu.len(),
            impostor_pairs: imp.len(),
            points,
        })
    }

    /// The table shipped for `pack`.
    pub fn shipped(pack: Pack) -> Result<Self, CalibrationError> {
        let text = match pack {
            Pack::Open => include_str!("../calibration/open.json"),
            Pack::Insightface => include_str!("../calibration/insightface.json"),
        };
        let invalid = |detail: String| CalibrationError::Invalid { pack: pack.name().to_string(), detail };
        let table: Calibration = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if table.points.len() < 2
            || table.points.windows(2).any(|w| w[1].similarity <= w[0].similarity || w[1].score <= w[0].score)
        {
            return Err(invalid("points must ascend strictly".into()));
        }
        Ok(table)
    }

    /// The score of a cosine similarity, 0–100, monotone.
    pub fn score(&self, similarity: f32) -> f64 {
        let s = f64::from(similarity);
        let pts = &self.points;
        if s <= pts[0].similarity {
            return pts[0].score;
        }
        for w in pts.windows(2) {
            if s <= w[1].similarity {
                let f = (s - w[0].similarity) / (w[1].similarity - w[0].similarity);
                return w[0].score + f * (w[1].score - w[0].score);
            }
        }
        pts[pts.len() - 1].score
    }

    /// The lowest similarity that reaches `score` (inverse of [`Calibration::score`]).
    pub fn similarity_for(&self, score: f64) -> f32 {
        let pts = &self.points;
        if score <= pts[0].score {
            return pts[0].similarity as f32;
        }
        for w in pts.windows(2) {
            if score <= w[1].score {
                let f = (score - w[0].score) / (w[1].score - w[0].score);
                return (w[0].similarity + f * (w[1].similarity - w[0].similarity)) as f32;
            }
        }
        pts[pts.len() - 1].similarity as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fitted() -> Calibration {
        // Impostors uniform on [-0.5, 0.5), genuine on [0.3, 0.9).
        let impostor: Vec<f32> = (0..1_000_000).map(|i| -0.5 + i as f32 / 1_000_000.0).collect();
        let genuine: Vec<f32> = (0..1000).map(|i| 0.3 + 0.6 * i as f32 / 1000.0).collect();
        Calibration::fit("test", &genuine, &impostor, "test").unwrap()
    }

    #[test]
    fn fitted_thresholds_meet_their_false_match_rates() {
        let c = fitted();
        // 1e6 impostors: decades 1..=5 are measurable (1e-6 would leave one pair).
        assert_eq!(c.points.len(), 1 + 5 + 1);
        for p in &c.points[1..c.points.len() - 1] {
            let target = 10f64.powf(-p.score / POINTS_PER_DECADE);
            assert!(p.fmr.unwrap() <= target + 1e-12, "{p:?}");
        }
        let at70 = c.points.iter().find(|p| p.score == 70.0).unwrap();
        assert!((at70.similarity - 0.49999).abs() < 1e-4, "{at70:?}");
    }

    #[test]
    fn score_is_monotone_and_inverts() {
        let c = fitted();
        let mut last = -1.0;
        for i in 0..=200 {
            let s = c.score(-1.0 + i as f32 * 0.01);
            assert!(s >= last, "not monotone at {i}");
            last = s;
        }
        assert_eq!(c.score(-1.0), 0.0);
        assert_eq!(c.score(1.0), 100.0);
        let t = c.similarity_for(70.0);
        assert!((c.score(t) - 70.0).abs() < 1e-3);
    }

    #[test]
    fn shipped_tables_load() {
        for pack in [Pack::Open, Pack::Insightface] {
            let c = Calibration::shipped(pack).unwrap();
            assert_eq!(c.pack, pack.name());
            assert!(c.impostor_pairs >= 1_000_000, "{pack}: calibrated on {} impostor pairs", c.impostor_pairs);
            let t70 = c.similarity_for(70.0);
            assert!(t70 > 0.0 && t70 < 1.0);
        }
    }

    #[test]
    fn too_little_data_is_refused() {
        assert!(matches!(Calibration::fit("t", &[0.5], &[0.1; 10], "t"), Err(CalibrationError::TooFewImpostors(10))));
        assert!(matches!(Calibration::fit("t", &[], &vec![0.1; 200_000], "t"), Err(CalibrationError::NoGenuine)));
    }
}
