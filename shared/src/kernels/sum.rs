//! `a + b` and `a + b + c` in one pass, where `b` is a tensor of the same shape or a bias
//! broadcast over the rows: a linear layer's product, its LoRA term and its bias (each in its
//! own dtype), the residual stream's gradient and the LayerNorms' (`a + b`); and
//! `(a + p) + (b + q) + c` with two biases: a parallel residual, its two branches' products
//! with their biases and the residual stream. Computed in f32 and rounded once, in the output's
//! dtype: burn would run one kernel per sum and per cast, each a pass over the activations.

use super::*;

/// One unit per vector: `out = a + b + c`, `b` indexed by the column (`row_len` columns) when
/// it is a bias.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn sum3_kernel<A: Float, B: Float, C: Float, O: Float, N: Size>(
    a: &Array<Vector<A, N>>,
    b: &Array<Vector<B, N>>,
    c: &Array<Vector<C, N>>,
    out: &mut Array<Vector<O, N>>,
    row_len: u32,
    #[comptime] bias: bool,
    #[comptime] with_c: bool,
    #[define(A, B, C, O)] _dtypes: [StorageType; 4],
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let mut j = i;
        if bias {
            j = i % (row_len as usize / N::value());
        }
        let mut s = Vector::<f32, N>::cast_from(a[i]) + Vector::<f32, N>::cast_from(b[j]);
        if with_c {
            s += Vector::<f32, N>::cast_from(c[i]);
        }
        out[i] = Vector::cast_from(s);
    }
}

/// `a + b + c` (`a` and `c` of one shape, `b` of that shape or, with `bias`, as long as its
/// last dimension), computed in f32 and written in `out`.
pub fn sum3<R: CubeRuntime>(
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    bias: bool,
    out: DType,
) -> CubeTensor<R> {
    launch_sum(a, b, Some(c), bias, out)
}

/// `a + b` (one shape, each in its own dtype), computed in f32 and written in `out`: the
/// three-term kernel without its third term.
pub fn sum2<R: CubeRuntime>(a: CubeTensor<R>, b: CubeTensor<R>, out: DType) -> CubeTensor<R> {
    launch_sum(a, b, None, false, out)
}

/// [`sum3_kernel`] over `a`, `b` and `c` (where `c` is none, `a` stands in for it, unread).
fn launch_sum<R: CubeRuntime>(
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: Option<CubeTensor<R>>,
    bias: bool,
    out: DType,
) -> CubeTensor<R> {
    let (a, b) = (into_contiguous(a), into_contiguous(b));
    let with_c = c.is_some();
    let c = c.map_or_else(|| a.clone(), into_contiguous);
    let shape = a.meta.shape().clone();
    let row_len = *shape.last().expect("a tensor with dimensions");
    let y = empty_like(&a, shape, out);
    let vector = vector_size(&a, &[a.dtype, b.dtype, c.dtype, out], row_len);
    let (count, dim) = elemwise_launch(&a, vector);
    let dtypes = [a.dtype.into(), b.dtype.into(), c.dtype.into(), out.into()];
    sum3_kernel::launch::<R>(
        &a.client.clone(),
        count,
        dim,
        vector,
        a.into_array_arg(),
        b.into_array_arg(),
        c.into_array_arg(),
        y.clone().into_array_arg(),
        row_len as u32,
        bias,
        with_c,
        dtypes,
    );
    y
}

/// One unit per vector: `out = a + p + b + q + c`, `p` and `q` biases indexed by the column
/// (`row_len` columns).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn sum5_kernel<A: Float, P: Float, C: Float, O: Float, N: Size>(
    a: &Array<Vector<A, N>>,
    p: &Array<Vector<P, N>>,
    b: &Array<Vector<A, N>>,
    q: &Array<Vector<P, N>>,
    c: &Array<Vector<C, N>>,
    out: &mut Array<Vector<O, N>>,
    row_len: u32,
    #[define(A, P, C, O)] _dtypes: [StorageType; 4],
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let j = i % (row_len as usize / N::value());
        let s = Vector::<f32, N>::cast_from(a[i])
            + Vector::<f32, N>::cast_from(p[j])
            + Vector::<f32, N>::cast_from(b[i])
            + Vector::<f32, N>::cast_from(q[j])
            + Vector::<f32, N>::cast_from(c[i]);
        out[i] = Vector::cast_from(s);
    }
}

/// `a + p + b + q + c` (`a`, `b` of one dtype and shape, `c` of that shape, `p` and `q` of one
/// dtype and as long as the last dimension), computed in f32 and written in `out`.
pub fn sum5<R: CubeRuntime>([a, p, b, q, c]: [CubeTensor<R>; 5], out: DType) -> CubeTensor<R> {
    let [a, p, b, q, c] = [a, p, b, q, c].map(into_contiguous);
    let shape = a.meta.shape().clone();
    let row_len = *shape.last().expect("a tensor with dimensions");
    let y = empty_like(&a, shape, out);
    let vector = vector_size(&a, &[a.dtype, p.dtype, c.dtype, out], row_len);
    let (count, dim) = elemwise_launch(&a, vector);
    let dtypes = [a.dtype.into(), p.dtype.into(), c.dtype.into(), out.into()];
    sum5_kernel::launch::<R>(
        &a.client.clone(),
        count,
        dim,
        vector,
        a.into_array_arg(),
        p.into_array_arg(),
        b.into_array_arg(),
        q.into_array_arg(),
        c.into_array_arg(),
        y.clone().into_array_arg(),
        row_len as u32,
        dtypes,
    );
    y
}
