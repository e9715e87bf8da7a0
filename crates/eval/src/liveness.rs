//! Presentation attack detection metrics (ISO/IEC 30107-3 terms).
//!
//! A liveness check is judged by two error rates that trade against each other:
//!
//! * APCER, attack presentation classification error rate: the fraction of attack
//!   presentations (prints, screen replays, masks) wrongly accepted as live;
//! * BPCER, bona fide presentation classification error rate: the fraction of real
//!   people wrongly rejected.
//!
//! ISO/IEC 30107-3 asks for APCER per attack type (PAI species) because one weak
//! spot is what an attacker uses, so it is reported per type and as the worst type
//! as well as pooled. The evaluation sets are small (tens to a few hundred
//! samples), so 95% bootstrap confidence intervals accompany the headline rates.
//!
//! Decision rule: a sample is classified live iff `live_score >= threshold`.
//!
//! Samples the detector declares it cannot judge (e.g. a tight face crop with no
//! context) have `live_score: None`. They are excluded from APCER and BPCER, which
//! therefore describe only the samples the detector did decide on, and are counted
//! separately (`cannot_judge*`) so a detector cannot look good by abstaining.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::rates::{equal_error_rate, rate, threshold_at_rate};

/// Number of bootstrap resamples behind the confidence intervals.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;
/// Seed of the bootstrap's random generator, fixed so reports are reproducible.
pub const BOOTSTRAP_SEED: u64 = 30107;

/// One scored presentation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LivenessSample {
    /// Liveness score (higher = more likely live), or `None` when the detector
    /// cannot judge this sample.
    pub live_score: Option<f32>,
    /// Whether the presentation is an attack (otherwise bona fide).
    pub is_attack: bool,
    /// Attack type (PAI species), e.g. `print`, `replay`, `mask`; ignored for
    /// bona fide samples.
    pub attack_type: String,
}

/// APCER of one attack type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackTypeResult {
    /// Attack type name.
    pub attack_type: String,
    /// Judged attacks of this type accepted as live / judged attacks of this type.
    pub apcer: f64,
    /// Judged attacks of this type (the APCER denominator).
    pub attacks: usize,
    /// Attacks of this type the detector could not judge.
    pub cannot_judge: usize,
    /// 95% percentile-bootstrap interval of `apcer`.
    pub apcer_ci95: (f64, f64),
}

/// APCER and BPCER at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Decision threshold.
    pub threshold: f32,
    /// APCER at `threshold` (judged attacks only).
    pub apcer: f64,
    /// BPCER at `threshold` (judged bona fide only).
    pub bpcer: f64,
    /// APCER over all attacks, a "cannot judge" counting as rejected.
    pub apcer_with_refusals: f64,
    /// BPCER over all bona fide, a "cannot judge" counting as rejected.
    pub bpcer_with_refusals: f64,
}

/// Presentation attack detection results at one threshold, plus the threshold-free
/// EER and an error curve.
#[derive(Debug, Clone, Serialize)]
pub struct PadReport {
    /// Threshold the headline rates are computed at.
    pub threshold: f32,
    /// All attack samples, judged or not.
    pub attacks: usize,
    /// All bona fide samples, judged or not.
    pub bona_fide: usize,
    /// Samples (of either class) the detector could not judge.
    pub cannot_judge: usize,
    /// Attack samples the detector could not judge.
    pub cannot_judge_attacks: usize,
    /// Bona fide samples the detector could not judge.
    pub cannot_judge_bona_fide: usize,
    /// Judged attacks accepted as live / judged attacks (pooled over types).
    pub apcer: f64,
    /// Highest per-type APCER (the ISO/IEC 30107-3 worst-case figure).
    pub apcer_max_type: f64,
    /// Judged bona fide rejected / judged bona fide.
    pub bpcer: f64,
    /// APCER over all attacks, a "cannot judge" counting as rejected (the service
    /// refuses such a probe).
    pub apcer_with_refusals: f64,
    /// BPCER over all bona fide, a "cannot judge" counting as rejected: the share of
    /// real people the service turns away.
    pub bpcer_with_refusals: f64,
    /// APCER per attack type, sorted by type name.
    pub per_attack_type: Vec<AttackTypeResult>,
    /// Equal error rate over judged samples (mean of APCER and BPCER where they are
    /// closest, sweeping every distinct score as threshold).
    pub eer: f64,
    /// Threshold at which the EER was found.
    pub eer_threshold: f32,
    /// Lowest BPCER (judged) at a threshold keeping APCER (judged) at most 5 %, the
    /// issue's target operating point, and that threshold.
    pub bpcer_at_apcer_5: f64,
    pub threshold_at_apcer_5: f32,
    /// The same operating point counting every "cannot judge" as a refusal: the lowest
    /// BPCER with refusals at a threshold keeping APCER with refusals at most 5 %.
    pub bpcer_with_refusals_at_apcer_5: f64,
    pub threshold_with_refusals_at_apcer_5: f32,
    /// Equal error rate counting every "cannot judge" as a refusal, and its threshold.
    pub eer_with_refusals: f64,
    pub eer_with_refusals_threshold: f32,
    /// APCER/BPCER at thresholds 0.00, 0.05, ..., 1.00 and at the EER threshold (when
    /// not one of those), sorted by threshold.
    pub curve: Vec<CurvePoint>,
    /// 95% percentile-bootstrap interval of `apcer` (resampling judged attacks).
    pub apcer_ci95: (f64, f64),
    /// 95% percentile-bootstrap interval of `bpcer` (resampling judged bona fide).
    pub bpcer_ci95: (f64, f64),
    /// 95% percentile-bootstrap interval of `eer` (resampling each class).
    pub eer_ci95: (f64, f64),
}

