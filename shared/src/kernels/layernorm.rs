//! LayerNorm over the last dimension and its gradients: a row's units (a plane, or a cube) per
//! row, the mean and the variance in two passes over the row, vector loads, computed in f32.

use super::*;

/// Mean and `1/√(var + ε)` of the row of `n` elements starting at vector `base` of `x`, in
/// f32, the row's units striding over its vectors.
#[cube]
#[allow(clippy::too_many_arguments)]
fn row_stats<X: Float, N: Size>(
    x: &Array<Vector<X, N>>,
    base: usize,
    n: usize,
    eps: f32,
    buf: &mut SharedMemory<f32>,
    #[comptime] units: u32,
    #[comptime] plane: bool,
) -> (f32, f32) {
    let vectors = n / N::value();
    let step = units as usize;
    let nf = f32::cast_from(n);
    let mut acc = Vector::<f32, N>::new(0.0);
    let mut i = UNIT_POS_X as usize;
    while i < vectors {
        acc += Vector::cast_from(x[base + i]);
        i += step;
    }
    let mean = row_sum::<f32>(lanes_sum::<N>(acc), buf, plane) / nf;
    let mut acc2 = Vector::<f32, N>::new(0.0);
    let mut j = UNIT_POS_X as usize;
    while j < vectors {
        let c = Vector::<f32, N>::cast_from(x[base + j]) - Vector::new(mean);
        acc2 += c * c;
        j += step;
    }
    let var = row_sum::<f32>(lanes_sum::<N>(acc2), buf, plane) / nf;
    (mean, f32::recip(f32::sqrt(var + eps)))
}

/// Per row of `n`: `y = (x − mean)·rstd·gamma + beta`, computed in f32, `x` read as `X` (it
/// may be bf16), gamma and beta as `F`, written as `Y` (bf16 for a bf16 product to read).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn layernorm_kernel<X: Float, F: Float, Y: Float, N: Size>(
    x: &Array<Vector<X, N>>,
    gamma: &Array<Vector<F, N>>,
    beta: &Array<Vector<F, N>>,
    y: &mut Array<Vector<Y, N>>,
    rows: u32,
    row_len: u32,
    eps: f32,
    #[comptime] units: u32,
    #[comptime] per_cube: u32,
    #[comptime] plane: bool,
    #[define(X, F, Y)] _dtypes: [StorageType; 3],
) {
    let row = row_index(per_cube);
    if row >= rows as usize {
        terminate!();
    }
    let n = row_len as usize;
    let vectors = n / N::value();
    let base = row * vectors;
    let mut buf = row_buffer(units, plane);
    let (mean, rstd) = row_stats::<X, N>(x, base, n, eps, &mut buf, units, plane);
    let mut i = UNIT_POS_X as usize;
    while i < vectors {
        let xhat =
            (Vector::<f32, N>::cast_from(x[base + i]) - Vector::new(mean)) * Vector::new(rstd);
        let out = xhat * Vector::cast_from(gamma[i]) + Vector::cast_from(beta[i]);
        y[base + i] = Vector::cast_from(out);
        i += units as usize;
    }
}

