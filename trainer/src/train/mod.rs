//! The hand-written training loop shared by `trainer sft` and `trainer pretrain`: forward,
//! token-weighted masked loss, backward, gradient accumulation, global-norm clipping, PyTorch
//! AdamW, HF's LR schedules, eval, metrics, checkpoints that resume bit-for-bit, Ctrl-C and
//! NaN handling.
//!
//! Data parallel (`--devices`, see `replicas`): each device holds a replica and an AdamW and
//! takes a contiguous slice of every batch (`--batch-size` per device); the replicas' gradient
//! sums are all-reduced (with the token-weighted loss their sum is exactly the gradient of the
//! whole batch) and every device applies the same update.

pub mod batch;
pub mod io;
pub mod metrics;
pub mod optim;
pub mod replicas;
pub mod schedule;
pub mod step;

use shared::ModelBackend;
use shared::TrainBackend;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::ElementConversion;
use serde::{Deserialize, Serialize};
use shared::GptNeoxForCausalLM;
use shared::example::Example;
use shared::loss::causal_lm_nll_sum;

use batch::{Batch, collate, epoch_order};
use metrics::{MetricsLog, StepMetrics};
use optim::{AdamW, AdamWConfig, GradSum};
use replicas::Replicas;
use schedule::{LrSchedule, Schedule};
use step::forward_backward;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ask a running loop to save a checkpoint and stop (what Ctrl-C does).
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_ctrlc() {
    // A second install in the same process (tests) fails harmlessly.
    let _ = ctrlc::set_handler(request_stop);
}

/// Hyper-parameters and bookkeeping of a run (saved as `run_config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSpec {
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub schedule: Schedule,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_grad_norm: f64,
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub seed: u64,
    pub eval_every: usize,
    pub save_every: usize,
    pub keep: usize,
    pub log_every: usize,
    /// Recompute each layer in backward instead of keeping its activations.
    #[serde(default)]
    pub grad_checkpointing: bool,
}

/// How a run's trainable weights are written to and read back from a checkpoint folder.
pub trait WeightIo<AB: TrainBackend> {
    fn save(&self, model: &GptNeoxForCausalLM<AB>, dir: &Path) -> Result<()>;
    fn load(&self, model: GptNeoxForCausalLM<AB>, dir: &Path) -> Result<GptNeoxForCausalLM<AB>>;
}

#[derive(Debug, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub final_loss: f64,
    pub eval_loss_before: Option<f64>,
    pub eval_loss_after: Option<f64>,
    pub interrupted: bool,
}

/// Token-weighted mean loss of `examples` (no dropout, no gradients).
pub fn eval_loss<B: ModelBackend>(
    model: &GptNeoxForCausalLM<B>,
    examples: &[Example],
    batch_size: usize,
    pad_id: u32,
    device: &B::Device,
) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let b = collate::<B>(&refs, pad_id, device);
        if b.scored == 0 {
            continue;
        }
        let (s, c) = causal_lm_nll_sum(model.forward(b.ids, None), &b.labels);
        sum += s.into_scalar().elem::<f64>();
        n += c;
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

