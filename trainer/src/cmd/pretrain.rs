//! `trainer pretrain`: causal-LM training on raw text cut into `--max-len` blocks (HF's
//! `run_clm` `group_texts`), fully or with LoRA: domain-adaptive pretraining of Polyglot-ko on
//! legal text, and how the bundled tiny base is made from scratch.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::module::Module;
use clap::Args;
use serde_json::json;
use shared::example::Example;
use shared::model_dir::ModelDir;
use shared::{GptNeoxConfig, GptNeoxForCausalLM, Tokenizer};

use crate::cmd::lora_args::{LoraArgs, OptimArgs};
use crate::cmd::sft::trainable_line;
use crate::device::DeviceArg;
use crate::train::io::{FullIo, LoraIo};
use crate::train::{WeightIo, latest_checkpoint, train};
use crate::with_backend;

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Text files, or folders whose .txt files are read (sorted by name).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Continue from this HF model folder ...
    #[arg(long, conflicts_with = "config")]
    pub base: Option<PathBuf>,
    /// ... or start from scratch with this HF config.json (needs --tokenizer).
    #[arg(long, requires = "tokenizer")]
    pub config: Option<PathBuf>,
    /// tokenizer.json for --config.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Train every weight instead of LoRA adapters.
    #[arg(long, conflicts_with = "quant")]
    pub full: bool,
    #[command(flatten)]
    pub quant: crate::cmd::quant_args::QuantArgs,
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    /// Hold out this fraction of the blocks for eval loss.
    #[arg(long, default_value_t = 0.05)]
    pub eval_split: f64,
    #[arg(long, default_value_t = 0.02)]
    pub initializer_range: f64,
    /// Write the weights in float16 (halves the size; f32 is HF's default).
    #[arg(long)]
    pub save_f16: bool,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Data parallel over these device indices of --device's kind (e.g. 0,1,2,3 for cuda):
    /// --batch-size per device, gradients summed every step. `cpu` replicas share the CPU.
    #[arg(long)]
    pub devices: Option<crate::device::DeviceIndices>,
}

/// Every text file named, folders expanded to their `.txt` files sorted by name.
pub fn text_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|e| e == "txt"))
                .collect();
            v.sort();
            out.extend(v);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    if out.is_empty() {
        bail!(
            "no text files in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// Documents joined with EOS and cut into full blocks of `max_len` (the remainder is dropped).
pub fn blocks(files: &[PathBuf], tok: &Tokenizer, max_len: usize) -> Result<Vec<Example>> {
    let mut ids = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        ids.extend(tok.encode(&text.replace("\r\n", "\n"))?);
        ids.push(tok.eos_id());
    }
    Ok(ids
        .chunks_exact(max_len.max(2))
        .map(|c| Example::lm(c.to_vec()))
        .collect())
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let files = text_files(&args.data)?;
    let spec = args.optim.spec(3, 3e-4);
    let resume = if args.resume {
        Some(
            latest_checkpoint(&args.out)
                .with_context(|| format!("--resume: no checkpoint in {}", args.out.display()))?,
        )
    } else {
        None
    };
    std::fs::create_dir_all(&args.out)?;
    with_backend!(args.device.clone(), |B, device| {
        type AB = Autodiff<B>;
        let (config, tokenizer, tok_path, mut model) = match (&args.base, &args.config) {
            (Some(base), _) => {
                let m = ModelDir::<AB>::load_as(base, &device, args.quant.format())
                    .with_context(|| format!("loading {}", base.display()))?;
                (m.config, m.tokenizer, base.join("tokenizer.json"), m.model)
            }
            (None, Some(cfg)) => {
                let config = GptNeoxConfig::from_hf_file(cfg)?;
                let tok_path = args.tokenizer.clone().expect("clap requires --tokenizer");
                let tokenizer = Tokenizer::from_file(&tok_path, config.eos_token_id)?;
                if tokenizer.vocab_size() > config.vocab_size {
                    bail!(
                        "{}: {} tokens do not fit vocab_size {} of {}",
                        tok_path.display(),
                        tokenizer.vocab_size(),
                        config.vocab_size,
                        cfg.display()
                    );
                }
                let model = GptNeoxForCausalLM::<AB>::init(
                    &config,
                    args.initializer_range,
                    spec.seed,
                    &device,
                );
                let model = crate::cmd::quant_args::quantize_loaded(model, args.quant.format());
                (config, tokenizer, tok_path, model)
            }
            (None, None) => bail!("give --base DIR or --config FILE --tokenizer FILE"),
        };
        let mut all = blocks(&files, &tokenizer, args.max_len)?;
        if all.is_empty() {
            bail!(
                "the text is shorter than one block of --max-len {}",
                args.max_len
            );
        }
        let order = crate::train::batch::epoch_order(all.len(), spec.seed ^ 0xB10C, 0);
        let n_eval = ((all.len() as f64) * args.eval_split).round() as usize;
        let mut eval_set = Vec::new();
        let mut pick: Vec<usize> = order[..n_eval].to_vec();
        pick.sort_unstable_by(|a, b| b.cmp(a));
        for i in pick {
            eval_set.push(all.swap_remove(i));
        }
        println!(
            "data: {} files, {} training blocks and {} eval blocks of {} tokens",
            files.len(),
            all.len(),
            eval_set.len(),
            args.max_len
        );
        let lora_cfg = args.lora.config()?;
        let base_name = args
            .base
            .as_ref()
            .map_or("scratch".to_string(), |b| b.display().to_string());
        let full_io = FullIo {
            config: config.clone(),
            tokenizer: tok_path.clone(),
            f16: args.save_f16,
        };
        let lora_io = LoraIo {
            cfg: lora_cfg.clone(),
            base_name,
        };
        let io: &dyn WeightIo<AB> = if args.full {
            println!("full training: {} parameters", model.num_params());
            &full_io
        } else {
            model.attach_lora(&lora_cfg, spec.seed, &device);
            println!("{}", trainable_line(&model));
            &lora_io
        };
        std::fs::write(
            args.out.join("run_config.json"),
            serde_json::to_string_pretty(&json!({
                "command": "pretrain", "data": files, "base": args.base, "config": args.config,
                "full": args.full, "max_len": args.max_len, "lora": (!args.full).then_some(&lora_cfg),
                "train": spec, "model_config": config, "quant": args.quant.json(),
            }))?,
        )?;
        let (model, summary) = train(
            model,
            io,
            &spec,
            &all,
            &eval_set,
            tokenizer.pad_id(),
            &args.out,
            resume.as_ref().map(|(_, p)| p.as_path()),
            &crate::device::training_devices(&device, args.devices.as_ref())?,
        )?;
        if !summary.interrupted {
            io.save(&model, &args.out)?;
            std::fs::write(
                args.out.join("summary.json"),
                serde_json::to_string_pretty(&summary)?,
            )?;
            println!("written to {}", args.out.display());
        }
        Ok(())
    })
}
