//! What a score means for one search, not one comparison: the calibration gives the
//! false-match rate (FMR) per comparison of two faces, but a search of a stranger in a
//! gallery of N faces makes N comparisons. A watch-list operator needs the expected
//! number of strangers at or above the minimum score (N × FMR) and the chance that the
//! search returns anyone at all — the false-positive identification rate,
//! FPIR = 1 − (1 − FMR)^N — for their gallery size.
//!
//! The rule for rates the calibration did not measure, used everywhere these figures
//! are shown (API header, index objects, docs table):
//! - at a measured point of the table the rate is the measured one;
//! - between two measured points it is interpolated log-linearly in the score (the
//!   scale's own rule, 14 points per decade); by monotonicity the true rate lies
//!   between the two measured neighbours;
//! - above the last measured point (84 on the shipped tables) nothing was measured:
//!   the rate is only known to be at most the last measured one, so every figure
//!   derived from it is an upper bound ([`Estimate::upper_bound`]), never an
//!   extrapolation; and no score can be named for an FPIR that needs a lower rate.
//!
//! N × FMR is exact by linearity of expectation. The FPIR formula assumes the N
//! comparisons are independent; without that it is still at most min(1, N × FMR).

use serde::Serialize;

use crate::calibration::Calibration;

/// A rate or count derived from the calibration: an estimate, or only an upper bound
/// where the score lies beyond the lowest false-match rate the calibration measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    /// `true`: the true value is at most `value` (the score is above the last measured
    /// point of the calibration); `false`: `value` is the estimate itself.
    pub upper_bound: bool,
}

impl Estimate {
    /// Zero, known exactly (no faces searched).
    pub const ZERO: Estimate = Estimate { value: 0.0, upper_bound: false };

    /// The sum of two expectations (e.g. the indexes of two model packs); a bound if
    /// either part is one.
    pub fn plus(self, other: Estimate) -> Estimate {
        Estimate { value: self.value + other.value, upper_bound: self.upper_bound || other.upper_bound }
    }

    /// The `X-Expected-False-Matches` header value: the number with three significant
    /// digits (see [`format_number`]), prefixed with `<=` when it is an upper bound.
    pub fn header_value(&self) -> String {
        let number = format_number(self.value);
        if self.upper_bound { format!("<={number}") } else { number }
    }

    /// As in the docs tables: `≤ ` before an upper bound.
    pub fn display(&self) -> String {
        let number = format_number(self.value);
        if self.upper_bound { format!("≤ {number}") } else { number }
    }
}

/// Three significant digits: plain decimals from 0.001 up to 100,000, scientific
/// notation (`9.82e-7`) outside; `0` for zero. Parsable as a number by any client.
pub fn format_number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return if value.is_nan() {
            "NaN".into()
        } else if value == 0.0 {
            "0".into()
        } else {
            "inf".into()
        };
    }
    let exponent = value.abs().log10().floor() as i32;
    if (-3..5).contains(&exponent) {
        let decimals = (2 - exponent).max(0) as usize;
        let text = format!("{value:.decimals$}");
        // Rounding can carry into a new digit (9.995 → "10.00"): redo with one fewer decimal.
        let digits = text.chars().filter(char::is_ascii_digit).collect::<String>();
        if digits.trim_start_matches('0').len() > 3 && decimals > 0 {
            return format!("{value:.prec$}", prec = decimals - 1);
        }
        text
    } else {
        format!("{value:.2e}")
    }
}

/// The shipped table's measured points: (score, false-match rate), ascending in score.
fn measured(calibration: &Calibration) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for point in &calibration.points {
        match point.fmr {
            // A rate of zero was not measured as anything but "none seen": stop there.
            Some(fmr) if fmr > 0.0 => out.push((point.score, fmr)),
            _ => break,
        }
    }
    out
}

/// 1 − (1 − fmr)^n, computed without losing the small rates to rounding.
fn one_or_more(fmr: f64, gallery: u64) -> f64 {
    if gallery == 0 || fmr <= 0.0 {
        return 0.0;
    }
    if fmr >= 1.0 {
        return 1.0;
    }
    -f64::exp_m1(gallery as f64 * f64::ln_1p(-fmr))
}

impl Calibration {
    /// The highest score whose false-match rate was measured, and that rate.
    pub fn last_measured(&self) -> Option<(f64, f64)> {
        measured(self).last().copied()
    }

