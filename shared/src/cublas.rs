//! Matmuls on CUDA through NVIDIA's cuBLAS, loaded at run time (`cudarc`'s dynamic loading, as
//! burn-cuda loads the driver and NVRTC): what PyTorch multiplies with. burn 0.21's CubeCL
//! matmul without autotune ran 51 TFLOP/s in f32 on an H100 and 94 in bf16 on an H200, where
//! cuBLAS runs 757 in bf16 (H200).
//!
//! Each product runs on CubeCL's device thread, where the operands' addresses are looked up.
//! By default (`cublas`) cuBLAS queues it on the CUDA stream CubeCL runs the calling thread's
//! work on, found once per stream (`stream_lookup.rs`: CubeCL keeps it private) and checked on
//! the GPU: the product then sits between the kernels before and after it, as a CubeCL kernel
//! would, and memory is reused in stream order. Once that stream is known, a product is a task
//! queued to the device thread like any CubeCL kernel launch, and the caller goes on at once;
//! otherwise it is a hand-over (`ComputeClient::exclusive`), which waits for the device thread
//! to run everything queued before it (`LAW_POLYGLOT_MATMUL=cublas-handover` hands every
//! product over, on CubeCL's stream still, for comparison).
//!
//! Where that stream is not found, and with `LAW_POLYGLOT_MATMUL=cublas-flags`, cuBLAS runs on
//! a stream of its own and the GPU orders the two: a one-unit CubeCL kernel stores a sequence
//! number in a flag, cuBLAS's stream waits for it (`cuStreamWaitValue32`), multiplies and sets
//! a second flag, and a CubeCL kernel holds CubeCL's stream until that flag is set
//! (`kernels/flags.rs`); two more launches a product. Where the stream waits are refused, and
//! with `cublas-sync`, the host waits instead: for CubeCL's stream to finish what it queued,
//! then for cuBLAS's (measured on an H200: 198 ms a step against 183 with the flags, the same
//! losses).
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cudarc::cublas::{CudaBlas, result as blas, sys};
use cudarc::driver::{CudaContext, CudaStream};

use crate::gemm_plan::{GemmPlan, Layout, Op, copies, plan};

/// The variable that picks the matmul: `cublas` (the default), `cublas-handover`,
/// `cublas-flags`, `cublas-sync` or `cubecl` (`cublas-async`, a former name of the default, is
/// still read).
pub const MATMUL_ENV: &str = "LAW_POLYGLOT_MATMUL";

/// How CUDA products run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// burn's CubeCL matmul.
    CubeCl,
    /// cuBLAS on CubeCL's stream, queued without waiting, or where it is not found as
    /// `CublasFlags`.
    Cublas,
    /// As `Cublas`, but each product handed over (waiting for the device thread).
    CublasHandover,
    /// cuBLAS on a stream of its own, the streams waiting for each other on the GPU.
    CublasFlags,
    /// cuBLAS, the host waiting for each stream in turn.
    CublasSync,
}

/// One device's cuBLAS handle, and its own stream.
struct Gemm {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// The stream the handle queues on now (an address).
    on: u64,
    /// CubeCL's stream by stream id (an address), `None` where it was not found.
    cubecl_streams: HashMap<u64, Option<u64>>,
    /// `cublas`: CubeCL's `[ready, done]` flags and their device address, made at the
    /// first product; `Err` once the GPU-side waits failed (the host waits from then on).
    flags: Option<Result<Flags, ()>>,
    /// The last sequence number signalled.
    seq: u32,
}

struct Flags {
    tensor: CubeTensor<CudaRuntime>,
    ptr: u64,
    /// The CubeCL stream (its stream id) the flags order: another stream (CubeCL gives each
    /// host thread its own) takes host waits, or its signals could release this one's products.
    stream: u64,
}

/// CubeCL's CUDA server, which its device thread owns (reached through `DeviceHandle`).
type Server = <CudaRuntime as cubecl::Runtime>::Server;

/// The handles by device index; `None` where cuBLAS could not start on that device.
type Handles = HashMap<usize, Option<Arc<Mutex<Gemm>>>>;

