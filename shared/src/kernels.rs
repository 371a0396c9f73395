//! Fused CubeCL kernels (CUDA, wgpu, WebGPU) for the split of the fused qkv projection with
//! the rotary embedding, attention's causal softmax, the loss, GELU and LayerNorm, forward and
//! backward: the element-wise and row-wise work that burn 0.21 runs as
//! one kernel per operation (LayerNorm's forward pass alone is nine kernels and seven passes
//! over the activations; the masked softmax of attention's scores a dozen; the loss keeps
//! `[b, T, vocab]` temporaries). Here each is one
//! kernel: one pass for GELU, one cube per row for the others, with the row reductions in
//! shared memory, as llm.c's kernels do.
//!
//! Inputs are made contiguous first, and a saved input kept in bf16 (`--dtype bf16`) is cast
//! to the gradient's dtype: each kernel has one float type, which the tests check on wgpu.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::{cast, into_contiguous};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, server::CubeCountSelection};

/// Units per cube for the element-wise kernels.
const ELEMWISE_UNITS: u32 = 256;
/// The most units per cube in a row kernel (one cube per row): one warp on an NVIDIA GPU, as
/// llm.c's row kernels use. On lavapipe 32 units ran a 2-layer step 12 % faster than the burn
/// ops they replace, 256 units 10 % slower (each cube barrier costs a CPU-run device dearly).
const ROW_UNITS: u32 = 32;

#[cube(launch)]
fn gelu_kernel<F: Float>(x: &Tensor<F>, y: &mut Tensor<F>, #[define(F)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let v = x[i];
        y[i] =
            v * (F::erf(v * F::new(std::f32::consts::FRAC_1_SQRT_2)) + F::new(1.0)) * F::new(0.5);
    }
}

/// `dx = g·(Φ(x) + x·φ(x))`.
#[cube(launch)]
fn gelu_backward_kernel<F: Float>(
    x: &Tensor<F>,
    g: &Tensor<F>,
    dx: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i < dx.len() {
        let v = x[i];
        let cdf = (F::erf(v * F::new(std::f32::consts::FRAC_1_SQRT_2)) + F::new(1.0)) * F::new(0.5);
        // 1/√(2π)
        let pdf = F::exp(v * v * F::new(-0.5)) * F::new(0.398_942_3);
        dx[i] = g[i] * (cdf + v * pdf);
    }
}

/// The sum (or with `max`, the maximum) of every unit's `v` over the cube (1-D, a power of two
/// units), through `buf` (as long), returned to every unit.
#[cube]
fn cube_reduce<F: Float>(v: F, buf: &mut SharedMemory<F>, #[comptime] max: bool) -> F {
    let u = UNIT_POS as usize;
    buf[u] = v;
    sync_cube();
    // a runtime value: a comptime one could not be halved in the loop
    let mut s = (CUBE_DIM_X / 2) as usize;
    while s > 0 {
        if u < s {
            let other = buf[u + s];
            if max {
                buf[u] = F::max(buf[u], other);
            } else {
                buf[u] += other;
            }
        }
        sync_cube();
        s /= 2;
    }
    let total = buf[0];
    sync_cube();
    total
}

#[cube]
fn cube_sum<F: Float>(v: F, buf: &mut SharedMemory<F>) -> F {
    cube_reduce::<F>(v, buf, false)
}

/// Mean and `1/√(var + ε)` of row `base..base + n` of `x`, every unit striding over it.
#[cube]
fn row_stats<F: Float>(
    x: &Tensor<F>,
    base: usize,
    n: usize,
    eps: f32,
    buf: &mut SharedMemory<F>,
    #[comptime] units: u32,
) -> (F, F) {
    let step = units as usize;
    let nf = F::cast_from(n);
    let mut acc = F::new(0.0);
    let mut i = UNIT_POS as usize;
    while i < n {
        acc += x[base + i];
        i += step;
    }
    let mean = cube_sum::<F>(acc, buf) / nf;
    let mut acc2 = F::new(0.0);
    let mut j = UNIT_POS as usize;
    while j < n {
        let c = x[base + j] - mean;
        acc2 += c * c;
        j += step;
    }
    let var = cube_sum::<F>(acc2, buf) / nf;
    (mean, F::recip(F::sqrt(var + F::cast_from(eps))))
}

