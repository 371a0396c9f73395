//! `trainer bench-matmul`: square matmul TFLOP/s on a device (the GPU benchmark's ceiling), or,
//! with `--probe`, every CubeCL matmul routine at given shapes (`matmul_probe.rs`).

use std::time::Instant;

use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use clap::Args;

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
    with_backend!(args.device.clone(), |B, device| {
        args.dtype.check::<B>(&device)?;
        let n = args.size;
        let dtype = args.dtype.float();
        let a = Tensor::<B, 2>::random([n, n], Distribution::Default, &device).cast(dtype);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Default, &device).cast(dtype);
        let t_first = Instant::now();
        let _ = a.clone().matmul(b.clone());
        B::sync(&device)?;
        let first_s = t_first.elapsed().as_secs_f64();
        for _ in 0..2 {
            let _ = a.clone().matmul(b.clone());
        }
        B::sync(&device)?;
        let t0 = Instant::now();
        for _ in 0..args.reps {
            let _ = a.clone().matmul(b.clone());
        }
        B::sync(&device)?;
        let dt = t0.elapsed().as_secs_f64() / args.reps as f64;
        println!(
            "{}",
            serde_json::json!({"impl": "law-polyglot", "size": n, "dtype": args.dtype, "tflops": 2.0 * (n as f64).powi(3) / dt / 1e12, "first_call_s": first_s})
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
