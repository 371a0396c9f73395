//! The weighted negative log-likelihood of the logits and its gradient: a row's units per row,
//! vector loads, computed in f32.

use super::*;

/// Lane `t % width` of `v`, the element `t` of a row when `v` is its vector `t / width`.
#[cube]
fn lane<N: Size>(v: Vector<f32, N>, t: usize) -> f32 {
    let mut out = 0.0f32;
    #[unroll]
    for e in 0..N::value() {
        if e == t % N::value() {
            out = v[e];
        }
    }
    out
}

/// Per row of `v` logits: `out = weight·(log Σ exp − logit[target])`, computed in f32, 0 for a
/// row of weight 0 (its logits are not read).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn weighted_nll_kernel<F: Float, I: Numeric, N: Size>(
    logits: &Array<Vector<F, N>>,
    targets: &Array<I>,
    weights: &Array<F>,
    out: &mut Array<F>,
    rows: u32,
    v: u32,
    #[comptime] units: u32,
    #[comptime] per_cube: u32,
    #[comptime] plane: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = row_index(per_cube);
    if row >= rows as usize {
        terminate!();
    }
    let w = f32::cast_from(weights[row]);
    if w == 0.0 {
        if UNIT_POS_X == 0 {
            out[row] = F::new(0.0);
        }
        terminate!();
    }
    let v = v as usize;
    let base = row * (v / N::value());
    let mut buf = row_buffer(units, plane);
    let lse = row_logsumexp::<F, N>(logits, base, v, 1.0, &mut buf, units, plane);
    if UNIT_POS_X == 0 {
        let t = u32::cast_from(targets[row]) as usize;
        let logit = lane::<N>(Vector::cast_from(logits[base + t / N::value()]), t);
        out[row] = F::cast_from(w * (lse - logit));
    }
}

/// Per row: `d = (softmax(logits) − one-hot(target))·coef` (`coef` = weight times the loss's
/// gradient), computed in f32, zeros for a row of `coef` 0.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn weighted_nll_backward_kernel<F: Float, I: Numeric, O: Float, N: Size>(
    logits: &Array<Vector<F, N>>,
    targets: &Array<I>,
    coef: &Array<F>,
    d: &mut Array<Vector<O, N>>,
    rows: u32,
    v: u32,
    #[comptime] units: u32,
    #[comptime] per_cube: u32,
    #[comptime] plane: bool,
    #[define(F, I, O)] _dtypes: [StorageType; 3],
) {
    let row = row_index(per_cube);
    if row >= rows as usize {
        terminate!();
    }
    let v = v as usize;
    let width = N::value();
    let vectors = v / width;
    let base = row * vectors;
    let c = f32::cast_from(coef[row]);
    let mut i = UNIT_POS_X as usize;
    if c == 0.0 {
        while i < vectors {
            // through an f32 vector, as every other store of this kernel (`O` may be bf16)
            d[base + i] = Vector::cast_from(Vector::<f32, N>::new(0.0));
            i += units as usize;
        }
        terminate!();
    }
    let mut buf = row_buffer(units, plane);
    let lse = Vector::<f32, N>::new(row_logsumexp::<F, N>(
        logits, base, v, 1.0, &mut buf, units, plane,
    ));
    let t = u32::cast_from(targets[row]) as usize;
    let cv = Vector::<f32, N>::new(c);
    while i < vectors {
        let mut y = Vector::exp(Vector::<f32, N>::cast_from(logits[base + i]) - lse) * cv;
        if i == t / width {
            #[unroll]
            for e in 0..N::value() {
                if e == t % width {
                    y[e] -= c;
                }
            }
        }
        d[base + i] = Vector::cast_from(y);
        i += units as usize;
    }
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
    let l = row_launch(&logits, &[logits.dtype]);
    let out = empty_like(&logits, Shape::new([l.rows]), logits.dtype);
    let dtypes = [logits.dtype.into(), targets.dtype.into()];
    weighted_nll_kernel::launch::<R>(
        &logits.client.clone(),
        l.count,
        l.dim,
        l.vector,
        logits.into_array_arg(),
        targets.into_array_arg(),
        weights.into_array_arg(),
        out.clone().into_array_arg(),
        l.rows as u32,
        l.n as u32,
        l.units,
        l.per_cube,
        l.plane,
        dtypes,
    );
    out
}

/// The logits' gradient of the weighted negative log-likelihood: `(softmax − one-hot)·coef`
/// per row, `coef: [b, T, 1]` the weights times the loss's gradient, computed in f32 and
/// written in `out`.
pub fn weighted_nll_backward<R: CubeRuntime>(
    logits: CubeTensor<R>,
    targets: CubeTensor<R>,
    coef: CubeTensor<R>,
    out: DType,
) -> CubeTensor<R> {
    let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
    let coef = into_contiguous(coef);
    let d = empty_like(&logits, logits.meta.shape().clone(), out);
    let l = row_launch(&logits, &[logits.dtype, out]);
    let dtypes = [logits.dtype.into(), targets.dtype.into(), out.into()];
    weighted_nll_backward_kernel::launch::<R>(
        &logits.client.clone(),
        l.count,
        l.dim,
        l.vector,
        logits.into_array_arg(),
        targets.into_array_arg(),
        coef.into_array_arg(),
        d.clone().into_array_arg(),
        l.rows as u32,
        l.n as u32,
        l.units,
        l.per_cube,
        l.plane,
        dtypes,
    );
    d
}
