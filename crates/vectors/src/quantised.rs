//! The quantised exact scan: a pass over a compact copy of the vectors (int8 or f16
//! codes, a quarter or half of the f32 bytes) finds every row that can be among the
//! answer, and only those rows are scored again exactly in f32.
//!
//! The scan of a million faces is bound by memory bandwidth, so reading fewer bytes
//! per face is what makes it faster. The answer stays exactly the f32 scan's, by
//! construction: each query gets a proven bound `B` on |approximate − f32 score| for
//! every row (quantisation error of the rows and of the query, plus the f32 rounding
//! of both kernels), and a row is re-scored whenever its approximate score is within
//! `B` of the minimum score, and within `2B` of the k-th best approximate score (any
//! row of the f32 top k has an f32 score at least the k-th best f32 score, which is at
//! least the k-th best approximate score less `B`). Rows the codes cannot represent
//! faithfully (not finite, or far from unit length: damage) are always re-scored.
//!
//! int8: per-dimension step `s_d` (the largest |x_d| of the rows / 127, grown by a
//! quarter when a new row exceeds it, which re-encodes every row); the query is folded
//! with the steps and rounded to i16, so that the kernel is an exact integer dot
//! product (i16 × i8, i32 sums). f16: the rows rounded to half precision, the query
//! kept in f32.

use crate::scan::{self, Scored, TopK};

/// How the quantised copy stores each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// One signed byte per dimension, with a per-dimension step.
    I8,
    /// IEEE half precision.
    F16,
}

impl Codec {
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::I8 => "i8",
            Codec::F16 => "f16",
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "i8" => Ok(Codec::I8),
            "f16" => Ok(Codec::F16),
            other => Err(format!("unknown quantised codec {other:?} (i8 or f16)")),
        }
    }
}

/// A row whose squared length exceeds this (or that is not finite) is not encoded but
/// re-scored exactly on every search: the bounds below assume |x| ≤ 1.01.
const MAX_NORM2: f32 = 1.02;
/// The largest |x_d| an encoded row can have (from [`MAX_NORM2`]).
const MAX_ABS: f32 = 1.01;
/// The smallest int8 range of a dimension (avoids a zero step).
const MIN_RANGE: f32 = 1.0 / 1024.0;
/// Candidates kept by a scan piece before they are cut to the current floor.
const PRUNE_AT: usize = 4096;

#[derive(Debug, Clone)]
enum Codes {
    I8(Vec<i8>),
    F16(Vec<u16>),
}

/// The quantised copy of a row-major f32 matrix, kept in step with it.
#[derive(Debug, Clone)]
pub struct Quantised {
    dim: usize,
    rows: usize,
    codes: Codes,
    /// int8: the largest |x_d| each dimension can encode (its step is range / 127).
    range: Vec<f32>,
    /// Per dimension, an upper bound on |x_d − decoded x_d| over the encoded rows.
    err: Vec<f64>,
    /// Rows not encoded (their codes are zero): always re-scored.
    outliers: Vec<usize>,
}

fn is_outlier(x: &[f32]) -> bool {
    !(x.iter().all(|v| v.is_finite()) && x.iter().map(|v| v * v).sum::<f32>() <= MAX_NORM2)
}

impl Quantised {
    /// The codes of `matrix` (row-major, `dim` wide), with int8 ranges fitted to it.
    pub fn build(codec: Codec, dim: usize, matrix: &[f32]) -> Self {
        let mut range = vec![MIN_RANGE; dim];
        if dim > 0 {
            for x in matrix.chunks_exact(dim).filter(|x| !is_outlier(x)) {
                for (r, v) in range.iter_mut().zip(x) {
                    *r = r.max(v.abs());
                }
            }
        }
        Self::with_range(codec, dim, matrix, range)
    }

    fn with_range(codec: Codec, dim: usize, matrix: &[f32], range: Vec<f32>) -> Self {
        let rows = matrix.len().checked_div(dim).unwrap_or(0);
        let codes = match codec {
            Codec::I8 => Codes::I8(vec![0; rows * dim]),
            Codec::F16 => Codes::F16(vec![0; rows * dim]),
        };
        let mut q = Self { dim, rows, codes, range, err: vec![0.0; dim], outliers: Vec::new() };
        for row in 0..rows {
            // The ranges cover every row, so no encoding fails.
            q.encode(row, &matrix[row * dim..(row + 1) * dim]);
        }
        q
    }

