//! 1:1 verification metrics: LFW k-fold accuracy and TAR at fixed FAR.
//!
//! Verification accuracy is how face models are compared in the literature, and it
//! is only comparable when computed with the LFW protocol: the threshold is never
//! fit on the pairs it is scored on (k-fold cross-validation). Accuracy alone hides
//! the operating region a search service cares about (few false matches), so the
//! true accept rate at a fixed false accept rate is reported too.
//!
//! Decision rule throughout: a pair is declared "same person" iff
//! `similarity >= threshold`.

use serde::Serialize;

use crate::rates::{equal_error_rate, fraction_at_or_above, threshold_at_rate};

/// Results of a verification run over a list of scored pairs.
#[derive(Debug, Clone, Serialize)]
pub struct VerificationReport {
    /// Number of scored pairs.
    pub pairs: usize,
    /// Same-person (genuine) pairs.
    pub genuine: usize,
    /// Different-person (impostor) pairs.
    pub impostors: usize,
    /// Number of non-empty folds used for cross-validation.
    pub folds: usize,
    /// Held-out accuracy of each fold, in fold order.
    pub fold_accuracies: Vec<f64>,
    /// Mean of `fold_accuracies`.
    pub accuracy_mean: f64,
    /// Population standard deviation of `fold_accuracies` (as `numpy.std` in the
    /// common LFW evaluation scripts).
    pub accuracy_std: f64,
    /// Threshold chosen for each fold on the other folds.
    pub thresholds: Vec<f64>,
    /// Mean of `thresholds`: a data-driven operating threshold for accuracy.
    pub best_threshold_mean: f64,
    /// True accept rate at FAR <= 1e-3 (see [`tar_at_far`]). With fewer than 1,000
    /// impostor pairs this is the TAR at zero false accepts.
    pub tar_at_far_1e3: f64,
    /// Threshold behind `tar_at_far_1e3` (see [`threshold_at_far`]).
    pub threshold_at_far_1e3: f32,
    /// True accept rate at FAR <= 1e-4. With fewer than 10,000 impostor pairs this is
    /// the TAR at zero false accepts.
    pub tar_at_far_1e4: f64,
    /// Threshold behind `tar_at_far_1e4`.
    pub threshold_at_far_1e4: f32,
    /// Equal error rate over all pairs (no cross-validation; descriptive only).
    pub eer: f64,
    /// Threshold at which the EER was found.
    pub eer_threshold: f32,
}

/// Assigns each pair to a cross-validation fold, given the pairs' labels in file
/// order (`true` = same person). Returns one fold id in `0..folds` per pair.
///
/// * LFW View 2 layout: if the list is exactly `folds` consecutive blocks, each a run
///   of same-person pairs followed by a run of different-person pairs (how
///   `pairs.txt` lists its 10 folds, also when only a subset of each fold is kept),
///   each block is one fold. This keeps LFW's folds, whose people do not overlap.
/// * Otherwise (e.g. View 1 `pairsDevTest.txt`: 500 same then 500 different) a
///   stratified interleave: the k-th same pair and the k-th different pair go to
///   fold `k % folds`, so every fold has both classes.
///
/// `folds == 0` is treated as 1.
pub fn assign_folds(same: &[bool], folds: usize) -> Vec<usize> {
    let folds = folds.max(1);
    // Block id of each pair: a new block starts where a same pair follows a different one.
    let mut blocks = Vec::with_capacity(same.len());
    let mut block = 0usize;
    for (i, &s) in same.iter().enumerate() {
        if i > 0 && s && !same[i - 1] {
            block += 1;
        }
        blocks.push(block);
    }
    let block_count = if same.is_empty() { 0 } else { block + 1 };
    let every_block_mixed = (0..block_count).all(|b| {
        let mut classes = same.iter().zip(&blocks).filter(|&(_, &id)| id == b);
        let has_same = classes.clone().any(|(&s, _)| s);
        let has_diff = classes.any(|(&s, _)| !s);
        has_same && has_diff
    });
    if block_count == folds && every_block_mixed {
        return blocks;
    }
    let (mut k_same, mut k_diff) = (0usize, 0usize);
    same.iter()
        .map(|&s| {
            let k = if s { &mut k_same } else { &mut k_diff };
            let fold = *k % folds;
            *k += 1;
            fold
        })
        .collect()
}

