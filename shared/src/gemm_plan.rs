//! How a row-major batched matmul `C = A·B` (burn's layout: any strides, batch dimensions
//! broadcast) maps onto cuBLAS's column-major strided-batched GEMM (`cublasGemmStridedBatchedEx`),
//! with no copy where the strides allow it.
//!
//! A row-major matrix is the column-major matrix of its transpose, so cuBLAS computes
//! `Cᵀ = Bᵀ·Aᵀ`: B goes in cuBLAS's first slot, A in its second, and cuBLAS's `m, n` are our
//! `n, m`. An operand whose columns are contiguous (row-major) enters as it is (`N`); one whose
//! rows are contiguous (a transposed view, as `Wᵀ` in a backward pass) enters with `T`. The batch
//! dimensions must fold into one stride per operand (a broadcast operand has stride 0). When the
//! second factor is shared by the whole batch (a weight) and the batch of A and C is a run of
//! rows, the batch becomes rows: one large GEMM instead of many small ones.
//!
//! Pure arithmetic, tested on the CPU against an emulation of cuBLAS's definition; `cublas.rs`
//! hands the plan to cuBLAS.

use crate::backend::contiguous_strides;

/// One operand's sizes and element strides, batch dimensions first, then rows and columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout<'a> {
    pub shape: &'a [usize],
    pub strides: &'a [usize],
}

/// cuBLAS's `cublasOperation_t` for an operand slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

/// The arguments of `cublasGemmStridedBatchedEx`, in cuBLAS's terms: slot A holds our `b`,
/// slot B our `a`, `m` is our `n` (columns of C) and `n` our `m` (rows of C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmPlan {
    pub transa: Op,
    pub transb: Op,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub batch: usize,
    /// `β = 1`: the product added to what C holds (`C += A·B`, in the compute type, rounded
    /// once to C's dtype); `β = 0` otherwise. [`plan`] leaves it off.
    pub accumulate: bool,
}

/// How a `rows × cols` matrix with strides `(sr, sc)` enters cuBLAS as the column-major matrix
/// of its transpose: `N` with its row stride as the leading dimension, `T` (a transposed view)
/// with its column stride, or not at all (neither dimension contiguous).
fn matrix(rows: usize, cols: usize, sr: usize, sc: usize) -> Option<(Op, usize)> {
    if (sc == 1 || cols == 1) && (rows == 1 || sr >= cols) {
        Some((Op::N, if rows == 1 { cols } else { sr }.max(1)))
    } else if (sr == 1 || rows == 1) && (cols == 1 || sc >= rows) {
        Some((Op::T, sc.max(1)))
    } else {
        None
    }
}

/// The batch dimensions of the three operands as one count and one stride each, or `None`
/// when a dimension does not broadcast (sizes differ and neither is 1) or the strides do not
/// fold into one.
fn batch(a: &Layout, b: &Layout, c: &Layout) -> Option<(usize, [usize; 3])> {
    let d = c.shape.len() - 2;
    // (size, [stride of a, b, c]) of each batch dimension of more than one element
    let mut dims = Vec::new();
    for i in 0..d {
        let size = c.shape[i];
        let of = |t: &Layout| match t.shape[i] {
            1 => Some(0),
            s if s == size => Some(t.strides[i]),
            _ => None,
        };
        if size > 1 {
            dims.push((size, [of(a)?, of(b)?, c.strides[i]]));
        } else if a.shape[i] != 1 || b.shape[i] != 1 {
            return None;
        }
    }
    let count = dims.iter().map(|d| d.0).product();
    let Some(&(_, inner)) = dims.last() else {
        return Some((1, [0; 3]));
    };
    let folds = dims
        .windows(2)
        .all(|w| (0..3).all(|o| w[0].1[o] == w[1].1[o] * w[1].0));
    folds.then_some((count, inner))
}