    pub fn codec(&self) -> Codec {
        match self.codes {
            Codes::I8(_) => Codec::I8,
            Codes::F16(_) => Codec::F16,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes of the scan structure (codes and per-dimension tables).
    pub fn bytes(&self) -> usize {
        let codes = match &self.codes {
            Codes::I8(c) => c.capacity(),
            Codes::F16(c) => c.capacity() * 2,
        };
        codes + self.dim * 12 + self.outliers.capacity() * 8
    }

    /// Encodes row `row` (which exists) from `x`; false if an int8 range is too small.
    fn encode(&mut self, row: usize, x: &[f32]) -> bool {
        let dim = self.dim;
        self.outliers.retain(|&r| r != row);
        let outlier = is_outlier(x);
        if outlier {
            self.outliers.push(row);
        }
        match &mut self.codes {
            Codes::I8(codes) => {
                if !outlier && x.iter().zip(&self.range).any(|(v, r)| v.abs() > *r) {
                    return false;
                }
                for (d, (c, &v)) in codes[row * dim..(row + 1) * dim].iter_mut().zip(x).enumerate() {
                    if outlier {
                        *c = 0;
                        continue;
                    }
                    let step = self.range[d] as f64 / 127.0;
                    // |v| ≤ range, so the rounded code is within ±127.
                    *c = (v as f64 / step).round().clamp(-127.0, 127.0) as i8;
                    self.err[d] = self.err[d].max((v as f64 - *c as f64 * step).abs());
                }
            }
            Codes::F16(codes) => {
                for (d, (c, &v)) in codes[row * dim..(row + 1) * dim].iter_mut().zip(x).enumerate() {
                    if outlier {
                        *c = 0;
                        continue;
                    }
                    *c = f32_to_f16(v);
                    self.err[d] = self.err[d].max((v as f64 - f16_to_f32(*c) as f64).abs());
                }
            }
        }
        true
    }

    /// Re-encodes every row of `matrix` with int8 ranges wide enough for `x`.
    fn widen(&mut self, matrix: &[f32], x: &[f32]) {
        let range: Vec<f32> = self.range.iter().zip(x).map(|(r, v)| r.max((v.abs() * 1.25).min(MAX_ABS))).collect();
        *self = Self::with_range(self.codec(), self.dim, matrix, range);
    }

    /// Adds the last row of `matrix` (which holds one row more than `self`).
    pub(crate) fn push(&mut self, matrix: &[f32]) {
        let row = self.rows;
        let x = &matrix[row * self.dim..(row + 1) * self.dim];
        match &mut self.codes {
            Codes::I8(c) => c.resize(c.len() + self.dim, 0),
            Codes::F16(c) => c.resize(c.len() + self.dim, 0),
        }
        self.rows += 1;
        if !self.encode(row, x) {
            self.widen(matrix, x);
        }
    }

    /// Row `row` of `matrix` changed.
    pub(crate) fn replace(&mut self, row: usize, matrix: &[f32]) {
        let x = &matrix[row * self.dim..(row + 1) * self.dim];
        if !self.encode(row, x) {
            self.widen(matrix, x);
        }
    }

    /// Mirrors removing `row` by moving the last row into its place. The error bounds
    /// stay as they are (still bounds).
    pub(crate) fn swap_remove(&mut self, row: usize) {
        let (dim, last) = (self.dim, self.rows - 1);
        match &mut self.codes {
            Codes::I8(c) => {
                c.copy_within(last * dim..(last + 1) * dim, row * dim);
                c.truncate(last * dim);
            }
            Codes::F16(c) => {
                c.copy_within(last * dim..(last + 1) * dim, row * dim);
                c.truncate(last * dim);
            }
        }
        self.outliers.retain(|&r| r != row);
        for r in &mut self.outliers {
            if *r == last {
                *r = row;
            }
        }
        self.rows = last;
    }

    /// What one query needs to scan these codes: its own codes and its bound.
    fn prepare(&self, query: &[f32]) -> Prepared {
        let dim = self.dim;
        let norm = query.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        // Rows' quantisation: |q·(x − x̂)| ≤ Σ |q_d| · err_d.
        let rows_err: f64 = query.iter().zip(&self.err).map(|(&q, e)| (q as f64).abs() * e).sum();
        // f32 rounding of a dot product of `dim` terms is at most dim · 2⁻²⁴ · Σ|q_d x_d|
        // (γ_n bound, any summation order), and Σ|q_d x_d| ≤ |q|·|x| ≤ 1.01 |q| for an
        // encoded row (1.1 |q| for its decoded copy). f32::EPSILON is 2⁻²³: twice the
        // bound, for both the reference f32 scan and the f16 kernel.
        let f32_err = dim as f64 * f32::EPSILON as f64 * 1.1 * norm;
        let (q16, t, query_err) = match &self.codes {
            Codes::F16(_) => (Vec::new(), 1.0, 0.0),
            Codes::I8(_) => {
                // x̂_d = step_d · c_d, so q·x̂ = Σ (q_d step_d) c_d: fold the steps into
                // the query and round it to i16 with one scale t. The largest code fits
                // so that `dim` products of i16 × 127 never overflow an i32.
                let folded: Vec<f64> =
                    query.iter().zip(&self.range).map(|(&q, &r)| q as f64 * (r as f64 / 127.0)).collect();
                let amax = (i32::MAX as f64 / (127.0 * dim.max(1) as f64)).min(i16::MAX as f64).floor();
                let top = folded.iter().fold(0f64, |m, v| m.max(v.abs()));
                let t = if top > 0.0 && top.is_finite() { top / amax } else { 1.0 };
                let q16: Vec<i16> = folded.iter().map(|v| (v / t).round().clamp(-amax, amax) as i16).collect();
                // Query rounding: |Σ (q'_d − t a_d) c_d| ≤ 127 Σ |q'_d − t a_d|.
                let err: f64 = folded.iter().zip(&q16).map(|(v, &a)| (v - t * a as f64).abs()).sum::<f64>() * 127.0;
                (q16, t, err)
            }
        };
        // The approximate score is rounded to f32 once more (i8: sum × t); the
        // relative 2⁻²³ of a score of at most 1.1 |q| + the other terms covers it.
        let total = rows_err + query_err + 2.0 * f32_err;
        let bound = total + (1.1 * norm + total) * f32::EPSILON as f64 * 2.0 + 1e-7;
        // Rounded up to f32 (a NaN query gives a NaN bound: no row passes, as in f32).
        Prepared { q16, t: t as f32, bound: (bound * (1.0 + 1e-6)) as f32 }
    }

    /// Approximate scores of rows `from..from + out.len()`.
    fn score(&self, p: &Prepared, query: &[f32], from: usize, out: &mut [f32]) {
        let dim = self.dim;
        let rows = from * dim..(from + out.len()) * dim;
        match &self.codes {
            Codes::I8(c) => score_i8(&p.q16, p.t, &c[rows], out),
            Codes::F16(c) => score_f16(query, &c[rows], out),
        }
    }

    /// One piece of the pass: rows `[from, to)`. Returns the rows that may belong to
    /// the answer given what this piece saw, and its `k` best approximate scores.
    fn pass(&self, p: &Prepared, query: &[f32], from: usize, to: usize, k: usize, min: f32) -> Piece {
        const BLOCK: usize = 256;
        let mut top = TopK::new(k);
        let mut candidates = Vec::new();
        let mut scores = [0f32; BLOCK];
        let cut = |top: &TopK| (min - p.bound).max(top.floor(f32::NEG_INFINITY) - 2.0 * p.bound);
        let mut floor = cut(&top);
        let mut start = from;
        while start < to {
            let n = (to - start).min(BLOCK);
            self.score(p, query, start, &mut scores[..n]);
            for (i, &score) in scores[..n].iter().enumerate() {
                if score >= floor {
                    let s = Scored { score, row: start + i };
                    candidates.push(s);
                    top.push(s);
                    floor = cut(&top);
                }
            }
            if candidates.len() > PRUNE_AT.max(4 * k) {
                candidates.retain(|s| s.score >= floor);
            }
            start += n;
        }
        Piece { candidates, top: top.heap.into_vec() }
    }
}

struct Prepared {
    q16: Vec<i16>,
    t: f32,
    bound: f32,
}

struct Piece {
    candidates: Vec<Scored>,
    top: Vec<Scored>,
}

/// For each `(codes, k)`, the rows that must be re-scored exactly to find its `k` best
/// rows with an f32 score of at least `min_score`: a superset of them, ascending.
pub(crate) fn candidates_many(query: &[f32], parts: &[(&Quantised, usize)], min_score: f32) -> Vec<Vec<usize>> {
    let prepared: Vec<Prepared> = parts.iter().map(|(q, _)| q.prepare(query)).collect();
    let counts: Vec<usize> =
        parts.iter().map(|(q, k)| if *k == 0 || q.dim != query.len() { 0 } else { q.len() }).collect();
    let pieces = scan::split_rows(&counts, |i, from, to| {
        let (q, k) = parts[i];
        q.pass(&prepared[i], query, from, to, k, min_score)
    });
    let mut out = Vec::with_capacity(parts.len());
    for (((q, k), p), pieces) in parts.iter().zip(&prepared).zip(pieces) {
        if *k == 0 || q.dim != query.len() {
            out.push(Vec::new());
            continue;
        }
        // The k-th best approximate score over all pieces.
        let mut tops: Vec<f32> = pieces.iter().flat_map(|piece| piece.top.iter().map(|s| s.score)).collect();
        tops.sort_by(|a, b| b.total_cmp(a));
        let kth = if tops.len() >= *k { tops[*k - 1] } else { f32::NEG_INFINITY };
        let floor = (min_score - p.bound).max(kth - 2.0 * p.bound);
        let mut rows: Vec<usize> = pieces
            .iter()
            .flat_map(|piece| piece.candidates.iter().filter(|s| s.score >= floor).map(|s| s.row))
            .chain(q.outliers.iter().copied())
            .collect();
        rows.sort_unstable();
        rows.dedup();
        out.push(rows);
    }
    out
}

/// The `k` best of `rows` by exact score (`score(row)`), at least `min_score`, best
/// first, ties to the lower row: what [`scan::top_k`] returns when `rows` holds its
/// answer.
pub(crate) fn rerank<E>(
    rows: &[usize],
    k: usize,
    min_score: f32,
    mut score: impl FnMut(usize) -> Result<f32, E>,
) -> Result<Vec<Scored>, E> {
    let mut found = Vec::with_capacity(rows.len());
    for &row in rows {
        let s = score(row)?;
        if s >= min_score {
            found.push(Scored { score: s, row });
        }
    }
    found.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.row.cmp(&b.row)));
    found.truncate(k);
    Ok(found)
}

