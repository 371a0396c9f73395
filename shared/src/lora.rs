//! Attaching LoRA adapters as PEFT does: which modules (`target_modules`), rank, alpha, rsLoRA,
//! dropout, and PEFT's init (A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0).

use crate::ModelBackend;
use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::linear::{Linear, Lora};
use crate::model::GptNeoxForCausalLM;
use crate::sampling::Rng;

/// The linear modules of a GPT-NeoX layer, by their HF names.
pub const LAYER_LINEARS: [&str; 4] = [
    "attention.query_key_value",
    "attention.dense",
    "mlp.dense_h_to_4h",
    "mlp.dense_4h_to_h",
];

/// PEFT's `target_modules`: a list (exact name or `.`-suffix match) or a regex (full match).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Regex(String),
}

impl TargetModules {
    /// `all-linear` is PEFT's shorthand for every linear layer but the output head.
    pub fn from_cli(names: &[String]) -> Self {
        if names.iter().any(|n| n == "all-linear") {
            return Self::List(
                LAYER_LINEARS
                    .iter()
                    .map(|n| n.rsplit('.').next().unwrap().to_string())
                    .collect(),
            );
        }
        Self::List(names.to_vec())
    }

    /// Whether the module at full name `name` (e.g. `gpt_neox.layers.3.attention.dense`) is targeted.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::List(list) => list
                .iter()
                .any(|t| name == t || name.ends_with(&format!(".{t}"))),
            Self::Regex(re) => {
                regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(name))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: TargetModules,
    pub use_rslora: bool,
}

impl LoraConfig {
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

impl<B: ModelBackend> GptNeoxForCausalLM<B> {
    /// Every linear layer with its HF module name, in layer order.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.gpt_neox.layers.iter_mut().enumerate() {
            let a = &mut l.attention;
            let m = &mut l.mlp;
            let lins = [
                &mut a.query_key_value,
                &mut a.dense,
                &mut m.dense_h_to_4h,
                &mut m.dense_4h_to_h,
            ];
            for (name, lin) in LAYER_LINEARS.iter().zip(lins) {
                out.push((format!("gpt_neox.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    /// Every linear layer with its HF module name (read-only).
    pub fn linears(&self) -> Vec<(String, &Linear<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.gpt_neox.layers.iter().enumerate() {
            let (a, m) = (&l.attention, &l.mlp);
            let lins = [
                &a.query_key_value,
                &a.dense,
                &m.dense_h_to_4h,
                &m.dense_4h_to_h,
            ];
            for (name, lin) in LAYER_LINEARS.iter().zip(lins) {
                out.push((format!("gpt_neox.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    /// Freeze the base and attach fresh adapters to the targeted modules. A is drawn from a
    /// generator seeded with `seed` (host side, so every backend gets the same init); B is zero.
    /// Returns the number of adapted modules.
    pub fn attach_lora(&mut self, cfg: &LoraConfig, seed: u64, device: &B::Device) -> usize {
        *self = self.clone().no_grad();
        let mut rng = Rng::new(seed);
        let mut n = 0;
        for (name, lin) in self.linears_mut() {
            if !cfg.target_modules.matches(&name) {
                continue;
            }
            let (d_in, d_out) = (lin.d_input(), lin.d_output());
            let bound = 1.0 / (d_in as f64).sqrt();
            let a: Vec<f32> = (0..d_in * cfg.r)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                .collect();
            lin.lora = Some(Lora {
                lora_a: Param::from_tensor(Tensor::from_data(
                    TensorData::new(a, [d_in, cfg.r]),
                    device,
                )),
                lora_b: Param::from_tensor(Tensor::zeros([cfg.r, d_out], device)),
                scaling: cfg.scaling(),
                dropout: Dropout { prob: cfg.dropout },
            });
            n += 1;
        }
        n
    }

    /// Fold every adapter into its base weight.
    pub fn merge_lora(self) -> Self {
        let mut m = self;
        for (_, lin) in m.linears_mut() {
            *lin = lin.clone().merge();
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_target_matching() {
        let list = TargetModules::List(vec!["query_key_value".into()]);
        assert!(list.matches("gpt_neox.layers.0.attention.query_key_value"));
        assert!(!list.matches("gpt_neox.layers.0.attention.dense"));
        let dense = TargetModules::List(vec!["dense".into()]);
        assert!(dense.matches("gpt_neox.layers.1.attention.dense"));
        assert!(!dense.matches("gpt_neox.layers.1.mlp.dense_h_to_4h"));
        let re = TargetModules::Regex(r".*layers\.1\..*(query_key_value|dense_4h_to_h)".into());
        assert!(re.matches("gpt_neox.layers.1.mlp.dense_4h_to_h"));
        assert!(!re.matches("gpt_neox.layers.0.mlp.dense_4h_to_h"));
        let all = TargetModules::from_cli(&["all-linear".into()]);
        for l in LAYER_LINEARS {
            assert!(all.matches(&format!("gpt_neox.layers.0.{l}")));
        }
        assert!(!all.matches("embed_out"));
    }

    #[test]
    fn scaling() {
        let mut c = LoraConfig {
            r: 16,
            alpha: 32.0,
            dropout: 0.0,
            target_modules: TargetModules::List(vec![]),
            use_rslora: false,
        };
        assert_eq!(c.scaling(), 2.0);
        c.use_rslora = true;
        assert_eq!(c.scaling(), 8.0);
    }
}
