//! PEFT LoRA adapters on disk: `adapter_config.json` + `adapter_model.safetensors` with PEFT's
//! key names (`base_model.model.{module}.lora_A.weight` `[r, in]`, `….lora_B.weight` `[out, r]`),
//! so `PeftModel.from_pretrained` loads what we write and we load what PEFT writes.

use crate::ModelBackend;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::{Tensor, TensorData};
use serde_json::{Value, json};

use crate::error::{ConfigError, LoadError};
use crate::linear::Lora;
use crate::lora::{LoraConfig, TargetModules};
use crate::model::GptNeoxForCausalLM;
use crate::save::{NamedTensor, hf_linear, write_safetensors};
use crate::weights::Checkpoint;

const PREFIX: &str = "base_model.model.";

fn field(reason: String, field: &'static str) -> ConfigError {
    ConfigError::Field { field, reason }
}

/// Parse PEFT's `adapter_config.json`.
pub fn parse_adapter_config(text: &str) -> Result<LoraConfig, ConfigError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
        path: String::new(),
        message: e.to_string(),
    })?;
    let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("");
    if peft_type != "LORA" {
        return Err(field(
            format!("only LORA adapters are supported, found {peft_type:?}"),
            "peft_type",
        ));
    }
    if v.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
        return Err(field(
            "fan_in_fan_out adapters are not supported".into(),
            "fan_in_fan_out",
        ));
    }
    if let Some(b) = v.get("bias").and_then(Value::as_str)
        && b != "none"
    {
        return Err(field(
            format!("only bias \"none\" is supported, found {b:?}"),
            "bias",
        ));
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if v.get(key)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(field(
                "per-module ranks/alphas are not supported".into(),
                if key == "rank_pattern" {
                    "rank_pattern"
                } else {
                    "alpha_pattern"
                },
            ));
        }
    }
    let target_modules = match v.get("target_modules") {
        Some(Value::String(s)) => TargetModules::Regex(s.clone()),
        Some(Value::Array(a)) => TargetModules::List(
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| field(format!("{x} is not a module name"), "target_modules"))
                })
                .collect::<Result<_, _>>()?,
        ),
        None | Some(Value::Null) => TargetModules::List(vec!["query_key_value".into()]),
        Some(other) => {
            return Err(field(
                format!("expected a list or a regex, found {other}"),
                "target_modules",
            ));
        }
    };
    let r = v.get("r").and_then(Value::as_u64).unwrap_or(8) as usize;
    if r == 0 {
        return Err(field("must be positive".into(), "r"));
    }
    Ok(LoraConfig {
        r,
        alpha: v.get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0),
        dropout: v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
        target_modules,
        use_rslora: v
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// `adapter_config.json` as PEFT writes it (sorted keys).
pub fn adapter_config_json(cfg: &LoraConfig, base_model: &str) -> Value {
    json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": cfg.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": cfg.target_modules,
        "task_type": "CAUSAL_LM",
        "use_rslora": cfg.use_rslora,
    })
}

/// The adapter tensors of a model under PEFT's names.
pub fn adapter_tensors<B: ModelBackend>(model: &GptNeoxForCausalLM<B>) -> Vec<NamedTensor> {
    let mut out = Vec::new();
    for (name, lin) in model.linears() {
        if let Some(l) = &lin.lora {
            // burn A [in, r] → PEFT [r, in]; burn B [r, out] → PEFT [out, r]: both are hf_linear's transpose.
            out.push(hf_linear(
                format!("{PREFIX}{name}.lora_A.weight"),
                l.lora_a.val(),
            ));
            out.push(hf_linear(
                format!("{PREFIX}{name}.lora_B.weight"),
                l.lora_b.val(),
            ));
        }
    }
    out
}

/// Write `adapter_config.json` and `adapter_model.safetensors` into `dir`.
pub fn save_adapter<B: ModelBackend>(
    model: &GptNeoxForCausalLM<B>,
    cfg: &LoraConfig,
    base_model: &str,
    dir: &Path,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_safetensors(
        &dir.join("adapter_model.safetensors"),
        &adapter_tensors(model),
    )?;
    let text = serde_json::to_string_pretty(&adapter_config_json(cfg, base_model))?;
    std::fs::write(dir.join("adapter_config.json"), text)
}

fn adapter_weights(dir: &Path) -> Result<PathBuf, LoadError> {
    for f in ["adapter_model.safetensors", "adapter_model.bin"] {
        let p = dir.join(f);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(LoadError::NoWeights {
        dir: format!(
            "{} (adapter_model.safetensors or adapter_model.bin)",
            dir.display()
        ),
    })
}

/// Load a PEFT LoRA adapter folder onto `model` (the base is frozen). Errors name the tensor,
/// shapes and file for an adapter made for another base.
pub fn load_adapter<B: ModelBackend>(
    model: &mut GptNeoxForCausalLM<B>,
    dir: &Path,
    device: &B::Device,
) -> Result<LoraConfig, LoadError> {
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| LoadError::Io {
        path: cfg_path.display().to_string(),
        source: e,
    })?;
    let cfg = parse_adapter_config(&text).map_err(|e| {
        LoadError::Config(ConfigError::InFile {
            path: cfg_path.display().to_string(),
            inner: Box::new(e),
        })
    })?;
    let weights = adapter_weights(dir)?;
    let ckpt = Checkpoint::open_files(std::slice::from_ref(&weights))?;
    *model = model.clone().no_grad();
    let mut used = 0;
    for (name, lin) in model.linears_mut() {
        if !cfg.target_modules.matches(&name) {
            continue;
        }
        let (d_in, d_out) = (lin.d_input(), lin.d_output());
        let a = ckpt.tensor(&format!("{PREFIX}{name}.lora_A.weight"), &[cfg.r, d_in])?;
        let b = ckpt.tensor(&format!("{PREFIX}{name}.lora_B.weight"), &[d_out, cfg.r])?;
        lin.lora = Some(Lora {
            lora_a: Param::from_tensor(Tensor::from_data(
                TensorData::new(a.transposed(), [d_in, cfg.r]),
                device,
            )),
            lora_b: Param::from_tensor(Tensor::from_data(
                TensorData::new(b.transposed(), [cfg.r, d_out]),
                device,
            )),
            scaling: cfg.scaling(),
            dropout: Dropout { prob: cfg.dropout },
        });
        used += 2;
    }
    let total = ckpt.names().filter(|n| n.contains(".lora_")).count();
    if used != total {
        let known: Vec<String> = model.linears().into_iter().map(|(n, _)| n).collect();
        let stray = ckpt
            .names()
            .find(|n| {
                n.contains(".lora_")
                    && !known
                        .iter()
                        .any(|k| n.starts_with(&format!("{PREFIX}{k}.lora_")))
            })
            .unwrap_or("?")
            .to_string();
        return Err(LoadError::Corrupt {
            file: weights.display().to_string(),
            reason: format!(
                "{total} LoRA tensors but the model's targeted modules use {used}; `{stray}` matches no module of this base"
            ),
        });
    }
    Ok(cfg)
}