/// Accuracy of `threshold` on a set of scored pairs.
fn accuracy_at(scores: &[(f32, bool)], threshold: f64) -> f64 {
    if scores.is_empty() {
        return f64::NAN;
    }
    let correct = scores.iter().filter(|&&(s, same)| (f64::from(s) >= threshold) == same).count();
    correct as f64 / scores.len() as f64
}

/// The threshold that maximises accuracy on `train`.
///
/// Candidates are the cut points between consecutive distinct scores (their
/// midpoint, so held-out scores falling in the gap are split evenly), plus
/// "accept everything" (the lowest score) and "reject everything" (just above the
/// highest). Ties keep the highest threshold. `NaN` scores are ignored.
pub fn best_threshold(train: &[(f32, bool)]) -> f64 {
    let mut sorted: Vec<(f32, bool)> = train.iter().copied().filter(|(s, _)| !s.is_nan()).collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let Some(&(max, _)) = sorted.first() else {
        return 0.0;
    };
    let impostors = sorted.iter().filter(|(_, same)| !same).count();
    // Accept nothing: all impostors correct.
    let mut best_correct = impostors;
    let mut best_threshold = f64::from(max.next_up());
    let (mut accepted_genuine, mut accepted_impostors) = (0usize, 0usize);
    let mut i = 0;
    while i < sorted.len() {
        let score = sorted[i].0;
        while i < sorted.len() && sorted[i].0 == score {
            if sorted[i].1 {
                accepted_genuine += 1;
            } else {
                accepted_impostors += 1;
            }
            i += 1;
        }
        let correct = accepted_genuine + impostors - accepted_impostors;
        if correct > best_correct {
            best_correct = correct;
            best_threshold = match sorted.get(i) {
                Some(&(next, _)) => (f64::from(score) + f64::from(next)) / 2.0,
                None => f64::from(score),
            };
        }
    }
    best_threshold
}

/// Per-fold results of [`k_fold_accuracy`].
#[derive(Debug, Clone, Serialize)]
pub struct FoldResults {
    /// Held-out accuracy of each non-empty fold, in fold-id order.
    pub accuracies: Vec<f64>,
    /// Threshold fitted on the other folds for each of those folds.
    pub thresholds: Vec<f64>,
}