/// The mode `LAW_POLYGLOT_MATMUL` asks for (read once), CubeCL where libcublas does not load.
pub fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let asked = match std::env::var(MATMUL_ENV).as_deref() {
            Ok("cubecl") => return Mode::CubeCl,
            Ok("cublas-sync") => Mode::CublasSync,
            Ok("cublas-flags") => Mode::CublasFlags,
            Ok("cublas-handover") => Mode::CublasHandover,
            Ok("cublas" | "cublas-async") | Err(_) => Mode::Cublas,
            Ok(other) => {
                eprintln!(
                    "warning: {MATMUL_ENV}={other:?} is none of cublas, cublas-handover, \
                     cublas-flags, cublas-sync, cubecl; using cublas"
                );
                Mode::Cublas
            }
        };
        // SAFETY: only tries to open the library by its usual names.
        if unsafe { sys::is_culib_present() } {
            return asked;
        }
        eprintln!(
            "warning: libcublas (libcublas.so.13 or .12) not found on the library path; CUDA \
             matmuls run on CubeCL (slower). Add a CUDA toolkit's lib64, or PyTorch's \
             nvidia/cu13/lib, to LD_LIBRARY_PATH."
        );
        Mode::CubeCl
    })
}

/// Whether cuBLAS is turned on and its library loads.
pub fn available() -> bool {
    mode() != Mode::CubeCl
}

/// What multiplies on a CUDA device: `cublas`, `cublas-handover`, `cublas-flags`,
/// `cublas-sync` or `cubecl`.
pub fn backend_name() -> &'static str {
    match mode() {
        Mode::CubeCl => "cubecl",
        Mode::Cublas => "cublas",
        Mode::CublasHandover => "cublas-handover",
        Mode::CublasFlags => "cublas-flags",
        Mode::CublasSync => "cublas-sync",
    }
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
                let gemm = Gemm {
                    on: stream.cu_stream() as u64,
                    cubecl_streams: HashMap::new(),
                    stream,
                    blas,
                    flags: None,
                    seq: 0,
                };
                // an empty product loads its symbol now, where a missing one can be caught
                let f32 = sys::cudaDataType::CUDA_R_32F;
                let _ = launch(&gemm, &EMPTY, [f32; 3], [0; 3]);
                Ok(gemm)
            };
            // cudarc panics on a symbol the library lacks
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(start))
                .unwrap_or_else(|_| Err("libcublas lacks a function this build calls".into()))
                .inspect_err(|e| {
                    eprintln!("warning: cuBLAS did not start on cuda:{device} ({e}); using CubeCL")
                })
                .ok()
                .map(|g| Arc::new(Mutex::new(g)))
        })
        .clone()
}

/// CubeCL's stream (an address) for the calling thread on `device`, where a product found it,
/// and cuBLAS's context: where `timeline.rs` records its events.
pub(crate) fn current_stream(device: usize) -> Option<(u64, Arc<CudaContext>)> {
    if !available() {
        return None;
    }
    let gemm = handle(device)?;
    let gemm = gemm.lock().ok()?;
    let id = cubecl::stream_id::StreamId::current().value;
    let stream = (*gemm.cubecl_streams.get(&id)?)?;
    Some((stream, gemm.stream.context().clone()))
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
    match cuda_matmul(to_cuda(a), to_cuda(b), out) {
        Ok(c) => Ok(from_cuda(c)),
        Err((a, b)) => Err((from_cuda(a), from_cuda(b))),
    }
}

/// `acc` (`[.., S, n]`, contiguous and this call's alone) with `a·b` (`[.., s, n]`, `s ≤ S`, the
/// same batch) added to its first `s` rows in place: one cuBLAS product with `β = 1` into those
/// rows (computed in f32, the sum rounded once to `acc`'s dtype). The three come back (`Err`)
/// where cuBLAS does not apply, as for [`matmul`], or `acc` is shared or not contiguous.
#[allow(clippy::result_large_err)]
pub fn matmul_add_rows<R: CubeRuntime>(
    acc: CubeTensor<R>,
    a: CubeTensor<R>,
    b: CubeTensor<R>,
) -> Result<CubeTensor<R>, [CubeTensor<R>; 3]> {
    let usable = a.dtype == b.dtype
        && data_type(a.dtype).is_some()
        && data_type(acc.dtype).is_some()
        && acc.can_mut()
        && acc.is_contiguous();
    if !usable || !is_cuda::<R>() || !available() {
        return Err([acc, a, b]);
    }
    cuda_matmul_add_rows(to_cuda(acc), to_cuda(a), to_cuda(b))
        .map(from_cuda)
        .map_err(|ts| ts.map(from_cuda))
}

