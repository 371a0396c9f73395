//! `trainer bench-matmul --probe`: time each of CubeCL's matmul routines (cubek 0.2) on one
//! CubeCL device, at the shapes of a training step, in f32 and bf16.
//!
//! burn 0.21 built without autotune (as we build it, for a short time to the first step) always
//! launches cubek's `Strategy::Auto`, the simple cyclic CMMA routine; with autotune, it benchmarks
//! up to 20 routines per new shape, each compiled by NVRTC, which took minutes at the 1.3B shape
//! (BENCHMARKS.md). This probe shows, on the card at hand, how much speed `Auto` leaves and which
//! routine a fixed choice should use: one JSON line per (shape, dtype, routine) with TFLOP/s, or
//! the routine's setup error (TMA routines need Hopper, MMA ones need a matching tensor core).

use std::time::Instant;

use anyhow::Result;
use burn::tensor::{
    Distribution, ElementConversion, FloatDType, Tensor, TensorPrimitive, backend::Backend,
};
use burn_cubecl::{CubeBackend, CubeRuntime, tensor::CubeTensor};
use cubek::matmul::components::tile::TileMatmulKind::{Cmma, Mma};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::Strategy;
use cubek::matmul::routines::{
    BlueprintStrategy::Inferred, double_buffering::DoubleBufferingArgs,
    ordered_double_buffering::OrderedSelectionArgs, simple::SimpleArgs,
};
use cubek::std::InputBinding;

/// The routines burn's matmul autotune would try for a large general matmul, plus `Auto` (what
/// burn runs without autotune) and the plain unit routine.
fn routines() -> Vec<Strategy> {
    // A macro, not a closure: the simple and simple-TMA routines take different strategy types.
    macro_rules! simple {
        ($multi_rows:expr, $kind:expr) => {
            Inferred(SimpleArgs {
                multi_rows: $multi_rows,
                tile_matmul: $kind,
            })
        };
    }
    let ordered = |row_count, tile_matmul| {
        Inferred(OrderedSelectionArgs {
            partition_k: Some(2),
            row_count: Some(row_count),
            rows_per_plane: Some(2),
            tile_matmul,
        })
    };
    let double = |specialized, tile_matmul| {
        Inferred(DoubleBufferingArgs {
            specialized,
            tile_matmul,
        })
    };
    vec![
        Strategy::Auto,
        Strategy::SimpleCyclicCmma(simple!(false, Cmma)),
        Strategy::SimpleCyclicMma(simple!(false, Mma)),
        Strategy::SimpleCyclicCmma(simple!(true, Cmma)),
        Strategy::SimpleCyclicMma(simple!(true, Mma)),
        Strategy::OrderedDoubleCmma(ordered(4, Cmma)),
        Strategy::OrderedDoubleMma(ordered(4, Mma)),
        Strategy::OrderedDoubleCmma(ordered(8, Cmma)),
        Strategy::OrderedDoubleMma(ordered(8, Mma)),
        Strategy::DoubleCyclicCmma(double(false, Cmma)),
        Strategy::DoubleCyclicMma(double(false, Mma)),
        Strategy::DoubleCyclicCmma(double(true, Cmma)),
        Strategy::DoubleCyclicMma(double(true, Mma)),
        Strategy::SpecializedCyclicCmma(Inferred(().into())),
        Strategy::SpecializedCyclicMma(Inferred(().into())),
        Strategy::SimpleTmaCmma(simple!(false, Cmma)),
        Strategy::SimpleTmaMma(simple!(false, Mma)),
        Strategy::SimpleTmaCmma(simple!(true, Cmma)),
        Strategy::SimpleTmaMma(simple!(true, Mma)),
        Strategy::SpecializedTmaCmma(Inferred(().into())),
        Strategy::SpecializedTmaMma(Inferred(().into())),
        Strategy::SimpleUnit(Inferred(Default::default())),
    ]
}

fn primitive<R: CubeRuntime>(t: Tensor<CubeBackend<R, f32, i32, u32>, 2>) -> CubeTensor<R> {
    match t.into_primitive() {
        TensorPrimitive::Float(t) => t,
        TensorPrimitive::QFloat(_) => unreachable!("float tensors only"),
    }
}

/// Launch `strategy` once: `lhs [m, k] · rhs [k, n] → out [m, n]`, all of `out`'s dtype.
fn launch<R: CubeRuntime>(
    strategy: &Strategy,
    lhs: &CubeTensor<R>,
    rhs: &CubeTensor<R>,
    out: &CubeTensor<R>,
) -> Result<(), String> {
    let dtype = out.dtype;
    let mut elems = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: dtype.into(),
        rhs: dtype.into(),
        out: dtype.into(),
    });
    cubek::matmul::launch::launch_ref(
        strategy,
        &out.client,
        InputBinding::new(lhs.clone().binding(), dtype.into()),
        InputBinding::new(rhs.clone().binding(), dtype.into()),
        out.clone().binding(),
        &mut elems,
    )
    .map_err(|e| format!("{e:?}"))
}