/// Per row: with `x̂ = (x − mean)·rstd` and `d = g·gamma`,
/// `dx = (d − mean(d) − x̂·mean(d·x̂))·rstd`; with `affine`, `gx = g·x̂` too (summed over rows
/// into gamma's gradient by the caller). Computed in f32; `dx` written in `g`'s type `G`, `gx`
/// in gamma's `F`; the saved `x` may be bf16.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn layernorm_backward_kernel<X: Float, F: Float, G: Float, N: Size>(
    x: &Array<Vector<X, N>>,
    gamma: &Array<Vector<F, N>>,
    g: &Array<Vector<G, N>>,
    dx: &mut Array<Vector<G, N>>,
    gx: &mut Array<Vector<F, N>>,
    rows: u32,
    row_len: u32,
    eps: f32,
    #[comptime] units: u32,
    #[comptime] per_cube: u32,
    #[comptime] plane: bool,
    #[comptime] affine: bool,
    #[define(X, F, G)] _dtypes: [StorageType; 3],
) {
    let row = row_index(per_cube);
    if row >= rows as usize {
        terminate!();
    }
    let n = row_len as usize;
    let vectors = n / N::value();
    let step = units as usize;
    let base = row * vectors;
    let mut buf = row_buffer(units, plane);
    let (mean, rstd) = row_stats::<X, N>(x, base, n, eps, &mut buf, units, plane);
    let (mean, rstd) = (Vector::<f32, N>::new(mean), Vector::<f32, N>::new(rstd));
    let mut sd = Vector::<f32, N>::new(0.0);
    let mut sdx = Vector::<f32, N>::new(0.0);
    let mut i = UNIT_POS_X as usize;
    while i < vectors {
        let xhat = (Vector::<f32, N>::cast_from(x[base + i]) - mean) * rstd;
        let d = Vector::<f32, N>::cast_from(g[base + i]) * Vector::cast_from(gamma[i]);
        sd += d;
        sdx += d * xhat;
        i += step;
    }
    let nf = f32::cast_from(n);
    let mean_d = Vector::new(row_sum::<f32>(lanes_sum::<N>(sd), &mut buf, plane) / nf);
    let mean_dx = Vector::new(row_sum::<f32>(lanes_sum::<N>(sdx), &mut buf, plane) / nf);
    let mut j = UNIT_POS_X as usize;
    while j < vectors {
        let xhat = (Vector::<f32, N>::cast_from(x[base + j]) - mean) * rstd;
        let gj = Vector::<f32, N>::cast_from(g[base + j]);
        let d = gj * Vector::cast_from(gamma[j]);
        dx[base + j] = Vector::cast_from((d - mean_d - xhat * mean_dx) * rstd);
        if affine {
            gx[base + j] = Vector::cast_from(gj * xhat);
        }
        j += step;
    }
}

/// LayerNorm over the last dimension, a row's units per row, written in `out` (`x` may be bf16).
pub fn layernorm<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    eps: f64,
    out: DType,
) -> CubeTensor<R> {
    let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
    let beta = contiguous_like(beta, &gamma);
    let y = empty_like(&x, x.meta.shape().clone(), out);
    let l = row_launch(&x, &[x.dtype, gamma.dtype, out]);
    let dtypes = [x.dtype.into(), gamma.dtype.into(), out.into()];
    layernorm_kernel::launch::<R>(
        &x.client.clone(),
        l.count,
        l.dim,
        l.vector,
        x.into_array_arg(),
        gamma.into_array_arg(),
        beta.into_array_arg(),
        y.clone().into_array_arg(),
        l.rows as u32,
        l.n as u32,
        eps as f32,
        l.units,
        l.per_cube,
        l.plane,
        dtypes,
    );
    y
}

/// LayerNorm's input gradient for the output gradient `g` (in `g`'s dtype; `x` may be bf16)
/// and, with `affine`, `g·x̂` (same shape, in gamma's dtype), which summed over rows is gamma's
/// gradient.
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
    let shape = g.meta.shape().clone();
    let dx = empty_like(&g, shape.clone(), g.dtype);
    // without `affine` the kernel never writes `gx`: a one-element placeholder
    let gx = empty_like(
        &g,
        if affine { shape } else { Shape::new([1]) },
        gamma.dtype,
    );
    let l = row_launch(&g, &[x.dtype, g.dtype, gamma.dtype]);
    let dtypes = [x.dtype.into(), gamma.dtype.into(), g.dtype.into()];
    layernorm_backward_kernel::launch::<R>(
        &g.client.clone(),
        l.count,
        l.dim,
        l.vector,
        x.into_array_arg(),
        gamma.into_array_arg(),
        g.into_array_arg(),
        dx.clone().into_array_arg(),
        gx.clone().into_array_arg(),
        l.rows as u32,
        l.n as u32,
        eps as f32,
        l.units,
        l.per_cube,
        l.plane,
        affine,
        dtypes,
    );
    (dx, affine.then_some(gx))
}
