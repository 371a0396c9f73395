//! Causal attention over a whole sequence in query blocks, so that the scores above the
//! diagonal are neither computed nor stored where whole blocks of them are masked.
//!
//! With the sequence's `T` queries in `n` blocks, block `i` (queries `r0..r1`) sees keys
//! `0..r1` only: its scores are `[b, h, r1 − r0, r1]`, and its causal mask is the bottom-right
//! aligned one a KV cache uses (query `r0 + j` sees keys `0..=r0 + j`). Every product and
//! row kernel of attention's forward and backward then does `(n + 1) / 2n` of the work and
//! traffic of the square form: 3/4 with two blocks. The price is more, smaller launches, and
//! in backward the key and value gradients of the blocks summed over their first `r1` rows
//! (`ModelBackend::gemm_add_rows`: on CUDA, cuBLAS adds each block's product into the last
//! block's in place, as a GEMM with `β = 1`) and q's gathered from the blocks
//! (`ModelBackend::gemm_rows`: on CUDA, each block's product written into its rows).
//!
//! By default a sequence is cut in [`DEFAULT_BLOCKS`] where its scores hold at least
//! [`MIN_SCORES`] elements (`b·h·T²`: the 1.3B shape's from 2 × 512 up). Each block costs a few
//! more launches, a couple of milliseconds of host work a step at the 1.3B shape, so below that
//! size, where the host rather than the GPU sets a step's pace, the square form is kept.
//! `LAW_POLYGLOT_ATTENTION_BLOCKS=n` (read once) cuts every sequence long enough in `n`, 1 for
//! the square form. A block keeps at least [`MIN_ROWS`] queries, so short sequences stay
//! whole.

use std::cell::Cell;
use std::ops::Range;
use std::sync::OnceLock;

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

use crate::ModelBackend;

/// The variable that picks the number of query blocks.
pub const BLOCKS_ENV: &str = "LAW_POLYGLOT_ATTENTION_BLOCKS";

/// The blocks a sequence is cut into when the variable is not set.
pub const DEFAULT_BLOCKS: usize = 2;

/// Unless the variable says otherwise, scores of fewer elements (`b·h·T²`) stay whole.
pub const MIN_SCORES: usize = 1 << 23;

/// The fewest queries a block may hold (a sequence shorter than two such blocks stays whole).
pub const MIN_ROWS: usize = 128;

/// Block boundaries are multiples of this (where blocks hold at least that many queries): the
/// slices of q, k and v then start on aligned addresses, views rather than copies.
const ALIGN: usize = 16;

thread_local! {
    /// Set by [`with_blocks`]: `(blocks, fewest rows)` for this thread's calls.
    static OVERRIDE: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// The number of blocks `LAW_POLYGLOT_ATTENTION_BLOCKS` asks for (read once), if it is set.
fn configured() -> Option<usize> {
    static BLOCKS: OnceLock<Option<usize>> = OnceLock::new();
    *BLOCKS.get_or_init(|| match std::env::var(BLOCKS_ENV) {
        Err(_) => None,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                eprintln!(
                    "warning: {BLOCKS_ENV}={v:?} is not a number of blocks (1 or more); \
                     using the default"
                );
                None
            }
        },
    })
}

/// For tests and benchmarks: `f` with attention on this thread cut into `blocks` blocks of at
/// least `min_rows` queries, whatever the variable says.
pub fn with_blocks<T>(blocks: usize, min_rows: usize, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<(usize, usize)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some((blocks, min_rows.max(1))))));
    f()
}

/// The query blocks of attention's `[b, h, T, ·]` queries (`dims`), in order: `0..T` alone,
/// or contiguous ranges of nearly equal size that cover it.
pub fn query_blocks(dims: [usize; 4]) -> Vec<Range<usize>> {
    let [b, h, t, _] = dims;
    let (n, min_rows) = OVERRIDE.with(Cell::get).unwrap_or_else(|| {
        let n = configured().unwrap_or(match b * h * t * t >= MIN_SCORES {
            true => DEFAULT_BLOCKS,
            false => 1,
        });
        (n, MIN_ROWS)
    });
    split(t, n, min_rows)
}

fn split(t: usize, n: usize, min_rows: usize) -> Vec<Range<usize>> {
    let n = n.min(t / min_rows.max(1)).max(1);
    let align = if min_rows >= ALIGN { ALIGN } else { 1 };
    let bounds: Vec<usize> = (0..=n).map(|i| t * i / n / align * align).collect();
    let mut blocks: Vec<Range<usize>> = bounds.windows(2).map(|w| w[0]..w[1]).collect();
    if let Some(last) = blocks.last_mut() {
        last.end = t;
    }
    blocks.retain(|r| !r.is_empty());
    if blocks.is_empty() {
        blocks.push(0..t);
    }
    blocks
}