/// Launch with panics turned into errors (a routine the device cannot run may panic).
fn try_launch<R: CubeRuntime>(
    strategy: &Strategy,
    lhs: &CubeTensor<R>,
    rhs: &CubeTensor<R>,
    out: &CubeTensor<R>,
) -> Result<(), String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        launch(strategy, lhs, rhs, out)
    }));
    std::panic::set_hook(hook);
    r.unwrap_or_else(|e| {
        Err(e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()))
    })
}

fn rel_diff<R: CubeRuntime>(out: &CubeTensor<R>, reference: &CubeTensor<R>) -> f64 {
    let t = |x: &CubeTensor<R>| {
        Tensor::<CubeBackend<R, f32, i32, u32>, 2>::from_primitive(TensorPrimitive::Float(
            x.clone(),
        ))
        .cast(FloatDType::F32)
    };
    let (o, r) = (t(out), t(reference));
    let num: f64 = (o - r.clone()).abs().max().into_scalar().elem();
    let den: f64 = r.abs().max().into_scalar().elem();
    num / den.max(f64::MIN_POSITIVE)
}

/// Time every routine at every `[m, k, n]` in each dtype; `emit` gets one JSON object per
/// measurement as soon as it is made (the caller prints it: a timeout keeps what was measured).
pub fn probe<R: CubeRuntime>(
    device: &R::Device,
    shapes: &[[usize; 3]],
    dtypes: &[FloatDType],
    reps: usize,
    mut emit: impl FnMut(serde_json::Value),
) -> Result<()> {
    type B<R> = CubeBackend<R, f32, i32, u32>;
    let sync = || B::<R>::sync(device).map_err(|e| anyhow::anyhow!("{e:?}"));
    for &[m, k, n] in shapes {
        for &dtype in dtypes {
            let a = Tensor::<B<R>, 2>::random([m, k], Distribution::Default, device).cast(dtype);
            let b = Tensor::<B<R>, 2>::random([k, n], Distribution::Default, device).cast(dtype);
            let (a, b) = (primitive(a), primitive(b));
            let zeros = || primitive(Tensor::<B<R>, 2>::zeros([m, n], device).cast(dtype));
            let mut reference: Option<CubeTensor<R>> = None;
            for strategy in routines() {
                let name = strategy.to_string();
                let out = zeros();
                let t0 = Instant::now();
                let first = try_launch(&strategy, &a, &b, &out).and_then(|()| {
                    sync().map_err(|e| e.to_string())?;
                    Ok(t0.elapsed().as_secs_f64())
                });
                // Max |out - Auto's out| / max |Auto's out|: a fast routine must also be right.
                let rel_err = first.as_ref().ok().map(|_| match &reference {
                    None => {
                        reference = Some(out.clone());
                        0.0
                    }
                    Some(r) => rel_diff::<R>(&out, r),
                });
                let mut line = serde_json::json!({"m": m, "k": k, "n": n,
                    "dtype": format!("{dtype:?}"), "routine": name});
                match first {
                    Err(e) => line["error"] = e.trim().chars().take(200).collect::<String>().into(),
                    Ok(first_s) => {
                        let t = Instant::now();
                        for _ in 0..reps {
                            launch(&strategy, &a, &b, &out).map_err(anyhow::Error::msg)?;
                        }
                        sync()?;
                        let dt = t.elapsed().as_secs_f64() / reps as f64;
                        line["tflops"] = (2.0 * (m * k * n) as f64 / dt / 1e12).into();
                        line["first_call_s"] = first_s.into();
                        line["rel_err_vs_auto"] = rel_err.into();
                    }
                }
                emit(line);
            }
        }
    }
    Ok(())
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn_cubecl::cubecl::wgpu::WgpuRuntime;

    /// On lavapipe (no tensor cores) the unit routine and `Auto` (which falls back to it) run
    /// and agree; the rest report an error instead of stopping the probe.
    #[test]
    fn probe_reports_every_routine() {
        let mut rows = Vec::new();
        let device = burn::backend::wgpu::WgpuDevice::DefaultDevice;
        probe::<WgpuRuntime>(&device, &[[64, 32, 48]], &[FloatDType::F32], 2, |r| {
            rows.push(r)
        })
        .unwrap();
        assert_eq!(rows.len(), routines().len());
        for name in ["matmul_auto", "matmul_simple_unit"] {
            let r = rows
                .iter()
                .find(|r| r["routine"].as_str().unwrap().starts_with(name))
                .unwrap();
            assert!(r["tflops"].as_f64().unwrap() > 0.0, "{r}");
            assert!(r["rel_err_vs_auto"].as_f64().unwrap() < 1e-6, "{r}");
        }
        assert!(
            rows.iter()
                .all(|r| r.get("tflops").is_some() || r.get("error").is_some())
        );
    }
}