/// One cube per row of `n`: `y = (x − mean)·rstd·gamma + beta`.
#[cube(launch)]
fn layernorm_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    y: &mut Tensor<F>,
    rows: u32,
    n: u32,
    eps: f32,
    #[comptime] units: u32,
    #[define(F)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let n = n as usize;
    let base = row * n;
    let mut buf = SharedMemory::<F>::new(units as usize);
    let (mean, rstd) = row_stats::<F>(x, base, n, eps, &mut buf, units);
    let mut i = UNIT_POS as usize;
    while i < n {
        y[base + i] = (x[base + i] - mean) * rstd * gamma[i] + beta[i];
        i += units as usize;
    }
}

/// One cube per row: with `x̂ = (x − mean)·rstd` and `d = g·gamma`,
/// `dx = (d − mean(d) − x̂·mean(d·x̂))·rstd`; with `affine`, `gx = g·x̂` too (summed over rows
/// into gamma's gradient by the caller).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn layernorm_backward_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    g: &Tensor<F>,
    dx: &mut Tensor<F>,
    gx: &mut Tensor<F>,
    rows: u32,
    n: u32,
    eps: f32,
    #[comptime] units: u32,
    #[comptime] affine: bool,
    #[define(F)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let n = n as usize;
    let step = units as usize;
    let base = row * n;
    let mut buf = SharedMemory::<F>::new(units as usize);
    let (mean, rstd) = row_stats::<F>(x, base, n, eps, &mut buf, units);
    let mut sd = F::new(0.0);
    let mut sdx = F::new(0.0);
    let mut i = UNIT_POS as usize;
    while i < n {
        let xhat = (x[base + i] - mean) * rstd;
        let d = g[base + i] * gamma[i];
        sd += d;
        sdx += d * xhat;
        i += step;
    }
    let nf = F::cast_from(n);
    let mean_d = cube_sum::<F>(sd, &mut buf) / nf;
    let mean_dx = cube_sum::<F>(sdx, &mut buf) / nf;
    let mut j = UNIT_POS as usize;
    while j < n {
        let xhat = (x[base + j] - mean) * rstd;
        let gj = g[base + j];
        dx[base + j] = (gj * gamma[j] - mean_d - xhat * mean_dx) * rstd;
        if affine {
            gx[base + j] = gj * xhat;
        }
        j += step;
    }
}

/// One cube per row of `len` scores: row `r` is query `r mod t`, which sees the first
/// `len − t + r mod t + 1` keys; `p = softmax(s·scale)` over those, 0 beyond.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn causal_softmax_kernel<F: Float>(
    s: &Tensor<F>,
    p: &mut Tensor<F>,
    rows: u32,
    t: u32,
    len: u32,
    scale: f32,
    #[comptime] units: u32,
    #[define(F)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let len = len as usize;
    let t = t as usize;
    let step = units as usize;
    let base = row * len;
    let visible = len - t + row % t + 1;
    let sc = F::cast_from(scale);
    let mut buf = SharedMemory::<F>::new(units as usize);
    let mut m = F::new(f32::MIN);
    let mut i = UNIT_POS as usize;
    while i < visible {
        m = F::max(m, s[base + i] * sc);
        i += step;
    }
    let mx = cube_reduce::<F>(m, &mut buf, true);
    let mut acc = F::new(0.0);
    let mut j = UNIT_POS as usize;
    while j < visible {
        acc += F::exp(s[base + j] * sc - mx);
        j += step;
    }
    let inv = F::recip(cube_sum::<F>(acc, &mut buf));
    let mut k = UNIT_POS as usize;
    while k < len {
        if k < visible {
            p[base + k] = F::exp(s[base + k] * sc - mx) * inv;
        } else {
            p[base + k] = F::new(0.0);
        }
        k += step;
    }
}

/// One cube per row: `ds = p·(dp − Σ p·dp)·scale`.
#[cube(launch)]
fn softmax_backward_kernel<F: Float>(
    p: &Tensor<F>,
    dp: &Tensor<F>,
    ds: &mut Tensor<F>,
    rows: u32,
    len: u32,
    scale: f32,
    #[comptime] units: u32,
    #[define(F)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let len = len as usize;
    let step = units as usize;
    let base = row * len;
    let mut buf = SharedMemory::<F>::new(units as usize);
    let mut acc = F::new(0.0);
    let mut i = UNIT_POS as usize;
    while i < len {
        acc += p[base + i] * dp[base + i];
        i += step;
    }
    let dot = cube_sum::<F>(acc, &mut buf);
    let sc = F::cast_from(scale);
    let mut j = UNIT_POS as usize;
    while j < len {
        ds[base + j] = p[base + j] * (dp[base + j] - dot) * sc;
        j += step;
    }
}

