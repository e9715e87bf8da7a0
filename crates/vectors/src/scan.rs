//! The exact scan: every stored vector against the query, keeping the best rows.
//!
//! A million 128-d faces are 512 MB, so the scan is bound by memory bandwidth; it runs
//! in one pass over the contiguous matrix, split across cores for large collections,
//! with the dot-product kernel compiled for the widest SIMD the CPU has (chosen once
//! at run time, since release builds target the x86-64 baseline).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

/// Rows per thread below which a second thread costs more than it saves.
const ROWS_PER_THREAD: usize = 32_768;
/// Rows scored per kernel call: large enough to amortise the call, small enough for L1.
const BLOCK_ROWS: usize = 256;

/// A scored row; ordered so that a `BinaryHeap` of them is a min-heap on the score.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    pub score: f32,
    pub row: usize,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the heap's top is the worst kept row. Ties keep the lower row.
        other.score.total_cmp(&self.score).then_with(|| self.row.cmp(&other.row))
    }
}

/// Keeps the `k` best rows seen.
pub(crate) struct TopK {
    k: usize,
    pub(crate) heap: BinaryHeap<Scored>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        Self { k, heap: BinaryHeap::with_capacity(k + 1) }
    }

    /// The score a row must beat to enter.
    pub(crate) fn floor(&self, min_score: f32) -> f32 {
        if self.heap.len() < self.k {
            min_score
        } else {
            self.heap.peek().map_or(min_score, |s| s.score.max(min_score))
        }
    }

    pub(crate) fn push(&mut self, s: Scored) {
        if self.k == 0 {
            return;
        }
        self.heap.push(s);
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }
}

/// The `k` rows of `matrix` (row-major, `dim` columns) most similar to `query` with a
/// score of at least `min_score`, best first.
#[cfg(test)]
pub(crate) fn top_k(query: &[f32], matrix: &[f32], dim: usize, k: usize, min_score: f32) -> Vec<Scored> {
    top_k_many(query, &[(matrix, k)], dim, min_score).pop().unwrap_or_default()
}

/// [`top_k`] of several matrices at once, each `(matrix, k)` with its own `k`: one
/// pass over all their rows, split across threads by rows, not by matrix, so that many
/// small matrices (the indexes of one search) cost what one matrix of their total size
/// does. Each matrix's answer is exactly what [`top_k`] alone gives: its `k` best rows
/// by score, ties to the lower row.
pub(crate) fn top_k_many(query: &[f32], matrices: &[(&[f32], usize)], dim: usize, min_score: f32) -> Vec<Vec<Scored>> {
    if dim == 0 {
        return vec![Vec::new(); matrices.len()];
    }
    let counts: Vec<usize> = matrices.iter().map(|(m, _)| m.len() / dim).collect();
    let pieces = split_rows(&counts, |i, a, b| {
        let (m, k) = matrices[i];
        scan_range(query, &m[a * dim..b * dim], dim, a, k, min_score)
    });
    let mut kept: Vec<Vec<Scored>> = pieces.into_iter().map(|p| p.into_iter().flatten().collect()).collect();
    for (found, (_, k)) in kept.iter_mut().zip(matrices) {
        found.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.row.cmp(&b.row)));
        found.truncate(*k);
    }
    kept
}

