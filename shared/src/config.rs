//! Model configuration: `HfGptNeoxConfig` is HF's `config.json` as written by transformers (old and
//! v5 key styles), `GptNeoxConfig` is the validated config the model is built from.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::activation::Activation;
use crate::error::ConfigError;

/// `rope_parameters` as transformers 5 writes it.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct HfRopeParameters {
    pub rope_type: Option<String>,
    pub rope_theta: Option<f64>,
    pub partial_rotary_factor: Option<f64>,
}

/// GPT-NeoX `config.json`, field names exactly as HF writes them. Missing keys take HF's
/// `GPTNeoXConfig` defaults when converted into [`GptNeoxConfig`].
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct HfGptNeoxConfig {
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub hidden_act: Option<String>,
    pub rotary_pct: Option<f64>,
    pub rotary_emb_base: Option<f64>,
    pub rope_parameters: Option<HfRopeParameters>,
    pub rope_scaling: Option<serde_json::Value>,
    pub max_position_embeddings: Option<usize>,
    pub layer_norm_eps: Option<f64>,
    pub use_parallel_residual: Option<bool>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub bos_token_id: Option<serde_json::Value>,
    pub eos_token_id: Option<serde_json::Value>,
}

/// The validated model configuration, saved as `model_config.json` beside every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptNeoxConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    /// `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    /// `int(head_dim * rotary_pct)`: rotary is applied to the first `rotary_ndims` of each head.
    pub rotary_ndims: usize,
    pub rotary_emb_base: f64,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub use_parallel_residual: bool,
    pub attention_bias: bool,
    /// EOS id from config.json; only a fallback when the tokenizer has no `<|endoftext|>`.
    pub eos_token_id: Option<u32>,
}

fn first_id(v: &Option<serde_json::Value>) -> Option<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|n| n.as_u64()).map(|x| x as u32),
        _ => None,
    }
}

impl HfGptNeoxConfig {
    /// Parse `config.json` text; a wrong type names the field (`hidden_size`, `rope_parameters.rope_theta`).
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Json {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }
}

impl TryFrom<HfGptNeoxConfig> for GptNeoxConfig {
    type Error = ConfigError;

    fn try_from(hf: HfGptNeoxConfig) -> Result<Self, ConfigError> {
        if let Some(t) = &hf.model_type
            && t != "gpt_neox"
        {
            return Err(ConfigError::Field {
                field: "model_type",
                reason: format!("expected \"gpt_neox\", found {t:?}"),
            });
        }
        let rope = hf.rope_parameters.clone().unwrap_or_default();
        if let Some(kind) = rope.rope_type.as_deref()
            && kind != "default"
        {
            return Err(ConfigError::Field {
                field: "rope_parameters.rope_type",
                reason: format!("only \"default\" rotary embeddings are supported, found {kind:?}"),
            });
        }
        if let Some(s) = &hf.rope_scaling
            && !s.is_null()
        {
            return Err(ConfigError::Field {
                field: "rope_scaling",
                reason: format!("rope scaling is not supported: {s}"),
            });
        }
        let hidden_size = hf.hidden_size.unwrap_or(6144);
        let heads = hf.num_attention_heads.unwrap_or(64);
        if heads == 0 || !hidden_size.is_multiple_of(heads) {
            return Err(ConfigError::Field {
                field: "num_attention_heads",
                reason: format!("hidden_size {hidden_size} is not divisible by {heads} heads"),
            });
        }
        let head_dim = hidden_size / heads;
        let pct = rope.partial_rotary_factor.or(hf.rotary_pct).unwrap_or(0.25);
        if !(0.0..=1.0).contains(&pct) {
            return Err(ConfigError::Field {
                field: "rotary_pct",
                reason: format!("must lie in [0, 1], found {pct}"),
            });
        }
        let rotary_ndims = (head_dim as f64 * pct) as usize;
        if !rotary_ndims.is_multiple_of(2) {
            return Err(ConfigError::Field {
                field: "rotary_pct",
                reason: format!(
                    "gives an odd rotary dimension {rotary_ndims} of head_dim {head_dim}"
                ),
            });
        }
        let act_name = hf.hidden_act.clone().unwrap_or_else(|| "gelu".into());
        let hidden_act = Activation::from_hf(&act_name).ok_or_else(|| ConfigError::Field {
            field: "hidden_act",
            reason: format!("unsupported activation {act_name:?}"),
        })?;
        let positive = |field: &'static str, v: usize| {
            if v == 0 {
                Err(ConfigError::Field {
                    field,
                    reason: "must be positive".into(),
                })
            } else {
                Ok(v)
            }
        };
        Ok(GptNeoxConfig {
            vocab_size: positive("vocab_size", hf.vocab_size.unwrap_or(50432))?,
            hidden_size: positive("hidden_size", hidden_size)?,
            num_hidden_layers: positive("num_hidden_layers", hf.num_hidden_layers.unwrap_or(44))?,
            num_attention_heads: heads,
            intermediate_size: positive(
                "intermediate_size",
                hf.intermediate_size.unwrap_or(24576),
            )?,
            hidden_act,
            head_dim,
            rotary_ndims,
            rotary_emb_base: rope.rope_theta.or(hf.rotary_emb_base).unwrap_or(10000.0),
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(2048),
            layer_norm_eps: hf.layer_norm_eps.unwrap_or(1e-5),
            use_parallel_residual: hf.use_parallel_residual.unwrap_or(true),
            attention_bias: hf.attention_bias.unwrap_or(true),
            eos_token_id: first_id(&hf.eos_token_id),
        })
    }
}