fn checkpoints(out: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then_some((step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The newest complete checkpoint in `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Option<(usize, PathBuf)> {
    checkpoints(out).pop()
}

fn save_checkpoint<AB: TrainBackend>(
    io: &dyn WeightIo<AB>,
    model: &GptNeoxForCausalLM<AB>,
    opt: &AdamW<AB::InnerBackend>,
    out: &Path,
    step: usize,
    spec: &TrainSpec,
) -> Result<PathBuf> {
    let dir = out.join(format!("checkpoint-{step}"));
    let tmp = out.join(format!(".checkpoint-{step}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    io.save(model, &tmp)?;
    opt.save(&tmp)?;
    let state = TrainerState {
        step,
        seed: spec.seed,
    };
    std::fs::write(
        tmp.join("trainer_state.json"),
        serde_json::to_string_pretty(&state)?,
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    let all = checkpoints(out);
    if all.len() > spec.keep.max(1) {
        for (_, old) in &all[..all.len() - spec.keep.max(1)] {
            std::fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    Ok(dir)
}

enum Progress {
    Bar(indicatif::ProgressBar),
    Lines,
}

impl Progress {
    fn new(total: usize, start: usize) -> Self {
        if std::io::stdout().is_terminal() {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .expect("valid template"),
            );
            bar.set_position(start as u64);
            Self::Bar(bar)
        } else {
            Self::Lines
        }
    }

    fn update(&self, m: &StepMetrics, total: usize, log: bool) {
        let msg = format!(
            "loss {:.4}  lr {:.2e}  {:.0} tok/s{}",
            m.loss,
            m.lr,
            m.tokens_per_s,
            m.eval_loss
                .map(|e| format!("  eval {e:.4}"))
                .unwrap_or_default()
        );
        match self {
            Self::Bar(b) => {
                b.set_position(m.step as u64);
                b.set_message(msg);
            }
            Self::Lines if log => println!("step {}/{total}  {msg}", m.step),
            Self::Lines => {}
        }
    }

    fn finish(&self) {
        if let Self::Bar(b) = self {
            b.finish();
        }
    }
}

/// Run (or resume) training. `resume` is a checkpoint folder written by an earlier run.
#[allow(clippy::too_many_arguments)]
pub fn train<AB: TrainBackend>(
    mut model: GptNeoxForCausalLM<AB>,
    io: &dyn WeightIo<AB>,
    spec: &TrainSpec,
    train_set: &[Example],
    eval_set: &[Example],
    pad_id: u32,
    out: &Path,
    resume: Option<&Path>,
    devices: &[AB::Device],
) -> Result<(GptNeoxForCausalLM<AB>, TrainSummary)> {
    if train_set.is_empty() {
        bail!("no training examples");
    }
    let Some(device) = devices.first() else {
        bail!("no device to train on");
    };
    install_ctrlc();
    INTERRUPTED.store(false, Ordering::SeqCst);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let per_device = spec.batch_size.max(1);
    let bs = per_device * devices.len();
    let accum = spec.grad_accum.max(1);
    let per_epoch = train_set.len().div_ceil(bs);
    let total = spec
        .max_steps
        .unwrap_or((spec.epochs * per_epoch).div_ceil(accum))
        .max(1);
    let sched = LrSchedule::new(spec.schedule, spec.lr, spec.warmup_ratio, total);
    let adam = AdamWConfig {
        weight_decay: spec.weight_decay,
        ..Default::default()
    };

    let start = match resume {
        Some(dir) => {
            let state: TrainerState = serde_json::from_str(
                &std::fs::read_to_string(dir.join("trainer_state.json"))
                    .with_context(|| format!("{}/trainer_state.json", dir.display()))?,
            )?;
            model = io.load(model, dir)?;
            state.step
        }
        None => 0,
    };
    let mut reps = Replicas::new(model, devices, |d| match resume {
        Some(dir) => AdamW::load(adam, dir, d),
        None => Ok(AdamW::new(adam)),
    })?;
    if devices.len() > 1 {
        println!(
            "data parallel over {} devices, {}",
            devices.len(),
            match reps.threads() {
                true => "each queued from a thread of its own",
                false =>
                    "queued one after another from one thread (LAW_POLYGLOT_REPLICAS=threads: one each)",
            }
        );
    }
    let mut metrics = MetricsLog::open(out, start)?;
    let eval_before = (!eval_set.is_empty() && start == 0)
        .then(|| eval_loss(&reps.model(0).valid(), eval_set, bs, pad_id, device));
    if let Some(e) = eval_before {
        println!("eval loss before training: {e:.4}");
    }
    let progress = Progress::new(total, start);
    let (mut last_loss, mut interrupted) = (f64::NAN, false);
    let mut order_epoch = usize::MAX;
    let mut order = Vec::new();

    for step in start..total {
        let t0 = Instant::now();
        let micro: Vec<usize> = (step * accum..(step + 1) * accum).collect();
        let mut batches = Vec::with_capacity(accum);
        for &k in &micro {
            let (epoch, idx) = (k / per_epoch, k % per_epoch);
            if epoch != order_epoch {
                order = epoch_order(train_set.len(), spec.seed, epoch);
                order_epoch = epoch;
            }
            let ids = &order[idx * bs..((idx + 1) * bs).min(order.len())];
            for (j, slice) in ids.chunks(per_device).enumerate() {
                let refs: Vec<&Example> = slice.iter().map(|&i| &train_set[i]).collect();
                batches.push((k, j, collate::<AB>(&refs, pad_id, &devices[j])));
            }
        }
        let scored: usize = batches.iter().map(|(.., b)| b.scored).sum::<usize>().max(1);
        let tokens: usize = batches.iter().map(|(.., b)| b.tokens).sum();
        let mut per_device: Vec<Vec<(usize, Batch<AB>)>> =
            devices.iter().map(|_| Vec::new()).collect();
        for (k, j, b) in batches {
            per_device[j].push((k, b));
        }
        // Every device's work is queued, each from its own thread, before any read-back, so
        // devices run side by side.
        let (losses, grads): (Vec<_>, Vec<_>) = reps
            .each_device(
                per_device.into_iter().enumerate().collect(),
                |model, (j, items)| {
                    let mut grads = GradSum::<AB::InnerBackend>::default();
                    let losses: Vec<_> = items
                        .into_iter()
                        .map(|(k, b)| {
                            let seed = spec.seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
                                ^ k as u64
                                ^ ((j as u64) << 40);
                            forward_backward(
                                model,
                                b,
                                1.0 / scored as f64,
                                seed,
                                spec.grad_checkpointing,
                                &mut grads,
                            )
                        })
                        .collect();
                    (losses, grads)
                },
            )
            .into_iter()
            .unzip();
        let losses: Vec<_> = losses.into_iter().flatten().collect();
        let grads = reps
            .reduce(grads)
            .context("no trainable parameter received a gradient")?;
        // The optimizer's step is queued before anything is read back (the clipping factor is
        // computed on the device), so the GPU goes on with it while the host reads the loss;
        // the weights before it are kept (handles, no copy) in case the loss is not finite.
        let norm = grads.norm();
        let grads = grads.clipped(norm.clone(), spec.max_grad_norm);
        let lr = sched.lr(step);
        let before = reps.primary_snapshot();
        reps.step(grads, lr);
        let loss_sum: f64 = losses
            .into_iter()
            .map(|l| l.into_scalar().elem::<f64>())
            .sum();
        if !loss_sum.is_finite() {
            let dir = save_checkpoint(io, &before.0, &before.1, out, step, spec)?;
            progress.finish();
            bail!(
                "loss is {loss_sum} at step {}: stopping; the weights before this step are saved in {}",
                step + 1,
                dir.display()
            );
        }
        drop(before);
        let norm: f64 = norm.into_scalar().elem();
        let tokens_per_s = tokens as f64 / t0.elapsed().as_secs_f64();
        let done = step + 1;
        last_loss = loss_sum;
        let periodic = spec.eval_every > 0 && done.is_multiple_of(spec.eval_every);
        let eval = (!eval_set.is_empty() && (periodic || done == total))
            .then(|| eval_loss(&reps.model(0).valid(), eval_set, bs, pad_id, device));
        let m = StepMetrics {
            step: done,
            epoch: (done * accum) as f64 / per_epoch as f64,
            loss: loss_sum,
            lr,
            grad_norm: norm,
            tokens_per_s,
            eval_loss: eval,
        };
        let log = done.is_multiple_of(spec.log_every.max(1)) || done == total || eval.is_some();
        progress.update(&m, total, log);
        metrics.push(m)?;
        let stop = INTERRUPTED.load(Ordering::SeqCst);
        if (spec.save_every > 0 && done.is_multiple_of(spec.save_every)) || stop {
            let (model, opt) = reps.primary();
            save_checkpoint(io, model, opt, out, done, spec)?;
        }
        if stop {
            interrupted = true;
            println!(
                "interrupted: checkpoint-{done} saved in {}; continue with --resume",
                out.display()
            );
            break;
        }
    }
    progress.finish();
    let eval_after = metrics
        .history()
        .last()
        .filter(|m| m.step == total)
        .and_then(|m| m.eval_loss);
    if let Some(e) = eval_after {
        println!("eval loss after training: {e:.4}");
    }
    let steps = metrics.history().last().map_or(start, |m| m.step);
    Ok((
        reps.into_primary(),
        TrainSummary {
            steps,
            final_loss: last_loss,
            eval_loss_before: eval_before,
            eval_loss_after: eval_after,
            interrupted,
        },
    ))
}
