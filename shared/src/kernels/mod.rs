//! Fused CubeCL kernels (CUDA, wgpu, WebGPU) for the training step's element-wise and row-wise
//! work, forward and backward: the split of the fused qkv projection with the rotary embedding
//! (`attention.rs`), attention's causal softmax (`attention.rs`), the loss (`loss.rs`), GELU
//! (`gelu.rs`), LayerNorm (`layernorm.rs`) and three-term sums (`sum.rs`). burn 0.21 without fusion runs these as one
//! kernel per operation (LayerNorm's forward pass alone is nine kernels and seven passes over
//! the activations; the masked softmax of attention's scores a dozen; the loss keeps
//! `[b, T, vocab]` temporaries). Here each is one kernel: one pass for the element-wise ones,
//! a row's units per row for the others (a row's log-sum-exp in one pass, the online softmax),
//! as llm.c's kernels do. On CUDA a row is one warp and eight rows share a cube, the row sums
//! going through warp shuffles (CubeCL's plane operations); where planes are not advertised
//! (lavapipe, WebGPU) a row is a cube of up to 32 units that sums through shared memory. Loads
//! are vectors of up to 16 bytes (4 f32 or 8 bf16, where a row's length allows), so that each
//! unit keeps enough bytes in flight for the memory's bandwidth; arithmetic is in f32.
//!
//! Inputs are made contiguous first, and the kernels that index them by position alone take
//! them as CubeCL arrays, not tensors: a tensor argument's shape and strides go to the GPU as an
//! upload of their own before each launch on CUDA, an array's length in the launch's
//! parameters (the rotary kernels, which read strided views, keep tensors). Kernels read or
//! write bf16 where `--dtype bf16` keeps or feeds bf16: a saved bf16 input is
//! read as it is (GELU's and LayerNorm's backward), and q, k, v, the attention probabilities
//! and their gradient are written in bf16 for the bf16 products that take them, with no cast
//! kernel between. The tests check each kernel on wgpu.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::{cast, into_contiguous};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, server::CubeCountSelection};

mod attention;
mod copy;
mod flags;
mod gelu;
mod layernorm;
mod loss;
mod nf4;
mod sum;

pub use attention::{
    causal_softmax, causal_softmax_backward, split_qkv_rope, split_qkv_rope_backward,
};
pub use copy::{concat, contiguous};
pub use flags::{signal, wait_for};
pub use gelu::{gelu, gelu_backward, gelu_bias, gelu_bias_backward};
pub use layernorm::{layernorm, layernorm_backward};
pub use loss::{weighted_nll_backward, weighted_nll_rows};
pub use nf4::{Nf4Parts, nf4_dequantize};
pub use sum::{sum2, sum3, sum5};

/// Units per cube for the element-wise kernels.
const ELEMWISE_UNITS: u32 = 256;
/// The most units per cube in a row kernel on the shared-memory path (one cube per row). On
/// lavapipe 32 units ran a 2-layer step 12 % faster than the burn ops they replace, 256 units
/// 10 % slower (each cube barrier costs a CPU-run device dearly).
const ROW_UNITS: u32 = 32;
/// Units per cube in a row kernel on the plane path: as many rows per cube as fill it (8 rows
/// of a 32-unit warp on NVIDIA GPUs, as llm.c's row kernels run, where one warp a cube would
/// leave half of an SM's threads idle).
const ROW_CUBE_UNITS: u32 = 256;

/// `LAW_POLYGLOT_KERNELS=scalar`: the kernels load one element at a time and every row kernel
/// runs one cube per row, reducing in shared memory, as before vector loads and warp rows: to
/// measure what those bring on a GPU (`bench/gpu_host.sh`). Read once.
fn scalar_kernels() -> bool {
    static SCALAR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SCALAR.get_or_init(|| std::env::var("LAW_POLYGLOT_KERNELS").is_ok_and(|v| v == "scalar"))
}