/// The products `aᵢ·bᵢ` (`[.., mᵢ, n]`, one batch) stacked along their rows, `[.., Σ mᵢ, n]`
/// in `out`: cuBLAS writes each product straight into its rows of one dense tensor (no
/// concatenation). The pairs come back (`Err`) where cuBLAS does not apply to every product,
/// as for [`matmul`].
#[allow(clippy::result_large_err, clippy::type_complexity)]
pub fn matmul_rows<R: CubeRuntime>(
    pairs: Vec<(CubeTensor<R>, CubeTensor<R>)>,
    out: DType,
) -> Result<CubeTensor<R>, Vec<(CubeTensor<R>, CubeTensor<R>)>> {
    let usable = pairs.iter().all(|(a, b)| {
        a.dtype == b.dtype && a.dtype == pairs[0].0.dtype && data_type(a.dtype).is_some()
    }) && data_type(out).is_some();
    if pairs.is_empty() || !usable || !is_cuda::<R>() || !available() {
        return Err(pairs);
    }
    let pairs = pairs
        .into_iter()
        .map(|(a, b)| (to_cuda(a), to_cuda(b)))
        .collect();
    cuda_matmul_rows(pairs, out)
        .map(from_cuda)
        .map_err(|pairs| {
            pairs
                .into_iter()
                .map(|(a, b)| (from_cuda(a), from_cuda(b)))
                .collect()
        })
}

/// `t` as burn-cuda's tensor (`R` checked to be CUDA's runtime by the caller).
fn to_cuda<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<CudaRuntime> {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<CubeTensor<CudaRuntime>>()
        .expect("the runtime is CUDA's")
}

fn from_cuda<R: CubeRuntime>(t: CubeTensor<CudaRuntime>) -> CubeTensor<R> {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<CubeTensor<R>>()
        .expect("the runtime is CUDA's")
}

/// Whether `R` is burn-cuda's runtime.
fn is_cuda<R: CubeRuntime>() -> bool {
    std::any::TypeId::of::<R>() == std::any::TypeId::of::<CudaRuntime>()
}

type Pair = (CubeTensor<CudaRuntime>, CubeTensor<CudaRuntime>);

/// The plan of `a·b` into `c`'s layout; where cuBLAS cannot take an operand's strides,
/// contiguous copies of the operands that need one, and a second try.
#[allow(clippy::result_large_err)]
fn plan_copying(
    a: CubeTensor<CudaRuntime>,
    b: CubeTensor<CudaRuntime>,
    c: &CubeTensor<CudaRuntime>,
) -> Result<(CubeTensor<CudaRuntime>, CubeTensor<CudaRuntime>, GemmPlan), Pair> {
    if let Some(p) = plan(&layout(&a), &layout(&b), &layout(c)) {
        return Ok((a, b, p));
    }
    let [ca, cb] = copies(&layout(&a), &layout(&b), &layout(c)).unwrap_or([true; 2]);
    let a = if ca { into_contiguous(a) } else { a };
    let b = if cb { into_contiguous(b) } else { b };
    match plan(&layout(&a), &layout(&b), &layout(c)) {
        Some(p) => Ok((a, b, p)),
        None => Err((a, b)),
    }
}

/// `rows` rows of `c` (`[.., M, n]`, contiguous) from row `start` on: a view of its buffer (not
/// a slice, which could be a copy) for a product to write into.
fn row_view(c: &CubeTensor<CudaRuntime>, start: usize, rows: usize) -> CubeTensor<CudaRuntime> {
    let d = c.meta.shape().len();
    let mut view = c.clone();
    let offset = start * c.meta.strides()[d - 2] * c.dtype.size();
    if offset > 0 {
        view.handle = view.handle.offset_start(offset as u64);
    }
    view.meta.shape_mut()[d - 2] = rows;
    view
}