    /// The false-match rate per comparison at `score` (a stranger scores at or above
    /// it with this probability), by the rule in the module docs.
    pub fn false_match_rate(&self, score: f64) -> Estimate {
        let points = measured(self);
        let Some(&(first_score, first_rate)) = points.first() else {
            // No measured point at all: nothing is known beyond the trivial bound.
            return Estimate { value: 1.0, upper_bound: true };
        };
        if score <= first_score {
            return Estimate { value: first_rate, upper_bound: false };
        }
        for w in points.windows(2) {
            let ((s0, f0), (s1, f1)) = (w[0], w[1]);
            if score == s1 {
                return Estimate { value: f1, upper_bound: false };
            }
            if score < s1 {
                let t = (score - s0) / (s1 - s0);
                let value = (f0.ln() + t * (f1.ln() - f0.ln())).exp();
                return Estimate { value, upper_bound: false };
            }
        }
        let (last_score, last_rate) = points[points.len() - 1];
        Estimate { value: last_rate, upper_bound: score > last_score }
    }

    /// Expected number of gallery faces at or above `score` in one search of a person
    /// not enrolled, in a gallery of `gallery` faces: N × FMR.
    pub fn expected_false_matches(&self, score: f64, gallery: u64) -> Estimate {
        let rate = self.false_match_rate(score);
        Estimate { value: gallery as f64 * rate.value, ..rate }
    }

    /// The false-positive identification rate at `score` for `gallery` faces: the chance
    /// that a search of a person not enrolled returns anyone, 1 − (1 − FMR)^N.
    pub fn fpir(&self, score: f64, gallery: u64) -> Estimate {
        let rate = self.false_match_rate(score);
        Estimate { value: one_or_more(rate.value, gallery), ..rate }
    }

