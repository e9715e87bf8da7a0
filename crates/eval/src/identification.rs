//! Open-set 1:N identification metrics (NIST FRVT 1:N definitions).
//!
//! A face search service is an open-set system: many probes show people who are not
//! enrolled at all, and the service must say "no match" for them rather than return
//! the most similar stranger. Rank-1 accuracy alone (closed set) ignores that, so
//! this module reports the FRVT pair of error rates at a threshold:
//!
//! * FPIR(t), false positive identification rate: fraction of non-mated probes
//!   (person not enrolled) whose top candidate scores `>= t`;
//! * FNIR(t), false negative identification rate: fraction of mated probes whose
//!   mate is not returned at rank 1 with a score `>= t` (the mate scores below `t`,
//!   or a non-mate outranks it, or the mate was not found at all).
//!
//! FNIR is reported at the threshold giving a target FPIR. The module also builds a
//! deterministic enrolled / left-out split from a labelled photo list.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::rates::{rate, threshold_at_rate};

/// The outcome of searching one probe against the gallery, reduced to the two
/// scores the FRVT metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProbeResult {
    /// Whether the probe's identity is enrolled in the gallery.
    pub mated: bool,
    /// Score of the probe against its mate's gallery entry (the best one if the
    /// identity has several); `None` if the mate was not scored (not returned by
    /// the search, or no face found in the probe). Ignored for non-mated probes.
    pub true_score: Option<f32>,
    /// Best score among gallery entries that are not the probe's mate (for a
    /// non-mated probe: its top score); `None` if none was scored.
    pub best_nonmate_score: Option<f32>,
}

impl ProbeResult {
    /// The mate is the rank-1 candidate: it was scored and strictly outscores every
    /// non-mate (a tie with a non-mate counts as a miss: the order is arbitrary).
    pub fn rank1_hit(&self) -> bool {
        match (self.mated, self.true_score) {
            (true, Some(mate)) => self.best_nonmate_score.is_none_or(|n| mate > n),
            _ => false,
        }
    }

    /// The mate is returned at rank 1 with a score `>= threshold`.
    pub fn hit_at(&self, threshold: f32) -> bool {
        self.rank1_hit() && self.true_score.is_some_and(|s| s >= threshold)
    }

    /// A non-mated probe produces a candidate scoring `>= threshold`.
    pub fn false_positive_at(&self, threshold: f32) -> bool {
        !self.mated && self.best_nonmate_score.is_some_and(|s| s >= threshold)
    }
}

/// FPIR and FNIR at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// Decision threshold (a candidate is returned iff its score `>= threshold`).
    pub threshold: f32,
    /// False positive identification rate at `threshold`.
    pub fpir: f64,
    /// False negative identification rate at `threshold`.
    pub fnir: f64,
}

/// Open-set identification results.
#[derive(Debug, Clone, Serialize)]
pub struct IdentificationReport {
    /// Probes whose identity is enrolled.
    pub mated_probes: usize,
    /// Probes whose identity is not enrolled.
    pub nonmated_probes: usize,
    /// Gallery entries searched (as given by the caller; reported for context).
    pub gallery_size: usize,
    /// Fraction of mated probes whose mate outscores every non-mate (closed-set
    /// rank-1 identification rate, no threshold).
    pub rank1: f64,
    /// FNIR at the threshold where FPIR <= 1e-2.
    pub fnir_at_fpir_1e2: f64,
    /// The smallest threshold with FPIR <= 1e-2 (see [`threshold_at_fpir`]).
    pub threshold_at_fpir_1e2: f32,
    /// FNIR at the threshold where FPIR <= 1e-3. With fewer than 1,000 non-mated
    /// probes this is FNIR at zero false positives on the sample.
    pub fnir_at_fpir_1e3: f64,
    /// The smallest threshold with FPIR <= 1e-3.
    pub threshold_at_fpir_1e3: f32,
    /// FPIR/FNIR at the caller's operating threshold (e.g. the service's configured
    /// match threshold), when one was given.
    pub operating_point: Option<OperatingPoint>,
}

/// FPIR(t): fraction of non-mated probes whose top score is `>= t` (`NaN` when
/// there are no non-mated probes).
pub fn fpir(probes: &[ProbeResult], threshold: f32) -> f64 {
    let nonmated = probes.iter().filter(|p| !p.mated).count();
    let hits = probes.iter().filter(|p| p.false_positive_at(threshold)).count();
    rate(hits, nonmated)
}

/// FNIR(t): fraction of mated probes whose mate is not returned at rank 1 with a
/// score `>= t` (`NaN` when there are no mated probes).
pub fn fnir(probes: &[ProbeResult], threshold: f32) -> f64 {
    let mated: Vec<&ProbeResult> = probes.iter().filter(|p| p.mated).collect();
    let misses = mated.iter().filter(|p| !p.hit_at(threshold)).count();
    rate(misses, mated.len())
}

