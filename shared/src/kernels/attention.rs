//! Attention's element-wise and row-wise work: the split of the fused qkv projection with
//! the rotary embedding and its adjoint, and the causal softmax of the scores and its backward.

use super::*;

/// For element `pos` of the contiguous `[b, h, T, d]` tensor `like`: its index `j` in the head,
/// its position `t`, and the offset of the same `[b, h, t]` row in `strided` (`[b, h, T, ·]`,
/// any strides).
#[cube]
fn head_coords<F: Float, G: Float>(
    pos: usize,
    like: &Tensor<F>,
    strided: &Tensor<G>,
) -> (usize, usize, usize) {
    let d = like.shape(3);
    let tl = like.shape(2);
    let hl = like.shape(1);
    let t = (pos / d) % tl;
    let hh = (pos / (d * tl)) % hl;
    let bb = pos / (d * tl * hl);
    let base = bb * strided.stride(0) + hh * strided.stride(1) + t * strided.stride(2);
    (pos % d, t, base)
}

/// One unit per element of q, k and v (`[b, h, T, d]`, contiguous) from the fused projection
/// `qkv: [b, h, T, 3·d]` (any strides): `x·cos + rotate_half(x)·sin` for q and k, v copied.
/// `rotate_half(x)` is `−x[j + ndims/2]` below `ndims/2`, `x[j − ndims/2]` up to `ndims`, 0
/// beyond (where the tables hold cos 1 and sin 0). Read in `F` (f32, or bf16 from a bf16
/// projection), computed in f32 with the f32 tables, written in `O` (bf16 for bf16 products:
/// no cast after).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn split_qkv_rope_kernel<F: Float, O: Float>(
    qkv: &Tensor<F>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    q: &mut Tensor<O>,
    k: &mut Tensor<O>,
    v: &mut Tensor<O>,
    ndims: u32,
    #[define(F, O)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= q.len() {
        terminate!();
    }
    let d = q.shape(3);
    let (j, t, base) = head_coords::<O, F>(pos, q, qkv);
    let s3 = qkv.stride(3);
    let nd = ndims as usize;
    let half = nd / 2;
    let mut rq = f32::new(0.0);
    let mut rk = f32::new(0.0);
    if j < half {
        rq = -f32::cast_from(qkv[base + (j + half) * s3]);
        rk = -f32::cast_from(qkv[base + (d + j + half) * s3]);
    } else if j < nd {
        rq = f32::cast_from(qkv[base + (j - half) * s3]);
        rk = f32::cast_from(qkv[base + (d + j - half) * s3]);
    }
    let c = cos[t * d + j];
    let sn = sin[t * d + j];
    q[pos] = O::cast_from(f32::cast_from(qkv[base + j * s3]) * c + rq * sn);
    k[pos] = O::cast_from(f32::cast_from(qkv[base + (d + j) * s3]) * c + rk * sn);
    v[pos] = O::cast_from(qkv[base + (2 * d + j) * s3]);
}

/// The adjoint of [`split_qkv_rope_kernel`]: one unit per element of `dq`, `dk`, `dv`
/// (contiguous), writing the three elements of `out: [b, h, T, 3·d]` (any strides) it feeds.
/// `apply_transposed(g)` is `g·cos + g[j + ndims/2]·sin[j + ndims/2]` below `ndims/2`,
/// `g·cos − g[j − ndims/2]·sin[j − ndims/2]` up to `ndims`, `g` beyond. Read in `F`, computed
/// in f32, written in `O` (the projection's dtype).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn split_qkv_rope_backward_kernel<F: Float, O: Float>(
    dq: &Tensor<F>,
    dk: &Tensor<F>,
    dv: &Tensor<F>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    out: &mut Tensor<O>,
    ndims: u32,
    #[define(F, O)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= dq.len() {
        terminate!();
    }
    let d = dq.shape(3);
    let (j, t, base) = head_coords::<F, O>(pos, dq, out);
    let s3 = out.stride(3);
    let nd = ndims as usize;
    let half = nd / 2;
    let row = pos - j;
    let tab = t * d;
    let c = cos[tab + j];
    let mut gq = f32::cast_from(dq[pos]) * c;
    let mut gk = f32::cast_from(dk[pos]) * c;
    if j < half {
        let sn = sin[tab + j + half];
        gq += f32::cast_from(dq[row + j + half]) * sn;
        gk += f32::cast_from(dk[row + j + half]) * sn;
    } else if j < nd {
        let sn = sin[tab + j - half];
        gq -= f32::cast_from(dq[row + j - half]) * sn;
        gk -= f32::cast_from(dk[row + j - half]) * sn;
    }
    out[base + j * s3] = O::cast_from(gq);
    out[base + (d + j) * s3] = O::cast_from(gk);
    out[base + (2 * d + j) * s3] = O::cast_from(dv[pos]);
}