#[allow(clippy::result_large_err)]
fn cuda_matmul_add_rows(
    acc: CubeTensor<CudaRuntime>,
    a: CubeTensor<CudaRuntime>,
    b: CubeTensor<CudaRuntime>,
) -> Result<CubeTensor<CudaRuntime>, [CubeTensor<CudaRuntime>; 3]> {
    let d = acc.meta.shape().len();
    let fits = d >= 2
        && a.meta.shape().len() == d
        && b.meta.shape().len() == d
        && a.meta.shape()[..d - 2] == acc.meta.shape()[..d - 2]
        && a.meta.shape()[d - 2] <= acc.meta.shape()[d - 2];
    let gemm = match handle(acc.device.index) {
        Some(gemm) if fits => gemm,
        _ => return Err([acc, a, b]),
    };
    let rows = row_view(&acc, 0, a.meta.shape()[d - 2]);
    let (a, b, mut p) = match plan_copying(a, b, &rows) {
        Ok(planned) => planned,
        Err((a, b)) => return Err([acc, a, b]),
    };
    p.accumulate = true;
    match run(&gemm, &p, &a, &b, &rows) {
        Ok(()) => Ok(acc),
        Err(e) => {
            warn_once(&e);
            Err([acc, a, b])
        }
    }
}

#[allow(clippy::result_large_err)]
fn cuda_matmul_rows(pairs: Vec<Pair>, out: DType) -> Result<CubeTensor<CudaRuntime>, Vec<Pair>> {
    let (a0, b0) = &pairs[0];
    let d = a0.meta.shape().len();
    let batch = &a0.meta.shape()[..d.saturating_sub(2)];
    let fits = d >= 2
        && pairs.iter().all(|(a, b)| {
            a.meta.shape().len() == d
                && b.meta.shape().len() == d
                && a.meta.shape()[..d - 2] == *batch
                && b.meta.shape()[d - 1] == b0.meta.shape()[d - 1]
        });
    let gemm = match handle(a0.device.index) {
        Some(gemm) if fits => gemm,
        _ => return Err(pairs),
    };
    let mut shape = batch.to_vec();
    let total = pairs.iter().map(|(a, _)| a.meta.shape()[d - 2]).sum();
    shape.extend([total, b0.meta.shape()[d - 1]]);
    let (client, device) = (a0.client.clone(), a0.device.clone());
    let c = empty_device_contiguous_dtype(client, device, Shape::from(shape), out);
    let (mut start, mut kept) = (0, Vec::with_capacity(pairs.len()));
    let mut pairs = pairs.into_iter();
    for (a, b) in pairs.by_ref() {
        let m = a.meta.shape()[d - 2];
        let rows = row_view(&c, start, m);
        let done = match plan_copying(a, b, &rows) {
            Ok((a, b, p)) => {
                let done = run(&gemm, &p, &a, &b, &rows).inspect_err(|e| warn_once(e));
                kept.push((a, b));
                done.is_ok()
            }
            Err(pair) => {
                kept.push(pair);
                false
            }
        };
        if !done {
            // the caller multiplies them all again (what was written into `c` is dropped)
            kept.extend(pairs);
            return Err(kept);
        }
        start += m;
    }
    Ok(c)
}

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
    // dense, not CUDA's rows padded to 512 bytes: the kernels that read the product take it
    // as it is, with no copy
    let c =
        empty_device_contiguous_dtype(a.client.clone(), a.device.clone(), Shape::from(shape), out);
    let (a, b, p) = plan_copying(a, b, &c)?;
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

/// Runs the plan on CubeCL's stream where it is known, or else on cuBLAS's stream, ordered
/// after CubeCL's queued work and before what it queues next: by the GPU, or (`cublas-sync`,
/// or where the GPU-side waits fail) by host waits. It all runs on CubeCL's device thread, in
/// one hand-over: the address lookups, the flag kernels and any host wait run there in place,
/// not as three or more round trips.
fn run(
    gemm: &Arc<Mutex<Gemm>>,
    p: &GemmPlan,
    a: &CubeTensor<CudaRuntime>,
    b: &CubeTensor<CudaRuntime>,
    c: &CubeTensor<CudaRuntime>,
) -> Result<(), String> {
    if mode() == Mode::Cublas && !QUEUED_FAILED.load(Ordering::Relaxed) {
        let id = cubecl::stream_id::StreamId::current().value;
        let known = gemm
            .lock()
            .map_err(|e| e.to_string())?
            .cubecl_streams
            .get(&id)
            .copied();
        if let Some(Some(stream)) = known {
            return queue(gemm.clone(), *p, [a.clone(), b.clone(), c.clone()], stream);
        }
    }
    // CubeCL gives each host thread a stream of its own (unless it runs on another's:
    // `shared::stream::Stream`), and runs the closure on the caller's
    let caller = cubecl::stream_id::StreamId::current().value;
    c.client
        .exclusive(|| run_here(gemm, p, [a, b, c], caller))
        .map_err(|e| format!("{e:?}"))?
}

