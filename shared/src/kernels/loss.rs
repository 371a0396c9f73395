//! The weighted negative log-likelihood of the logits and its gradient: one cube per row.

use super::*;

/// One cube per row of `v` logits: `out = weight·(log Σ exp − logit[target])`, 0 for a row of
/// weight 0 (its logits are not read).
#[cube(launch)]
fn weighted_nll_kernel<F: Float, I: Numeric>(
    logits: &Array<F>,
    targets: &Array<I>,
    weights: &Array<F>,
    out: &mut Array<F>,
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
    let lse = row_logsumexp::<F>(logits, base, v, F::new(1.0), &mut buf, units);
    if UNIT_POS == 0 {
        let t = u32::cast_from(targets[row]) as usize;
        out[row] = w * (lse - logits[base + t]);
    }
}

/// One cube per row: `d = (softmax(logits) − one-hot(target))·coef` (`coef` = weight times the
/// loss's gradient), zeros for a row of `coef` 0.
#[cube(launch)]
fn weighted_nll_backward_kernel<F: Float, I: Numeric>(
    logits: &Array<F>,
    targets: &Array<I>,
    coef: &Array<F>,
    d: &mut Array<F>,
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
    let lse = row_logsumexp::<F>(logits, base, v, F::new(1.0), &mut buf, units);
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
        logits.into_array_arg(),
        targets.into_array_arg(),
        weights.into_array_arg(),
        out.clone().into_array_arg(),
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
        logits.into_array_arg(),
        targets.into_array_arg(),
        coef.into_array_arg(),
        d.clone().into_array_arg(),
        rows as u32,
        v as u32,
        units,
        dtypes,
    );
    d
}
