//! Attention's element-wise and row-wise work: the split of the fused qkv projection with
//! the rotary embedding and its adjoint, and the causal softmax of the scores and its backward.

use super::*;

/// Where vector `pos` of a contiguous `[b, h, T, d]` tensor lies: its index `j` in the head
/// (in elements), its position `t`, the offset of the same `[b, h, t]` row in a `[b, h, T, ·]`
/// tensor with strides `s0, s1, s2` (in elements), and its own row's offset.
#[cube]
#[allow(clippy::too_many_arguments)]
fn head_coords(
    pos: usize,
    width: usize,
    heads: u32,
    len: u32,
    d: u32,
    s0: u32,
    s1: u32,
    s2: u32,
) -> (usize, usize, usize, usize) {
    let (heads, len, d) = (heads as usize, len as usize, d as usize);
    let elem = pos * width;
    let j = elem % d;
    let rest = elem / d;
    let t = rest % len;
    let hh = (rest / len) % heads;
    let bb = rest / (len * heads);
    let base = bb * s0 as usize + hh * s1 as usize + t * s2 as usize;
    (j, t, base, elem - j)
}

/// One unit per vector of q, k and v (`[b, h, T, d]`, contiguous) from the fused projection
/// `qkv: [b, h, T, 3·d]` (a dense layout with strides `s0, s1, s2` and 1): `x·cos +
/// rotate_half(x)·sin` for q and k, v copied. `rotate_half(x)` is `−x[j + ndims/2]` below
/// `ndims/2`, `x[j − ndims/2]` up to `ndims`, 0 beyond (where the tables hold cos 1 and sin 0).
/// A vector never straddles `ndims/2` or `ndims` (the caller picks its width so). Read in `F`
/// (f32, or bf16 from a bf16 projection), computed in f32 with the f32 tables, written in `O`
/// (bf16 for bf16 products: no cast after).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn split_qkv_rope_kernel<F: Float, O: Float, N: Size>(
    qkv: &Array<Vector<F, N>>,
    cos: &Array<Vector<f32, N>>,
    sin: &Array<Vector<f32, N>>,
    q: &mut Array<Vector<O, N>>,
    k: &mut Array<Vector<O, N>>,
    v: &mut Array<Vector<O, N>>,
    heads: u32,
    len: u32,
    d: u32,
    s0: u32,
    s1: u32,
    s2: u32,
    ndims: u32,
    #[define(F, O)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= q.len() {
        terminate!();
    }
    let w = N::value();
    let (j, t, base, _) = head_coords(pos, w, heads, len, d, s0, s1, s2);
    let d = d as usize;
    let nd = ndims as usize;
    let half = nd / 2;
    let mut rq = Vector::<f32, N>::new(0.0);
    let mut rk = Vector::<f32, N>::new(0.0);
    if j < half {
        // `0 - x`, not `-x`: cubecl-cpp 0.10 writes a vector's negation as C++'s unary minus
        // on its struct, which NVRTC rejects (its other operators go lane by lane)
        rq = Vector::new(0.0) - Vector::<f32, N>::cast_from(qkv[(base + j + half) / w]);
        rk = Vector::new(0.0) - Vector::<f32, N>::cast_from(qkv[(base + d + j + half) / w]);
    } else if j < nd {
        rq = Vector::cast_from(qkv[(base + j - half) / w]);
        rk = Vector::cast_from(qkv[(base + d + j - half) / w]);
    }
    let c = cos[(t * d + j) / w];
    let sn = sin[(t * d + j) / w];
    let xq = Vector::<f32, N>::cast_from(qkv[(base + j) / w]);
    let xk = Vector::<f32, N>::cast_from(qkv[(base + d + j) / w]);
    q[pos] = Vector::cast_from(xq * c + rq * sn);
    k[pos] = Vector::cast_from(xk * c + rk * sn);
    v[pos] = Vector::cast_from(qkv[(base + 2 * d + j) / w]);
}

/// The adjoint of [`split_qkv_rope_kernel`]: one unit per vector of `dq`, `dk`, `dv`
/// (contiguous), writing the three vectors of `out: [b, h, T, 3·d]` (a dense layout with
/// strides `s0, s1, s2` and 1) it feeds. `apply_transposed(g)` is
/// `g·cos + g[j + ndims/2]·sin[j + ndims/2]` below `ndims/2`, `g·cos − g[j − ndims/2]·sin[j −
/// ndims/2]` up to `ndims`, `g` beyond. Read in `F`, computed in f32, written in `O` (the
/// projection's dtype).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn split_qkv_rope_backward_kernel<F: Float, O: Float, N: Size>(
    dq: &Array<Vector<F, N>>,
    dk: &Array<Vector<F, N>>,
    dv: &Array<Vector<F, N>>,
    cos: &Array<Vector<f32, N>>,
    sin: &Array<Vector<f32, N>>,
    out: &mut Array<Vector<O, N>>,
    heads: u32,
    len: u32,
    d: u32,
    s0: u32,
    s1: u32,
    s2: u32,
    ndims: u32,
    #[define(F, O)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= dq.len() {
        terminate!();
    }
    let w = N::value();
    let (j, t, base, row) = head_coords(pos, w, heads, len, d, s0, s1, s2);
    let d = d as usize;
    let nd = ndims as usize;
    let half = nd / 2;
    let tab = t * d;
    let c = cos[(tab + j) / w];
    let mut gq = Vector::<f32, N>::cast_from(dq[pos]) * c;
    let mut gk = Vector::<f32, N>::cast_from(dk[pos]) * c;
    if j < half {
        let sn = sin[(tab + j + half) / w];
        gq += Vector::<f32, N>::cast_from(dq[(row + j + half) / w]) * sn;
        gk += Vector::<f32, N>::cast_from(dk[(row + j + half) / w]) * sn;
    } else if j < nd {
        let sn = sin[(tab + j - half) / w];
        gq -= Vector::<f32, N>::cast_from(dq[(row + j - half) / w]) * sn;
        gk -= Vector::<f32, N>::cast_from(dk[(row + j - half) / w]) * sn;
    }
    out[(base + j) / w] = Vector::cast_from(gq);
    out[(base + d + j) / w] = Vector::cast_from(gk);
    out[(base + 2 * d + j) / w] = Vector::cast_from(dv[pos]);
}

