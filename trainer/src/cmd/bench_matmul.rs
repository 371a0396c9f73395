//! `trainer bench-matmul`: square matmul TFLOP/s on a device (the GPU benchmark's ceiling) of
//! the product the model runs (`ModelBackend::gemm`: cuBLAS on CUDA where it loads); with
//! `--check`, that product against burn's matmul in every layout the training step uses; with
//! `--check-host`, against the CPU's (`matmul_host_check.rs`); with
//! `--probe`, every CubeCL matmul routine at given shapes (`matmul_probe.rs`).

use std::time::Instant;

use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use clap::Args;

use shared::ModelBackend;
use shared::backend::{linear_in, matmul};

use crate::device::{DTypeArg, DeviceArg};
use crate::with_backend;

#[derive(Debug, Args)]
pub struct BenchMatmulArgs {
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Operand and result dtype.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Time each CubeCL matmul routine instead (cuda or wgpu devices), at `--shapes` in
    /// `--dtypes`: one JSON line per routine, with its error against burn's default routine.
    #[arg(long)]
    pub probe: bool,
    /// `--probe` shapes, `MxKxN` comma-separated (default: the 1.3B qkv and MLP-out products
    /// of an 8 × 512 batch).
    #[arg(long, value_delimiter = ',', default_value = "4096x2048x6144,4096x8192x2048", value_parser = parse_shape)]
    pub shapes: Vec<[usize; 3]>,
    /// `--probe` dtypes, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32,bf16")]
    pub dtypes: Vec<DTypeArg>,
    /// Compare the model's products with burn's matmul at small shapes instead (one JSON line
    /// per layout, with the largest difference relative to the largest value).
    #[arg(long)]
    pub check: bool,
    /// Compare the model's products on the device with the CPU's, from the same operands made
    /// on the CPU (`matmul_host_check.rs`; runs under tools/fake-cuda with
    /// FAKE_CUDA_GEMM=compute); fails beyond a tolerance.
    #[arg(long)]
    pub check_host: bool,
}

fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let bad = || format!("--shapes {s:?}: expected MxKxN, like 4096x2048x6144");
    let v: Vec<usize> = s
        .split('x')
        .map(|d| d.trim().parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    <[usize; 3]>::try_from(v).map_err(|_| bad())
}

pub fn run(args: BenchMatmulArgs) -> Result<()> {
    if args.probe {
        return probe(&args);
    }
    if args.check_host {
        return with_backend!(args.device.clone(), |B, device| {
            super::matmul_host_check::check_host::<B>(&device, args.device.matmul_impl())
        });
    }
    if args.check {
        return with_backend!(args.device.clone(), |B, device| {
            check::<B>(&device, args.device.matmul_impl())
        });
    }
    with_backend!(args.device.clone(), |B, device| {
        args.dtype.check::<B>(&device)?;
        let n = args.size;
        let dtype = args.dtype.float();
        let a = Tensor::<B, 2>::random([n, n], Distribution::Default, &device).cast(dtype);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Default, &device).cast(dtype);
        let t_first = Instant::now();
        let _ = B::gemm(a.clone(), b.clone(), false);
        B::sync(&device)?;
        let first_s = t_first.elapsed().as_secs_f64();
        for _ in 0..2 {
            let _ = B::gemm(a.clone(), b.clone(), false);
        }
        B::sync(&device)?;
        let t0 = Instant::now();
        for _ in 0..args.reps {
            let _ = B::gemm(a.clone(), b.clone(), false);
        }
        B::sync(&device)?;
        let dt = t0.elapsed().as_secs_f64() / args.reps as f64;
        println!(
            "{}",
            serde_json::json!({"impl": "law-polyglot", "size": n, "dtype": args.dtype, "tflops": 2.0 * (n as f64).powi(3) / dt / 1e12, "first_call_s": first_s, "matmul": args.device.matmul_impl()})
        );
        Ok(())
    })
}