thread_local! {
    /// Set by [`force_row_planes`]: take the plane path on this thread's launches even where
    /// the device does not advertise plane operations.
    static FORCE_PLANES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// For tests: the row kernels launched from this thread reduce through plane operations even
/// where CubeCL does not advertise them (lavapipe runs them, but CubeCL turns planes off for
/// CPU devices), so the path CUDA takes is checked here too.
#[doc(hidden)]
pub fn force_row_planes(on: bool) {
    FORCE_PLANES.with(|f| f.set(on));
}

/// The sum (or with `max`, the maximum) of every unit's `v` over its row's units: through
/// plane operations on the plane path (a row is one plane), else over the cube (1-D, a power
/// of two units, one row) through `buf` (as long). Returned to every unit of the row.
#[cube]
fn row_reduce<F: Float>(
    v: F,
    buf: &mut SharedMemory<F>,
    #[comptime] max: bool,
    #[comptime] plane: bool,
) -> F {
    if plane {
        if max { plane_max(v) } else { plane_sum(v) }
    } else {
        let u = UNIT_POS_X as usize;
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
        let out = buf[0];
        sync_cube();
        out
    }
}

#[cube]
fn row_sum<F: Float>(v: F, buf: &mut SharedMemory<F>, #[comptime] plane: bool) -> F {
    row_reduce::<F>(v, buf, false, plane)
}

/// The row this unit works on: cube `CUBE_POS` holds `per_cube` rows along y. With one row a
/// cube (the shared-memory path) it is the cube's position alone: uniform over the cube, as
/// WGSL's uniformity analysis requires of a branch (`row >= rows`) before a barrier.
#[cube]
fn row_index(#[comptime] per_cube: u32) -> usize {
    if per_cube == 1 {
        CUBE_POS
    } else {
        CUBE_POS * per_cube as usize + UNIT_POS_Y as usize
    }
}

/// The shared memory a row reduction needs: none on the plane path (one slot, unused).
#[cube]
fn row_buffer(#[comptime] units: u32, #[comptime] plane: bool) -> SharedMemory<f32> {
    let size = comptime!(if plane { 1 } else { units as usize });
    SharedMemory::<f32>::new(size)
}

/// The sum of a vector's lanes.
#[cube]
fn lanes_sum<N: Size>(v: Vector<f32, N>) -> f32 {
    let mut s = 0.0f32;
    #[unroll]
    for e in 0..N::value() {
        s += v[e];
    }
    s
}

/// `log Σ exp(x·scale)` over the first `visible` elements of the row of vectors starting at
/// vector `base`, in f32: each unit keeps a running maximum and a sum scaled to it (one pass,
/// the online softmax) over its vectors, then the row's units combine their pairs.
#[cube]
#[allow(clippy::too_many_arguments)]
fn row_logsumexp<F: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    base: usize,
    visible: usize,
    scale: f32,
    buf: &mut SharedMemory<f32>,
    #[comptime] units: u32,
    #[comptime] plane: bool,
) -> f32 {
    let width = N::value();
    let vectors = visible.div_ceil(width);
    let mut m = f32::new(f32::MIN);
    let mut acc = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < vectors {
        let v = Vector::<f32, N>::cast_from(x[base + i]) * Vector::new(scale);
        let mut top = m;
        #[unroll]
        for e in 0..N::value() {
            if i * width + e < visible {
                top = f32::max(top, v[e]);
            }
        }
        let mut sum = acc * f32::exp(m - top);
        #[unroll]
        for e in 0..N::value() {
            if i * width + e < visible {
                sum += f32::exp(v[e] - top);
            }
        }
        acc = sum;
        m = top;
        i += units as usize;
    }
    let top = row_reduce::<f32>(m, buf, true, plane);
    let total = row_sum::<f32>(acc * f32::exp(m - top), buf, plane);
    top + f32::ln(total)
}

/// A dense tensor of `shape` on `t`'s device, for an output a kernel writes as a dense array
/// (where the runtime's own allocation may pad rows: CUDA's pitched layout).
pub fn empty_like<R: CubeRuntime>(t: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    empty_device_contiguous_dtype(t.client.clone(), t.device.clone(), shape, dtype)
}

/// The most elements a vector load of `dtypes` (the widest sets it: 16 bytes on CUDA) takes
/// that divides `n`.
fn vector_size<R: CubeRuntime>(t: &CubeTensor<R>, dtypes: &[DType], n: usize) -> usize {
    if scalar_kernels() {
        return 1;
    }
    let widest = dtypes.iter().map(|d| d.size()).max().unwrap_or(4);
    t.client
        .io_optimized_vector_sizes(widest)
        .find(|v| n.is_multiple_of(*v))
        .unwrap_or(1)
}

/// The launch of an element-wise kernel over `t`'s elements, `vector` at a time.
fn elemwise_launch<R: CubeRuntime>(t: &CubeTensor<R>, vector: usize) -> (CubeCount, CubeDim) {
    let n = t.meta.num_elements() / vector;
    let dim = CubeDim::new_1d(ELEMWISE_UNITS);
    (calculate_cube_count_elemwise(&t.client, n, dim), dim)
}

/// How a row kernel runs over the rows of `t` (its last dimension).
struct RowLaunch {
    rows: usize,
    /// the row's length in elements
    n: usize,
    count: CubeCount,
    dim: CubeDim,
    /// units per row (a power of two)
    units: u32,
    /// rows per cube
    per_cube: u32,
    /// the row reductions through plane operations (a row is one plane)
    plane: bool,
    /// elements per vector load
    vector: usize,
}