impl GptNeoxConfig {
    /// Parse an HF `config.json` text and validate it.
    pub fn from_hf_json(text: &str) -> Result<Self, ConfigError> {
        HfGptNeoxConfig::from_json(text)?.try_into()
    }

    /// Read and validate an HF `config.json`; errors name the file.
    pub fn from_hf_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_hf_json(&text).map_err(|e| e.in_file(path))
    }

    /// The HF `config.json` this config corresponds to (old key style, read by every transformers).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "architectures": ["GPTNeoXForCausalLM"],
            "model_type": "gpt_neox",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act.hf_name(),
            "rotary_pct": self.rotary_ndims as f64 / self.head_dim as f64,
            "rotary_emb_base": self.rotary_emb_base,
            "max_position_embeddings": self.max_position_embeddings,
            "layer_norm_eps": self.layer_norm_eps,
            "use_parallel_residual": self.use_parallel_residual,
            "attention_bias": self.attention_bias,
            "tie_word_embeddings": false,
            "torch_dtype": "float32",
        });
        if let Some(eos) = self.eos_token_id {
            json["bos_token_id"] = eos.into();
            json["eos_token_id"] = eos.into();
        }
        json
    }

    /// Number of parameters (the formula of the Polyglot-ko model cards).
    pub fn num_params(&self) -> usize {
        let (h, f, v, l) = (
            self.hidden_size,
            self.intermediate_size,
            self.vocab_size,
            self.num_hidden_layers,
        );
        let b = usize::from(self.attention_bias);
        l * (3 * h * h + 3 * h * b + h * h + h * b + 2 * h * f + f + h + 4 * h) + 2 * v * h + 2 * h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_keys_and_defaults() {
        let c = GptNeoxConfig::from_hf_json(
            r#"{"hidden_size": 2048, "num_attention_heads": 16, "num_hidden_layers": 24,
                "intermediate_size": 8192, "vocab_size": 30080, "rotary_pct": 0.5}"#,
        )
        .unwrap();
        assert_eq!((c.head_dim, c.rotary_ndims), (128, 64));
        assert_eq!(c.rotary_emb_base, 10000.0);
        assert!(c.use_parallel_residual);
        assert_eq!(c.hidden_act, Activation::Gelu);
        assert_eq!(c.max_position_embeddings, 2048);
        // polyglot-ko-1.3b parameter count from its model card.
        assert_eq!(c.num_params(), 1_331_810_304);
    }

    #[test]
    fn v5_rope_parameters() {
        let c = GptNeoxConfig::from_hf_json(
            r#"{"hidden_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 28,
                "intermediate_size": 16384, "vocab_size": 30080,
                "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0,
                                    "partial_rotary_factor": 0.25}}"#,
        )
        .unwrap();
        assert_eq!((c.head_dim, c.rotary_ndims), (256, 64));
        assert_eq!(c.rotary_emb_base, 5000.0);
        assert_eq!(c.num_params(), 5_885_059_072);
    }

    #[test]
    fn bad_fields_are_named() {
        let e = GptNeoxConfig::from_hf_json(r#"{"hidden_size": 30, "num_attention_heads": 4}"#)
            .unwrap_err();
        assert!(e.to_string().contains("num_attention_heads"), "{e}");
        let e = GptNeoxConfig::from_hf_json(
            r#"{"hidden_size": 32, "num_attention_heads": 4, "hidden_act": "swoosh"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("hidden_act"), "{e}");
        let e = GptNeoxConfig::from_hf_json(r#"{"hidden_size": "big"}"#).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
    }

    #[test]
    fn hf_json_round_trip() {
        let c = GptNeoxConfig::from_hf_json(
            r#"{"hidden_size": 48, "num_attention_heads": 4, "num_hidden_layers": 2,
                "intermediate_size": 80, "vocab_size": 400, "rotary_pct": 0.5,
                "hidden_act": "gelu_new", "use_parallel_residual": false}"#,
        )
        .unwrap();
        let again = GptNeoxConfig::from_hf_json(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(c, again);
    }
}