/// `log Σ exp` of row `base..base + n`, each unit keeping a running maximum and a sum scaled
/// to it (one pass, the online softmax), then the units' pairs combined.
#[cube]
fn row_logsumexp<F: Float>(
    x: &Tensor<F>,
    base: usize,
    n: usize,
    buf: &mut SharedMemory<F>,
    #[comptime] units: u32,
) -> F {
    let mut m = F::new(f32::MIN);
    let mut acc = F::new(0.0);
    let mut i = UNIT_POS as usize;
    while i < n {
        let v = x[base + i];
        let next = F::max(m, v);
        acc = acc * F::exp(m - next) + F::exp(v - next);
        m = next;
        i += units as usize;
    }
    let top = cube_reduce::<F>(m, buf, true);
    let total = cube_sum::<F>(acc * F::exp(m - top), buf);
    top + F::ln(total)
}

/// One cube per row of `v` logits: `out = weight·(log Σ exp − logit[target])`, 0 for a row of
/// weight 0 (its logits are not read).
#[cube(launch)]
fn weighted_nll_kernel<F: Float, I: Numeric>(
    logits: &Tensor<F>,
    targets: &Tensor<I>,
    weights: &Tensor<F>,
    out: &mut Tensor<F>,
    rows: u32,
    v: u32,
    #[comptime] units: u32,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let w = weights[row];
    if w == F::new(0.0) {
        if UNIT_POS == 0 {
            out[row] = F::new(0.0);
        }
        terminate!();
    }
    let v = v as usize;
    let base = row * v;
    let mut buf = SharedMemory::<F>::new(units as usize);
    let lse = row_logsumexp::<F>(logits, base, v, &mut buf, units);
    if UNIT_POS == 0 {
        let t = u32::cast_from(targets[row]) as usize;
        out[row] = w * (lse - logits[base + t]);
    }
}

/// One cube per row: `d = (softmax(logits) − one-hot(target))·coef` (`coef` = weight times the
/// loss's gradient), zeros for a row of `coef` 0.
#[cube(launch)]
fn weighted_nll_backward_kernel<F: Float, I: Numeric>(
    logits: &Tensor<F>,
    targets: &Tensor<I>,
    coef: &Tensor<F>,
    d: &mut Tensor<F>,
    rows: u32,
    v: u32,
    #[comptime] units: u32,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let v = v as usize;
    let base = row * v;
    let c = coef[row];
    let mut i = UNIT_POS as usize;
    if c == F::new(0.0) {
        while i < v {
            d[base + i] = F::new(0.0);
            i += units as usize;
        }
        terminate!();
    }
    let mut buf = SharedMemory::<F>::new(units as usize);
    let lse = row_logsumexp::<F>(logits, base, v, &mut buf, units);
    let t = u32::cast_from(targets[row]) as usize;
    while i < v {
        let mut y = F::exp(logits[base + i] - lse) * c;
        if i == t {
            y -= c;
        }
        d[base + i] = y;
        i += units as usize;
    }
}

/// For element `pos` of the contiguous `[b, h, T, d]` tensor `like`: its index `j` in the head,
/// its position `t`, and the offset of the same `[b, h, t]` row in `strided` (`[b, h, T, ·]`,
/// any strides).
#[cube]
fn head_coords<F: Float>(
    pos: usize,
    like: &Tensor<F>,
    strided: &Tensor<F>,
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
/// beyond (where the tables hold cos 1 and sin 0).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn split_qkv_rope_kernel<F: Float>(
    qkv: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    q: &mut Tensor<F>,
    k: &mut Tensor<F>,
    v: &mut Tensor<F>,
    ndims: u32,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= q.len() {
        terminate!();
    }
    let d = q.shape(3);
    let (j, t, base) = head_coords::<F>(pos, q, qkv);
    let s3 = qkv.stride(3);
    let nd = ndims as usize;
    let half = nd / 2;
    let mut rq = F::new(0.0);
    let mut rk = F::new(0.0);
    if j < half {
        rq = -qkv[base + (j + half) * s3];
        rk = -qkv[base + (d + j + half) * s3];
    } else if j < nd {
        rq = qkv[base + (j - half) * s3];
        rk = qkv[base + (d + j - half) * s3];
    }
    let c = cos[t * d + j];
    let sn = sin[t * d + j];
    q[pos] = qkv[base + j * s3] * c + rq * sn;
    k[pos] = qkv[base + (d + j) * s3] * c + rk * sn;
    v[pos] = qkv[base + (2 * d + j) * s3];
}

