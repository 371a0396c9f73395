//! `trainer sft`: LoRA fine-tuning on Alpaca instruction data (a Polyglot-ko user's
//! `finetune.py` with transformers + PEFT). With no arguments it fine-tunes the bundled tiny
//! Korean legal base on the bundled constitution instructions, on the CPU.

use shared::TrainBackend;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::FloatDType;
use clap::Args;
use serde_json::json;
use shared::example::Example;
use shared::model_dir::ModelDir;
use shared::prompt::Template;
use shared::{GptNeoxForCausalLM, Tokenizer};

use crate::answer::answer;
use crate::cmd::lora_args::{LoraArgs, OptimArgs};
use crate::device::{DTypeArg, DeviceArg, IndexedDevice};
use crate::paths::{BASE_MODEL, HELDOUT_DATA, TRAIN_DATA, bundled};
use crate::sft_data::{AlpacaRecord, read_files};
use crate::train::io::LoraIo;
use crate::train::{latest_checkpoint, train};
use crate::with_backend;

#[derive(Debug, Args)]
pub struct SftArgs {
    /// Base model folder (HF format). Default: the bundled tiny Korean legal base.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Alpaca JSON array or JSONL files. Default: the bundled constitution instructions.
    #[arg(long, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Held-out files for eval loss. Default with the bundled data: its held-out phrasings.
    #[arg(long, num_args = 1..)]
    pub eval_data: Vec<PathBuf>,
    /// Hold out this fraction of the training records for eval instead.
    #[arg(long)]
    pub eval_split: Option<f64>,
    #[arg(long, default_value = "seed")]
    pub template: Template,
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Warn about and skip malformed records instead of stopping.
    #[arg(long)]
    pub skip_bad_records: bool,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Output folder (adapter, metrics, checkpoints).
    #[arg(long, default_value = "runs/sft")]
    pub out: PathBuf,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Answer this many held-out questions at the end.
    #[arg(long, default_value_t = 3)]
    pub show_answers: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Data parallel over these device indices of --device's kind (e.g. 0,1,2,3 for cuda):
    /// --batch-size per device, gradients summed every step. `cpu` replicas share the CPU.
    #[arg(long)]
    pub devices: Option<crate::device::DeviceIndices>,
    /// Compute dtype of the frozen base's matmuls; LoRA weights, optimizer state, norms,
    /// softmax and the loss stay f32.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: crate::device::DTypeArg,
    #[command(flatten)]
    pub quant: crate::cmd::quant_args::QuantArgs,
}

/// What `run` prepares before a backend is chosen.
struct Plan {
    model_dir: PathBuf,
    data: Vec<PathBuf>,
    eval_files: Vec<PathBuf>,
    lora_cfg: shared::lora::LoraConfig,
    spec: crate::train::TrainSpec,
    records: Vec<AlpacaRecord>,
    eval_records: Vec<AlpacaRecord>,
    resume: Option<(usize, PathBuf)>,
}

/// Tokenize records; returns examples and how many were truncated.
pub fn to_examples(
    recs: &[AlpacaRecord],
    tok: &Tokenizer,
    template: Template,
    max_len: usize,
) -> Result<(Vec<Example>, usize)> {
    let mut out = Vec::with_capacity(recs.len());
    let mut truncated = 0;
    for r in recs {
        let (ex, cut) =
            Example::alpaca(tok, template, &r.instruction, &r.input, &r.output, max_len)?;
        truncated += usize::from(cut);
        out.push(ex);
    }
    Ok((out, truncated))
}

/// PEFT's `print_trainable_parameters` line.
pub fn trainable_line<B: shared::ModelBackend>(model: &GptNeoxForCausalLM<B>) -> String {
    let all = model.num_model_params();
    let trainable: usize = model
        .linears()
        .iter()
        .filter_map(|(_, l)| {
            l.lora.as_ref().map(|l| {
                l.lora_a.val().shape().num_elements() + l.lora_b.val().shape().num_elements()
            })
        })
        .sum();
    format!(
        "trainable params: {} || all params: {} || trainable%: {:.4}",
        group(trainable),
        group(all),
        100.0 * trainable as f64 / all as f64
    )
}

fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn run(args: SftArgs) -> Result<()> {
    let bundled_data = args.data.is_empty();
    let model_dir = args.model.clone().unwrap_or_else(|| bundled(BASE_MODEL));
    let data = if bundled_data {
        vec![bundled(TRAIN_DATA)]
    } else {
        args.data.clone()
    };
    let mut eval_files = args.eval_data.clone();
    if eval_files.is_empty() && bundled_data && args.eval_split.is_none() {
        eval_files.push(bundled(HELDOUT_DATA));
    }
    let lora_cfg = args.lora.config()?;
    // The embedded default (no --model, no --data) is sized to finish in minutes on a CPU.
    let embedded = bundled_data && args.model.is_none();
    let spec = args.optim.spec(
        if embedded { 1 } else { 3 },
        if embedded { 1e-3 } else { 3e-4 },
    );
    let mut records = read_files(&data, args.skip_bad_records)?;
    let mut eval_records = if eval_files.is_empty() {
        Vec::new()
    } else {
        read_files(&eval_files, args.skip_bad_records)?
    };
    if let Some(frac) = args.eval_split {
        if !(0.0..1.0).contains(&frac) {
            bail!("--eval-split must lie in [0, 1)");
        }
        let order = crate::train::batch::epoch_order(records.len(), spec.seed ^ 0xE7A1, 0);
        let n_eval = ((records.len() as f64) * frac).round() as usize;
        let mut keep = vec![true; records.len()];
        for &i in &order[..n_eval] {
            keep[i] = false;
        }
        let mut it = keep.iter();
        let all = std::mem::take(&mut records);
        for r in all {
            if *it.next().unwrap() {
                records.push(r)
            } else {
                eval_records.push(r)
            }
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let resume = if args.resume {
        let found = latest_checkpoint(&args.out);
        if found.is_none() {
            bail!("--resume: no checkpoint in {}", args.out.display());
        }
        found
    } else {
        None
    };

    let plan = Plan {
        model_dir,
        data,
        eval_files,
        lora_cfg,
        spec,
        records,
        eval_records,
        resume,
    };
    with_backend!(args.device.clone(), |B, device| {
        sft_on::<Autodiff<B>>(&args, &plan, device)
    })
}

fn sft_on<AB: TrainBackend>(args: &SftArgs, plan: &Plan, device: AB::Device) -> Result<()>
where
    AB::Device: IndexedDevice,
{
    args.dtype.check::<AB>(&device)?;
    let m = ModelDir::<AB>::load_as(&plan.model_dir, &device, args.quant.format())
        .with_context(|| format!("loading base model {}", plan.model_dir.display()))?;
    let (train_set, cut) = to_examples(&plan.records, &m.tokenizer, args.template, args.max_len)?;
    let (eval_set, eval_cut) = to_examples(
        &plan.eval_records,
        &m.tokenizer,
        args.template,
        args.max_len,
    )?;
    println!(
        "data: {} training records, {} eval records; {} truncated to --max-len {}",
        train_set.len(),
        eval_set.len(),
        cut + eval_cut,
        args.max_len
    );
    let mut model = m.model;
    if args.dtype == DTypeArg::Bf16 {
        model = model.cast_base(FloatDType::BF16);
    }
    model.attach_lora(&plan.lora_cfg, plan.spec.seed, &device);
    println!("{}", trainable_line(&model));
    let io = LoraIo {
        cfg: plan.lora_cfg.clone(),
        base_name: plan.model_dir.display().to_string(),
    };
    std::fs::write(
        args.out.join("run_config.json"),
        serde_json::to_string_pretty(&json!({
            "command": "sft",
            "base_model": plan.model_dir,
            "data": plan.data,
            "eval_data": plan.eval_files,
            "eval_split": args.eval_split,
            "template": args.template,
            "max_len": args.max_len,
            "lora": plan.lora_cfg,
            "train": plan.spec,
            "model_config": m.config,
            "device": format!("{:?}", args.device),
            "devices": args.devices,
            "dtype": args.dtype,
            "quant": args.quant.json(),
        }))?,
    )?;
    let (model, summary) = train(
        model,
        &io,
        &plan.spec,
        &train_set,
        &eval_set,
        m.tokenizer.pad_id(),
        &args.out,
        plan.resume.as_ref().map(|(_, p)| p.as_path()),
        &crate::device::training_devices(&device, args.devices.as_ref())?,
    )?;
    if summary.interrupted {
        return Ok(());
    }
    shared::peft::save_adapter(
        &model,
        &plan.lora_cfg,
        &plan.model_dir.display().to_string(),
        &args.out,
    )?;
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!(
        "adapter written to {} (adapter_config.json, adapter_model.safetensors)",
        args.out.display()
    );
    let inner = model.valid();
    for r in plan.eval_records.iter().take(args.show_answers) {
        let a = answer(
            &inner,
            &m.tokenizer,
            args.template,
            &r.instruction,
            &r.input,
            96,
            &device,
        )?;
        println!("\nQ: {}\nA: {a}\n(reference: {})", r.instruction, r.output);
    }
    Ok(())
}