fn run_here(
    gemm: &Mutex<Gemm>,
    p: &GemmPlan,
    tensors: [&CubeTensor<CudaRuntime>; 3],
    caller: u64,
) -> Result<(), String> {
    let c = tensors[2];
    let client = &c.client;
    let ptr = |t: &CubeTensor<CudaRuntime>| {
        client
            .get_resource(t.handle.clone())
            .map(|r| r.resource().ptr)
            .map_err(|e| format!("{e:?}"))
    };
    // The tensors hold the memory: the caller keeps them until this returns, and any later
    // reuse of it is queued after the product (on the same stream, or behind the GPU's waits,
    // or the host's).
    let ptrs = [ptr(tensors[0])?, ptr(tensors[1])?, ptr(c)?];
    let mut gemm = gemm.lock().map_err(|e| e.to_string())?;
    gemm.stream
        .context()
        .bind_to_thread()
        .map_err(|e| e.to_string())?;
    let types = tensors.map(|t| data_type(t.dtype).expect("checked"));
    let launch = |g: &Gemm| launch(g, p, types, ptrs);
    if matches!(mode(), Mode::Cublas | Mode::CublasHandover)
        && let Some(stream) = cubecl_stream(&mut gemm, c, caller)
    {
        queue_on(&mut gemm, stream)?;
        return launch(&gemm);
    }
    let own = gemm.stream.cu_stream() as u64;
    queue_on(&mut gemm, own)?;
    if matches!(
        mode(),
        Mode::Cublas | Mode::CublasHandover | Mode::CublasFlags
    ) {
        match run_on_gpu(&mut gemm, c, caller, launch) {
            Ok(()) => return Ok(()),
            Err(AsyncError::Product(e)) => return Err(e),
            Err(AsyncError::OtherStream) => {}
            Err(AsyncError::Waits(e)) => {
                eprintln!("warning: GPU-side waits failed ({e}); cuBLAS products wait on the host");
                gemm.flags = Some(Err(()));
            }
        }
    }
    cubecl::future::block_on(client.sync()).map_err(|e| format!("{e:?}"))?;
    launch(&gemm)?;
    gemm.stream.synchronize().map_err(|e| e.to_string())
}

/// Set once a product queued on CubeCL's stream failed on the device thread: later products
/// take the hand-over again, where a failure falls back to CubeCL.
static QUEUED_FAILED: AtomicBool = AtomicBool::new(false);

/// Queues the product on CubeCL's device thread like any CubeCL kernel, without waiting (a
/// hand-over waits for the device thread to run everything queued before it: ~500 a step,
/// each a flush of CubeCL's task batch and a wake-up of either thread): the thread looks up
/// the addresses and launches it on CubeCL's `stream`, in program order with the kernels
/// around it. The task holds the three tensors' memory until then as CubeCL's own launches
/// hold their arguments' (bindings): that keeps the memory from reuse, but not the tensors from
/// in-place updates, which CubeCL's stream orders after the product (the product's output
/// updated in place by the next op, or by a later product with `β = 1`).
fn queue(
    gemm: Arc<Mutex<Gemm>>,
    p: GemmPlan,
    tensors: [CubeTensor<CudaRuntime>; 3],
    stream: u64,
) -> Result<(), String> {
    use cubecl::device::Device;
    // the one error known before the launch: sizes beyond cuBLAS's integers
    launch_args(&p)?;
    let device = tensors[2].device.to_id();
    let types = tensors
        .each_ref()
        .map(|t| data_type(t.dtype).expect("checked"));
    let bindings = tensors.map(|t| t.handle.binding());
    cubecl::device_handle::DeviceHandle::<Server>::new(device).submit(move |server| {
        if let Err(e) = launch_queued(server, &gemm, &p, bindings, types, stream) {
            QUEUED_FAILED.store(true, Ordering::Relaxed);
            eprintln!(
                "error: a cuBLAS product queued on CubeCL's stream failed ({e}): this step's \
                 result is wrong; later products are handed over, and fall back to CubeCL"
            );
        }
    });
    Ok(())
}

