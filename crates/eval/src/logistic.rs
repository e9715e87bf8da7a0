//! A small, deterministic logistic regression for score fusion, with grouped
//! cross-validation.
//!
//! Fusion of a handful of liveness features has to be transparent (a few weights one
//! can read) and reproducible bit for bit (the coefficients ship as data and a
//! command regenerates them). So: f64 throughout, features standardised on the
//! training data, classes weighted to equal total weight, an L2 penalty on the weights
//! (not the intercept), and a fixed number of Newton (IRLS) steps solved by Gaussian
//! elimination in a fixed order. No randomness anywhere.
//!
//! An input may be one-sided ([`Hinge`]): only how far it lies beyond a knot (the
//! median of the positive class in the training data) counts. A cue that should only
//! ever count against the positive class (e.g. too much colour saturation for a live
//! face) then cannot be pushed to an extreme to earn credit.
//!
//! Cross-validation leaves one group out at a time (e.g. one source collection: the
//! same person and room never sit on both sides of a split), so out-of-fold scores
//! measure how the fusion carries over to captures it has not seen.

use std::collections::BTreeSet;

use serde::Serialize;

/// Newton steps; the penalised problem is strictly convex and converges in far fewer.
pub const NEWTON_STEPS: usize = 30;

/// Which side of its knot a one-sided input counts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hinge {
    /// `max(0, value − knot)`.
    Above,
    /// `max(0, knot − value)`.
    Below,
}

impl Hinge {
    pub fn apply(self, knot: f64, value: f64) -> f64 {
        match self {
            Hinge::Above => (value - knot).max(0.0),
            Hinge::Below => (knot - value).max(0.0),
        }
    }
}

/// A fitted logistic regression on standardised features.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogisticModel {
    /// Per input: its hinge and knot when one-sided.
    pub hinges: Vec<Option<(Hinge, f64)>>,
    /// Mean and scale of each (hinged) input on the training data.
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
}

impl LogisticModel {
    /// The linear score (log-odds of the positive class).
    pub fn log_odds(&self, x: &[f64]) -> f64 {
        let mut z = self.intercept;
        for (j, &v) in x.iter().enumerate() {
            z += self.weights[j] * (hinged(self.hinges[j], v) - self.mean[j]) / self.scale[j];
        }
        z
    }

    /// Probability of the positive class.
    pub fn probability(&self, x: &[f64]) -> f64 {
        let z = self.log_odds(x);
        if z >= 0.0 {
            1.0 / (1.0 + (-z).exp())
        } else {
            let e = z.exp();
            e / (1.0 + e)
        }
    }
}

fn hinged(hinge: Option<(Hinge, f64)>, value: f64) -> f64 {
    hinge.map_or(value, |(side, knot)| side.apply(knot, value))
}

/// Median of the positive-class values of column `j` (0 when there are none).
fn positive_median(x: &[Vec<f64>], y: &[bool], j: usize) -> f64 {
    let mut v: Vec<f64> = x.iter().zip(y).filter(|(_, l)| **l).map(|(r, _)| r[j]).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 }
}

