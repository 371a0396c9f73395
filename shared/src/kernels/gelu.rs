//! Exact GELU, `x·Φ(x)`, and its gradient: one element-wise pass each.

use super::*;

#[cube(launch)]
fn gelu_kernel<F: Float>(x: &Tensor<F>, y: &mut Tensor<F>, #[define(F)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let v = x[i];
        y[i] =
            v * (F::erf(v * F::new(std::f32::consts::FRAC_1_SQRT_2)) + F::new(1.0)) * F::new(0.5);
    }
}

/// `dx = g·(Φ(x) + x·φ(x))`, in `g`'s type `F` (the saved `x` may be bf16).
#[cube(launch)]
fn gelu_backward_kernel<X: Float, F: Float>(
    x: &Tensor<X>,
    g: &Tensor<F>,
    dx: &mut Tensor<F>,
    #[define(X, F)] _dtypes: [StorageType; 2],
) {
    let i = ABSOLUTE_POS;
    if i < dx.len() {
        let v = F::cast_from(x[i]);
        let cdf = (F::erf(v * F::new(std::f32::consts::FRAC_1_SQRT_2)) + F::new(1.0)) * F::new(0.5);
        // 1/√(2π)
        let pdf = F::exp(v * v * F::new(-0.5)) * F::new(0.398_942_3);
        dx[i] = g[i] * (cdf + v * pdf);
    }
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
        x.into_tensor_arg(),
        g.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        dtypes,
    );
    dx
}