fn launch_queued(
    server: &mut Server,
    gemm: &Mutex<Gemm>,
    p: &GemmPlan,
    bindings: [cubecl::server::Binding; 3],
    types: [sys::cudaDataType; 3],
    stream: u64,
) -> Result<(), String> {
    use cubecl::server::ComputeServer;
    // on the device thread, the caller's stream id
    let id = cubecl::stream_id::StreamId::current();
    let mut ptrs = [0u64; 3];
    for (ptr, binding) in ptrs.iter_mut().zip(bindings) {
        let resource = server
            .get_resource(binding, id)
            .map_err(|e| format!("{e:?}"))?;
        *ptr = resource.resource().ptr;
    }
    let mut gemm = gemm.lock().map_err(|e| e.to_string())?;
    gemm.stream
        .context()
        .bind_to_thread()
        .map_err(|e| e.to_string())?;
    queue_on(&mut gemm, stream)?;
    launch(&gemm, p, types, ptrs)
}

/// Points the handle at `stream` (an address) if it queues elsewhere now.
fn queue_on(gemm: &mut Gemm, stream: u64) -> Result<(), String> {
    if gemm.on != stream {
        // SAFETY: a live stream of the handle's context (cuBLAS's own, or CubeCL's checked in
        // `find_cubecl_stream`); cuBLAS's default workspace follows the stream.
        unsafe { blas::set_stream(*gemm.blas.handle(), stream as usize as sys::cudaStream_t) }
            .map_err(|e| format!("cublasSetStream: {e:?}"))?;
        gemm.on = stream;
    }
    Ok(())
}

/// CubeCL's stream for the calling stream id (an address), looked up and checked once.
fn cubecl_stream(gemm: &mut Gemm, c: &CubeTensor<CudaRuntime>, caller: u64) -> Option<u64> {
    // inside `exclusive`, the caller's stream id
    let id = cubecl::stream_id::StreamId::current().value;
    if let Some(known) = gemm.cubecl_streams.get(&id) {
        return *known;
    }
    let found = find_cubecl_stream(gemm, c, caller)
        .inspect(|_| {
            eprintln!(
                "cuBLAS queues its products on CubeCL's stream (cuda:{})",
                c.device.index
            )
        })
        .inspect_err(|e| {
            eprintln!(
                "note: CubeCL's stream not found ({e}); cuBLAS products are ordered by GPU-side \
                 flags (two more launches each)"
            )
        })
        .ok();
    gemm.cubecl_streams.insert(id, found);
    found
}

