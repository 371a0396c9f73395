//! Exact GELU, `x·Φ(x)`, and its gradient: one element-wise pass each, vector loads, computed
//! in f32 whatever the tensors' float type (bf16 inside a bf16 MLP), as PyTorch computes a
//! bf16 GELU; and the same of `x + bias` (a linear layer's product and its bias, added where
//! GELU reads the product: no pass of its own).

use super::*;

/// `Φ(v)`, the standard normal's distribution function.
#[cube]
fn normal_cdf<N: Size>(v: Vector<f32, N>) -> Vector<f32, N> {
    let erf = Vector::erf(v * Vector::new(std::f32::consts::FRAC_1_SQRT_2));
    (erf + Vector::new(1.0)) * Vector::new(0.5)
}

/// GELU's derivative at `v` times the output gradient `g`: `g·(Φ(v) + v·φ(v))`.
#[cube]
fn gelu_grad<N: Size>(v: Vector<f32, N>, g: Vector<f32, N>) -> Vector<f32, N> {
    // 1/√(2π)
    let pdf = Vector::exp(v * v * Vector::new(-0.5)) * Vector::new(0.398_942_3);
    g * (normal_cdf::<N>(v) + v * pdf)
}

#[cube(launch)]
fn gelu_kernel<F: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    y: &mut Array<Vector<F, N>>,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let v = Vector::<f32, N>::cast_from(x[i]);
        y[i] = Vector::cast_from(v * normal_cdf::<N>(v));
    }
}

/// `dx = g·(Φ(x) + x·φ(x))`, written in `g`'s type `F` (the saved `x` may be bf16 where `g` is
/// f32).
#[cube(launch)]
fn gelu_backward_kernel<X: Float, F: Float, N: Size>(
    x: &Array<Vector<X, N>>,
    g: &Array<Vector<F, N>>,
    dx: &mut Array<Vector<F, N>>,
    #[define(X, F)] _dtypes: [StorageType; 2],
) {
    let i = ABSOLUTE_POS;
    if i < dx.len() {
        let v = Vector::<f32, N>::cast_from(x[i]);
        dx[i] = Vector::cast_from(gelu_grad::<N>(v, Vector::cast_from(g[i])));
    }
}

/// `x + bias[column]` in f32: the `i`-th vector of `x`, the bias read at its column
/// (`row_len` columns).
#[cube]
fn biased<F: Float, P: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    bias: &Array<Vector<P, N>>,
    i: usize,
    row_len: u32,
) -> Vector<f32, N> {
    let j = i % (row_len as usize / N::value());
    Vector::<f32, N>::cast_from(x[i]) + Vector::cast_from(bias[j])
}

#[cube(launch)]
fn gelu_bias_kernel<F: Float, P: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    bias: &Array<Vector<P, N>>,
    y: &mut Array<Vector<F, N>>,
    row_len: u32,
    #[define(F, P)] _dtypes: [StorageType; 2],
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        let v = biased::<F, P, N>(x, bias, i, row_len);
        y[i] = Vector::cast_from(v * normal_cdf::<N>(v));
    }
}

/// The gradient of GELU at `x + bias` for the output gradient `g`, in `g`'s type `F`.
#[cube(launch)]
fn gelu_bias_backward_kernel<X: Float, P: Float, F: Float, N: Size>(
    x: &Array<Vector<X, N>>,
    bias: &Array<Vector<P, N>>,
    g: &Array<Vector<F, N>>,
    dx: &mut Array<Vector<F, N>>,
    row_len: u32,
    #[define(X, P, F)] _dtypes: [StorageType; 3],
) {
    let i = ABSOLUTE_POS;
    if i < dx.len() {
        let v = biased::<X, P, N>(x, bias, i, row_len);
        dx[i] = Vector::cast_from(gelu_grad::<N>(v, Vector::cast_from(g[i])));
    }
}

/// GELU of `x + bias` (`bias: [n]`, `x`'s last dimension), in one pass, computed in f32 and
/// written in `x`'s dtype.
pub fn gelu_bias<R: CubeRuntime>(x: CubeTensor<R>, bias: CubeTensor<R>) -> CubeTensor<R> {
    let (x, bias) = (into_contiguous(x), into_contiguous(bias));
    let row_len = bias.meta.num_elements();
    let y = empty_like(&x, x.meta.shape().clone(), x.dtype);
    let vector = vector_size(&x, &[x.dtype, bias.dtype], row_len);
    let (count, dim) = elemwise_launch(&x, vector);
    let dtypes = [x.dtype.into(), bias.dtype.into()];
    gelu_bias_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        vector,
        x.into_array_arg(),
        bias.into_array_arg(),
        y.clone().into_array_arg(),
        row_len as u32,
        dtypes,
    );
    y
}

/// [`gelu_bias`]'s input gradient for the output gradient `g`, in `g`'s dtype (`x` may be
/// bf16); the bias's gradient is its sum over the rows.
pub fn gelu_bias_backward<R: CubeRuntime>(
    x: CubeTensor<R>,
    bias: CubeTensor<R>,
    g: CubeTensor<R>,
) -> CubeTensor<R> {
    let (g, x, bias) = (
        into_contiguous(g),
        into_contiguous(x),
        into_contiguous(bias),
    );
    let row_len = bias.meta.num_elements();
    let dx = empty_like(&g, g.meta.shape().clone(), g.dtype);
    let vector = vector_size(&g, &[x.dtype, bias.dtype, g.dtype], row_len);
    let (count, dim) = elemwise_launch(&g, vector);
    let dtypes = [x.dtype.into(), bias.dtype.into(), g.dtype.into()];
    gelu_bias_backward_kernel::launch::<R>(
        &g.client.clone(),
        count,
        dim,
        vector,
        x.into_array_arg(),
        bias.into_array_arg(),
        g.into_array_arg(),
        dx.clone().into_array_arg(),
        row_len as u32,
        dtypes,
    );
    dx
}

/// Exact GELU, `x·Φ(x)`, in one pass, in `x`'s dtype.
pub fn gelu<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let y = empty_like(&x, x.meta.shape().clone(), x.dtype);
    let dtype = x.dtype;
    let vector = vector_size(&x, &[dtype], x.meta.num_elements());
    let (count, dim) = elemwise_launch(&x, vector);
    gelu_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        vector,
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
    let vector = vector_size(&g, &[x.dtype, g.dtype], g.meta.num_elements());
    let (count, dim) = elemwise_launch(&g, vector);
    let dtypes = [x.dtype.into(), g.dtype.into()];
    gelu_backward_kernel::launch::<R>(
        &g.client.clone(),
        count,
        dim,
        vector,
        x.into_array_arg(),
        g.into_array_arg(),
        dx.clone().into_array_arg(),
        dtypes,
    );
    dx
}
