//! Exact GELU, `x·Φ(x)`, and its gradient: one element-wise pass each, computed in f32
//! whatever the tensors' float type (bf16 inside a bf16 MLP), as PyTorch computes a bf16 GELU.

use super::*;

// `f32::erf` is CubeCL's (std's own is unstable)
#[allow(unstable_name_collisions)]
#[cube(launch)]
fn gelu_kernel<F: Float>(x: &Array<F>, y: &mut Array<F>, #[define(F)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let v = f32::cast_from(x[i]);
        y[i] = F::cast_from(v * (f32::erf(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5);
    }
}

/// `dx = g·(Φ(x) + x·φ(x))`, written in `g`'s type `F` (the saved `x` may be bf16 where `g` is
/// f32).
#[allow(unstable_name_collisions)]
#[cube(launch)]
fn gelu_backward_kernel<X: Float, F: Float>(
    x: &Array<X>,
    g: &Array<F>,
    dx: &mut Array<F>,
    #[define(X, F)] _dtypes: [StorageType; 2],
) {
    let i = ABSOLUTE_POS;
    if i < dx.len() {
        let v = f32::cast_from(x[i]);
        let cdf = (f32::erf(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5;
        // 1/√(2π)
        let pdf = f32::exp(v * v * -0.5) * 0.398_942_3;
        dx[i] = F::cast_from(f32::cast_from(g[i]) * (cdf + v * pdf));
    }
}

/// Exact GELU, `x·Φ(x)`, in one pass, in `x`'s dtype.
pub fn gelu<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let y = empty_like(&x, x.meta.shape().clone(), x.dtype);
    let (count, dim) = elemwise_launch(&x);
    let dtype = x.dtype;
    gelu_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        x.into_array_arg(),
        y.clone().into_array_arg(),
        dtype.into(),
    );
    y
}

/// GELU's input gradient for the output gradient `g`, in `g`'s dtype (`x` may be bf16).
pub fn gelu_backward<R: CubeRuntime>(x: CubeTensor<R>, g: CubeTensor<R>) -> CubeTensor<R> {
    let (g, x) = (into_contiguous(g), into_contiguous(x));
    let dx = empty_like(&g, g.meta.shape().clone(), g.dtype);
    let (count, dim) = elemwise_launch(&g);
    let dtypes = [x.dtype.into(), g.dtype.into()];
    gelu_backward_kernel::launch::<R>(
        &g.client.clone(),
        count,
        dim,
        x.into_array_arg(),
        g.into_array_arg(),
        dx.clone().into_array_arg(),
        dtypes,
    );
    dx
}