/// The adjoint of [`split_qkv_rope_kernel`]: one unit per element of `dq`, `dk`, `dv`
/// (contiguous), writing the three elements of `out: [b, h, T, 3·d]` (any strides) it feeds.
/// `apply_transposed(g)` is `g·cos + g[j + ndims/2]·sin[j + ndims/2]` below `ndims/2`,
/// `g·cos − g[j − ndims/2]·sin[j − ndims/2]` up to `ndims`, `g` beyond.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn split_qkv_rope_backward_kernel<F: Float>(
    dq: &Tensor<F>,
    dk: &Tensor<F>,
    dv: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    out: &mut Tensor<F>,
    ndims: u32,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= dq.len() {
        terminate!();
    }
    let d = dq.shape(3);
    let (j, t, base) = head_coords::<F>(pos, dq, out);
    let s3 = out.stride(3);
    let nd = ndims as usize;
    let half = nd / 2;
    let row = pos - j;
    let tab = t * d;
    let c = cos[tab + j];
    let mut gq = dq[pos] * c;
    let mut gk = dk[pos] * c;
    if j < half {
        let sn = sin[tab + j + half];
        gq += dq[row + j + half] * sn;
        gk += dk[row + j + half] * sn;
    } else if j < nd {
        let sn = sin[tab + j - half];
        gq -= dq[row + j - half] * sn;
        gk -= dk[row + j - half] * sn;
    }
    out[base + j * s3] = gq;
    out[base + (d + j) * s3] = gk;
    out[base + (2 * d + j) * s3] = dv[pos];
}

fn empty_like<R: CubeRuntime>(t: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    empty_device_dtype(t.client.clone(), t.device.clone(), shape, dtype)
}

fn elemwise_launch<R: CubeRuntime>(t: &CubeTensor<R>) -> (CubeCount, CubeDim) {
    let n = t.meta.num_elements();
    let dim = CubeDim::new_1d(ELEMWISE_UNITS);
    (calculate_cube_count_elemwise(&t.client, n, dim), dim)
}

/// Rows, row length, and the launch of a row kernel: a power-of-two cube of at most
/// [`ROW_UNITS`] units per row, rows spread over as many cube dimensions as the device needs.
fn row_launch<R: CubeRuntime>(t: &CubeTensor<R>) -> (usize, usize, CubeCount, CubeDim, u32) {
    let n = *t.meta.shape().last().expect("a tensor with dimensions");
    let rows = t.meta.num_elements() / n.max(1);
    let max_units = t.client.properties().hardware.max_cube_dim.0.min(ROW_UNITS);
    let units = (n.next_power_of_two() as u32).clamp(1, max_units);
    let count = CubeCountSelection::new(&t.client, rows as u32).cube_count();
    (rows, n, count, CubeDim::new_1d(units), units)
}

/// Exact GELU, `x·Φ(x)`, in one pass.
pub fn gelu<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let y = empty_like(&x, x.meta.shape().clone(), x.dtype);
    let (count, dim) = elemwise_launch(&x);
    let dtype = x.dtype;
    gelu_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        x.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        dtype.into(),
    );
    y
}

/// `x` in `g`'s dtype, contiguous.
fn like_grad<R: CubeRuntime>(x: CubeTensor<R>, g: &CubeTensor<R>) -> CubeTensor<R> {
    let x = into_contiguous(x);
    if x.dtype == g.dtype {
        x
    } else {
        cast(x, g.dtype)
    }
}