/// Fits `y ~ x` (rows of equal length; `true` = positive class) with L2 penalty `l2`
/// on the standardised weights and classes weighted to equal total weight.
/// `hinges[j]` makes input `j` one-sided around the positive-class median of the
/// training data. Constant inputs get scale 1 (and, with the penalty, weight 0).
pub fn fit_logistic(x: &[Vec<f64>], y: &[bool], hinges: &[Option<Hinge>], l2: f64) -> LogisticModel {
    let d = x.first().map_or(hinges.len(), Vec::len);
    let hinges: Vec<Option<(Hinge, f64)>> =
        (0..d).map(|j| hinges.get(j).copied().flatten().map(|h| (h, positive_median(x, y, j)))).collect();
    let x: Vec<Vec<f64>> =
        x.iter().map(|r| r.iter().enumerate().map(|(j, &v)| hinged(hinges[j], v)).collect()).collect();
    let n = x.len();
    let mut mean = vec![0.0; d];
    let mut scale = vec![1.0; d];
    if n > 0 {
        for j in 0..d {
            mean[j] = x.iter().map(|r| r[j]).sum::<f64>() / n as f64;
            let var = x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n as f64;
            scale[j] = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
        }
    }
    let positives = y.iter().filter(|&&p| p).count();
    let negatives = n - positives;
    let class_weight = |p: bool| {
        let count = if p { positives } else { negatives };
        if count == 0 { 0.0 } else { n as f64 / (2.0 * count as f64) }
    };
    // Design rows: [1, standardised features].
    let rows: Vec<Vec<f64>> = x
        .iter()
        .map(|r| std::iter::once(1.0).chain(r.iter().enumerate().map(|(j, v)| (v - mean[j]) / scale[j])).collect())
        .collect();
    let mut beta = vec![0.0; d + 1];
    for _ in 0..NEWTON_STEPS {
        let mut gradient = vec![0.0; d + 1];
        let mut hessian = vec![vec![0.0; d + 1]; d + 1];
        for (row, &label) in rows.iter().zip(y) {
            let z: f64 = row.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let w = class_weight(label);
            let residual = w * (if label { 1.0 } else { 0.0 } - p);
            let curvature = w * p * (1.0 - p);
            for a in 0..=d {
                gradient[a] += residual * row[a];
                for b in 0..=d {
                    hessian[a][b] += curvature * row[a] * row[b];
                }
            }
        }
        for a in 1..=d {
            gradient[a] -= l2 * beta[a];
            hessian[a][a] += l2;
        }
        // Keeps the intercept's equation solvable when one class is absent.
        hessian[0][0] += 1e-9;
        let Some(step) = solve(hessian, gradient) else { break };
        for (b, s) in beta.iter_mut().zip(step) {
            *b += s;
        }
    }
    LogisticModel { hinges, mean, scale, intercept: beta[0], weights: beta[1..].to_vec() }
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (x, p) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// Out-of-fold probabilities: for each group (in sorted order), a model fitted on all
/// other groups scores that group's rows. Rows keep their order; with a single group
/// there is nothing to train on and every score is NaN.
pub fn leave_one_group_out(
    x: &[Vec<f64>],
    y: &[bool],
    groups: &[String],
    hinges: &[Option<Hinge>],
    l2: f64,
) -> Vec<f64> {
    let mut out = vec![f64::NAN; x.len()];
    let names: BTreeSet<&str> = groups.iter().map(String::as_str).collect();
    for name in names {
        let (train_x, train_y): (Vec<Vec<f64>>, Vec<bool>) =
            x.iter().zip(y).zip(groups).filter(|(_, g)| g.as_str() != name).map(|((r, &l), _)| (r.clone(), l)).unzip();
        if train_x.is_empty() {
            continue;
        }
        let model = fit_logistic(&train_x, &train_y, hinges, l2);
        for (i, g) in groups.iter().enumerate() {
            if g == name {
                out[i] = model.probability(&x[i]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_a_noisy_linear_problem_and_is_deterministic() {
        // y = [x0 + 0.5 x1 > 0] with a few flipped labels; x2 is noise.
        let x: Vec<Vec<f64>> = (0..60)
            .map(|i| {
                let a = ((i * 37) % 60) as f64 / 30.0 - 1.0;
                let b = ((i * 11) % 60) as f64 / 30.0 - 1.0;
                let c = ((i * 53) % 17) as f64;
                vec![a, b, c]
            })
            .collect();
        let y: Vec<bool> = x.iter().enumerate().map(|(i, r)| (r[0] + 0.5 * r[1] > 0.0) ^ (i % 19 == 0)).collect();
        let m = fit_logistic(&x, &y, &[], 1.0);
        assert!(m.weights[0] > 0.0 && m.weights[1] > 0.0);
        assert!(m.weights[0] > m.weights[1]);
        assert!(m.weights[2].abs() < m.weights[1]);
        let correct = x.iter().zip(&y).filter(|(r, l)| (m.probability(r) >= 0.5) == **l).count();
        assert!(correct >= 50, "{correct}/60");
        let again = fit_logistic(&x, &y, &[], 1.0);
        assert_eq!(m, again);
    }

    #[test]
    fn a_stronger_penalty_shrinks_weights() {
        let x: Vec<Vec<f64>> = (0..20).map(|i| vec![i as f64]).collect();
        let y: Vec<bool> = (0..20).map(|i| i >= 10).collect();
        let loose = fit_logistic(&x, &y, &[], 0.1);
        let tight = fit_logistic(&x, &y, &[], 10.0);
        assert!(loose.weights[0] > tight.weights[0] && tight.weights[0] > 0.0);
    }

    #[test]
    fn out_of_fold_scores_come_from_models_that_did_not_see_the_group() {
        // Group "b" holds the only examples with x = 5: labelled against the trend.
        let x: Vec<Vec<f64>> = vec![vec![0.0], vec![1.0], vec![4.0], vec![6.0], vec![5.0], vec![5.0]];
        let y = vec![false, false, true, true, false, false];
        let groups: Vec<String> = ["a", "a", "a", "a", "b", "b"].iter().map(|s| s.to_string()).collect();
        let oof = leave_one_group_out(&x, &y, &groups, &[], 0.1);
        assert!(oof.iter().all(|p| (0.0..=1.0).contains(p)));
        // Trained on group a only, the x = 5 rows look positive.
        assert!(oof[4] > 0.5 && oof[5] > 0.5, "{oof:?}");
        let single = leave_one_group_out(&x, &y, &vec!["a".to_string(); 6], &[], 0.1);
        assert!(single.iter().all(|p| p.is_nan()));
    }

    #[test]
    fn a_one_sided_input_earns_nothing_beyond_its_knot() {
        // Negatives have high x1; positives low. Hinged "above", x1 may only count against.
        let x: Vec<Vec<f64>> = (0..40)
            .map(|i| vec![(i % 7) as f64, if i < 20 { 1.0 + (i % 5) as f64 * 0.1 } else { 3.0 + (i % 5) as f64 }])
            .collect();
        let y: Vec<bool> = (0..40).map(|i| i < 20).collect();
        let m = fit_logistic(&x, &y, &[None, Some(Hinge::Above)], 1.0);
        let (side, knot) = m.hinges[1].expect("hinged");
        assert_eq!(side, Hinge::Above);
        assert!((knot - 1.2).abs() < 1e-12, "median of the positives: {knot}");
        assert!(m.weights[1] < 0.0);
        // Far below the knot scores exactly like at the knot: no credit for extremes.
        assert_eq!(m.probability(&[3.0, knot]), m.probability(&[3.0, -100.0]));
        assert!(m.probability(&[3.0, knot + 2.0]) < m.probability(&[3.0, knot]));
        assert_eq!(Hinge::Below.apply(2.0, 1.5), 0.5);
        assert_eq!(Hinge::Below.apply(2.0, 2.5), 0.0);
    }

    #[test]
    fn solves_a_small_system() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert!(solve(vec![vec![0.0, 0.0], vec![0.0, 0.0]], vec![1.0, 1.0]).is_none());
    }
}