/// [`scan::top_k_many`] through the codes: each part's quantised copy and its f32
/// matrix (for the re-rank), with its `k`. The answer is exactly the f32 scan's.
pub(crate) fn top_k_many(
    query: &[f32],
    parts: &[(&Quantised, &[f32], usize)],
    dim: usize,
    min_score: f32,
) -> Vec<Vec<Scored>> {
    let codes: Vec<(&Quantised, usize)> = parts.iter().map(|(q, _, k)| (*q, *k)).collect();
    candidates_many(query, &codes, min_score)
        .into_iter()
        .zip(parts)
        .map(|(rows, (_, m, k))| {
            let score =
                |row: usize| Ok::<_, std::convert::Infallible>(scan::dot(query, &m[row * dim..(row + 1) * dim]));
            match rerank(&rows, *k, min_score, score) {
                Ok(found) => found,
                Err(never) => match never {},
            }
        })
        .collect()
}

impl Quantised {
    /// The `k` best rows (row, exact f32 score) with a score of at least `min_score`,
    /// best first, where `row_score(row)` gives a row's f32 score ([`crate::dot`] of the
    /// query and the row, read from wherever the f32 rows are kept: memory, a file).
    pub fn search<E>(
        &self,
        query: &[f32],
        k: usize,
        min_score: f32,
        row_score: impl FnMut(usize) -> Result<f32, E>,
    ) -> Result<Vec<(usize, f32)>, E> {
        let rows = candidates_many(query, &[(self, k)], min_score).pop().unwrap_or_default();
        Ok(rerank(&rows, k, min_score, row_score)?.into_iter().map(|s| (s.row, s.score)).collect())
    }