/// GELU's input gradient for the output gradient `g`, in `g`'s dtype (`x` may be bf16).
pub fn gelu_backward<R: CubeRuntime>(x: CubeTensor<R>, g: CubeTensor<R>) -> CubeTensor<R> {
    let g = into_contiguous(g);
    let x = like_grad(x, &g);
    let dx = empty_like(&g, g.meta.shape().clone(), g.dtype);
    let (count, dim) = elemwise_launch(&g);
    let dtype = g.dtype;
    gelu_backward_kernel::launch::<R>(
        &g.client.clone(),
        count,
        dim,
        x.into_tensor_arg(),
        g.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        dtype.into(),
    );
    dx
}

/// LayerNorm over the last dimension, one cube per row.
pub fn layernorm<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    eps: f64,
) -> CubeTensor<R> {
    let (x, gamma, beta) = (
        into_contiguous(x),
        into_contiguous(gamma),
        into_contiguous(beta),
    );
    let y = empty_like(&x, x.meta.shape().clone(), x.dtype);
    let (rows, n, count, dim, units) = row_launch(&x);
    let dtype = x.dtype;
    layernorm_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        rows as u32,
        n as u32,
        eps as f32,
        units,
        dtype.into(),
    );
    y
}

/// LayerNorm's input gradient for the output gradient `g` (in `g`'s dtype; `x` may be bf16)
/// and, with `affine`, `g·x̂` (same shape), which summed over rows is gamma's gradient.
pub fn layernorm_backward<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    g: CubeTensor<R>,
    eps: f64,
    affine: bool,
) -> (CubeTensor<R>, Option<CubeTensor<R>>) {
    let (gamma, g) = (into_contiguous(gamma), into_contiguous(g));
    let x = like_grad(x, &g);
    let shape = g.meta.shape().clone();
    let dx = empty_like(&g, shape.clone(), g.dtype);
    // without `affine` the kernel never writes `gx`: a one-element placeholder
    let gx = empty_like(&g, if affine { shape } else { Shape::new([1]) }, g.dtype);
    let (rows, n, count, dim, units) = row_launch(&g);
    let dtype = g.dtype;
    layernorm_backward_kernel::launch::<R>(
        &g.client.clone(),
        count,
        dim,
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        g.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        gx.clone().into_tensor_arg(),
        rows as u32,
        n as u32,
        eps as f32,
        units,
        affine,
        dtype.into(),
    );
    (dx, affine.then_some(gx))
}

/// `softmax(scores·scale + causal mask)` over the last dimension of `scores: [b, h, T, S]`
/// (query `i` sees keys `0..=S − T + i`), one cube per row.
pub fn causal_softmax<R: CubeRuntime>(scores: CubeTensor<R>, scale: f64) -> CubeTensor<R> {
    let s = into_contiguous(scores);
    let t = s.meta.shape()[2];
    let p = empty_like(&s, s.meta.shape().clone(), s.dtype);
    let (rows, len, count, dim, units) = row_launch(&s);
    let dtype = s.dtype;
    causal_softmax_kernel::launch::<R>(
        &s.client.clone(),
        count,
        dim,
        s.into_tensor_arg(),
        p.clone().into_tensor_arg(),
        rows as u32,
        t as u32,
        len as u32,
        scale as f32,
        units,
        dtype.into(),
    );
    p
}

/// The scores' gradient from the softmax output `p` and its gradient `dp` (same shape):
/// `p·(dp − rowsum(p·dp))·scale`, one cube per row.
pub fn softmax_backward<R: CubeRuntime>(
    p: CubeTensor<R>,
    dp: CubeTensor<R>,
    scale: f64,
) -> CubeTensor<R> {
    let (p, dp) = (into_contiguous(p), into_contiguous(dp));
    let dp = if dp.dtype == p.dtype {
        dp
    } else {
        cast(dp, p.dtype)
    };
    let ds = empty_like(&p, p.meta.shape().clone(), p.dtype);
    let (rows, len, count, dim, units) = row_launch(&p);
    let dtype = p.dtype;
    softmax_backward_kernel::launch::<R>(
        &p.client.clone(),
        count,
        dim,
        p.into_tensor_arg(),
        dp.into_tensor_arg(),
        ds.clone().into_tensor_arg(),
        rows as u32,
        len as u32,
        scale as f32,
        units,
        dtype.into(),
    );
    ds
}