/// q and k (rotary embedding applied) and v, `[b, h, T, d]` each and contiguous, from the
/// fused projection `qkv: [b, h, T, 3·d]` (read through its strides, no copy first) and the
/// `[1, 1, T, d]` tables, in one pass, computed in f32 and written in `out`.
pub fn split_qkv_rope<R: CubeRuntime>(
    qkv: CubeTensor<R>,
    cos: CubeTensor<R>,
    sin: CubeTensor<R>,
    ndims: usize,
    out: DType,
) -> [CubeTensor<R>; 3] {
    let (cos, sin) = (f32_contiguous(cos), f32_contiguous(sin));
    let dims = qkv.meta.shape().clone();
    let shape = Shape::new([dims[0], dims[1], dims[2], dims[3] / 3]);
    let [q, k, v] = [(); 3].map(|_| empty_like(&qkv, shape.clone(), out));
    let (count, dim) = elemwise_launch(&q, 1);
    let dtypes = [qkv.dtype.into(), out.into()];
    split_qkv_rope_kernel::launch::<R>(
        &qkv.client.clone(),
        count,
        dim,
        qkv.into_tensor_arg(),
        cos.into_tensor_arg(),
        sin.into_tensor_arg(),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        ndims as u32,
        dtypes,
    );
    [q, k, v]
}

/// The gradient of `qkv` from those of q, k and v, written into `out` (`[b, h, T, 3·d]`, any
/// strides and its own dtype: the caller picks the layout and the projection's dtype) in one
/// pass, computed in f32, and returned.
pub fn split_qkv_rope_backward<R: CubeRuntime>(
    [dq, dk, dv]: [CubeTensor<R>; 3],
    cos: CubeTensor<R>,
    sin: CubeTensor<R>,
    ndims: usize,
    out: CubeTensor<R>,
) -> CubeTensor<R> {
    let dq = into_contiguous(dq);
    let [dk, dv] = [dk, dv].map(|t| contiguous_like(t, &dq));
    let (cos, sin) = (f32_contiguous(cos), f32_contiguous(sin));
    let (count, dim) = elemwise_launch(&dq, 1);
    let dtypes = [dq.dtype.into(), out.dtype.into()];
    split_qkv_rope_backward_kernel::launch::<R>(
        &dq.client.clone(),
        count,
        dim,
        dq.into_tensor_arg(),
        dk.into_tensor_arg(),
        dv.into_tensor_arg(),
        cos.into_tensor_arg(),
        sin.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        ndims as u32,
        dtypes,
    );
    out
}

/// The probabilities of vector `k` of a row of scores `s`: `exp(s·scale − lse)` for the first
/// `visible` elements of the row, 0 beyond (the vector is not read when all of it is beyond).
#[cube]
#[allow(clippy::too_many_arguments)]
fn causal_probs<F: Float, N: Size>(
    s: &Array<Vector<F, N>>,
    base: usize,
    k: usize,
    visible: usize,
    scale: f32,
    lse: Vector<f32, N>,
) -> Vector<f32, N> {
    let width = N::value();
    let mut v = Vector::<f32, N>::new(0.0);
    if k * width < visible {
        v = Vector::exp(Vector::<f32, N>::cast_from(s[base + k]) * Vector::new(scale) - lse);
        #[unroll]
        for e in 0..N::value() {
            if k * width + e >= visible {
                v[e] = 0.0;
            }
        }
    }
    v
}

/// A row of `len` scores (`[b, h, T, len]`, contiguous), as the row kernels see it: the row's
/// first vector, and how many keys its query sees (query `r mod t` sees the first
/// `len − t + r mod t + 1`).
#[cube]
fn causal_row<N: Size>(row: usize, t: u32, len: u32) -> (usize, usize) {
    let (t, len) = (t as usize, len as usize);
    (row * (len / N::value()), len - t + row % t + 1)
}

/// Per row of scores: `p = exp(s·scale − log Σ exp(s·scale))` over the keys its query sees, 0
/// beyond (the scores beyond are not read); computed in f32, written in `O`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn causal_softmax_kernel<F: Float, O: Float, N: Size>(
    s: &Array<Vector<F, N>>,
    p: &mut Array<Vector<O, N>>,
    rows: u32,
    t: u32,
    len: u32,
    scale: f32,
    #[comptime] units: u32,
    #[comptime] per_cube: u32,
    #[comptime] plane: bool,
    #[define(F, O)] _dtypes: [StorageType; 2],
) {
    let row = row_index(per_cube);
    if row >= rows as usize {
        terminate!();
    }
    let (base, visible) = causal_row::<N>(row, t, len);
    let mut buf = row_buffer(units, plane);
    let lse = row_logsumexp::<F, N>(s, base, visible, scale, &mut buf, units, plane);
    let lse = Vector::<f32, N>::new(lse);
    let mut k = UNIT_POS_X as usize;
    while k < len as usize / N::value() {
        p[base + k] = Vector::cast_from(causal_probs::<F, N>(s, base, k, visible, scale, lse));
        k += units as usize;
    }
}