/// Reads CubeCL's stream for the current stream id from its server's `Debug` text, and checks
/// it on the GPU: it belongs to cuBLAS's context, and a CubeCL kernel that waits for a flag
/// keeps it busy until cuBLAS's stream sets the flag.
fn find_cubecl_stream(
    gemm: &mut Gemm,
    c: &CubeTensor<CudaRuntime>,
    caller: u64,
) -> Result<u64, String> {
    use cubecl::device::Device;
    use cudarc::driver::sys::{
        CUresult, CUstreamWriteValue_flags, cuMemsetD32_v2, cuStreamGetCtx, cuStreamQuery,
        cuStreamWriteValue32_v2,
    };
    let id = cubecl::stream_id::StreamId::current().value;
    let text = cubecl::device_handle::DeviceHandle::<Server>::new(c.device.to_id())
        .submit_blocking(|server| format!("{server:?}"))
        .map_err(|e| format!("{e:?}"))?;
    let address = crate::stream_lookup::stream_address(&text, id)
        .ok_or("its server's Debug text shows no stream for this thread")?;
    let stream = address as usize as cudarc::driver::sys::CUstream;
    let mut ctx = std::ptr::null_mut();
    // SAFETY: `stream` is the handle CubeCL created its stream with (alive with its server).
    unsafe { cuStreamGetCtx(stream, &mut ctx) }
        .result()
        .map_err(|e| format!("cuStreamGetCtx: {e:?}"))?;
    if ctx != gemm.stream.context().cu_ctx() {
        return Err("the stream found is in another CUDA context".into());
    }
    // the check: CubeCL's stream waits for `done`, which only cuBLAS's stream sets
    let (tensor, ptr, seq) = next_flag(gemm, c, caller).map_err(|e| match e {
        AsyncError::OtherStream => "the flags order another stream".to_string(),
        AsyncError::Waits(e) | AsyncError::Product(e) => format!("flags: {e}"),
    })?;
    let done = ptr + 4;
    crate::kernels::wait_for(&tensor, 1, seq);
    // SAFETY: a live stream, as above.
    let busy = unsafe { cuStreamQuery(stream) };
    let write = CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT as u32;
    // SAFETY: `done` is a live u32 in device memory (the flags tensor is kept in `gemm`).
    let released = unsafe { cuStreamWriteValue32_v2(gemm.stream.cu_stream(), done, seq, write) }
        .result()
        .and_then(|()| gemm.stream.synchronize())
        // SAFETY: as above; a host-ordered store, where the stream write is refused.
        .or_else(|_| unsafe { cuMemsetD32_v2(done, seq, 1) }.result())
        .map_err(|e| format!("releasing the check's wait: {e:?}"));
    released?;
    cubecl::future::block_on(c.client.sync()).map_err(|e| format!("{e:?}"))?;
    match busy {
        CUresult::CUDA_ERROR_NOT_READY => Ok(address),
        other => Err(format!(
            "the stream found did not wait with CubeCL's (cuStreamQuery: {other:?})"
        )),
    }
}

enum AsyncError {
    /// The flags order another CubeCL stream: host waits this time.
    OtherStream,
    /// The stream waits are refused: use host waits.
    Waits(String),
    /// The product itself failed (the streams are left drained).
    Product(String),
}

/// `cublas`: CubeCL's stream signals, cuBLAS's stream waits for the signal, multiplies
/// and signals back, CubeCL's stream waits for that; the host goes on at once.
fn run_on_gpu(
    gemm: &mut Gemm,
    c: &CubeTensor<CudaRuntime>,
    caller: u64,
    launch: impl Fn(&Gemm) -> Result<(), String>,
) -> Result<(), AsyncError> {
    use cudarc::driver::sys::{
        CUstreamWaitValue_flags, CUstreamWriteValue_flags, cuStreamWaitValue32_v2,
        cuStreamWriteValue32_v2,
    };
    let (tensor, ready, seq) = next_flag(gemm, c, caller)?;
    let done = ready + 4;
    let stream = gemm.stream.cu_stream();
    crate::kernels::signal(&tensor, 0, seq);
    let geq = CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32;
    // SAFETY: `ready` is a live u32 in device memory (the flags tensor is kept in `gemm`).
    unsafe { cuStreamWaitValue32_v2(stream, ready, seq, geq) }
        .result()
        .map_err(|e| AsyncError::Waits(format!("cuStreamWaitValue32: {e:?}")))?;
    let product = launch(gemm);
    let write = CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT as u32;
    // SAFETY: as above, for `done`.
    let signalled = unsafe { cuStreamWriteValue32_v2(stream, done, seq, write) }.result();
    if let Err(e) = product.clone().and(signalled.map_err(|e| format!("{e:?}"))) {
        // nothing was queued on CubeCL's side to wait for these: drain cuBLAS's stream
        let _ = gemm.stream.synchronize();
        return Err(match product {
            Err(e) => AsyncError::Product(e),
            Ok(()) => AsyncError::Waits(format!("cuStreamWriteValue32: {e}")),
        });
    }
    crate::kernels::wait_for(&tensor, 1, seq);
    Ok(())
}