/// FPIR and FNIR at one threshold.
pub fn operating_point(probes: &[ProbeResult], threshold: f32) -> OperatingPoint {
    OperatingPoint { threshold, fpir: fpir(probes, threshold), fnir: fnir(probes, threshold) }
}

/// The smallest `f32` threshold with FPIR `<= target`: with `k = floor(target * N)`
/// allowed false positives among `N` non-mated probes, just above the (k+1)-th
/// highest non-mated top score. With fewer than `1 / target` non-mated probes that
/// is just above the highest one (zero false positives). Negative infinity when the
/// target allows every non-mated probe through (serialised as `null`); `NaN` when
/// there are no non-mated probes.
pub fn threshold_at_fpir(probes: &[ProbeResult], target: f64) -> f32 {
    let nonmated = probes.iter().filter(|p| !p.mated).count();
    if nonmated == 0 {
        return f32::NAN;
    }
    let scores: Vec<f32> = probes.iter().filter(|p| !p.mated).filter_map(|p| p.best_nonmate_score).collect();
    threshold_at_rate(&scores, nonmated, target)
}

/// FNIR at the threshold giving FPIR `<= target` (see [`threshold_at_fpir`]);
/// `NaN` when there are no mated or no non-mated probes.
pub fn fnir_at_fpir(probes: &[ProbeResult], target: f64) -> f64 {
    let threshold = threshold_at_fpir(probes, target);
    if threshold.is_nan() {
        return f64::NAN;
    }
    fnir(probes, threshold)
}

/// Builds the identification report. `gallery_size` is only recorded;
/// `operating_threshold`, if given, adds FPIR/FNIR at that threshold.
pub fn identification_report(
    probes: &[ProbeResult],
    gallery_size: usize,
    operating_threshold: Option<f32>,
) -> IdentificationReport {
    let mated = probes.iter().filter(|p| p.mated).count();
    let rank1_hits = probes.iter().filter(|p| p.rank1_hit()).count();
    IdentificationReport {
        mated_probes: mated,
        nonmated_probes: probes.len() - mated,
        gallery_size,
        rank1: rate(rank1_hits, mated),
        fnir_at_fpir_1e2: fnir_at_fpir(probes, 1e-2),
        threshold_at_fpir_1e2: threshold_at_fpir(probes, 1e-2),
        fnir_at_fpir_1e3: fnir_at_fpir(probes, 1e-3),
        threshold_at_fpir_1e3: threshold_at_fpir(probes, 1e-3),
        operating_point: operating_threshold.map(|t| operating_point(probes, t)),
    }
}

/// An open-set evaluation split: `(identity, path)` entries for the gallery and for
/// the two kinds of probes, each sorted by identity then path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpenSetProtocol {
    /// Enrolled photos: one per enrolled identity plus every single-photo identity
    /// (distractors nobody searches for).
    pub gallery: Vec<(String, String)>,
    /// Probes whose identity is enrolled (the enrolled identities' other photos).
    pub mated_probes: Vec<(String, String)>,
    /// Probes whose identity is not enrolled (all photos of left-out identities).
    pub nonmated_probes: Vec<(String, String)>,
}

