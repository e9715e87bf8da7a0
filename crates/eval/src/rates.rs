//! Threshold primitives shared by verification, identification and liveness.
//!
//! All three evaluations reduce to the same question: given scores of a class that
//! should be accepted and of a class that should be rejected, where does a
//! threshold sit and what fraction of each side passes it. Keeping that logic in one
//! place keeps the tie and edge-case conventions identical everywhere:
//!
//! * the decision rule is always "accept iff `score >= threshold`";
//! * `NaN` scores are never accepted (they count in denominators as rejections).

/// `num / den`, or `NaN` when the denominator is zero (an undefined rate).
pub(crate) fn rate(num: usize, den: usize) -> f64 {
    if den == 0 { f64::NAN } else { num as f64 / den as f64 }
}

/// Scores sorted ascending with `NaN` mapped to negative infinity (never accepted).
fn sorted_ascending(scores: &[f32]) -> Vec<f32> {
    let mut v: Vec<f32> = scores.iter().map(|&s| if s.is_nan() { f32::NEG_INFINITY } else { s }).collect();
    v.sort_by(f32::total_cmp);
    v
}

/// Number of scores in an ascending-sorted slice that are `>= t`.
fn count_at_or_above(sorted_asc: &[f32], t: f32) -> usize {
    sorted_asc.len() - sorted_asc.partition_point(|&x| x < t)
}

/// The smallest `f32` threshold `t` such that at most `max_rate * total` of the
/// negative scores satisfy `score >= t`.
///
/// `total` is the denominator of the rate; it may exceed `negatives.len()` when some
/// negative trials produced no score at all (they can never be accepted). With
/// `k = floor(max_rate * total)` allowed false accepts, the answer is the next `f32`
/// above the (k+1)-th highest negative score, so that score and everything equal to
/// it is rejected. When fewer than `1 / max_rate` negatives exist, `k = 0` and the
/// threshold sits just above the highest negative score. Returns negative infinity
/// when there are at most `k` negative scores (any threshold satisfies the bound).
pub(crate) fn threshold_at_rate(negatives: &[f32], total: usize, max_rate: f64) -> f32 {
    // The epsilon keeps e.g. 1e-3 * 1000 from flooring to 0 through rounding error.
    let allowed = (max_rate * total as f64 + 1e-9).floor().max(0.0) as usize;
    let mut desc: Vec<f32> = negatives.iter().copied().filter(|s| !s.is_nan()).collect();
    desc.sort_by(|a, b| b.total_cmp(a));
    match desc.get(allowed) {
        Some(s) => s.next_up(),
        None => f32::NEG_INFINITY,
    }
}

/// Fraction of `scores` with `score >= t` (`NaN` when `scores` is empty).
pub(crate) fn fraction_at_or_above(scores: &[f32], t: f32) -> f64 {
    rate(scores.iter().filter(|&&s| s >= t).count(), scores.len())
}

/// Equal error rate between positives (accepted when `score >= t`; error = rejected)
/// and negatives (error = accepted).
///
/// Sweeps every distinct score (and one value above the highest, where everything is
/// rejected) as a threshold and picks the one where the two error rates are closest;
/// ties go to the lowest threshold. Returns `(EER, threshold)` with the EER taken as
/// the mean of the two rates at that threshold (they are rarely exactly equal on
/// finite data). `(NaN, NaN)` when either side is empty.
pub(crate) fn equal_error_rate(positives: &[f32], negatives: &[f32]) -> (f64, f32) {
    if positives.is_empty() || negatives.is_empty() {
        return (f64::NAN, f32::NAN);
    }
    let pos = sorted_ascending(positives);
    let neg = sorted_ascending(negatives);
    let mut candidates: Vec<f32> = pos.iter().chain(neg.iter()).copied().filter(|s| s.is_finite()).collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    if let Some(&max) = candidates.last() {
        candidates.push(max.next_up());
    }
    let mut best: Option<(f64, f64, f32)> = None; // (|diff|, eer, threshold)
    for &t in &candidates {
        let false_reject = 1.0 - count_at_or_above(&pos, t) as f64 / pos.len() as f64;
        let false_accept = count_at_or_above(&neg, t) as f64 / neg.len() as f64;
        let diff = (false_accept - false_reject).abs();
        if best.is_none_or(|(d, _, _)| diff < d) {
            best = Some((diff, (false_accept + false_reject) / 2.0, t));
        }
    }
    match best {
        Some((_, eer, t)) => (eer, t),
        // Only non-finite scores: every threshold rejects everything.
        None => (0.5, f32::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_rejects_top_negatives() {
        let neg = [0.1, 0.5, 0.9, 0.3];
        // 0 of 4 allowed: just above the max.
        assert_eq!(threshold_at_rate(&neg, 4, 0.1), 0.9f32.next_up());
        // 1 of 4 allowed: just above the second highest.
        assert_eq!(threshold_at_rate(&neg, 4, 0.25), 0.5f32.next_up());
        // Everything allowed.
        assert_eq!(threshold_at_rate(&neg, 4, 1.0), f32::NEG_INFINITY);
        // Ties at the boundary are all rejected.
        let tied = [0.7, 0.7, 0.2];
        assert_eq!(threshold_at_rate(&tied, 3, 0.34), 0.7f32.next_up());
    }

    #[test]
    fn eer_of_symmetric_overlap() {
        // FAR/FRR at t=0.6 are 1/4 and 1/4 (hand-computed).
        let pos = [0.3, 0.6, 0.7, 0.8];
        let neg = [0.2, 0.3, 0.4, 0.7];
        let (eer, t) = equal_error_rate(&pos, &neg);
        assert!((eer - 0.25).abs() < 1e-12);
        assert_eq!(t, 0.6);
    }

    #[test]
    fn eer_of_separable_is_zero() {
        let (eer, t) = equal_error_rate(&[0.6, 0.9], &[0.1, 0.4]);
        assert_eq!(eer, 0.0);
        assert_eq!(t, 0.6);
        assert!(equal_error_rate(&[], &[0.1]).0.is_nan());
    }
}