/// Per row of `logits: [b, T, V]`, `weight·(log Σ exp − logit[target])` (`targets`, `weights`:
/// `[b, T, 1]`): `[b·T]`, whose sum is the weighted negative log-likelihood.
pub fn weighted_nll_rows<R: CubeRuntime>(
    logits: CubeTensor<R>,
    targets: CubeTensor<R>,
    weights: CubeTensor<R>,
) -> CubeTensor<R> {
    let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
    let weights = into_contiguous(weights);
    let (rows, v, count, dim, units) = row_launch(&logits);
    let out = empty_like(&logits, Shape::new([rows]), logits.dtype);
    let dtypes = [logits.dtype.into(), targets.dtype.into()];
    weighted_nll_kernel::launch::<R>(
        &logits.client.clone(),
        count,
        dim,
        logits.into_tensor_arg(),
        targets.into_tensor_arg(),
        weights.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        v as u32,
        units,
        dtypes,
    );
    out
}

/// The logits' gradient of the weighted negative log-likelihood: `(softmax − one-hot)·coef`
/// per row, `coef: [b, T, 1]` the weights times the loss's gradient.
pub fn weighted_nll_backward<R: CubeRuntime>(
    logits: CubeTensor<R>,
    targets: CubeTensor<R>,
    coef: CubeTensor<R>,
) -> CubeTensor<R> {
    let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
    let coef = into_contiguous(coef);
    let d = empty_like(&logits, logits.meta.shape().clone(), logits.dtype);
    let (rows, v, count, dim, units) = row_launch(&logits);
    let dtypes = [logits.dtype.into(), targets.dtype.into()];
    weighted_nll_backward_kernel::launch::<R>(
        &logits.client.clone(),
        count,
        dim,
        logits.into_tensor_arg(),
        targets.into_tensor_arg(),
        coef.into_tensor_arg(),
        d.clone().into_tensor_arg(),
        rows as u32,
        v as u32,
        units,
        dtypes,
    );
    d
}

/// The rotary tables in `like`'s dtype, contiguous.
fn tables_like<R: CubeRuntime>(
    cos: CubeTensor<R>,
    sin: CubeTensor<R>,
    like: &CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (cos, sin) = (into_contiguous(cos), into_contiguous(sin));
    if cos.dtype == like.dtype {
        (cos, sin)
    } else {
        (cast(cos, like.dtype), cast(sin, like.dtype))
    }
}

/// q and k (rotary embedding applied) and v, `[b, h, T, d]` each and contiguous, from the
/// fused projection `qkv: [b, h, T, 3·d]` (read through its strides, no copy first) and the
/// `[1, 1, T, d]` tables, in one pass.
pub fn split_qkv_rope<R: CubeRuntime>(
    qkv: CubeTensor<R>,
    cos: CubeTensor<R>,
    sin: CubeTensor<R>,
    ndims: usize,
) -> [CubeTensor<R>; 3] {
    let (cos, sin) = tables_like(cos, sin, &qkv);
    let dims = qkv.meta.shape().clone();
    let shape = Shape::new([dims[0], dims[1], dims[2], dims[3] / 3]);
    let [q, k, v] = [(); 3].map(|_| empty_like(&qkv, shape.clone(), qkv.dtype));
    let (count, dim) = elemwise_launch(&q);
    let dtype = qkv.dtype;
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
        dtype.into(),
    );
    [q, k, v]
}

/// The gradient of `qkv` from those of q, k and v, written into `out` (`[b, h, T, 3·d]`, any
/// strides: the caller picks the layout) in one pass, and returned.
pub fn split_qkv_rope_backward<R: CubeRuntime>(
    [dq, dk, dv]: [CubeTensor<R>; 3],
    cos: CubeTensor<R>,
    sin: CubeTensor<R>,
    ndims: usize,
    out: CubeTensor<R>,
) -> CubeTensor<R> {
    let [dq, dk, dv] = [dq, dk, dv].map(into_contiguous);
    let [dk, dv] = [dk, dv].map(|t| {
        if t.dtype == dq.dtype {
            t
        } else {
            cast(t, dq.dtype)
        }
    });
    let (cos, sin) = tables_like(cos, sin, &dq);
    let (count, dim) = elemwise_launch(&dq);
    let dtype = dq.dtype;
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
        dtype.into(),
    );
    out
}
