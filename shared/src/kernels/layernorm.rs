//! LayerNorm over the last dimension and its gradients: one cube per row, the mean and the
//! variance in two passes over the row.

use super::*;

/// Mean and `1/√(var + ε)` of row `base..base + n` of `x` (read as `F`), every unit striding
/// over it.
#[cube]
fn row_stats<X: Float, F: Float>(
    x: &Array<X>,
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
        acc += F::cast_from(x[base + i]);
        i += step;
    }
    let mean = cube_sum::<F>(acc, buf) / nf;
    let mut acc2 = F::new(0.0);
    let mut j = UNIT_POS as usize;
    while j < n {
        let c = F::cast_from(x[base + j]) - mean;
        acc2 += c * c;
        j += step;
    }
    let var = cube_sum::<F>(acc2, buf) / nf;
    (mean, F::recip(F::sqrt(var + F::cast_from(eps))))
}

/// One cube per row of `n`: `y = (x − mean)·rstd·gamma + beta`, `x` read as `F` (gamma's
/// type; `x` may be bf16).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn layernorm_kernel<X: Float, F: Float>(
    x: &Array<X>,
    gamma: &Array<F>,
    beta: &Array<F>,
    y: &mut Array<F>,
    rows: u32,
    n: u32,
    eps: f32,
    #[comptime] units: u32,
    #[define(X, F)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let n = n as usize;
    let base = row * n;
    let mut buf = SharedMemory::<F>::new(units as usize);
    let (mean, rstd) = row_stats::<X, F>(x, base, n, eps, &mut buf, units);
    let mut i = UNIT_POS as usize;
    while i < n {
        y[base + i] = (F::cast_from(x[base + i]) - mean) * rstd * gamma[i] + beta[i];
        i += units as usize;
    }
}

/// One cube per row: with `x̂ = (x − mean)·rstd` and `d = g·gamma`,
/// `dx = (d − mean(d) − x̂·mean(d·x̂))·rstd`; with `affine`, `gx = g·x̂` too (summed over rows
/// into gamma's gradient by the caller). In `g`'s type `F`; the saved `x` may be bf16.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn layernorm_backward_kernel<X: Float, F: Float>(
    x: &Array<X>,
    gamma: &Array<F>,
    g: &Array<F>,
    dx: &mut Array<F>,
    gx: &mut Array<F>,
    rows: u32,
    n: u32,
    eps: f32,
    #[comptime] units: u32,
    #[comptime] affine: bool,
    #[define(X, F)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let n = n as usize;
    let step = units as usize;
    let base = row * n;
    let mut buf = SharedMemory::<F>::new(units as usize);
    let (mean, rstd) = row_stats::<X, F>(x, base, n, eps, &mut buf, units);
    let mut sd = F::new(0.0);
    let mut sdx = F::new(0.0);
    let mut i = UNIT_POS as usize;
    while i < n {
        let xhat = (F::cast_from(x[base + i]) - mean) * rstd;
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
        let xhat = (F::cast_from(x[base + j]) - mean) * rstd;
        let gj = g[base + j];
        dx[base + j] = (gj * gamma[j] - mean_d - xhat * mean_dx) * rstd;
        if affine {
            gx[base + j] = gj * xhat;
        }
        j += step;
    }
}

/// LayerNorm over the last dimension, one cube per row, in gamma's dtype (`x` may be bf16).
pub fn layernorm<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    eps: f64,
) -> CubeTensor<R> {
    let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
    let beta = contiguous_like(beta, &gamma);
    let y = empty_like(&x, x.meta.shape().clone(), gamma.dtype);
    let (rows, n, count, dim, units) = row_launch(&x);
    let dtypes = [x.dtype.into(), gamma.dtype.into()];
    layernorm_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        x.into_array_arg(),
        gamma.into_array_arg(),
        beta.into_array_arg(),
        y.clone().into_array_arg(),
        rows as u32,
        n as u32,
        eps as f32,
        units,
        dtypes,
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
    let (gamma, g, x) = (
        into_contiguous(gamma),
        into_contiguous(g),
        into_contiguous(x),
    );
    let gamma = contiguous_like(gamma, &g);
    let shape = g.meta.shape().clone();
    let dx = empty_like(&g, shape.clone(), g.dtype);
    // without `affine` the kernel never writes `gx`: a one-element placeholder
    let gx = empty_like(&g, if affine { shape } else { Shape::new([1]) }, g.dtype);
    let (rows, n, count, dim, units) = row_launch(&g);
    let dtypes = [x.dtype.into(), g.dtype.into()];
    layernorm_backward_kernel::launch::<R>(
        &g.client.clone(),
        count,
        dim,
        x.into_array_arg(),
        gamma.into_array_arg(),
        g.into_array_arg(),
        dx.clone().into_array_arg(),
        gx.clone().into_array_arg(),
        rows as u32,
        n as u32,
        eps as f32,
        units,
        affine,
        dtypes,
    );
    (dx, affine.then_some(gx))
}
