//! `trainer bench-matmul --check-host`: the model's products on a device against the same
//! products on the CPU (burn-flex), from operands made on the CPU and copied over as they are
//! (f32 or bf16). Nothing but the products runs on the device (no cast, copy or random kernel),
//! so the check also runs under `tools/fake-cuda` with `FAKE_CUDA_GEMM=compute`, where
//! cuBLAS's products are computed on the host and CubeCL's kernels do not run: our cuBLAS calls
//! (layouts, offsets, accumulation into rows) checked with no GPU. It fails where a product is
//! further from the CPU's than its dtype allows.

use anyhow::{Result, bail};
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, FloatDType, Tensor};

use shared::ModelBackend;
use shared::attention_blocks::rows;

use super::bench_matmul::rel_err;
use crate::train::replicas::copy_to;

/// `t` (made on the CPU) on `device`, in its own dtype, with no kernel.
fn to<B: ModelBackend, const D: usize>(t: &Tensor<Flex, D>, device: &B::Device) -> Tensor<B, D> {
    copy_to(t.clone(), device)
}

fn back<B: ModelBackend, const D: usize>(t: Tensor<B, D>) -> Tensor<Flex, D> {
    copy_to(t, &Default::default())
}

fn operand<const D: usize>(shape: [usize; D], bf16: bool) -> Tensor<Flex, D> {
    let t = Tensor::<Flex, D>::random(shape, Distribution::Normal(0.0, 1.0), &Default::default());
    if bf16 { t.cast(FloatDType::BF16) } else { t }
}

pub fn check_host<B: ModelBackend>(device: &B::Device, imp: &str) -> Result<()> {
    Flex::seed(&Default::default(), 11);
    let mut failed = Vec::new();
    let mut line = |case: &str, got: Tensor<Flex, 4>, want: Tensor<Flex, 4>, bf16: bool| {
        let err = rel_err(got.cast(FloatDType::F32), want.cast(FloatDType::F32));
        // a bf16 product rounded once either way, f32 sums in another order
        let tol = if bf16 { 1e-2 } else { 1e-5 };
        let dtype = if bf16 { "bf16" } else { "f32" };
        println!(
            "{}",
            serde_json::json!({"impl": "law-polyglot", "check-host": case, "dtype": dtype, "rel_err": err, "tolerance": tol, "matmul": imp})
        );
        if err.is_nan() || err > tol {
            failed.push(format!("{case} ({dtype}): {err:.3e}"));
        }
    };
    for bf16 in [false, true] {
        let (a, b) = (operand([1, 1, 96, 72], bf16), operand([1, 1, 72, 80], bf16));
        let out = a.dtype().into();
        let got = B::gemm_as(to(&a, device), to(&b, device), false, out);
        line("a·b", back(got), Flex::gemm_as(a, b, false, out), bf16);
        // attention's scores, q·kᵀ, and those of its last query block (rows 16..48 of q, a view
        // at an offset, against every key)
        let (q, k) = (operand([2, 3, 48, 16], bf16), operand([2, 3, 48, 16], bf16));
        let (qd, kd) = (to::<B, 4>(&q, device), to::<B, 4>(&k, device));
        let f32 = FloatDType::F32;
        let got = B::gemm_as(qd.clone(), kd.clone().transpose(), false, f32);
        let want = Flex::gemm_as(q.clone(), k.clone().transpose(), false, f32);
        line("q·kT", back(got), want, bf16);
        let got = B::gemm_as(rows(&qd, 16..48), kd.clone().transpose(), false, f32);
        let want = Flex::gemm_as(rows(&q, 16..48), k.clone().transpose(), false, f32);
        line("q[16..48]·kT", back(got), want, bf16);
        // a query block's key gradient added into the first 32 rows of the last block's:
        // dSᵀ (a transposed view) times q's rows 16..48, into a product's rows (as the last
        // block's gradient, dense: the rows are written in place)
        let (x, y) = (operand([2, 3, 48, 8], bf16), operand([2, 3, 8, 16], bf16));
        let acc = B::gemm_as(to(&x, device), to(&y, device), false, out);
        let ds = operand([2, 3, 32, 32], bf16);
        let got = B::gemm_add_rows(
            acc,
            to::<B, 4>(&ds, device).transpose(),
            rows(&qd, 16..48),
            bf16,
        );
        let acc = Flex::gemm_as(x, y, false, out);
        let want = Flex::gemm_add_rows(acc, ds.transpose(), rows(&q, 16..48), bf16);
        line("acc[..32] += dsT·q[16..48]", back(got), want, bf16);
        // q's gradient over two query blocks, each block's dS·k written into its rows:
        // [16 × 16]·k[..16] and [32 × 48]·k[..48]
        let (ds0, ds1) = (operand([2, 3, 16, 16], bf16), operand([2, 3, 32, 48], bf16));
        let got = B::gemm_rows(
            vec![
                (to(&ds0, device), rows(&kd, 0..16)),
                (to(&ds1, device), kd.clone()),
            ],
            bf16,
            out,
        );
        let want = Flex::gemm_rows(vec![(ds0, rows(&k, 0..16)), (ds1, k.clone())], bf16, out);
        line("[ds0·k[..16]; ds1·k]", back(got), want, bf16);
    }
    if !failed.is_empty() {
        bail!(
            "products on the device differ from the CPU's: {}",
            failed.join("; ")
        );
    }
    Ok(())
}