/// Splits labelled photos `(identity, path)` into an open-set protocol,
/// deterministically (independent of input order):
///
/// * identities with two or more distinct photos are sorted by name; those at even
///   positions (0, 2, ...) are enrolled, those at odd positions are left out;
/// * the gallery holds each enrolled identity's first photo (by path) and the one
///   photo of every single-photo identity (distractors);
/// * mated probes are the enrolled identities' remaining photos;
/// * non-mated probes are all photos of the left-out identities.
///
/// Rows with an empty identity are skipped; duplicate rows count once.
pub fn build_open_set_protocol(rows: &[(String, String)]) -> OpenSetProtocol {
    let mut by_identity: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (identity, path) in rows {
        if identity.is_empty() {
            continue;
        }
        by_identity.entry(identity).or_default().insert(path);
    }
    let mut protocol = OpenSetProtocol::default();
    let entry = |identity: &str, path: &str| (identity.to_string(), path.to_string());
    let mut multi_position = 0usize;
    for (identity, paths) in &by_identity {
        let mut paths = paths.iter();
        let Some(first) = paths.next() else {
            continue;
        };
        if paths.len() == 0 {
            protocol.gallery.push(entry(identity, first));
            continue;
        }
        if multi_position.is_multiple_of(2) {
            protocol.gallery.push(entry(identity, first));
            protocol.mated_probes.extend(paths.map(|path| entry(identity, path)));
        } else {
            protocol.nonmated_probes.push(entry(identity, first));
            protocol.nonmated_probes.extend(paths.map(|path| entry(identity, path)));
        }
        multi_position += 1;
    }
    protocol
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mated(true_score: Option<f32>, best_nonmate_score: Option<f32>) -> ProbeResult {
        ProbeResult { mated: true, true_score, best_nonmate_score }
    }

    fn nonmated(top: Option<f32>) -> ProbeResult {
        ProbeResult { mated: false, true_score: None, best_nonmate_score: top }
    }

    fn tiny() -> Vec<ProbeResult> {
        vec![
            mated(Some(0.9), Some(0.3)), // hit at any t <= 0.9
            mated(Some(0.6), Some(0.2)), // hit at t <= 0.6
            mated(Some(0.5), Some(0.7)), // outranked by a non-mate: always a miss
            mated(None, Some(0.4)),      // mate not found: always a miss
            nonmated(Some(0.8)),
            nonmated(Some(0.55)),
            nonmated(Some(0.1)),
            nonmated(None),
        ]
    }

    #[test]
    fn fpir_fnir_hand_computed() {
        let p = tiny();
        // t = 0.5: non-mated tops >= 0.5: 0.8, 0.55 -> 2/4. Mated misses: #3, #4 -> 2/4.
        assert_eq!(fpir(&p, 0.5), 0.5);
        assert_eq!(fnir(&p, 0.5), 0.5);
        // t = 0.7: FPIR 1/4 (0.8). FNIR: #2 now below -> 3/4.
        assert_eq!(fpir(&p, 0.7), 0.25);
        assert_eq!(fnir(&p, 0.7), 0.75);
        // FPIR <= 0.25 allows 1 of 4: threshold just above second highest (0.55).
        assert_eq!(threshold_at_fpir(&p, 0.25), 0.55f32.next_up());
        assert_eq!(fnir_at_fpir(&p, 0.25), 0.5);
        // FPIR <= 1e-2 with 4 non-mated: zero false positives, above 0.8 -> only
        // the 0.9 mate is found -> FNIR 3/4.
        assert_eq!(threshold_at_fpir(&p, 1e-2), 0.8f32.next_up());
        let r = identification_report(&p, 10, Some(0.5));
        assert_eq!((r.mated_probes, r.nonmated_probes, r.gallery_size), (4, 4, 10));
        assert_eq!(r.rank1, 0.5);
        assert_eq!(r.fnir_at_fpir_1e2, 0.75);
        assert_eq!(r.fnir_at_fpir_1e3, 0.75);
        let op = r.operating_point.unwrap();
        assert_eq!((op.fpir, op.fnir), (0.5, 0.5));
    }

    #[test]
    fn ties_with_a_nonmate_are_misses() {
        assert!(!mated(Some(0.5), Some(0.5)).rank1_hit());
        assert!(mated(Some(0.5), None).rank1_hit());
        assert!(!nonmated(Some(0.9)).rank1_hit());
    }

    #[test]
    fn empty_sides_are_nan() {
        let r = identification_report(&[], 0, None);
        assert!(r.rank1.is_nan() && r.fnir_at_fpir_1e2.is_nan());
        assert!(r.threshold_at_fpir_1e2.is_nan());
    }

    #[test]
    fn open_set_protocol_split() {
        let rows: Vec<(String, String)> = [
            ("Carol", "c2.jpg"),
            ("Alice", "a2.jpg"),
            ("Alice", "a1.jpg"),
            ("Bob", "b1.jpg"),
            ("Bob", "b2.jpg"),
            ("Bob", "b3.jpg"),
            ("Carol", "c1.jpg"),
            ("Dave", "d1.jpg"),
            ("", "unknown.jpg"),
            ("Alice", "a1.jpg"),
        ]
        .iter()
        .map(|(i, p)| (i.to_string(), p.to_string()))
        .collect();
        let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(i, p)| (i.to_string(), p.to_string())).collect()
        };
        let protocol = build_open_set_protocol(&rows);
        // Multi-photo identities sorted: Alice (0, enrolled), Bob (1, left out),
        // Carol (2, enrolled). Dave has one photo: distractor.
        assert_eq!(protocol.gallery, s(&[("Alice", "a1.jpg"), ("Carol", "c1.jpg"), ("Dave", "d1.jpg")]));
        assert_eq!(protocol.mated_probes, s(&[("Alice", "a2.jpg"), ("Carol", "c2.jpg")]));
        assert_eq!(protocol.nonmated_probes, s(&[("Bob", "b1.jpg"), ("Bob", "b2.jpg"), ("Bob", "b3.jpg")]));
        let mut reversed = rows.clone();
        reversed.reverse();
        assert_eq!(build_open_set_protocol(&reversed), protocol);
    }
}