/// The cuBLAS call computing `c = a·b` for `a: [.., m, k]`, `b: [.., k, n]` and the output
/// `c: [.., m, n]` (row-major: its column stride 1), or `None` when an operand's strides do not
/// fit (make it contiguous first) or a dimension is empty.
pub fn plan(a: &Layout, b: &Layout, c: &Layout) -> Option<GemmPlan> {
    let d = c.shape.len();
    if d < 2 || a.shape.len() != d || b.shape.len() != d {
        return None;
    }
    let (m, k, n) = (a.shape[d - 2], a.shape[d - 1], b.shape[d - 1]);
    if b.shape[d - 2] != k || c.shape[d - 2] != m || c.shape[d - 1] != n || m * n * k == 0 {
        return None;
    }
    let (opa, lda) = matrix(m, k, a.strides[d - 2], a.strides[d - 1])?;
    let (opb, ldb) = matrix(k, n, b.strides[d - 2], b.strides[d - 1])?;
    let (Op::N, ldc) = matrix(m, n, c.strides[d - 2], c.strides[d - 1])? else {
        return None;
    };
    let (count, [sa, sb, sc]) = batch(a, b, c)?;
    let mut p = GemmPlan {
        transa: opb,
        transb: opa,
        m: n,
        n: m,
        k,
        lda: ldb,
        ldb: lda,
        ldc,
        stride_a: sb,
        stride_b: sa,
        stride_c: sc,
        batch: count,
        accumulate: false,
    };
    // a weight shared by the batch, and the batch of a and c runs of rows: one GEMM
    if count > 1 && sb == 0 && opa == Op::N && sa == m * lda && sc == m * ldc {
        p.n = count * m;
        p.batch = 1;
        (p.stride_b, p.stride_c) = (0, 0);
    }
    Some(p)
}

