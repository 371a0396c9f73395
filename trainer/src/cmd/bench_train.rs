//! `trainer bench-train`: LoRA r8 (query_key_value) training-step timings of a random GPT-NeoX
//! shape, one JSON line, for `bench/train_step_cpu.py` (which runs HF + PEFT beside it).

use shared::TrainBackend;
use std::time::Instant;

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::ElementConversion;
use clap::Args;
use shared::example::Example;
use shared::lora::{LoraConfig, TargetModules};
use shared::timeline;
use shared::{GptNeoxConfig, GptNeoxForCausalLM};

use crate::device::DeviceArg;
use crate::train::batch::collate;
use crate::train::optim::{AdamW, AdamWConfig, GradSum};
use crate::train::replicas::Replicas;
use crate::train::step::forward_backward;
use crate::with_backend;

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 1024)]
    pub inter: usize,
    #[arg(long, default_value_t = 1024)]
    pub vocab: usize,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// LoRA rank (0 = full training of every weight).
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    /// LoRA dropout (PEFT's default is 0; bench/torch_gpu_baseline.py uses 0.05).
    #[arg(long, default_value_t = 0.0)]
    pub lora_dropout: f64,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: crate::device::DTypeArg,
    /// Per-layer activation checkpointing (as `sft --grad-checkpointing`).
    #[arg(long)]
    pub grad_checkpointing: bool,
    #[command(flatten)]
    pub quant: crate::cmd::quant_args::QuantArgs,
    /// Where the timed steps' GPU time goes, by part of the model (CUDA with cuBLAS only:
    /// `shared::timeline`), as a table on stderr and `timeline` in the JSON line.
    #[arg(long)]
    pub timeline: bool,
    /// Data parallel over these device indices of --device's kind (as `sft --devices`): each
    /// device a replica with --batch sequences, gradients summed every step.
    #[arg(long)]
    pub devices: Option<crate::device::DeviceIndices>,
}

pub fn run(args: BenchTrainArgs) -> Result<()> {
    let start = Instant::now();
    let config = GptNeoxConfig::from_hf_json(
        &serde_json::json!({
            "vocab_size": args.vocab, "hidden_size": args.hidden, "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads, "intermediate_size": args.inter, "rotary_pct": 0.5,
            "use_parallel_residual": true, "max_position_embeddings": args.seq.max(128),
        })
        .to_string(),
    )?;
    with_backend!(args.device.clone(), |B, device| {
        let devices = crate::device::training_devices(&device, args.devices.as_ref())?;
        bench_on::<Autodiff<B>>(&args, &config, start, &devices)
    })
}