/// The flags tensor and the address of `ready` (`done` follows it) for the caller's stream,
/// made at the first use, and the next sequence number.
fn next_flag(
    gemm: &mut Gemm,
    c: &CubeTensor<CudaRuntime>,
    caller: u64,
) -> Result<(CubeTensor<CudaRuntime>, u64, u32), AsyncError> {
    if gemm.flags.is_none() {
        gemm.flags = Some(Ok(flags(c, caller).map_err(AsyncError::Waits)?));
    }
    let Some(Ok(flags)) = &gemm.flags else {
        return Err(AsyncError::Waits(
            "disabled after an earlier failure".into(),
        ));
    };
    if flags.stream != caller {
        return Err(AsyncError::OtherStream);
    }
    let (tensor, ptr) = (flags.tensor.clone(), flags.ptr);
    gemm.seq = gemm.seq.wrapping_add(1);
    Ok((tensor, ptr, gemm.seq))
}

/// The `[ready, done]` flags, zeros, in CubeCL's memory on `c`'s device, and their address.
fn flags(c: &CubeTensor<CudaRuntime>, caller: u64) -> Result<Flags, String> {
    let handle = c.client.create_from_slice(&[0u8; 8]);
    let ptr = c
        .client
        .get_resource(handle.clone())
        .map_err(|e| format!("{e:?}"))?
        .resource()
        .ptr;
    let tensor = CubeTensor::new_contiguous(
        c.client.clone(),
        c.device.clone(),
        Shape::from([2]),
        handle,
        DType::U32,
    );
    // the zeros must land before cuBLAS's stream polls them (or a late copy could reset `done`)
    cubecl::future::block_on(c.client.sync()).map_err(|e| format!("{e:?}"))?;
    Ok(Flags {
        tensor,
        ptr,
        stream: caller,
    })
}

/// A product of nothing (no memory touched).
const EMPTY: GemmPlan = GemmPlan {
    transa: Op::N,
    transb: Op::N,
    m: 0,
    n: 0,
    k: 0,
    lda: 1,
    ldb: 1,
    ldc: 1,
    stride_a: 0,
    stride_b: 0,
    stride_c: 0,
    batch: 1,
    accumulate: false,
};

/// Queues the product of `a` and `b` into `c` (their dtypes and addresses) on cuBLAS's stream.
fn launch(
    gemm: &Gemm,
    p: &GemmPlan,
    [ta, tb, tc]: [sys::cudaDataType; 3],
    [pa, pb, pc]: [u64; 3],
) -> Result<(), String> {
    let n = launch_args(p)?;
    let (alpha, beta) = (1.0f32, if p.accumulate { 1.0f32 } else { 0.0 });
    // SAFETY: the pointers are live device allocations of the sizes the plan's strides address,
    // ordered by the caller after the work that writes the inputs and before any that reuses
    // the memory.
    unsafe {
        blas::gemm_strided_batched_ex(
            *gemm.blas.handle(),
            op(p.transa),
            op(p.transb),
            n.m,
            n.n,
            n.k,
            (&alpha as *const f32).cast::<c_void>(),
            pb as *const c_void,
            tb,
            n.lda,
            n.stride_a,
            pa as *const c_void,
            ta,
            n.ldb,
            n.stride_b,
            (&beta as *const f32).cast::<c_void>(),
            pc as *mut c_void,
            tc,
            n.ldc,
            n.stride_c,
            n.batch,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| format!("{e:?}"))
}

/// A plan's sizes as cuBLAS's integer arguments.
struct LaunchArgs {
    m: i32,
    n: i32,
    k: i32,
    lda: i32,
    ldb: i32,
    ldc: i32,
    stride_a: i64,
    stride_b: i64,
    stride_c: i64,
    batch: i32,
}

fn launch_args(p: &GemmPlan) -> Result<LaunchArgs, String> {
    let int = |v: usize| i32::try_from(v).map_err(|_| format!("{v} exceeds cuBLAS's int"));
    let long = |v: usize| i64::try_from(v).map_err(|_| format!("{v} exceeds cuBLAS's int64"));
    Ok(LaunchArgs {
        m: int(p.m)?,
        n: int(p.n)?,
        k: int(p.k)?,
        lda: int(p.lda)?,
        ldb: int(p.ldb)?,
        ldc: int(p.ldc)?,
        stride_a: long(p.stride_a)?,
        stride_b: long(p.stride_b)?,
        stride_c: long(p.stride_c)?,
        batch: int(p.batch)?,
    })
}
