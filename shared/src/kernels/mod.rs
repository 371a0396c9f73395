//! Fused CubeCL kernels (CUDA, wgpu, WebGPU) for the training step's element-wise and row-wise
//! work, forward and backward: the split of the fused qkv projection with the rotary embedding
//! (`attention.rs`), attention's causal softmax (`attention.rs`), the loss (`loss.rs`), GELU
//! (`gelu.rs`) and LayerNorm (`layernorm.rs`). burn 0.21 without fusion runs these as one
//! kernel per operation (LayerNorm's forward pass alone is nine kernels and seven passes over
//! the activations; the masked softmax of attention's scores a dozen; the loss keeps
//! `[b, T, vocab]` temporaries). Here each is one kernel: one pass for the element-wise ones,
//! one cube per row for the others, with the row reductions in shared memory (and a row's
//! log-sum-exp in one pass, the online softmax), as llm.c's
//! kernels do.
//!
//! Inputs are made contiguous first, and the kernels that index them by position alone take
//! them as CubeCL arrays, not tensors: a tensor argument's shape and strides go to the GPU as an
//! upload of their own before each launch on CUDA, an array's length in the launch's
//! parameters (the rotary kernels, which read strided views, keep tensors). Kernels compute in the gradient's (or the scores') dtype
//! and read or write bf16 where `--dtype bf16` keeps or feeds bf16: a saved bf16 input is
//! read as it is (GELU's and LayerNorm's backward), and q, k, v, the attention probabilities
//! and their gradient are written in bf16 for the bf16 products that take them, with no cast
//! kernel between. The tests check each kernel on wgpu.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::{cast, into_contiguous};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, server::CubeCountSelection};

mod attention;
mod flags;
mod gelu;
mod layernorm;
mod loss;
mod nf4;

pub use attention::{
    causal_softmax, causal_softmax_pair, softmax_backward, split_qkv_rope, split_qkv_rope_backward,
};
pub use flags::{signal, wait_for};
pub use gelu::{gelu, gelu_backward};
pub use layernorm::{layernorm, layernorm_backward};
pub use loss::{weighted_nll_backward, weighted_nll_rows};
pub use nf4::{Nf4Parts, nf4_dequantize};

/// Units per cube for the element-wise kernels.
const ELEMWISE_UNITS: u32 = 256;
/// The most units per cube in a row kernel (one cube per row): one warp on an NVIDIA GPU, as
/// llm.c's row kernels use. On lavapipe 32 units ran a 2-layer step 12 % faster than the burn
/// ops they replace, 256 units 10 % slower (each cube barrier costs a CPU-run device dearly).
const ROW_UNITS: u32 = 32;

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

/// `log Σ exp(x·scale)` over row `base..base + n`, each unit keeping a running maximum and a
/// sum scaled to it (one pass, the online softmax), then the units' pairs combined.
#[cube]
fn row_logsumexp<F: Float>(
    x: &Array<F>,
    base: usize,
    n: usize,
    scale: F,
    buf: &mut SharedMemory<F>,
    #[comptime] units: u32,
) -> F {
    let mut m = F::new(f32::MIN);
    let mut acc = F::new(0.0);
    let mut i = UNIT_POS as usize;
    while i < n {
        let v = x[base + i] * scale;
        let next = F::max(m, v);
        acc = acc * F::exp(m - next) + F::exp(v - next);
        m = next;
        i += units as usize;
    }
    let top = cube_reduce::<F>(m, buf, true);
    let total = cube_sum::<F>(acc * F::exp(m - top), buf);
    top + F::ln(total)
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

/// `x` contiguous and in f32 (the rotary tables, which the kernels read in f32).
fn f32_contiguous<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    // `cast` to the tensor's own dtype returns it as it is
    cast(into_contiguous(x), DType::F32)
}

/// `x` contiguous and in `like`'s dtype (a saved bf16 input for an f32 gradient, gamma for
/// LayerNorm's gradient, the gradients of k and v as q's).
fn contiguous_like<R: CubeRuntime>(x: CubeTensor<R>, like: &CubeTensor<R>) -> CubeTensor<R> {
    cast(into_contiguous(x), like.dtype)
}