/// Runs `scan(matrix, from, to)` over the rows of several matrices (`counts[i]` rows
/// each) in one pass, split across threads by rows, not by matrix, so that many small
/// matrices cost what one of their total size does. Returns, per matrix, the results
/// of its pieces (local row ranges `[from, to)`, in no particular order).
pub(crate) fn split_rows<T: Send>(counts: &[usize], scan: impl Fn(usize, usize, usize) -> T + Sync) -> Vec<Vec<T>> {
    // Where each matrix starts in the rows of all of them.
    let mut starts = Vec::with_capacity(counts.len());
    let mut total = 0usize;
    for &rows in counts {
        starts.push(total);
        total += rows;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(total.div_ceil(ROWS_PER_THREAD));
    // The rows [start, end) of all matrices, as (matrix, its local rows) pieces.
    let scan = |start: usize, end: usize| -> Vec<(usize, T)> {
        let mut out = Vec::new();
        for (i, (&rows, &first)) in counts.iter().zip(&starts).enumerate() {
            let (from, to) = (start.max(first), end.min(first + rows));
            if from < to {
                out.push((i, scan(i, from - first, to - first)));
            }
        }
        out
    };
    let pieces = if threads <= 1 {
        scan(0, total)
    } else {
        let per = total.div_ceil(threads);
        std::thread::scope(|s| {
            let parts: Vec<_> =
                (0..threads).map(|t| s.spawn(move || scan(t * per, ((t + 1) * per).min(total)))).collect();
            let mut all = Vec::new();
            for p in parts {
                // A scan cannot panic on valid slices; if one did, re-raise it here.
                all.extend(p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
            all
        })
    };
    let mut per_matrix: Vec<Vec<T>> = counts.iter().map(|_| Vec::new()).collect();
    for (i, piece) in pieces {
        per_matrix[i].push(piece);
    }
    per_matrix
}

fn scan_range(query: &[f32], matrix: &[f32], dim: usize, first_row: usize, k: usize, min_score: f32) -> Vec<Scored> {
    if k == 0 {
        return Vec::new();
    }
    let mut top = TopK::new(k);
    let mut scores = [0f32; BLOCK_ROWS];
    for (b, block) in matrix.chunks(BLOCK_ROWS * dim).enumerate() {
        let n = block.len() / dim;
        score_block(query, block, &mut scores[..n]);
        let mut floor = top.floor(min_score);
        for (i, &score) in scores[..n].iter().enumerate() {
            if score >= floor {
                top.push(Scored { score, row: first_row + b * BLOCK_ROWS + i });
                floor = top.floor(min_score);
            }
        }
    }
    top.heap.into_vec()
}

type BlockKernel = fn(&[f32], &[f32], &mut [f32]);

/// Scores every row of `block` against `query` (`out.len()` rows).
pub(crate) fn score_block(query: &[f32], block: &[f32], out: &mut [f32]) {
    static KERNEL: OnceLock<BlockKernel> = OnceLock::new();
    (KERNEL.get_or_init(pick_kernel))(query, block, out)
}

/// The name of the kernel this CPU uses, for benchmark reports.
pub fn kernel_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    "portable"
}

fn pick_kernel() -> BlockKernel {
    #[cfg(target_arch = "x86_64")]
    {
        match kernel_name() {
            // SAFETY (both): the CPU supports the features the kernel was compiled for,
            // as checked by `kernel_name` just above.
            "avx512" => return |q, b, o| unsafe { score_block_avx512(q, b, o) },
            "avx2+fma" => return |q, b, o| unsafe { score_block_avx2(q, b, o) },
            _ => {}
        }
    }
    score_block_portable
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn score_block_avx512(query: &[f32], block: &[f32], out: &mut [f32]) {
    score_block_portable(query, block, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn score_block_avx2(query: &[f32], block: &[f32], out: &mut [f32]) {
    score_block_portable(query, block, out)
}

/// Inlined into each feature-specific wrapper, where the compiler vectorises it with
/// that wrapper's instruction set.
#[inline(always)]
fn score_block_portable(query: &[f32], block: &[f32], out: &mut [f32]) {
    for (row, o) in block.chunks_exact(query.len()).zip(out.iter_mut()) {
        *o = dot(query, row);
    }
}

/// Dot product with sixteen independent accumulators, which lets the compiler use
/// SIMD lanes without reassociating a single sum.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn kernels_match_naive_dot() {
        for dim in [1, 7, 16, 37, 128, 512] {
            let q: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
            let m: Vec<f32> = (0..dim * 5).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut out = [0f32; 5];
            score_block(&q, &m, &mut out);
            for (r, o) in out.iter().enumerate() {
                let want = naive(&q, &m[r * dim..(r + 1) * dim]);
                assert!((o - want).abs() < 1e-3 * (1.0 + want.abs()), "dim {dim} row {r}: {o} vs {want}");
            }
            score_block_portable(&q, &m, &mut out);
            assert!((out[0] - naive(&q, &m[..dim])).abs() < 1e-3 * (1.0 + out[0].abs()));
        }
    }

    #[test]
    fn top_k_is_exact_across_threads_and_blocks() {
        let dim = 8;
        let rows = 100_000; // several threads and blocks
        let m: Vec<f32> = (0..rows * dim).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let q = vec![0.3f32, -0.1, 0.5, 0.2, -0.4, 0.1, 0.0, 0.7];
        let mut want: Vec<(f32, usize)> = (0..rows).map(|r| (naive(&q, &m[r * dim..(r + 1) * dim]), r)).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let got = top_k(&q, &m, dim, 25, f32::NEG_INFINITY);
        assert_eq!(got.len(), 25);
        for (g, w) in got.iter().zip(&want) {
            assert!((g.score - w.0).abs() < 1e-4, "{} vs {}", g.score, w.0);
        }
        // The floor filters; k larger than the rows returns every passing row.
        let floor = want[9].0;
        assert!(top_k(&q, &m, dim, 1000, floor).iter().all(|s| s.score >= floor));
        assert_eq!(top_k(&q, &m[..3 * dim], dim, 10, f32::NEG_INFINITY).len(), 3);
        assert!(top_k(&q, &m, dim, 0, 0.0).is_empty());
    }

    #[test]
    fn top_k_many_equals_top_k_of_each_matrix() {
        let dim = 8;
        // Sizes around the thread split and the block size, an empty one, and
        // duplicated rows (ties) across and within matrices.
        let sizes = [0usize, 1, 255, 257, 40_000, 3, 70_000, 10];
        let mut seed = 1u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % 2000) as f32 / 1000.0 - 1.0
        };
        let mut matrices: Vec<Vec<f32>> = sizes.iter().map(|&n| (0..n * dim).map(|_| next()).collect()).collect();
        let copy: Vec<f32> = matrices[6][..dim].to_vec();
        matrices[4][dim..2 * dim].copy_from_slice(&copy);
        matrices[4][5 * dim..6 * dim].copy_from_slice(&copy);
        let q: Vec<f32> = (0..dim).map(|_| next()).collect();
        for (k, min) in [(1, f32::NEG_INFINITY), (16, f32::NEG_INFINITY), (50, 0.2), (100_000, 0.5)] {
            let ks: Vec<usize> = (0..sizes.len()).map(|i| k + i % 3).collect();
            let input: Vec<(&[f32], usize)> = matrices.iter().zip(&ks).map(|(m, &k)| (m.as_slice(), k)).collect();
            let many = top_k_many(&q, &input, dim, min);
            assert_eq!(many.len(), matrices.len());
            for ((m, &k), got) in matrices.iter().zip(&ks).zip(&many) {
                // By hand: every row scored, filtered, sorted, cut.
                let mut want: Vec<(u32, usize)> = m
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(row, v)| (dot(&q, v), row))
                    .filter(|(s, _)| *s >= min)
                    .map(|(s, row)| (s.to_bits(), row))
                    .collect();
                want.sort_by(|a, b| f32::from_bits(b.0).total_cmp(&f32::from_bits(a.0)).then(a.1.cmp(&b.1)));
                want.truncate(k);
                let got: Vec<(u32, usize)> = got.iter().map(|s| (s.score.to_bits(), s.row)).collect();
                assert_eq!(got, want, "k {k} min {min}");
            }
        }
    }
}