/// Attention's softmax backward from the scores themselves, per row: `p` as
/// [`causal_softmax_kernel`] computes it (in f32, never stored as such), then
/// `ds = p·(dp − Σ p·dp)·scale`; writes `p` and `ds` in `O`. `dp` is read only where `p` is not
/// 0.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn causal_softmax_backward_kernel<F: Float, G: Float, O: Float, N: Size>(
    s: &Array<Vector<F, N>>,
    dp: &Array<Vector<G, N>>,
    p: &mut Array<Vector<O, N>>,
    ds: &mut Array<Vector<O, N>>,
    rows: u32,
    t: u32,
    len: u32,
    scale: f32,
    #[comptime] units: u32,
    #[comptime] per_cube: u32,
    #[comptime] plane: bool,
    #[define(F, G, O)] _dtypes: [StorageType; 3],
) {
    let row = row_index(per_cube);
    if row >= rows as usize {
        terminate!();
    }
    let (base, visible) = causal_row::<N>(row, t, len);
    let seen = visible.div_ceil(N::value());
    let step = units as usize;
    let mut buf = row_buffer(units, plane);
    let lse = row_logsumexp::<F, N>(s, base, visible, scale, &mut buf, units, plane);
    let lse = Vector::<f32, N>::new(lse);
    let mut acc = Vector::<f32, N>::new(0.0);
    let mut i = UNIT_POS_X as usize;
    while i < seen {
        let pi = causal_probs::<F, N>(s, base, i, visible, scale, lse);
        acc += pi * Vector::cast_from(dp[base + i]);
        i += step;
    }
    let dot = Vector::new(row_sum::<f32>(lanes_sum::<N>(acc), &mut buf, plane));
    let sc = Vector::new(scale);
    let mut j = UNIT_POS_X as usize;
    while j < len as usize / N::value() {
        let pj = causal_probs::<F, N>(s, base, j, visible, scale, lse);
        let mut dsj = Vector::<f32, N>::new(0.0);
        if j < seen {
            dsj = pj * (Vector::<f32, N>::cast_from(dp[base + j]) - dot) * sc;
        }
        p[base + j] = Vector::cast_from(pj);
        ds[base + j] = Vector::cast_from(dsj);
        j += step;
    }
}

/// `softmax(scores·scale + causal mask)` over the last dimension of `scores: [b, h, T, S]`
/// (query `i` sees keys `0..=S − T + i`), a row's units per row, computed in f32 and written in
/// `out`.
pub fn causal_softmax<R: CubeRuntime>(
    scores: CubeTensor<R>,
    scale: f64,
    out: DType,
) -> CubeTensor<R> {
    let s = into_contiguous(scores);
    let t = s.meta.shape()[2];
    let p = empty_like(&s, s.meta.shape().clone(), out);
    let l = row_launch(&s, &[s.dtype, out]);
    let dtypes = [s.dtype.into(), out.into()];
    causal_softmax_kernel::launch::<R>(
        &s.client.clone(),
        l.count,
        l.dim,
        l.vector,
        s.into_array_arg(),
        p.clone().into_array_arg(),
        l.rows as u32,
        t as u32,
        l.n as u32,
        scale as f32,
        l.units,
        l.per_cube,
        l.plane,
        dtypes,
    );
    p
}

/// Attention's softmax backward from the scores (`[b, h, T, S]`, as for [`causal_softmax`])
/// and the probabilities' gradient `dp`, in one pass: the probabilities (for `Pᵀ·g`) and the
/// scores' gradient `p·(dp − rowsum(p·dp))·scale`, both written in `out`, the probabilities in
/// between kept in f32 and not stored.
pub fn causal_softmax_backward<R: CubeRuntime>(
    scores: CubeTensor<R>,
    dp: CubeTensor<R>,
    scale: f64,
    out: DType,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let s = into_contiguous(scores);
    let dp = into_contiguous(dp);
    let t = s.meta.shape()[2];
    let shape = s.meta.shape().clone();
    let [p, ds] = [(); 2].map(|_| empty_like(&s, shape.clone(), out));
    let l = row_launch(&s, &[s.dtype, dp.dtype, out]);
    let dtypes = [s.dtype.into(), dp.dtype.into(), out.into()];
    causal_softmax_backward_kernel::launch::<R>(
        &s.client.clone(),
        l.count,
        l.dim,
        l.vector,
        s.into_array_arg(),
        dp.into_array_arg(),
        p.clone().into_array_arg(),
        ds.clone().into_array_arg(),
        l.rows as u32,
        t as u32,
        l.n as u32,
        scale as f32,
        l.units,
        l.per_cube,
        l.plane,
        dtypes,
    );
    (p, ds)
}