fn probe(args: &BenchMatmulArgs) -> Result<()> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    let dtypes: Vec<_> = args.dtypes.iter().map(|d| d.float()).collect();
    match args.device {
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda(i) => super::matmul_probe::probe::<burn_cubecl::cubecl::cuda::CudaRuntime>(
            &crate::device::cuda_device(i)?,
            &args.shapes,
            &dtypes,
            args.reps,
            |line| println!("{line}"),
        ),
        #[cfg(feature = "wgpu")]
        DeviceArg::Wgpu => super::matmul_probe::probe::<burn_cubecl::cubecl::wgpu::WgpuRuntime>(
            &burn::backend::wgpu::WgpuDevice::DefaultDevice,
            &args.shapes,
            &dtypes,
            args.reps,
            |line| println!("{line}"),
        ),
        ref other => anyhow::bail!(
            "bench-matmul --probe runs on a CubeCL device (cuda or wgpu, built in with --features cuda or wgpu), not {other:?}"
        ),
    }
}

fn random<B: ModelBackend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// The largest difference of `got` from `want`, relative to the largest magnitude of `want`.
pub(super) fn rel_err<B: ModelBackend, const D: usize>(
    got: Tensor<B, D>,
    want: Tensor<B, D>,
) -> f64 {
    let diff: f64 = (got - want.clone()).abs().max().into_scalar().elem();
    let top: f64 = want.abs().max().into_scalar().elem();
    diff / top.max(f64::MIN_POSITIVE)
}

/// `--check`: `ModelBackend::gemm` and `base_matmul` against burn's matmul (`matmul`,
/// `linear_in`) in the layouts of the training step: plain, either factor a transposed view,
/// attention's batched products, a linear layer's broadcast weight (forward, and `Wᵀ` as in
/// backward), a bf16 weight with an f32 input, and bf16 factors with an f32 product.
fn check<B: ModelBackend>(device: &B::Device, imp: &str) -> Result<()> {
    B::seed(device, 7);
    let line = |case: &str, err: f64, dtype: &str| {
        println!(
            "{}",
            serde_json::json!({"impl": "law-polyglot", "check": case, "dtype": dtype, "rel_err": err, "matmul": imp})
        )
    };
    let (a, b) = (
        random::<B, 2>([96, 72], device),
        random::<B, 2>([72, 80], device),
    );
    line(
        "a·b",
        rel_err(B::gemm(a.clone(), b.clone(), false), matmul(a, b, false)),
        "f32",
    );
    let (at, b) = (
        random::<B, 2>([72, 96], device),
        random::<B, 2>([72, 80], device),
    );
    let got = B::gemm(at.clone().transpose(), b.clone(), false);
    line(
        "aT·b",
        rel_err(got, matmul(at.transpose(), b, false)),
        "f32",
    );
    let (a, bt) = (
        random::<B, 2>([96, 72], device),
        random::<B, 2>([80, 72], device),
    );
    let got = B::gemm(a.clone(), bt.clone().transpose(), false);
    line(
        "a·bT",
        rel_err(got, matmul(a, bt.transpose(), false)),
        "f32",
    );
    let (q, k) = (
        random::<B, 4>([2, 3, 40, 16], device),
        random::<B, 4>([2, 3, 40, 16], device),
    );
    let got = B::gemm(q.clone(), k.clone().transpose(), false);
    line(
        "q·kT [2,3,40,16]",
        rel_err(got, matmul(q.clone(), k.clone().transpose(), false)),
        "f32",
    );
    let (x, w) = (
        random::<B, 3>([2, 33, 72], device),
        random::<B, 2>([72, 80], device),
    );
    line(
        "x·W [2,33,72]",
        rel_err(B::base_matmul(x.clone(), w.clone()), linear_in(x, w)),
        "f32",
    );
    let (g, w) = (
        random::<B, 3>([2, 33, 80], device),
        random::<B, 2>([72, 80], device),
    );
    let got = B::base_matmul(g.clone(), w.clone().transpose());
    line("g·WT", rel_err(got, linear_in(g, w.transpose())), "f32");
    if DTypeArg::Bf16.check::<B>(device).is_ok() {
        let (x, w) = (
            random::<B, 3>([2, 33, 72], device),
            random::<B, 2>([72, 80], device),
        );
        let w = w.cast(burn::tensor::FloatDType::BF16);
        let got = B::base_matmul(x.clone(), w.clone());
        line(
            "x·W bf16 weight",
            rel_err(got, linear_in(x, w)),
            "bf16->f32",
        );
        let got = B::gemm(q.clone(), k.clone().transpose(), true);
        line(
            "q·kT bf16 factors",
            rel_err(got, matmul(q, k.transpose(), true)),
            "bf16->f32",
        );
    }
    Ok(())
}