/// Fraction of `scores` classified live (`>= threshold`).
fn accepted_rate(scores: &[f32], threshold: f32) -> f64 {
    rate(scores.iter().filter(|&&s| s >= threshold).count(), scores.len())
}

/// The point of the curve at `threshold`; `all_*` hold every sample's score, NaN for
/// one that cannot be judged (never accepted).
fn curve_point(scores: &Scores, threshold: f32) -> CurvePoint {
    CurvePoint {
        threshold,
        apcer: accepted_rate(&scores.attack, threshold),
        bpcer: 1.0 - accepted_rate(&scores.bona_fide, threshold),
        apcer_with_refusals: accepted_rate(&scores.all_attack, threshold),
        bpcer_with_refusals: 1.0 - accepted_rate(&scores.all_bona_fide, threshold),
    }
}

/// Judged scores of each class, and every sample's score with NaN for "cannot judge".
struct Scores {
    attack: Vec<f32>,
    bona_fide: Vec<f32>,
    all_attack: Vec<f32>,
    all_bona_fide: Vec<f32>,
}

/// 95% percentile bootstrap interval of the mean of `errors` (1 = error), with
/// `resamples` resamples drawn from `rng`. `(NaN, NaN)` when `errors` is empty.
fn bootstrap_ci95(errors: &[bool], resamples: usize, rng: &mut StdRng) -> (f64, f64) {
    let n = errors.len();
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let means: Vec<f64> = (0..resamples)
        .map(|_| {
            let hits = (0..n).filter(|_| errors[rng.random_range(0..n)]).count();
            hits as f64 / n as f64
        })
        .collect();
    percentile_interval(means)
}

/// The 2.5th and 97.5th percentiles of non-empty bootstrap statistics.
fn percentile_interval(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let last = values.len() - 1;
    let pick = |q: f64| values[((q * last as f64).round() as usize).min(last)];
    (pick(0.025), pick(0.975))
}

