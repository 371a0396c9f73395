//! `trainer export-web`: merge a model (and adapter) and write a web package for the browser
//! app: weight shards of at most `--max-shard-mb` (q4/q8 blockwise with f32 scales, or f32),
//! `tokenizer.json` and `manifest.json` with every file's size and sha256.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use safetensors::{Dtype, tensor::TensorView};
use shared::manifest::{
    FORMAT, FileEntry, FileRole, GenerationDefaults, MANIFEST_FILE, Manifest, Quantization,
    WebGpuLimits, sha256_hex, valid_model_id,
};
use shared::prompt::Template;
use shared::quant::{self, QuantScheme};
use shared::save::{NamedTensor, hf_tensors};

use crate::device::DeviceArg;
use crate::with_backend;

#[derive(Debug, Args)]
pub struct ExportWebArgs {
    /// HF model folder. Default: the bundled demo model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A PEFT LoRA adapter to merge in first.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Package folder, e.g. public/models/law-tiny-demo (its name is the model id).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "q4")]
    pub quant: QuantScheme,
    /// Values per scale for q4/q8.
    #[arg(long, default_value_t = 32)]
    pub block_size: usize,
    /// Display name (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Prompt template the app wraps questions in.
    #[arg(long, default_value = "seed")]
    pub template: Template,
    /// Default answer length in the app.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 32)]
    pub max_shard_mb: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

/// A tensor as stored in the package.
struct Stored {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn le<T: Copy>(v: &[T], f: impl Fn(T) -> [u8; 4]) -> Vec<u8> {
    v.iter().flat_map(|x| f(*x)).collect()
}

/// Quantize the 2-D weights that fit the block size; keep the rest (norms, biases) in f32.
fn store(t: NamedTensor, scheme: QuantScheme, block: usize) -> Vec<Stored> {
    let quantize = t.shape.len() == 2 && quant::fits(t.shape[1], scheme, block);
    if !quantize {
        return vec![Stored {
            bytes: le(&t.data, f32::to_le_bytes),
            name: t.name,
            dtype: Dtype::F32,
            shape: t.shape,
        }];
    }
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let q = quant::quantize(&t.data, cols, scheme, block);
    vec![
        Stored {
            name: format!("{}.qweight", t.name),
            dtype: Dtype::U32,
            shape: vec![rows, cols * scheme.bits() / 32],
            bytes: le(&q.words, u32::to_le_bytes),
        },
        Stored {
            name: format!("{}.scales", t.name),
            dtype: Dtype::F32,
            shape: vec![rows, cols / block],
            bytes: le(&q.scales, f32::to_le_bytes),
        },
    ]
}

/// One shard's safetensors bytes.
fn shard_bytes(name: &str, tensors: &[Stored], meta: &HashMap<String, String>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|t| TensorView::new(t.dtype, t.shape.clone(), &t.bytes).map(|v| (t.name.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
    safetensors::serialize(views, Some(meta.clone())).map_err(|e| anyhow::anyhow!("{name}: {e:?}"))
}

/// Write `bytes` as `dir/name` and describe them for the manifest (hashed as written, not read
/// back).
fn write_entry(dir: &Path, name: &str, role: FileRole, bytes: &[u8]) -> Result<FileEntry> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(FileEntry {
        name: name.into(),
        role,
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    })
}

pub fn run(args: ExportWebArgs) -> Result<()> {
    let id = args
        .out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if !valid_model_id(&id) {
        bail!("--out folder name `{id}` is the model id and must be 1-64 of [a-z0-9._-]");
    }
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(|| crate::paths::bundled(crate::paths::DEMO_MODEL));
    let (tensors, config) = with_backend!(args.device.clone(), |B, device| {
        let m = crate::cmd::load_model::<B>(&model_dir, args.adapter.as_deref(), &device)?;
        Ok::<_, anyhow::Error>((hf_tensors(&m.model.merge_lora()), m.config))
    })?;
    let largest_f32 = tensors.iter().map(|t| t.data.len() * 4).max().unwrap_or(0) as u64;
    let stored: Vec<Stored> = tensors
        .into_iter()
        .flat_map(|t| store(t, args.quant, args.block_size))
        .collect();

    let limit = args.max_shard_mb * 1_000_000;
    let mut shards: Vec<Vec<Stored>> = vec![Vec::new()];
    let mut size = 0;
    for t in stored {
        if t.bytes.len() > limit {
            bail!(
                "tensor `{}` alone takes {} bytes, more than --max-shard-mb {}",
                t.name,
                t.bytes.len(),
                args.max_shard_mb
            );
        }
        if size > 0 && size + t.bytes.len() > limit {
            shards.push(Vec::new());
            size = 0;
        }
        size += t.bytes.len();
        shards.last_mut().unwrap().push(t);
    }

    // Write everything under a temporary name; replace the old package only when complete.
    let tmp = args.out.with_file_name(format!(".{id}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    // One metadata key, so the header (a hash map) is written the same way every time; the
    // block size follows from each tensor's scales.
    let meta = HashMap::from([("quant".to_string(), args.quant.name().to_string())]);
    let mut files = Vec::new();
    let n = shards.len();
    for (k, shard) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        let bytes = shard_bytes(&name, shard, &meta)?;
        files.push(write_entry(&tmp, &name, FileRole::Weights, &bytes)?);
    }
    let tok = model_dir.join("tokenizer.json");
    let tok_bytes = std::fs::read(&tok).with_context(|| format!("reading {}", tok.display()))?;
    files.push(write_entry(
        &tmp,
        "tokenizer.json",
        FileRole::Tokenizer,
        &tok_bytes,
    )?);
    let manifest = Manifest {
        format: FORMAT.into(),
        name: args.name.clone().unwrap_or_else(|| id.clone()),
        id: id.clone(),
        description: args.description.clone(),
        config: config.to_hf_json(),
        generation: GenerationDefaults {
            template: args.template.to_string(),
            max_new_tokens: args.max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        },
        quantization: Quantization {
            scheme: args.quant,
            block_size: args.block_size,
        },
        total_bytes: files.iter().map(|f| f.size).sum(),
        files,
        webgpu: WebGpuLimits {
            max_buffer_size: largest_f32,
            max_storage_buffer_binding_size: largest_f32,
        },
    };
    let json = serde_json::to_string_pretty(&manifest)?;
    Manifest::parse(json.as_bytes(), MANIFEST_FILE).context("the written manifest")?;
    std::fs::write(tmp.join(MANIFEST_FILE), json)?;
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("replacing {}", args.out.display()))?;
    }
    std::fs::rename(&tmp, &args.out)?;
    println!(
        "web package `{id}` written to {}: {} weight shard(s), {} bytes in all ({})",
        args.out.display(),
        n,
        manifest.total_bytes,
        args.quant.name()
    );
    Ok(())
}