/// The plane path where the device runs plane operations with one plane size (CUDA: warps of
/// 32; not WebGPU), a row a plane and rows stacked in a cube; else one cube per row of at most
/// [`ROW_UNITS`] units, reducing through shared memory. Rows are spread over as many cube
/// dimensions as the device needs, and read `vector` elements at a time (the most the widest
/// of `dtypes` allows that divides a row).
fn row_launch<R: CubeRuntime>(t: &CubeTensor<R>, dtypes: &[DType]) -> RowLaunch {
    let n = *t.meta.shape().last().expect("a tensor with dimensions");
    let rows = t.meta.num_elements() / n.max(1);
    let props = t.client.properties();
    let hw = &props.hardware;
    let plane_size = hw.plane_size_max;
    // Not in the browser: WGSL's uniformity analysis rejects subgroup operations after a branch
    // on a unit's row (`row >= rows`, a row of weight 0), where a native compiler takes them.
    let planes = cfg!(not(target_arch = "wasm32"))
        && (props.features.plane.contains(cubecl::features::Plane::Ops)
            || FORCE_PLANES.with(|f| f.get()));
    let plane = planes
        && !scalar_kernels()
        && hw.plane_size_min == plane_size
        && plane_size.is_power_of_two()
        && plane_size <= hw.max_cube_dim.0.min(ROW_CUBE_UNITS);
    let (units, per_cube) = if plane {
        let per_cube = (ROW_CUBE_UNITS / plane_size).min(hw.max_cube_dim.1).max(1);
        (plane_size, per_cube)
    } else {
        let max_units = hw.max_cube_dim.0.min(ROW_UNITS);
        ((n.next_power_of_two() as u32).clamp(1, max_units), 1)
    };
    let cubes = rows.div_ceil(per_cube as usize) as u32;
    let count = CubeCountSelection::new(&t.client, cubes).cube_count();
    RowLaunch {
        rows,
        n,
        count,
        dim: CubeDim::new_2d(units, per_cube),
        units,
        per_cube,
        plane,
        vector: vector_size(t, dtypes, n),
    }
}

/// The greatest common divisor (vector widths that divide every stride).
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
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

#[cfg(test)]
mod source_tests {
    /// The kernels' sources, for checks no backend here can make.
    const SOURCES: [(&str, &str); 9] = [
        ("attention.rs", include_str!("attention.rs")),
        ("copy.rs", include_str!("copy.rs")),
        ("flags.rs", include_str!("flags.rs")),
        ("gelu.rs", include_str!("gelu.rs")),
        ("layernorm.rs", include_str!("layernorm.rs")),
        ("loss.rs", include_str!("loss.rs")),
        ("mod.rs", include_str!("mod.rs")),
        ("nf4.rs", include_str!("nf4.rs")),
        ("sum.rs", include_str!("sum.rs")),
    ];

    /// Our kernels write their outputs as dense arrays, so an output must be allocated dense:
    /// `empty_device_dtype` follows the runtime's layout policy, which on CUDA pads each row to
    /// 512 bytes (a `[.., 64]` f32 or `[.., 128]` bf16 row, say); the kernels then wrote over
    /// the padding and the rows read back wrong (the demo model's attention on the H200,
    /// 2026-11-27). Lavapipe and WebGPU allocate dense, so only this check catches it here.
    #[test]
    fn outputs_are_allocated_dense() {
        // split, so that this file's own text does not match
        let pitched = [
            concat!("empty_device", "_dtype("),
            concat!("empty_device", "::<"),
        ];
        let cublas = ("../cublas.rs", include_str!("../cublas.rs"));
        // and the outputs the CubeCL backend allocates for the kernels (`Tensor::empty` is
        // pitched on CUDA too: the rotary adjoint's output, found by tools/fake-cuda's trace)
        let backend = ("../backend.rs", include_str!("../backend.rs"));
        let tensor_empty = concat!(">::", "empty(");
        for (file, source) in SOURCES.into_iter().chain([cublas, backend]) {
            for (i, line) in source.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                assert!(
                    !pitched.iter().any(|p| code.contains(p)) && !code.contains(tensor_empty),
                    "{file}:{}: a pitched allocation for a dense output: {line}",
                    i + 1
                );
            }
        }
    }

    /// cubecl-cpp 0.10 writes a vector's negation as C++'s unary minus on the vector's struct,
    /// which NVRTC rejects (the H200 run of 2026-11-27: every step failed to compile the rotary
    /// split); lavapipe and WebGPU accept it, so only this check catches it here. A minus with
    /// an operator, `=`, `(` or `,` before it, and a `Vector` after, is unary.
    #[test]
    fn no_unary_minus_on_vectors() {
        for (file, source) in SOURCES {
            for (i, line) in source.lines().enumerate() {
                let code: String = line
                    .split("//")
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                let unary = code.match_indices("-Vector").any(|(at, _)| {
                    code[..at]
                        .chars()
                        .last()
                        .is_none_or(|c| "=(,+-*/[{<>!&|".contains(c))
                });
                assert!(!unary, "{file}:{}: unary minus on a vector: {line}", i + 1);
            }
        }
    }
}