/// Computes the PAD report at `threshold` with [`BOOTSTRAP_RESAMPLES`] resamples
/// seeded with [`BOOTSTRAP_SEED`]. See the module documentation for how samples
/// that cannot be judged are handled. Rates with an empty denominator are `NaN`.
pub fn pad_report(samples: &[LivenessSample], threshold: f32) -> PadReport {
    pad_report_with(samples, threshold, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
}

/// [`pad_report`] with an explicit number of bootstrap resamples and seed.
pub fn pad_report_with(samples: &[LivenessSample], threshold: f32, resamples: usize, seed: u64) -> PadReport {
    let attack_scores: Vec<f32> = samples.iter().filter(|s| s.is_attack).filter_map(|s| s.live_score).collect();
    let bona_fide_scores: Vec<f32> = samples.iter().filter(|s| !s.is_attack).filter_map(|s| s.live_score).collect();
    let all = |attack: bool| -> Vec<f32> {
        samples.iter().filter(|s| s.is_attack == attack).map(|s| s.live_score.unwrap_or(f32::NAN)).collect()
    };
    let scores = Scores {
        attack: attack_scores.clone(),
        bona_fide: bona_fide_scores.clone(),
        all_attack: all(true),
        all_bona_fide: all(false),
    };
    let attacks = samples.iter().filter(|s| s.is_attack).count();
    let bona_fide = samples.len() - attacks;
    let cannot_judge_attacks = attacks - attack_scores.len();
    let cannot_judge_bona_fide = bona_fide - bona_fide_scores.len();

    let mut by_type: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new(); // (accepted, judged, cannot judge)
    for sample in samples.iter().filter(|s| s.is_attack) {
        let entry = by_type.entry(sample.attack_type.as_str()).or_default();
        match sample.live_score {
            Some(score) => {
                entry.1 += 1;
                if score >= threshold {
                    entry.0 += 1;
                }
            }
            None => entry.2 += 1,
        }
    }
    let mut per_attack_type: Vec<AttackTypeResult> = by_type
        .into_iter()
        .map(|(name, (accepted, judged, cannot_judge))| AttackTypeResult {
            attack_type: name.to_string(),
            apcer: rate(accepted, judged),
            attacks: judged,
            cannot_judge,
            apcer_ci95: (f64::NAN, f64::NAN),
        })
        .collect();
    let apcer_max_type = per_attack_type.iter().map(|t| t.apcer).filter(|a| !a.is_nan()).fold(f64::NAN, f64::max);

    let (eer, eer_threshold) = equal_error_rate(&bona_fide_scores, &attack_scores);
    let threshold_at_apcer_5 = threshold_at_rate(&attack_scores, attack_scores.len(), 0.05);
    let bpcer_at_apcer_5 = 1.0 - accepted_rate(&bona_fide_scores, threshold_at_apcer_5);
    // Counting refusals: a sample that cannot be judged is never accepted (NaN score).
    let (eer_with_refusals, eer_with_refusals_threshold) = equal_error_rate(&scores.all_bona_fide, &scores.all_attack);
    let threshold_with_refusals_at_apcer_5 = threshold_at_rate(&scores.all_attack, attacks, 0.05);
    let bpcer_with_refusals_at_apcer_5 = 1.0 - accepted_rate(&scores.all_bona_fide, threshold_with_refusals_at_apcer_5);
    let mut curve: Vec<CurvePoint> = (0..=20).map(|i| curve_point(&scores, i as f32 / 20.0)).collect();
    if !eer_threshold.is_nan() && !curve.iter().any(|p| p.threshold == eer_threshold) {
        curve.push(curve_point(&scores, eer_threshold));
        curve.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let attack_errors: Vec<bool> = attack_scores.iter().map(|&s| s >= threshold).collect();
    let bona_fide_errors: Vec<bool> = bona_fide_scores.iter().map(|&s| s < threshold).collect();
    let apcer_ci95 = bootstrap_ci95(&attack_errors, resamples, &mut rng);
    let bpcer_ci95 = bootstrap_ci95(&bona_fide_errors, resamples, &mut rng);
    let eer_ci95 = bootstrap_eer_ci95(&bona_fide_scores, &attack_scores, resamples, &mut rng);
    for t in &mut per_attack_type {
        let errors: Vec<bool> = samples
            .iter()
            .filter(|s| s.is_attack && s.attack_type == t.attack_type)
            .filter_map(|s| s.live_score)
            .map(|score| score >= threshold)
            .collect();
        t.apcer_ci95 = bootstrap_ci95(&errors, resamples, &mut rng);
    }

    PadReport {
        threshold,
        attacks,
        bona_fide,
        cannot_judge: cannot_judge_attacks + cannot_judge_bona_fide,
        cannot_judge_attacks,
        cannot_judge_bona_fide,
        apcer: accepted_rate(&attack_scores, threshold),
        apcer_max_type,
        bpcer: rate(bona_fide_errors.iter().filter(|&&e| e).count(), bona_fide_errors.len()),
        apcer_with_refusals: rate(attack_errors.iter().filter(|&&e| e).count(), attacks),
        bpcer_with_refusals: rate(bona_fide_errors.iter().filter(|&&e| e).count() + cannot_judge_bona_fide, bona_fide),
        per_attack_type,
        eer,
        eer_threshold,
        bpcer_at_apcer_5,
        threshold_at_apcer_5,
        bpcer_with_refusals_at_apcer_5,
        threshold_with_refusals_at_apcer_5,
        eer_with_refusals,
        eer_with_refusals_threshold,
        curve,
        apcer_ci95,
        bpcer_ci95,
        eer_ci95,
    }
}

/// 95% percentile bootstrap interval of the EER, resampling bona fide and attack
/// scores independently. `(NaN, NaN)` when either side is empty.
fn bootstrap_eer_ci95(bona_fide: &[f32], attack: &[f32], resamples: usize, rng: &mut StdRng) -> (f64, f64) {
    if bona_fide.is_empty() || attack.is_empty() || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let draw = |scores: &[f32], rng: &mut StdRng| -> Vec<f32> {
        (0..scores.len()).map(|_| scores[rng.random_range(0..scores.len())]).collect()
    };
    let eers: Vec<f64> = (0..resamples)
        .map(|_| {
            let b = draw(bona_fide, rng);
            let a = draw(attack, rng);
            equal_error_rate(&b, &a).0
        })
        .collect();
    percentile_interval(eers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attack(score: Option<f32>, kind: &str) -> LivenessSample {
        LivenessSample { live_score: score, is_attack: true, attack_type: kind.to_string() }
    }

    fn live(score: Option<f32>) -> LivenessSample {
        LivenessSample { live_score: score, is_attack: false, attack_type: String::new() }
    }

    #[test]
    fn apcer_bpcer_tiny_case() {
        let samples = vec![
            attack(Some(0.9), "print"),  // accepted: error
            attack(Some(0.2), "print"),  // rejected
            attack(Some(0.6), "replay"), // accepted: error
            attack(Some(0.1), "replay"), // rejected
            attack(Some(0.3), "replay"), // rejected
            attack(None, "mask"),        // cannot judge
            live(Some(0.8)),             // accepted
            live(Some(0.4)),             // rejected: error
            live(Some(0.7)),             // accepted
            live(None),                  // cannot judge
        ];
        let r = pad_report(&samples, 0.5);
        assert_eq!((r.attacks, r.bona_fide), (6, 4));
        assert_eq!(r.cannot_judge, 2);
        assert_eq!((r.cannot_judge_attacks, r.cannot_judge_bona_fide), (1, 1));
        assert!((r.apcer - 2.0 / 5.0).abs() < 1e-12);
        assert!((r.bpcer - 1.0 / 3.0).abs() < 1e-12);
        // Counting refusals: 2 of 6 attacks pass; 1 rejected + 1 cannot judge of 4 bona fide.
        assert!((r.apcer_with_refusals - 2.0 / 6.0).abs() < 1e-12);
        assert!((r.bpcer_with_refusals - 2.0 / 4.0).abs() < 1e-12);
        assert_eq!(r.per_attack_type.len(), 3);
        let t = &r.per_attack_type;
        assert_eq!((t[0].attack_type.as_str(), t[0].attacks, t[0].cannot_judge), ("mask", 0, 1));
        assert!(t[0].apcer.is_nan());
        assert_eq!((t[1].attack_type.as_str(), t[1].apcer, t[1].attacks), ("print", 0.5, 2));
        assert!((t[2].apcer - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.apcer_max_type, 0.5);
        // Curve: 21 grid points, plus the EER point unless it is one of them (here it is:
        // every score is a multiple of 0.1); at 0.0 every judged sample is live.
        assert_eq!(r.curve.iter().filter(|p| p.threshold == r.eer_threshold).count(), 1);
        assert_eq!(r.curve.len(), 21);
        assert_eq!(r.curve[0].threshold, 0.0);
        assert_eq!((r.curve[0].apcer, r.curve[0].bpcer), (1.0, 0.0));
        let last = r.curve.last().unwrap();
        assert_eq!((last.threshold, last.apcer, last.bpcer), (1.0, 0.0, 1.0));
        assert!(r.curve.windows(2).all(|w| w[0].threshold <= w[1].threshold));
        // CIs bracket the point estimates and are reproducible.
        assert!(r.apcer_ci95.0 <= r.apcer && r.apcer <= r.apcer_ci95.1);
        assert!(r.bpcer_ci95.0 <= r.bpcer && r.bpcer <= r.bpcer_ci95.1);
        assert!(r.eer_ci95.0 <= r.eer && r.eer <= r.eer_ci95.1, "{:?} {}", r.eer_ci95, r.eer);
        assert!(t[0].apcer_ci95.0.is_nan());
        assert!(t[1].apcer_ci95.0 <= 0.5 && 0.5 <= t[1].apcer_ci95.1);
        let again = pad_report(&samples, 0.5);
        assert_eq!(again.apcer_ci95, r.apcer_ci95);
        assert_eq!(again.eer_ci95, r.eer_ci95);
        assert_eq!(again.bpcer_ci95, r.bpcer_ci95);
    }

    #[test]
    fn refusals_count_as_rejections_on_the_curve_and_at_apcer_5() {
        // 20 judged attacks at 0.00..0.19 and one at 0.9, plus 4 refused; 10 judged bona
        // fide at 0.5..0.95 and 10 refused.
        let mut samples: Vec<LivenessSample> = (0..20).map(|i| attack(Some(i as f32 / 100.0), "replay")).collect();
        samples.push(attack(Some(0.9), "replay"));
        samples.extend((0..4).map(|_| attack(None, "mask")));
        samples.extend((0..10).map(|i| live(Some(0.5 + i as f32 / 20.0))));
        samples.extend((0..10).map(|_| live(None)));
        let r = pad_report(&samples, 0.5);
        // 25 attacks in all: one accepted is 4 % (≤ 5 %) counting refusals, but 1/21 judged
        // is also under 5 %; both thresholds may sit at the lowest bona fide score or below.
        assert!(r.threshold_with_refusals_at_apcer_5 <= 0.5, "{}", r.threshold_with_refusals_at_apcer_5);
        // Half the bona fide are refused whatever the threshold.
        assert!((r.bpcer_with_refusals_at_apcer_5 - 0.5).abs() < 1e-12, "{}", r.bpcer_with_refusals_at_apcer_5);
        assert_eq!(r.bpcer_at_apcer_5, 0.0);
        let p = r.curve.iter().find(|p| p.threshold == 0.5).unwrap();
        assert!((p.apcer_with_refusals - 1.0 / 25.0).abs() < 1e-12);
        assert!((p.bpcer_with_refusals - 0.5).abs() < 1e-12);
        assert!((p.apcer - 1.0 / 21.0).abs() < 1e-12 && p.bpcer == 0.0);
        // The EER counting refusals cannot be below half the refused bona fide share.
        assert!(r.eer_with_refusals >= 0.25, "{}", r.eer_with_refusals);
    }

    #[test]
    fn eer_of_symmetric_distributions() {
        // Bona fide at 1 - x for every attack score x: mirror images around 0.5.
        let xs = [0.1f32, 0.2, 0.3, 0.4, 0.55, 0.65];
        let mut samples: Vec<LivenessSample> = xs.iter().map(|&x| attack(Some(x), "print")).collect();
        samples.extend(xs.iter().map(|&x| live(Some(1.0 - x))));
        let r = pad_report(&samples, 0.5);
        // Bona fide: 0.35, 0.45, 0.6, 0.7, 0.8, 0.9. At t = 0.55: attacks >= t:
        // 0.55, 0.65 -> APCER 2/6; bona fide < t: 0.35, 0.45 -> BPCER 2/6.
        assert!((r.eer - 2.0 / 6.0).abs() < 1e-9, "{}", r.eer);
        assert!((r.eer_threshold - 0.55).abs() < 1e-6);
        let eer_point = r.curve.iter().find(|p| p.threshold == r.eer_threshold).unwrap();
        assert!((eer_point.apcer - eer_point.bpcer).abs() < 1e-12);
    }

    #[test]
    fn perfectly_separated_has_zero_errors_and_tight_ci() {
        let mut samples: Vec<LivenessSample> = (0..20).map(|i| attack(Some(i as f32 / 100.0), "replay")).collect();
        samples.extend((0..20).map(|i| live(Some(0.8 + i as f32 / 100.0))));
        let r = pad_report(&samples, 0.5);
        assert_eq!((r.apcer, r.bpcer, r.eer), (0.0, 0.0, 0.0));
        assert_eq!(r.bpcer_at_apcer_5, 0.0);
        assert!(r.threshold_at_apcer_5 > 0.18 && r.threshold_at_apcer_5 < 0.8);
        assert_eq!(r.apcer_ci95, (0.0, 0.0));
        assert_eq!(r.bpcer_ci95, (0.0, 0.0));
        assert_eq!(r.eer_ci95, (0.0, 0.0));
    }

    #[test]
    fn no_samples_does_not_panic() {
        let r = pad_report(&[], 0.5);
        assert!(r.apcer.is_nan() && r.bpcer.is_nan() && r.eer.is_nan());
        assert!(r.apcer_ci95.0.is_nan());
        assert_eq!(r.curve.len(), 21);
    }
}
