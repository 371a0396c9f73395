//! Matmuls on CUDA through NVIDIA's cuBLAS, loaded at run time (`cudarc`'s dynamic loading, as
//! burn-cuda loads the driver and NVRTC): what PyTorch multiplies with. burn 0.21's CubeCL
//! matmul without autotune ran 51 TFLOP/s in f32 on an H100 and, autotuned, 180 in bf16, where
//! cuBLAS runs about 790 in bf16.
//!
//! cuBLAS runs on a stream of its own: CubeCL keeps its CUDA stream private. So each product
//! waits for the CubeCL stream to finish what it queued (the inputs are then written), runs,
//! and waits for its own stream before it hands the result back (the next CubeCL kernel may
//! read it at once). The waits cost a few tens of microseconds per product.
//!
//! Used where libcublas (`libcublas.so.13` or `.12`, from a CUDA toolkit or PyTorch's
//! `nvidia-cublas` wheel, on the library path) loads, unless `LAW_POLYGLOT_MATMUL=cubecl`;
//! otherwise, and for any layout, dtype or error it does not take, the product falls back to
//! burn's CubeCL matmul ([`matmul`] returns its inputs). `gemm_plan.rs` maps burn's strided,
//! broadcast operands onto cuBLAS's arguments.

// FFI: cuBLAS takes raw device pointers (the one module of the crate that needs `unsafe`).
#![allow(unsafe_code)]

use std::any::Any;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cudarc::cublas::{CudaBlas, result as blas, sys};
use cudarc::driver::{CudaContext, CudaStream};

use crate::gemm_plan::{GemmPlan, Layout, Op, plan};

/// The variable that turns cuBLAS off (`cubecl`).
pub const MATMUL_ENV: &str = "LAW_POLYGLOT_MATMUL";

/// One device's cuBLAS handle on its own stream.
struct Gemm {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
}

/// The handles by device index; `None` where cuBLAS could not start on that device.
type Handles = HashMap<usize, Option<Arc<Mutex<Gemm>>>>;

/// Whether cuBLAS is turned on and its library loads (checked once).
pub fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        if std::env::var(MATMUL_ENV).is_ok_and(|v| v == "cubecl") {
            return false;
        }
        // SAFETY: only tries to open the library by its usual names.
        let found = unsafe { sys::is_culib_present() };
        if !found {
            eprintln!(
                "warning: libcublas (libcublas.so.13 or .12) not found on the library path; \
                 CUDA matmuls run on CubeCL (slower). Add a CUDA toolkit's lib64, or PyTorch's \
                 nvidia/cu13/lib, to LD_LIBRARY_PATH."
            );
        }
        found
    })
}

/// What multiplies on a CUDA device: `cublas` or `cubecl`.
pub fn backend_name() -> &'static str {
    if available() { "cublas" } else { "cubecl" }
}

fn handle(device: usize) -> Option<Arc<Mutex<Gemm>>> {
    static HANDLES: OnceLock<Mutex<Handles>> = OnceLock::new();
    let mut handles = HANDLES.get_or_init(Default::default).lock().ok()?;
    handles
        .entry(device)
        .or_insert_with(|| {
            let start = || -> Result<Gemm, String> {
                let ctx = CudaContext::new(device).map_err(|e| e.to_string())?;
                let stream = ctx.new_stream().map_err(|e| e.to_string())?;
                let blas = CudaBlas::new(stream.clone()).map_err(|e| e.to_string())?;
                Ok(Gemm { stream, blas })
            };
            start()
                .inspect_err(|e| {
                    eprintln!("warning: cuBLAS did not start on cuda:{device} ({e}); using CubeCL")
                })
                .ok()
                .map(|g| Arc::new(Mutex::new(g)))
        })
        .clone()
}

fn data_type(dtype: DType) -> Option<sys::cudaDataType> {
    match dtype {
        DType::F32 => Some(sys::cudaDataType::CUDA_R_32F),
        DType::BF16 => Some(sys::cudaDataType::CUDA_R_16BF),
        DType::F16 => Some(sys::cudaDataType::CUDA_R_16F),
        _ => None,
    }
}

fn op(o: Op) -> sys::cublasOperation_t {
    match o {
        Op::N => sys::cublasOperation_t::CUBLAS_OP_N,
        Op::T => sys::cublasOperation_t::CUBLAS_OP_T,
    }
}

fn layout<R: CubeRuntime>(t: &CubeTensor<R>) -> Layout<'_> {
    Layout {
        shape: t.meta.shape(),
        strides: t.meta.strides(),
    }
}