    /// The worst-case |approximate − f32 score| of `query` (for tests).
    #[cfg(test)]
    pub(crate) fn bound(&self, query: &[f32]) -> f32 {
        self.prepare(query).bound
    }
}

fn score_i8(q: &[i16], t: f32, codes: &[i8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { score_i8_avx2(q, t, codes, out) };
    }
    for (row, o) in codes.chunks_exact(q.len()).zip(out.iter_mut()) {
        *o = dot_i8(q, row) as f32 * t;
    }
}

/// Exact integer dot product (the caller keeps the sum within i32).
fn dot_i8(q: &[i16], c: &[i8]) -> i32 {
    q.iter().zip(c).map(|(&a, &b)| a as i32 * b as i32).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn score_i8_avx2(q: &[i16], t: f32, codes: &[i8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = q.len();
    let body = dim / 16 * 16;
    for (row, o) in codes.chunks_exact(dim).zip(out.iter_mut()) {
        let mut acc = _mm256_setzero_si256();
        for i in (0..body).step_by(16) {
            // SAFETY: i + 16 ≤ body ≤ dim = row.len() = q.len(); unaligned loads.
            unsafe {
                let c = _mm256_cvtepi8_epi16(_mm_loadu_si128(row.as_ptr().add(i).cast()));
                let a = _mm256_loadu_si256(q.as_ptr().add(i).cast());
                // Pairs of i16 products summed into i32 lanes: exact.
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, c));
            }
        }
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` is 32 bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
        let sum = lanes.iter().sum::<i32>() + dot_i8(&q[body..], &row[body..]);
        *o = sum as f32 * t;
    }
}

fn score_f16(q: &[f32], codes: &[u16], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has these features, checked just above.
        return unsafe { score_f16_avx2(q, codes, out) };
    }
    for (row, o) in codes.chunks_exact(q.len()).zip(out.iter_mut()) {
        *o = q.iter().zip(row).map(|(&a, &c)| a * f16_to_f32(c)).sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn score_f16_avx2(q: &[f32], codes: &[u16], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = q.len();
    let body = dim / 16 * 16;
    for (row, o) in codes.chunks_exact(dim).zip(out.iter_mut()) {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..body).step_by(16) {
            // SAFETY: i + 16 ≤ body ≤ dim = row.len() = q.len(); unaligned loads.
            unsafe {
                let x0 = _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(i).cast()));
                let x1 = _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(i + 8).cast()));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(i)), x0, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(i + 8)), x1, a1);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` is 32 bytes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a0, a1)) };
        let tail: f32 = q[body..].iter().zip(&row[body..]).map(|(&a, &c)| a * f16_to_f32(c)).sum();
        *o = lanes.iter().sum::<f32>() + tail;
    }
}