/// k-fold cross-validated accuracy with explicit fold ids (one per pair): for each
/// non-empty fold, the threshold is chosen by [`best_threshold`] on all other
/// folds and accuracy is measured on the fold. With a single non-empty fold there
/// is nothing to hold out, and the threshold is fitted on that fold itself
/// (optimistic; avoid).
///
/// # Panics
/// If `fold_ids.len() != scores.len()` (a caller bug, not an input error).
pub fn k_fold_accuracy(scores: &[(f32, bool)], fold_ids: &[usize]) -> FoldResults {
    assert_eq!(scores.len(), fold_ids.len(), "one fold id is needed per scored pair");
    let mut ids: Vec<usize> = fold_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut accuracies = Vec::with_capacity(ids.len());
    let mut thresholds = Vec::with_capacity(ids.len());
    for &fold in &ids {
        let (test, train): (Vec<_>, Vec<_>) = scores.iter().zip(fold_ids).partition(|&(_, &id)| id == fold);
        let test: Vec<(f32, bool)> = test.into_iter().map(|(s, _)| *s).collect();
        let mut train: Vec<(f32, bool)> = train.into_iter().map(|(s, _)| *s).collect();
        if train.is_empty() {
            train = test.clone();
        }
        let threshold = best_threshold(&train);
        accuracies.push(accuracy_at(&test, threshold));
        thresholds.push(threshold);
    }
    FoldResults { accuracies, thresholds }
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// LFW-protocol cross-validated accuracy: pairs are split into `folds` folds by
/// [`assign_folds`] (LFW's own folds when the list is laid out fold by fold, a
/// stratified interleave otherwise), the threshold for each fold is the one that
/// maximises accuracy on the other folds, and accuracy is measured on the held-out
/// fold. Returns `(mean accuracy, population std of fold accuracies, per-fold
/// thresholds)`.
pub fn ten_fold_accuracy(scores: &[(f32, bool)], folds: usize) -> (f64, f64, Vec<f64>) {
    let labels: Vec<bool> = scores.iter().map(|&(_, same)| same).collect();
    let ids = assign_folds(&labels, folds);
    let results = k_fold_accuracy(scores, &ids);
    let (mean, std) = mean_std(&results.accuracies);
    (mean, std, results.thresholds)
}

/// The threshold behind [`tar_at_far`]: the smallest `f32` threshold at which the
/// fraction of impostor scores `>= threshold` is `<= far`. Negative infinity when
/// `far` allows every impostor; `NaN` when there are no impostor pairs.
pub fn threshold_at_far(scores: &[(f32, bool)], far: f64) -> f32 {
    let impostors: Vec<f32> = scores.iter().filter(|p| !p.1).map(|p| p.0).collect();
    if impostors.is_empty() {
        return f32::NAN;
    }
    threshold_at_rate(&impostors, impostors.len(), far)
}

/// True accept rate at a false accept rate: the threshold is the smallest one such
/// that the fraction of impostor scores `>= threshold` is `<= far`, and TAR is the
/// fraction of genuine scores `>= threshold`.
///
/// The threshold can only be placed between observed impostor scores, so `far`
/// is resolved to `1 / impostors`: with fewer than `1 / far` impostor pairs (e.g.
/// 500 impostors and `far = 1e-3`) no false accept is allowed and the threshold is
/// just above the highest impostor score, i.e. this is TAR at FAR = 0 on the sample.
/// `NaN` when there are no genuine or no impostor pairs.
pub fn tar_at_far(scores: &[(f32, bool)], far: f64) -> f64 {
    let threshold = threshold_at_far(scores, far);
    if threshold.is_nan() {
        return f64::NAN;
    }
    let genuine: Vec<f32> = scores.iter().filter(|p| p.1).map(|p| p.0).collect();
    fraction_at_or_above(&genuine, threshold)
}

/// Full verification report over scored pairs `(similarity, same person)` in list
/// order. `fold_ids`, one per pair, overrides the fold split; by default 10 folds
/// are assigned with [`assign_folds`].
///
/// # Panics
/// If `fold_ids` is given with a length different from `scores`.
pub fn verification_report(scores: &[(f32, bool)], fold_ids: Option<&[usize]>) -> VerificationReport {
    let default_ids;
    let ids = match fold_ids {
        Some(ids) => ids,
        None => {
            let labels: Vec<bool> = scores.iter().map(|&(_, same)| same).collect();
            default_ids = assign_folds(&labels, 10);
            &default_ids
        }
    };
    let folds = k_fold_accuracy(scores, ids);
    let (accuracy_mean, accuracy_std) = mean_std(&folds.accuracies);
    let (best_threshold_mean, _) = mean_std(&folds.thresholds);
    let genuine_scores: Vec<f32> = scores.iter().filter(|p| p.1).map(|p| p.0).collect();
    let impostor_scores: Vec<f32> = scores.iter().filter(|p| !p.1).map(|p| p.0).collect();
    let (eer, eer_threshold) = equal_error_rate(&genuine_scores, &impostor_scores);
    VerificationReport {
        pairs: scores.len(),
        genuine: genuine_scores.len(),
        impostors: impostor_scores.len(),
        folds: folds.accuracies.len(),
        fold_accuracies: folds.accuracies,
        accuracy_mean,
        accuracy_std,
        thresholds: folds.thresholds,
        best_threshold_mean,
        tar_at_far_1e3: tar_at_far(scores, 1e-3),
        threshold_at_far_1e3: threshold_at_far(scores, 1e-3),
        tar_at_far_1e4: tar_at_far(scores, 1e-4),
        threshold_at_far_1e4: threshold_at_far(scores, 1e-4),
        eer,
        eer_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 50 genuine then 50 impostor pairs, like pairsDevTest.
    fn separable() -> Vec<(f32, bool)> {
        let mut v: Vec<(f32, bool)> = (0..50).map(|i| (0.6 + i as f32 * 0.005, true)).collect();
        v.extend((0..50).map(|i| (0.1 + i as f32 * 0.005, false)));
        v
    }

    #[test]
    fn separable_scores_give_perfect_accuracy() {
        let (mean, std, thresholds) = ten_fold_accuracy(&separable(), 10);
        assert_eq!(mean, 1.0);
        assert_eq!(std, 0.0);
        assert_eq!(thresholds.len(), 10);
        for t in thresholds {
            assert!(t > 0.345 && t < 0.6, "{t}");
        }
        let report = verification_report(&separable(), None);
        assert_eq!(report.folds, 10);
        assert_eq!(report.accuracy_mean, 1.0);
        assert_eq!(report.tar_at_far_1e3, 1.0);
        assert_eq!(report.eer, 0.0);
        assert_eq!((report.genuine, report.impostors), (50, 50));
    }

    #[test]
    fn stratified_and_lfw_block_folds() {
        // Same-block then different-block: not 10 blocks, so interleaved.
        let labels = [true, true, true, false, false, false];
        assert_eq!(assign_folds(&labels, 2), vec![0, 1, 0, 0, 1, 0]);
        // Two blocks of (same..., different...) with folds = 2: LFW blocks kept.
        let lfw = [true, true, false, true, false, false];
        assert_eq!(assign_folds(&lfw, 2), vec![0, 0, 0, 1, 1, 1]);
        // Same layout but 3 folds requested: falls back to interleave.
        assert_eq!(assign_folds(&lfw, 3), vec![0, 1, 0, 2, 1, 2]);
    }

    #[test]
    fn hand_computed_fold_accuracy() {
        // Fold 0: genuine 0.9, impostor 0.2. Fold 1: genuine 0.4, impostor 0.5.
        let scores = [(0.9, true), (0.2, false), (0.4, true), (0.5, false)];
        let r = k_fold_accuracy(&scores, &[0, 0, 1, 1]);
        // Threshold for fold 0 fit on fold 1: best is reject-all or accept-all
        // (both 1/2 correct) -> the first best, reject all (just above 0.5):
        // fold 0 then gets impostor right, genuine 0.9 accepted too -> 1.0.
        // Fold 1 fit on fold 0: midpoint 0.55 -> genuine 0.4 rejected (wrong),
        // impostor 0.5 rejected (right) -> 0.5.
        assert_eq!(r.accuracies, vec![1.0, 0.5]);
        assert!((r.thresholds[1] - 0.55).abs() < 1e-6);
    }

    #[test]
    fn tar_at_far_small_example() {
        // 4 impostors: far = 0.25 allows one false accept -> threshold just above
        // the second-highest impostor (0.5): genuine >= 0.5+ are 0.6, 0.8 -> 2/4.
        let scores = [
            (0.8, true),
            (0.6, true),
            (0.5, true),
            (0.3, true),
            (0.7, false),
            (0.5, false),
            (0.2, false),
            (0.1, false),
        ];
        assert_eq!(tar_at_far(&scores, 0.25), 0.5);
        assert_eq!(threshold_at_far(&scores, 0.25), 0.5f32.next_up());
        // Fewer than 1/far impostors: zero false accepts, above max impostor 0.7.
        assert_eq!(tar_at_far(&scores, 1e-3), 0.25);
        assert_eq!(threshold_at_far(&scores, 1e-3), 0.7f32.next_up());
        // far = 1 accepts everything.
        assert_eq!(tar_at_far(&scores, 1.0), 1.0);
        assert!(tar_at_far(&[(0.5, true)], 1e-3).is_nan());
    }

    #[test]
    fn real_pair_lists_get_ten_balanced_folds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/eval/");
        let read = |name: &str| std::fs::read_to_string(format!("{dir}{name}")).ok();
        let (Some(dev_test), Some(view2)) = (read("lfw-pairsDevTest.txt"), read("lfw-pairs.txt")) else {
            eprintln!("skipping: shared/eval pair lists not present");
            return;
        };
        for text in [dev_test, view2] {
            let labels: Vec<bool> = crate::parse_pairs(&text).unwrap().iter().map(|p| p.same).collect();
            let ids = assign_folds(&labels, 10);
            for fold in 0..10 {
                let in_fold = || labels.iter().zip(&ids).filter(move |&(_, &id)| id == fold);
                assert!(in_fold().any(|(&s, _)| s), "fold {fold} lacks same pairs");
                assert!(in_fold().any(|(&s, _)| !s), "fold {fold} lacks different pairs");
            }
            assert!(ids.iter().all(|&id| id < 10));
        }
    }

    #[test]
    fn empty_input_does_not_panic() {
        let r = verification_report(&[], None);
        assert_eq!(r.pairs, 0);
        assert!(r.accuracy_mean.is_nan());
        assert!(r.tar_at_far_1e3.is_nan());
    }
}