    /// The lowest score whose FPIR is at most `fpir` in a gallery of `gallery` faces, or
    /// `None` when that needs a false-match rate below the lowest the calibration
    /// measured (no score can be vouched for).
    pub fn score_for_fpir(&self, fpir: f64, gallery: u64) -> Option<f64> {
        let points = measured(self);
        let first = points.first()?;
        if gallery == 0 || fpir >= 1.0 {
            return Some(first.0);
        }
        // The per-comparison rate whose FPIR over `gallery` faces is exactly `fpir`.
        let target = -f64::exp_m1(f64::ln_1p(-fpir.max(0.0)) / gallery as f64);
        if target >= first.1 {
            return Some(first.0);
        }
        for w in points.windows(2) {
            let ((s0, f0), (s1, f1)) = (w[0], w[1]);
            if target >= f1 {
                let t = (f0.ln() - target.ln()) / (f0.ln() - f1.ln());
                return Some(s0 + t * (s1 - s0));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::CalibrationPoint;
    use crate::pipeline::Pack;

    /// Measured to 1e-6 at 84, like the shipped tables, with rates exactly on the scale.
    fn table() -> Calibration {
        let mut points: Vec<CalibrationPoint> = (0..=6)
            .map(|d| CalibrationPoint {
                score: 14.0 * d as f64,
                similarity: -1.0 + 0.2 * d as f64,
                fmr: Some(10f64.powi(-d)),
                tmr: Some(1.0),
            })
            .collect();
        points.push(CalibrationPoint { score: 100.0, similarity: 1.0, fmr: None, tmr: None });
        Calibration { pack: "t".into(), command: "t".into(), genuine_pairs: 1, impostor_pairs: 1, points }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-300)
    }

    #[test]
    fn rates_are_measured_at_points_interpolated_between_and_bounded_above() {
        let c = table();
        assert_eq!(c.false_match_rate(70.0), Estimate { value: 1e-5, upper_bound: false });
        let mid = c.false_match_rate(77.0);
        assert!(close(mid.value, 10f64.powf(-5.5)) && !mid.upper_bound, "{mid:?}");
        assert_eq!(c.false_match_rate(84.0), Estimate { value: 1e-6, upper_bound: false });
        // Above the last measured point: the last rate, as a bound, at any score.
        assert_eq!(c.false_match_rate(84.5), Estimate { value: 1e-6, upper_bound: true });
        assert_eq!(c.false_match_rate(100.0), Estimate { value: 1e-6, upper_bound: true });
        assert_eq!(c.last_measured(), Some((84.0, 1e-6)));
    }

    #[test]
    fn expected_false_matches_is_gallery_times_rate() {
        let c = table();
        let e = c.expected_false_matches(70.0, 1_000_000);
        assert!(close(e.value, 10.0) && !e.upper_bound, "{e:?}");
        assert_eq!(c.expected_false_matches(70.0, 0), Estimate::ZERO);
        let bound = c.expected_false_matches(90.0, 1000);
        assert!(close(bound.value, 1e-3) && bound.upper_bound, "{bound:?}");
    }

    #[test]
    fn fpir_is_one_minus_the_chance_of_no_false_match() {
        let c = table();
        // 1e-5 over 1e5 faces: 1 − (1 − 1e-5)^1e5 ≈ 1 − e^-1.
        let f = c.fpir(70.0, 100_000);
        assert!((f.value - (1.0 - (-1f64).exp())).abs() < 1e-5, "{f:?}");
        // Small N × FMR: FPIR ≈ N × FMR, not lost to rounding.
        let small = c.fpir(84.0, 1);
        assert!(close(small.value, 1e-6), "{small:?}");
        assert_eq!(c.fpir(70.0, 0).value, 0.0);
        assert!(c.fpir(84.0, 10_000_000).value < 1.0);
    }

    #[test]
    fn score_for_fpir_inverts_fpir_within_the_measured_range() {
        let c = table();
        for (p, n) in [(1e-2, 1000u64), (1e-3, 1000), (1e-2, 10), (0.5, 50_000), (1e-3, 1)] {
            let s = c.score_for_fpir(p, n).unwrap_or_else(|| panic!("{p} at {n}"));
            assert!((c.fpir(s, n).value - p).abs() < 1e-9 * p.max(1e-3) * 1e3, "{p} at {n}: score {s}");
        }
        // FPIR 1e-2 at 1,000 faces needs FMR ≈ 1e-5: score 70 (a hair below, since
        // 1 − 0.99^(1/1000) ≈ 1.005e-5 is a hair above 1e-5).
        let s = c.score_for_fpir(1e-2, 1000).unwrap_or_default();
        assert!(s < 70.0 && s > 69.95, "{s}");
        // 1e-3 at 10,000 faces needs 1e-7: below what was measured.
        assert_eq!(c.score_for_fpir(1e-3, 10_000), None);
        assert_eq!(c.score_for_fpir(1e-3, 0), Some(0.0));
        assert_eq!(c.score_for_fpir(1.0, 1), Some(0.0));
    }

    #[test]
    fn shipped_tables_give_the_documented_default() {
        // 70 means at most 1e-5 per comparison on both shipped packs.
        for pack in [Pack::Open, Pack::Insightface] {
            let c = Calibration::shipped(pack).unwrap_or_else(|e| panic!("{e}"));
            let r = c.false_match_rate(70.0);
            assert!(r.value <= 1e-5 && r.value > 0.9e-5 && !r.upper_bound, "{pack}: {r:?}");
            let (last, _) = c.last_measured().unwrap_or_default();
            assert_eq!(last, 84.0, "{pack}");
        }
    }

    #[test]
    fn numbers_have_three_significant_digits() {
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(9.983), "9.98");
        assert_eq!(format_number(0.0099833), "0.00998");
        assert_eq!(format_number(0.001), "0.00100");
        assert_eq!(format_number(9.82e-7), "9.82e-7");
        assert_eq!(format_number(2710.4), "2710");
        assert_eq!(format_number(9.9999), "10.0");
        assert_eq!(format_number(0.99996), "1.00");
        assert_eq!(format_number(123_456.0), "1.23e5");
        assert_eq!(Estimate { value: 9.82e-4, upper_bound: true }.header_value(), "<=9.82e-4");
        assert_eq!(Estimate { value: 0.5, upper_bound: false }.header_value(), "0.500");
        assert_eq!(Estimate { value: 0.00982, upper_bound: false }.header_value(), "0.00982");
        for text in ["9.82e-7", "0.000982", "2710"] {
            assert!(text.parse::<f64>().is_ok());
        }
    }

    #[test]
    fn sums_are_bounds_if_any_part_is() {
        let a = Estimate { value: 1.0, upper_bound: false };
        let b = Estimate { value: 0.5, upper_bound: true };
        assert_eq!(a.plus(b), Estimate { value: 1.5, upper_bound: true });
        assert_eq!(a.plus(Estimate::ZERO), a);
    }
}
