//! `trainer bench-matmul`: square f32 matmul TFLOP/s on a device (the GPU benchmark's ceiling).

use std::time::Instant;

use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use clap::Args;

use crate::device::DeviceArg;
use crate::with_backend;

#[derive(Debug, Args)]
pub struct BenchMatmulArgs {
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

pub fn run(args: BenchMatmulArgs) -> Result<()> {
    with_backend!(args.device.clone(), |B, device| {
        let n = args.size;
        let a = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
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
            serde_json::json!({"impl": "law-polyglot", "size": n, "dtype": "f32", "tflops": 2.0 * (n as f64).powi(3) / dt / 1e12, "first_call_s": first_s})
        );
        Ok(())
    })
}