/// Where [`plan`] refuses `a` and `b`: which of them to copy into contiguous memory for it to
/// take them (`[copy a, copy b]`), copying as little as it can (one operand where that is
/// enough: attention's backward reads the heads' gradient through a transposed view, whose
/// batch does not fold, beside a factor that fits as it is), or `None` where copies do not
/// help either.
pub fn copies(a: &Layout, b: &Layout, c: &Layout) -> Option<[bool; 2]> {
    let (da, db) = (contiguous_strides(a.shape), contiguous_strides(b.shape));
    let dense_a = Layout {
        shape: a.shape,
        strides: &da,
    };
    let dense_b = Layout {
        shape: b.shape,
        strides: &db,
    };
    // the smaller operand copied first where both would do
    let a_first = a.shape.iter().product::<usize>() <= b.shape.iter().product::<usize>();
    let one = if a_first {
        [[true, false], [false, true]]
    } else {
        [[false, true], [true, false]]
    };
    one.into_iter().chain([[true, true]]).find(|&[ca, cb]| {
        let a = if ca { &dense_a } else { a };
        let b = if cb { &dense_b } else { b };
        plan(a, b, c).is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cuBLAS's definition of the strided-batched GEMM (column-major, `C = op(A)·op(B)`, or
    /// `C += op(A)·op(B)` with `accumulate`), on flat buffers.
    fn cublas_reference(p: &GemmPlan, a: &[f32], b: &[f32], c: &mut [f32]) {
        for s in 0..p.batch {
            for i in 0..p.m {
                for j in 0..p.n {
                    let mut acc = 0.0;
                    for l in 0..p.k {
                        let x = match p.transa {
                            Op::N => a[s * p.stride_a + i + l * p.lda],
                            Op::T => a[s * p.stride_a + l + i * p.lda],
                        };
                        let y = match p.transb {
                            Op::N => b[s * p.stride_b + l + j * p.ldb],
                            Op::T => b[s * p.stride_b + j + l * p.ldb],
                        };
                        acc += x * y;
                    }
                    let out = &mut c[s * p.stride_c + i + j * p.ldc];
                    *out = if p.accumulate { *out + acc } else { acc };
                }
            }
        }
    }

    /// A strided tensor over its own buffer.
    struct Strided {
        shape: Vec<usize>,
        strides: Vec<usize>,
        data: Vec<f32>,
    }

    impl Strided {
        fn layout(&self) -> Layout<'_> {
            Layout {
                shape: &self.shape,
                strides: &self.strides,
            }
        }

        fn at(&self, idx: &[usize]) -> f32 {
            let off: usize = idx.iter().zip(&self.strides).map(|(i, s)| i * s).sum();
            self.data[off]
        }
    }

    /// Row-major strides for `shape` with each row padded by `pad` elements.
    fn row_major(shape: &[usize], pad: usize) -> Vec<usize> {
        let d = shape.len();
        let mut strides = vec![1; d];
        let mut acc = shape[d - 1] + pad;
        for i in (0..d - 1).rev() {
            strides[i] = acc;
            acc *= shape[i];
        }
        strides
    }

    /// A tensor of `shape`, row-major but with the last two dimensions swapped in memory when
    /// `transposed` (a transposed view), and size-1 batch dimensions given stride 0 when
    /// `broadcast` (an expanded tensor).
    fn tensor(shape: &[usize], transposed: bool, broadcast: bool, seed: u32) -> Strided {
        let d = shape.len();
        let mut mem_shape = shape.to_vec();
        if transposed {
            mem_shape.swap(d - 2, d - 1);
        }
        let mut strides = row_major(&mem_shape, 0);
        if transposed {
            strides.swap(d - 2, d - 1);
        }
        if broadcast {
            for i in 0..d - 2 {
                if shape[i] == 1 {
                    strides[i] = 0;
                }
            }
        }
        let len = shape.iter().product::<usize>();
        let data = (0..len)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 17) as f32 - 8.0)
            .collect();
        Strided {
            shape: shape.to_vec(),
            strides,
            data,
        }
    }

    /// Every index of `shape`, row-major.
    fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
        let mut out = vec![vec![]];
        for &s in shape {
            out = out
                .into_iter()
                .flat_map(|p| {
                    (0..s).map(move |i| {
                        let mut q = p.clone();
                        q.push(i);
                        q
                    })
                })
                .collect();
        }
        out
    }

    /// Runs the plan through the emulation and compares with the matmul by definition.
    fn check(a: &Strided, b: &Strided, out_pad: usize) -> GemmPlan {
        let d = a.shape.len();
        let mut cshape: Vec<usize> = (0..d - 2).map(|i| a.shape[i].max(b.shape[i])).collect();
        cshape.extend([a.shape[d - 2], b.shape[d - 1]]);
        let cstrides = row_major(&cshape, out_pad);
        let clen = cshape[0] * cstrides[0];
        let c = Layout {
            shape: &cshape,
            strides: &cstrides,
        };
        let p = plan(&a.layout(), &b.layout(), &c).expect("a plan");
        let mut out = vec![f32::NAN; clen];
        cublas_reference(&p, &b.data, &a.data, &mut out);
        let k = a.shape[d - 1];
        for idx in indices(&cshape) {
            let pick = |t: &Strided, r: usize, col: usize| {
                let mut i: Vec<usize> = (0..d - 2)
                    .map(|j| if t.shape[j] == 1 { 0 } else { idx[j] })
                    .collect();
                i.extend([r, col]);
                t.at(&i)
            };
            let want: f32 = (0..k)
                .map(|l| pick(a, idx[d - 2], l) * pick(b, l, idx[d - 1]))
                .sum();
            let off: usize = idx.iter().zip(&cstrides).map(|(i, s)| i * s).sum();
            assert_eq!(out[off], want, "at {idx:?} with {p:?}");
        }
        p
    }

    #[test]
    fn a_linear_layer_is_one_gemm() {
        // x [b, T, in] · W [1, in, out], W broadcast: batch folded into rows
        let x = tensor(&[3, 5, 4], false, false, 1);
        let w = tensor(&[1, 4, 6], false, true, 2);
        let p = check(&x, &w, 0);
        assert_eq!((p.batch, p.n, p.m, p.k), (1, 15, 6, 4));
        assert_eq!((p.transa, p.transb), (Op::N, Op::N));
        // the same with Wᵀ as a transposed view (a backward pass), and a padded output
        let wt = tensor(&[1, 4, 6], true, true, 3);
        let p = check(&x, &wt, 2);
        assert_eq!((p.batch, p.transa, p.ldc), (1, Op::T, 8));
        // the first rows of each batch of a larger buffer: no run of rows, a strided batch
        let x = Strided {
            shape: vec![2, 3, 4],
            strides: vec![20, 4, 1],
            data: tensor(&[2, 5, 4], false, false, 16).data,
        };
        let w = tensor(&[1, 4, 6], false, true, 17);
        assert_eq!(check(&x, &w, 0).batch, 2);
        // a broadcast weight with more batch dimensions than one
        let x = tensor(&[2, 3, 5, 4], false, false, 4);
        let w = tensor(&[1, 1, 4, 6], false, true, 5);
        assert_eq!(check(&x, &w, 0).batch, 1);
    }

    #[test]
    fn attention_products_are_strided_batches() {
        // q·kᵀ: q [b, h, T, d], kᵀ a transposed view [b, h, d, S]
        let q = tensor(&[2, 3, 5, 4], false, false, 6);
        let kt = tensor(&[2, 3, 4, 7], true, false, 7);
        let p = check(&q, &kt, 0);
        assert_eq!((p.batch, p.transa, p.transb), (6, Op::T, Op::N));
        // Pᵀ·g: Pᵀ a transposed view
        let pt = tensor(&[2, 3, 5, 5], true, false, 8);
        let g = tensor(&[2, 3, 5, 4], false, false, 9);
        let p = check(&pt, &g, 0);
        assert_eq!((p.batch, p.transb), (6, Op::T));
        // the first factor shared by the whole batch, a padded output
        let a = tensor(&[1, 1, 5, 4], false, true, 10);
        let b = tensor(&[2, 3, 4, 6], false, false, 11);
        let p = check(&a, &b, 1);
        assert_eq!((p.batch, p.stride_b), (6, 0));
        // broadcast over one batch dimension only: no single stride (burn's matmul takes it)
        let a = tensor(&[2, 1, 5, 4], false, true, 12);
        let c = [2usize, 3, 5, 6];
        let cs = row_major(&c, 0);
        let c = Layout {
            shape: &c,
            strides: &cs,
        };
        assert_eq!(plan(&a.layout(), &b.layout(), &c), None);
    }

    #[test]
    fn single_rows_and_columns_take_any_stride() {
        let a = tensor(&[2, 1, 4], false, false, 13);
        let b = tensor(&[2, 4, 1], true, false, 13);
        check(&a, &b, 0);
        let a = tensor(&[1, 5, 1], true, false, 14);
        let b = tensor(&[1, 1, 3], false, false, 15);
        check(&a, &b, 0);
    }

    #[test]
    fn layouts_that_do_not_fit_are_refused() {
        let shape = [2usize, 3, 4];
        let c = Layout {
            shape: &[2, 3, 5],
            strides: &[15, 5, 1],
        };
        let b = Layout {
            shape: &[2, 4, 5],
            strides: &[20, 5, 1],
        };
        // neither the rows nor the columns of a contiguous
        let a = Layout {
            shape: &shape,
            strides: &[24, 8, 2],
        };
        assert_eq!(plan(&a, &b, &c), None);
        // batch dimensions that do not fold: [2, 2] stored as [h, b] (swapped)
        let a4 = Layout {
            shape: &[2, 2, 3, 4],
            strides: &[12, 24, 4, 1],
        };
        let b4 = Layout {
            shape: &[2, 2, 4, 5],
            strides: &[40, 20, 5, 1],
        };
        let c4 = Layout {
            shape: &[2, 2, 3, 5],
            strides: &[30, 15, 5, 1],
        };
        assert_eq!(plan(&a4, &b4, &c4), None);
        // an output that is not row-major, mismatched sizes, an empty product
        let ct = Layout {
            shape: &[2, 3, 5],
            strides: &[15, 1, 3],
        };
        let a = Layout {
            shape: &shape,
            strides: &[12, 4, 1],
        };
        assert_eq!(plan(&a, &b, &ct), None);
        let b3 = Layout {
            shape: &[3, 4, 5],
            strides: &[20, 5, 1],
        };
        assert_eq!(plan(&a, &b3, &c), None);
        let a0 = Layout {
            shape: &[2, 3, 0],
            strides: &[0, 0, 1],
        };
        let b0 = Layout {
            shape: &[2, 0, 5],
            strides: &[0, 5, 1],
        };
        assert_eq!(plan(&a0, &b0, &c), None);
    }

    /// Attention's backward: the heads' gradient `g` (`[b, h, T, d]` read through the
    /// `[b, T, h, d]` layout the output projection wrote) times `vᵀ` (a transposed view), and
    /// `Pᵀ` (a transposed view) times `g`: only `g` is copied, not the other factor.
    /// Attention's key and value gradients over query blocks: a block's `dSᵀ·q` (`[b, h, s,
    /// d]`) added into the first `s` rows of each batch of the last block's `[b, h, S, d]`, the
    /// rows beyond untouched.
    #[test]
    fn a_product_adds_into_the_first_rows_of_a_larger_buffer() {
        let (s_rows, big, d, k) = (3, 5, 4, 6);
        let dst = tensor(&[2, 3, s_rows, k], true, false, 21); // dSᵀ, a transposed view
        let q = tensor(&[2, 3, k, d], false, false, 22);
        let held = tensor(&[2, 3, big, d], false, false, 23);
        let c = Layout {
            shape: &[2, 3, s_rows, d],
            strides: &held.strides,
        };
        let mut p = plan(&dst.layout(), &q.layout(), &c).expect("a plan");
        assert_eq!((p.batch, p.ldc, p.stride_c), (6, d, big * d));
        p.accumulate = true;
        let mut out = held.data.clone();
        cublas_reference(&p, &q.data, &dst.data, &mut out);
        for idx in indices(&[2, 3, big, d]) {
            let off: usize = idx.iter().zip(&held.strides).map(|(i, s)| i * s).sum();
            let mut want = held.at(&idx);
            if idx[2] < s_rows {
                let (x, y) = (&idx[..2], idx[3]);
                want += (0..k)
                    .map(|l| dst.at(&[x[0], x[1], idx[2], l]) * q.at(&[x[0], x[1], l, y]))
                    .sum::<f32>();
            }
            assert_eq!(out[off], want, "at {idx:?}");
        }
    }

    #[test]
    fn only_the_operand_that_does_not_fit_is_copied() {
        let (b, h, t, d) = (2usize, 3, 5, 4);
        let g = Layout {
            shape: &[b, h, t, d],
            strides: &[t * h * d, d, h * d, 1],
        };
        let vt = Layout {
            shape: &[b, h, d, t],
            strides: &[h * t * d, t * d, 1, d],
        };
        let dp = Layout {
            shape: &[b, h, t, t],
            strides: &[h * t * t, t * t, t, 1],
        };
        assert_eq!(plan(&g, &vt, &dp), None);
        assert_eq!(copies(&g, &vt, &dp), Some([true, false]));
        let pt = Layout {
            shape: &[b, h, t, t],
            strides: &[h * t * t, t * t, 1, t],
        };
        let dv = Layout {
            shape: &[b, h, t, d],
            strides: &[h * t * d, t * d, d, 1],
        };
        assert_eq!(copies(&pt, &g, &dv), Some([false, true]));
        // both copied where each needs it; none where the output does not fit
        let bt = Layout {
            shape: &[b, h, d, t],
            strides: &[t * d, t * h * d, 1, d],
        };
        assert_eq!(copies(&g, &bt, &dp), Some([true, true]));
        let ct = Layout {
            shape: &[b, h, t, t],
            strides: &[h * t * t, t * t, 1, t],
        };
        assert_eq!(copies(&g, &vt, &ct), None);
        assert_eq!(contiguous_strides(&[2, 3, 4]), [12, 4, 1]);
    }
}