fn bench_on<AB: TrainBackend>(
    args: &BenchTrainArgs,
    config: &GptNeoxConfig,
    start: Instant,
    devices: &[AB::Device],
) -> Result<()> {
    let device = devices[0].clone();
    args.dtype.check::<AB>(&device)?;
    // the same weights in every run: losses comparable across builds (cuBLAS against CubeCL)
    AB::seed(&device, 0);
    let base = args.quant.format();
    if args.lora_r == 0 && base != shared::base_weight::BaseFormat::Dense {
        anyhow::bail!("--quant needs LoRA (--lora-r > 0): a quantized base is frozen");
    }
    let mut model = if base == shared::base_weight::BaseFormat::Dense {
        GptNeoxForCausalLM::<AB>::init_on_device(config, 0.02, &device)
    } else {
        crate::cmd::quant_args::init_quantized(config, base, &device)
    };
    let lora = LoraConfig {
        r: args.lora_r.max(1),
        alpha: 16.0,
        dropout: args.lora_dropout,
        target_modules: TargetModules::List(vec!["query_key_value".into()]),
        use_rslora: false,
    };
    if args.dtype == crate::device::DTypeArg::Bf16 {
        model = model.cast_base(burn::tensor::FloatDType::BF16);
    }
    if args.lora_r > 0 {
        model.attach_lora(&lora, 0, &device);
    }
    let init_s = start.elapsed().as_secs_f64();
    let mut step_s = Vec::new();
    // per timed step: the host's time to queue forward, backward and the optimizer's step, then
    // its wait for the GPU to finish them (the gradient norm is read): a wait near 0 means the
    // host sets the pace
    let (mut queue_s, mut wait_s) = (0.0, 0.0);
    // read after the timed steps, so that no step waits for its loss
    let mut losses = Vec::new();
    let examples: Vec<Example> = (0..args.batch)
        .map(|b| {
            Example::lm(
                (0..args.seq)
                    .map(|i| ((b * 7919 + i * 31) % args.vocab) as u32)
                    .collect(),
            )
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let mut reps = Replicas::new(model, devices, |_| Ok(AdamW::new(AdamWConfig::default())))?;
    let mut t0 = Instant::now();
    for step in 0..args.steps + 3 {
        if step == 3 {
            t0 = Instant::now();
            timeline::set_enabled(args.timeline);
        }
        let ts = Instant::now();
        timeline::mark_on::<AB>(&device, timeline::STEP);
        let batches: Vec<_> = devices
            .iter()
            .map(|d| collate::<AB>(&refs, 0, d))
            .enumerate()
            .collect();
        let n: usize = batches.iter().map(|(_, b)| b.scored).sum();
        // one device's batch, seeded per step and device, each device from its own thread
        let (mut step_losses, sums): (Vec<_>, Vec<_>) = reps
            .each_device(batches, |model, (j, batch)| {
                let mut grads = GradSum::<AB::InnerBackend>::default();
                let seed = step as u64 ^ ((j as u64) << 40);
                let loss = forward_backward(
                    model,
                    batch,
                    1.0 / n as f64,
                    seed,
                    args.grad_checkpointing,
                    &mut grads,
                );
                (loss, grads)
            })
            .into_iter()
            .unzip();
        timeline::mark_on::<AB>(&device, "gradients");
        let grads = reps.reduce(sums).expect("LoRA weights have gradients");
        // as `trainer sft` does: the clipping factor on the device, the optimizer's step queued
        // before the read-back (the norm here, the loss there)
        let norm = grads.norm();
        let grads = grads.clipped(norm.clone(), 1.0);
        timeline::mark_on::<AB>(&device, "optimizer");
        reps.step(grads, 1e-3);
        let queued = ts.elapsed().as_secs_f64();
        let _ = norm.into_scalar();
        if step >= 3 {
            queue_s += queued;
            wait_s += ts.elapsed().as_secs_f64() - queued;
        }
        step_s.push(ts.elapsed().as_secs_f64());
        losses.push(step_losses.swap_remove(0));
        if step == 0 {
            eprintln!(
                "first step finished {:.1} s after start (init {init_s:.1} s)",
                start.elapsed().as_secs_f64()
            );
        }
    }
    timeline::mark_on::<AB>(&device, "end");
    let losses: Vec<f32> = losses
        .into_iter()
        .map(|l| l.into_scalar().elem::<f32>())
        .collect();
    // after the reads: the last optimizer step is finished too
    let dt = t0.elapsed().as_secs_f64() / args.steps as f64;
    timeline::set_enabled(false);
    let timeline = args.timeline.then(|| timeline_rows(&device)).flatten();
    let per_step_ms = |s: f64| s * 1e3 / args.steps as f64;
    println!(
        "{}",
        serde_json::json!({
            "impl": "law-polyglot",
            "dtype": args.dtype,
            "grad_checkpointing": args.grad_checkpointing,
            "quant": args.quant.json(),
            "ms_per_step": dt * 1e3,
            "queue_ms_per_step": per_step_ms(queue_s),
            "wait_ms_per_step": per_step_ms(wait_s),
            "tokens_per_s": (args.batch * args.seq * devices.len()) as f64 / dt,
            "devices": devices.len(),
            "replica_threads": reps.threads(),
            "init_s": init_s,
            "first_step_done_s": init_s + step_s[0],
            "step_s": step_s,
            "losses": losses,
            "matmul": args.device.matmul_impl(),
            "timeline": timeline,
        })
    );
    Ok(())
}

/// The timeline's rows (printed as a table on stderr), or `None` with a note where no mark was
/// recorded (not CUDA, or cuBLAS not on CubeCL's stream).
fn timeline_rows<D: std::any::Any>(device: &D) -> Option<Vec<timeline::Row>> {
    #[cfg(feature = "cuda")]
    let points = timeline::take(device);
    #[cfg(not(feature = "cuda"))]
    let points: Vec<timeline::Point> = {
        let _ = device;
        Vec::new()
    };
    let rows = timeline::summarize(&points);
    if rows.is_empty() {
        eprintln!(
            "--timeline: no marks recorded (CUDA only, with cuBLAS queued on CubeCL's stream: \
             LAW_POLYGLOT_MATMUL unset or cublas)"
        );
        return None;
    }
    eprint!("{}", timeline::table(&rows));
    Some(rows)
}