/// Positions `rows` of `t` (`[b, h, T, d]`: q, k, v or a gradient), `[b, h, rows, d]` (a view
/// where the backend allows).
pub fn rows<B: Backend>(t: &Tensor<B, 4>, rows: Range<usize>) -> Tensor<B, 4> {
    let [b, h, _, d] = t.dims();
    t.clone().slice([0..b, 0..h, rows, 0..d])
}

/// Causal self-attention (`q, k, v: [b, h, T, d]`) as `attend` computes it (bottom-right
/// aligned causal attention, `S ≥ T`), one call per query block on the keys and values it
/// sees. The blocks' outputs are gathered in the `[b, T, h, d]` layout the heads are merged in
/// ([`ModelBackend::concat`]; on the CubeCL backends one block's output is laid out so too)
/// and returned as its `[b, h, T, d]` view: the merge needs no copy of its own.
pub fn attend_in_blocks<B: ModelBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    attend: impl Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let blocks = query_blocks(q.dims());
    if blocks.len() == 1 {
        let y = attend(q, k, v).swap_dims(1, 2);
        return B::concat(vec![y], 1).swap_dims(1, 2);
    }
    let parts = blocks
        .into_iter()
        .map(|r| {
            let seen = 0..r.end;
            attend(rows(&q, r), rows(&k, seen.clone()), rows(&v, seen)).swap_dims(1, 2)
        })
        .collect();
    B::concat(parts, 1).swap_dims(1, 2)
}

/// `acc` (`[b, h, S, n]`) with `a·b` (`[b, h, s, n]`, `s ≤ S`) added to its first `s` rows, with
/// burn's ops: the product from f32 copies of the factors (rounded to bf16 first with `bf16`:
/// bf16 factors multiplied in f32, as cuBLAS does, not a bf16 product rounded), the sum in f32,
/// written back in `acc`'s dtype (rounded once). `ModelBackend::gemm_add_rows` where cuBLAS
/// does not run it.
pub fn add_product_to_rows<B: Backend>(
    acc: Tensor<B, 4>,
    a: Tensor<B, 4>,
    b: Tensor<B, 4>,
    bf16: bool,
) -> Tensor<B, 4> {
    let f32 = |t: Tensor<B, 4>| match bf16 {
        true => t.cast(FloatDType::BF16).cast(FloatDType::F32),
        false => t.cast(FloatDType::F32),
    };
    let part = f32(a).matmul(f32(b));
    let [n0, n1, s, n] = part.dims();
    let first = [0..n0, 0..n1, 0..s, 0..n];
    let dtype = acc.dtype();
    let sum = acc.clone().slice(first.clone()).cast(FloatDType::F32) + part;
    acc.slice_assign(first, sum.cast(dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_sequence_on_aligned_bounds() {
        assert_eq!(split(512, 2, 128), vec![0..256, 256..512]);
        assert_eq!(
            split(512, 4, 128),
            vec![0..128, 128..256, 256..384, 384..512]
        );
        assert_eq!(split(500, 2, 128), vec![0..240, 240..500]);
        // too short for two blocks of 128, or asked for one
        assert_eq!(split(200, 2, 128), vec![0..200]);
        assert_eq!(split(512, 1, 128), vec![0..512]);
        // as many blocks as fit
        assert_eq!(split(300, 8, 128), vec![0..144, 144..300]);
        // unaligned below 16 rows a block, as tests ask
        assert_eq!(split(7, 3, 1), vec![0..2, 2..4, 4..7]);
        assert_eq!(split(1, 4, 1), vec![0..1]);
        assert_eq!(split(0, 2, 1), vec![0..0]);
    }

    #[test]
    fn the_override_holds_on_its_thread_only_while_it_runs() {
        let dims = [1, 1, 6, 4];
        let inside = with_blocks(3, 1, || {
            let other = std::thread::spawn(move || query_blocks(dims))
                .join()
                .unwrap();
            (query_blocks(dims), other)
        });
        assert_eq!(inside.0, vec![0..2, 2..4, 4..6]);
        // another thread, and this one afterwards, read the variable (6 rows: one block)
        assert_eq!(inside.1, vec![0..6]);
        assert_eq!(query_blocks(dims), vec![0..6]);
    }

    /// Where the variable is not set (as in tests): two blocks from `b·h·T²` = 2²³ up.
    #[test]
    fn by_default_large_scores_take_two_blocks() {
        if configured().is_some() {
            return;
        }
        // the 1.3B shape (16 heads) at 1 × 512 stays whole, at 2 × 512 and 8 × 512 is cut
        assert_eq!(query_blocks([1, 16, 512, 128]), vec![0..512]);
        assert_eq!(query_blocks([2, 16, 512, 128]), vec![0..256, 256..512]);
        assert_eq!(query_blocks([8, 16, 512, 128]), vec![0..256, 256..512]);
        // long enough scores, too few queries for two blocks of 128
        assert_eq!(query_blocks([64, 64, 255, 64]), vec![0..255]);
    }
}