/// `a·b` for `a: [.., m, k]` and `b: [.., k, n]` of one float dtype, batch dimensions broadcast
/// as burn's matmul does, the product in `out` (f32 from bf16 factors: tensor cores with f32
/// accumulation and no rounding of the product), through cuBLAS on a CUDA device. The inputs
/// come back (`Err`) where cuBLAS does not apply: another runtime, cuBLAS off or missing, a dtype
/// it does not take, or an error, after which the caller multiplies as before.
#[allow(clippy::result_large_err)]
pub fn matmul<R: CubeRuntime>(
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    out: DType,
) -> Result<CubeTensor<R>, (CubeTensor<R>, CubeTensor<R>)> {
    let usable = a.dtype == b.dtype && data_type(a.dtype).is_some() && data_type(out).is_some();
    if !usable || !is_cuda::<R>() || !available() {
        return Err((a, b));
    }
    let (Ok(a), Ok(b)) = (
        (Box::new(a) as Box<dyn Any>).downcast::<CubeTensor<CudaRuntime>>(),
        (Box::new(b) as Box<dyn Any>).downcast::<CubeTensor<CudaRuntime>>(),
    ) else {
        unreachable!("the runtime is CUDA's")
    };
    let back = |t: CubeTensor<CudaRuntime>| -> CubeTensor<R> {
        *(Box::new(t) as Box<dyn Any>)
            .downcast::<CubeTensor<R>>()
            .expect("the runtime checked above")
    };
    match cuda_matmul(*a, *b, out) {
        Ok(c) => Ok(back(c)),
        Err((a, b)) => Err((back(a), back(b))),
    }
}

/// Whether `R` is burn-cuda's runtime.
fn is_cuda<R: CubeRuntime>() -> bool {
    std::any::TypeId::of::<R>() == std::any::TypeId::of::<CudaRuntime>()
}

type Pair = (CubeTensor<CudaRuntime>, CubeTensor<CudaRuntime>);

#[allow(clippy::result_large_err)]
fn cuda_matmul(
    a: CubeTensor<CudaRuntime>,
    b: CubeTensor<CudaRuntime>,
    out: DType,
) -> Result<CubeTensor<CudaRuntime>, Pair> {
    let d = a.meta.shape().len();
    if d < 2 || b.meta.shape().len() != d {
        return Err((a, b));
    }
    let Some(gemm) = handle(a.device.index) else {
        return Err((a, b));
    };
    let mut shape: Vec<usize> = (0..d - 2)
        .map(|i| a.meta.shape()[i].max(b.meta.shape()[i]))
        .collect();
    shape.extend([a.meta.shape()[d - 2], b.meta.shape()[d - 1]]);
    let c = empty_device_dtype(a.client.clone(), a.device.clone(), Shape::from(shape), out);
    // strides cuBLAS cannot take: contiguous copies, and a second try
    let (a, b) = match plan(&layout(&a), &layout(&b), &layout(&c)) {
        Some(_) => (a, b),
        None => (into_contiguous(a), into_contiguous(b)),
    };
    let Some(p) = plan(&layout(&a), &layout(&b), &layout(&c)) else {
        return Err((a, b));
    };
    match run(&gemm, &p, &a, &b, &c) {
        Ok(()) => Ok(c),
        Err(e) => {
            warn_once(&e);
            Err((a, b))
        }
    }
}

fn warn_once(e: &str) {
    static SEEN: OnceLock<()> = OnceLock::new();
    SEEN.get_or_init(|| eprintln!("warning: a cuBLAS matmul failed ({e}); using CubeCL for it"));
}

/// Waits for CubeCL's stream, runs the plan on cuBLAS's stream and waits for it.
fn run(
    gemm: &Mutex<Gemm>,
    p: &GemmPlan,
    a: &CubeTensor<CudaRuntime>,
    b: &CubeTensor<CudaRuntime>,
    c: &CubeTensor<CudaRuntime>,
) -> Result<(), String> {
    let client = &c.client;
    let ptr = |t: &CubeTensor<CudaRuntime>| {
        client
            .get_resource(t.handle.clone())
            .map_err(|e| format!("{e:?}"))
    };
    // kept until cuBLAS is done: they hold the memory
    let (ra, rb, rc) = (ptr(a)?, ptr(b)?, ptr(c)?);
    cubecl::future::block_on(client.sync()).map_err(|e| format!("{e:?}"))?;
    let int = |v: usize| i32::try_from(v).map_err(|_| format!("{v} exceeds cuBLAS's int"));
    let long = |v: usize| i64::try_from(v).map_err(|_| format!("{v} exceeds cuBLAS's int64"));
    let (alpha, beta) = (1.0f32, 0.0f32);
    let gemm = gemm.lock().map_err(|e| e.to_string())?;
    gemm.stream
        .context()
        .bind_to_thread()
        .map_err(|e| e.to_string())?;
    // SAFETY: the pointers are live device allocations (held by the resources above) of the
    // sizes the plan's strides address; CubeCL's stream is idle, so the inputs are written and
    // nothing else touches the output until the stream synchronisation below returns.
    unsafe {
        blas::gemm_strided_batched_ex(
            *gemm.blas.handle(),
            op(p.transa),
            op(p.transb),
            int(p.m)?,
            int(p.n)?,
            int(p.k)?,
            (&alpha as *const f32).cast::<c_void>(),
            rb.resource().ptr as *const c_void,
            data_type(b.dtype).expect("checked"),
            int(p.lda)?,
            long(p.stride_a)?,
            ra.resource().ptr as *const c_void,
            data_type(a.dtype).expect("checked"),
            int(p.ldb)?,
            long(p.stride_b)?,
            (&beta as *const f32).cast::<c_void>(),
            rc.resource().ptr as *mut c_void,
            data_type(c.dtype).expect("checked"),
            int(p.ldc)?,
            long(p.stride_c)?,
            int(p.batch)?,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .map_err(|e| format!("{e:?}"))?;
    }
    gemm.stream.synchronize().map_err(|e| e.to_string())
}