/// Whether `t`'s strides lay its elements out densely (a permutation of a contiguous layout:
/// its buffer holds exactly its elements), the last dimension contiguous.
fn dense_rows<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    let mut dims: Vec<(usize, usize)> =
        strides.iter().copied().zip(shape.iter().copied()).collect();
    dims.sort_unstable();
    let mut next = 1;
    for (stride, size) in dims {
        if size > 1 && stride != next {
            return false;
        }
        next *= size;
    }
    strides.last() == Some(&1)
}

/// The launch of the rotary split (or its adjoint): `[b, h, T, d]` vectors of `q`, the
/// `[b, h, T, 3·d]` projection's strides (dense, [`dense_rows`]), and the vector width: the
/// most the dtypes allow that divides the head, the rotary half, the rotary dims and the
/// strides (a vector never straddles the rotary half, and starts on a vector of the
/// projection).
struct RopeLaunch {
    count: CubeCount,
    dim: CubeDim,
    vector: usize,
    dims: [u32; 3],
    strides: [u32; 3],
}

fn rope_launch<R: CubeRuntime>(
    q: &CubeTensor<R>,
    qkv: &CubeTensor<R>,
    dtypes: &[DType],
    ndims: usize,
) -> RopeLaunch {
    let shape = q.meta.shape();
    let (h, t, d) = (shape[1], shape[2], shape[3]);
    let st = qkv.meta.strides();
    let mut all = [d, ndims / 2, ndims, st[0], st[1], st[2]]
        .into_iter()
        .fold(0, gcd);
    if all == 0 {
        all = d;
    }
    let vector = vector_size(q, dtypes, all);
    let (count, dim) = elemwise_launch(q, vector);
    RopeLaunch {
        count,
        dim,
        vector,
        dims: [h as u32, t as u32, d as u32],
        strides: [st[0] as u32, st[1] as u32, st[2] as u32],
    }
}

/// q and k (rotary embedding applied) and v, `[b, h, T, d]` each and contiguous, from the
/// fused projection `qkv: [b, h, T, 3·d]` (read through the strides of a dense layout, such as
/// the `[b, T, h, 3·d]` → `[b, h, T, 3·d]` view the model makes, without a copy; other views
/// are copied first) and the `[1, 1, T, d]` tables, in one pass, computed in f32 and written in
/// `out`.
pub fn split_qkv_rope<R: CubeRuntime>(
    qkv: CubeTensor<R>,
    cos: CubeTensor<R>,
    sin: CubeTensor<R>,
    ndims: usize,
    out: DType,
) -> [CubeTensor<R>; 3] {
    let (cos, sin) = (f32_contiguous(cos), f32_contiguous(sin));
    let qkv = if dense_rows(&qkv) {
        qkv
    } else {
        into_contiguous(qkv)
    };
    let dims = qkv.meta.shape().clone();
    let shape = Shape::new([dims[0], dims[1], dims[2], dims[3] / 3]);
    let [q, k, v] = [(); 3].map(|_| empty_like(&qkv, shape.clone(), out));
    let l = rope_launch(&q, &qkv, &[qkv.dtype, out, DType::F32], ndims);
    let dtypes = [qkv.dtype.into(), out.into()];
    let ([h, t, d], [s0, s1, s2]) = (l.dims, l.strides);
    split_qkv_rope_kernel::launch::<R>(
        &qkv.client.clone(),
        l.count,
        l.dim,
        l.vector,
        qkv.into_array_arg(),
        cos.into_array_arg(),
        sin.into_array_arg(),
        q.clone().into_array_arg(),
        k.clone().into_array_arg(),
        v.clone().into_array_arg(),
        h,
        t,
        d,
        s0,
        s1,
        s2,
        ndims as u32,
        dtypes,
    );
    [q, k, v]
}

/// The gradient of `qkv` from those of q, k and v, written into `out` (`[b, h, T, 3·d]` in a
/// dense layout, [`dense_rows`], and its own dtype: the caller picks the layout and the
/// projection's dtype; another layout is replaced by a contiguous one) in one pass, computed in
/// f32, and returned.
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
    let out = if dense_rows(&out) {
        out
    } else {
        empty_like(&out, out.meta.shape().clone(), out.dtype)
    };
    let l = rope_launch(&dq, &out, &[dq.dtype, out.dtype, DType::F32], ndims);
    let dtypes = [dq.dtype.into(), out.dtype.into()];
    let ([h, t, d], [s0, s1, s2]) = (l.dims, l.strides);
    split_qkv_rope_backward_kernel::launch::<R>(
        &dq.client.clone(),
        l.count,
        l.dim,
        l.vector,
        dq.into_array_arg(),
        dk.into_array_arg(),
        dv.into_array_arg(),
        cos.into_array_arg(),
        sin.into_array_arg(),
        out.clone().into_array_arg(),
        h,
        t,
        d,
        s0,
        s1,
        s2,
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