/// f32 → IEEE half, rounded to nearest even (values here are within ±1.01, so
/// overflow cannot occur; it would give infinity).
fn f32_to_f16(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let a = v.abs();
    if a.is_nan() {
        return sign | 0x7e00;
    }
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 6.103_515_6e-5 {
        // Subnormal half: a multiple of 2⁻²⁴, rounded to nearest even by f32 rounding.
        let m = (a * 16_777_216.0).round_ties_even() as u16;
        return sign | m;
    }
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mant = bits & 0x7f_ffff;
    let mut h = ((exp as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1; // a carry into the exponent is the right result
    }
    sign | h as u16
}

/// IEEE half → f32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let mant = (h & 0x3ff) as f32;
    sign * match exp {
        0 => mant * 2f32.powi(-24),
        31 => {
            if mant == 0.0 {
                f32::INFINITY
            } else {
                f32::NAN
            }
        }
        e => (1.0 + mant / 1024.0) * 2f32.powi(e - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codec_is_named_i8_or_f16_and_nothing_else() {
        assert_eq!("i8".parse::<Codec>(), Ok(Codec::I8));
        assert_eq!("f16".parse::<Codec>(), Ok(Codec::F16));
        for bad in ["f32", "I8", "i4", "", "i8-file"] {
            assert!(bad.parse::<Codec>().is_err(), "{bad:?} accepted");
        }
    }

    /// splitmix64 numbers in [-0.5, 0.5).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) as f64 / u64::MAX as f64 - 0.5) as f32
        }
        fn unit(&mut self, dim: usize) -> Vec<f32> {
            normalised((0..dim).map(|_| self.next()).collect())
        }
    }

    fn normalised(mut v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// Face-like vectors: a shared mean direction plus per-dimension spreads that
    /// differ (as real embeddings' do), so the int8 steps differ per dimension.
    fn gallery(rng: &mut Rng, rows: usize, dim: usize) -> Vec<f32> {
        let mean = rng.unit(dim);
        let spread: Vec<f32> = (0..dim).map(|d| 0.2 + (d % 7) as f32 * 0.3).collect();
        (0..rows)
            .flat_map(|_| {
                let v: Vec<f32> =
                    (0..dim).map(|d| 0.6 * mean[d] + rng.next() * spread[d] / (dim as f32).sqrt()).collect();
                normalised(v)
            })
            .collect()
    }

    /// Rows whose scores against `q` lie within ±`width` of `t`: `(t + δ) q + √(1 − (t + δ)²) u`
    /// with `u` a random unit vector orthogonal to `q`.
    fn near(rng: &mut Rng, q: &[f32], t: f32, width: f32, rows: usize) -> Vec<f32> {
        let dim = q.len();
        (0..rows)
            .flat_map(|_| {
                let mut u = rng.unit(dim);
                let along: f32 = u.iter().zip(q).map(|(a, b)| a * b).sum();
                u.iter_mut().zip(q).for_each(|(a, b)| *a -= along * b);
                let u = normalised(u);
                let s = (t + width * 2.0 * rng.next()).clamp(-1.0, 1.0);
                let c = (1.0 - s * s).max(0.0).sqrt();
                q.iter().zip(&u).map(|(a, b)| s * a + c * b).collect::<Vec<f32>>()
            })
            .collect()
    }

    fn as_bits(found: &[Scored]) -> Vec<(usize, u32)> {
        found.iter().map(|s| (s.row, s.score.to_bits())).collect()
    }

    /// Both codecs give exactly the f32 scan's rows and scores for every (k, min).
    fn assert_same(matrix: &[f32], dim: usize, query: &[f32], cases: &[(usize, f32)], what: &str) {
        for codec in [Codec::I8, Codec::F16] {
            let q = Quantised::build(codec, dim, matrix);
            for &(k, min) in cases {
                let want = scan::top_k_many(query, &[(matrix, k)], dim, min);
                let got = top_k_many(query, &[(&q, matrix, k)], dim, min);
                assert_eq!(as_bits(&got[0]), as_bits(&want[0]), "{what}: {} k {k} min {min}", codec.as_str());
            }
        }
    }

    #[test]
    fn the_bound_holds_for_every_row() {
        let mut rng = Rng(3);
        for dim in [128, 512, 37] {
            let m = gallery(&mut rng, 2000, dim);
            for codec in [Codec::I8, Codec::F16] {
                let q = Quantised::build(codec, dim, &m);
                for _ in 0..10 {
                    let query = rng.unit(dim);
                    let p = q.prepare(&query);
                    let mut approx = vec![0f32; q.len()];
                    q.score(&p, &query, 0, &mut approx);
                    for (row, a) in approx.iter().enumerate() {
                        let exact = scan::dot(&query, &m[row * dim..(row + 1) * dim]);
                        assert!(
                            (a - exact).abs() <= p.bound,
                            "{} {dim}-d: |{a} − {exact}| > {}",
                            codec.as_str(),
                            p.bound
                        );
                    }
                    // The bound is small enough to be useful.
                    let limit = if codec == Codec::I8 { 0.05 } else { 0.005 };
                    assert!(p.bound < limit, "{} {dim}-d bound {}", codec.as_str(), p.bound);
                }
            }
        }
    }

    #[test]
    fn above_threshold_results_equal_the_f32_scan_for_random_queries() {
        let mut rng = Rng(5);
        let dim = 128;
        let m = gallery(&mut rng, 3000, dim);
        for i in 0..30 {
            // Gallery rows slightly moved (mated-like) and fresh vectors (strangers).
            let query = if i % 2 == 0 {
                let r = i * 97 % 3000;
                normalised(m[r * dim..(r + 1) * dim].iter().map(|x| x + 0.05 * rng.next()).collect())
            } else {
                rng.unit(dim)
            };
            let mut cases = vec![(3000, f32::NEG_INFINITY), (1, f32::NEG_INFINITY), (10, f32::NEG_INFINITY)];
            for t in [-0.2f32, 0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.95] {
                cases.extend([(3000, t), (10, t), (1, t)]);
            }
            assert_same(&m, dim, &query, &cases, "random");
        }
    }

    /// `y` moved, dimension by dimension, next to the midpoint between the two codes
    /// around it, on the side that makes the code's score lower than the f32 score:
    /// every rounding error lines up against the query, the worst case the bound is for.
    fn adversarial(codes: &Quantised, y: &[f32], query: &[f32]) -> Vec<f32> {
        (0..y.len())
            .map(|d| {
                let (a, b) = match codes.codec() {
                    Codec::I8 => {
                        let step = codes.range[d] / 127.0;
                        let c = (y[d] / step).floor().clamp(-127.0, 126.0);
                        (c * step, (c + 1.0) * step)
                    }
                    Codec::F16 => {
                        let h = f32_to_f16(y[d]);
                        let (v, next) = (f16_to_f32(h), f16_to_f32(h + 1));
                        (v.min(next), v.max(next))
                    }
                };
                let mid = (a + b) / 2.0;
                if query[d] > 0.0 { mid - (b - a) * 0.01 } else { mid + (b - a) * 0.01 }
            })
            .collect()
    }

    #[test]
    fn above_threshold_results_equal_the_f32_scan_near_the_threshold() {
        let mut rng = Rng(9);
        for dim in [128, 512] {
            let base = gallery(&mut rng, 1000, dim);
            for i in 0..8 {
                let query = rng.unit(dim);
                let t = [0.3f32, 0.45, 0.6, 0.75][i % 4];
                for codec in [Codec::I8, Codec::F16] {
                    // Rows within ±bound of the threshold, some of them with every
                    // rounding error against the query: each is a coin toss for the
                    // codes, and must be settled by the re-rank.
                    let fitted = Quantised::build(codec, dim, &base);
                    let bound = fitted.bound(&query);
                    let mut m = base.clone();
                    m.extend(near(&mut rng, &query, t, bound, 1000));
                    m.extend(near(&mut rng, &query, t, bound / 20.0, 300));
                    let fitted = Quantised::build(codec, dim, &m);
                    let plain = near(&mut rng, &query, t, bound, 700);
                    for y in plain.chunks_exact(dim) {
                        m.extend(adversarial(&fitted, y, &query));
                    }
                    // Exact duplicates (ties at one score).
                    let r = 1100 * dim;
                    let copy = m[r..r + dim].to_vec();
                    m.extend(&copy);
                    m.extend(&copy);
                    let rows = m.len() / dim;
                    let exact: Vec<f32> = (0..rows).map(|r| scan::dot(&query, &m[r * dim..(r + 1) * dim])).collect();
                    let mut cases = vec![(rows, t), (rows, t - bound), (rows, t + bound), (rows, exact[1100])];
                    for k in [1, 5, 50, 700] {
                        cases.extend([(k, t), (k, exact[1100]), (k, f32::NEG_INFINITY)]);
                    }
                    // Thresholds at the exact f32 scores of rows near it.
                    cases.extend((2300..2330).step_by(3).map(|r| (rows, exact[r])));
                    let q = Quantised::build(codec, dim, &m);
                    for &(k, min) in &cases {
                        let want = scan::top_k_many(&query, &[(&m, k)], dim, min);
                        let got = top_k_many(&query, &[(&q, &m, k)], dim, min);
                        assert_eq!(
                            as_bits(&got[0]),
                            as_bits(&want[0]),
                            "{} {dim}-d near {t}: k {k} min {min}",
                            codec.as_str()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn kept_in_step_through_pushes_replacements_and_removals() {
        let mut rng = Rng(11);
        let dim = 64;
        let mut m: Vec<f32> = Vec::new();
        let mut q8 = Quantised::build(Codec::I8, dim, &m);
        let mut q16 = Quantised::build(Codec::F16, dim, &m);
        // Rows first small in some dimensions, then larger: the int8 ranges must widen.
        for i in 0..600 {
            let mut v = rng.unit(dim);
            if i < 50 {
                v.iter_mut().skip(dim / 2).for_each(|x| *x *= 0.01);
                v = normalised(v);
            }
            if i == 300 {
                v = vec![f32::NAN; dim]; // damage: always re-scored, never encoded
            }
            if i == 301 {
                v = vec![2.0; dim]; // not unit length: scores beyond 1, found as in f32
            }
            m.extend(&v);
            q8.push(&m);
            q16.push(&m);
        }
        for row in [5usize, 300, 10, 599] {
            let v = rng.unit(dim);
            m[row * dim..(row + 1) * dim].copy_from_slice(&v);
            q8.replace(row, &m);
            q16.replace(row, &m);
        }
        for row in [0usize, 301, 42, 100] {
            let last = m.len() / dim - 1;
            m.copy_within(last * dim..(last + 1) * dim, row * dim);
            m.truncate(last * dim);
            q8.swap_remove(row);
            q16.swap_remove(row);
        }
        for q in [&q8, &q16] {
            assert_eq!(q.len(), m.len() / dim);
        }
        m.extend(vec![3.0; dim]);
        q8.push(&m);
        q16.push(&m);
        for _ in 0..10 {
            let query = rng.unit(dim);
            for (k, min) in [(10, f32::NEG_INFINITY), (1000, 0.2), (3, 0.0)] {
                let want = as_bits(&scan::top_k_many(&query, &[(&m, k)], dim, min)[0]);
                for q in [&q8, &q16] {
                    let got = top_k_many(&query, &[(q, &m, k)], dim, min);
                    assert_eq!(as_bits(&got[0]), want, "{} k {k} min {min}", q.codec().as_str());
                }
            }
        }
    }

    #[test]
    fn many_parts_equal_each_part_alone() {
        let mut rng = Rng(13);
        let dim = 128;
        let sizes = [0usize, 1, 300, 40_000, 5];
        let ms: Vec<Vec<f32>> = sizes.iter().map(|&n| gallery(&mut rng, n, dim)).collect();
        let qs: Vec<Quantised> = ms.iter().map(|m| Quantised::build(Codec::I8, dim, m)).collect();
        let query = rng.unit(dim);
        for min in [f32::NEG_INFINITY, 0.3] {
            let parts: Vec<(&Quantised, &[f32], usize)> =
                qs.iter().zip(&ms).enumerate().map(|(i, (q, m))| (q, m.as_slice(), 5 + i)).collect();
            let many = top_k_many(&query, &parts, dim, min);
            for ((m, k), got) in ms.iter().zip(parts.iter().map(|p| p.2)).zip(&many) {
                assert_eq!(as_bits(got), as_bits(&scan::top_k_many(&query, &[(m, k)], dim, min)[0]));
            }
        }
    }

    #[test]
    fn half_precision_rounds_to_nearest_even() {
        // Every finite half survives f16 → f32 → f16.
        for h in 0..=u16::MAX {
            let v = f16_to_f32(h);
            if v.is_finite() {
                assert_eq!(f32_to_f16(v), h, "{h:#x} ({v})");
            }
        }
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        // Halfway between 1 and the next half (1 + 2⁻¹⁰): ties to even.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        // Against the CPU's own conversion where it has one.
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("f16c") {
            let mut rng = Rng(17);
            for i in 0..200_000 {
                let v = rng.next() * 2.02 * if i % 3 == 0 { 1e-3 } else { 1.0 };
                // SAFETY: the CPU has F16C, checked above.
                let hw = unsafe { hardware_f16(v) };
                assert_eq!(f32_to_f16(v), hw, "{v}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "f16c")]
    fn hardware_f16(v: f32) -> u16 {
        use std::arch::x86_64::*;
        _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set1_ps(v))) as u16
    }
}
