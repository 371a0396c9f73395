//! `--quant`: how the frozen base's linear weights are held (QLoRA's NF4), for the commands that
//! load a base model.

use clap::{Args, ValueEnum};
use serde::Serialize;
use shared::GptNeoxForCausalLM;
use shared::ModelBackend;
use shared::base_weight::{BaseFormat, BaseWeight, Nf4Weight};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantArg {
    None,
    Nf4,
}

#[derive(Debug, Clone, Args)]
pub struct QuantArgs {
    /// Hold the base's linear weights (all but embed_out) quantized. nf4: QLoRA's 4-bit
    /// NormalFloat in blocks of 64, as bitsandbytes' `load_in_4bit` with
    /// `bnb_4bit_quant_type="nf4"`, dequantized for each matmul (in --dtype).
    #[arg(long, value_enum, default_value = "none")]
    pub quant: QuantArg,
    /// With --quant nf4: keep the block scales in f32 instead of quantizing them to 8 bits
    /// (bitsandbytes' `bnb_4bit_use_double_quant=False`; double quantization is on by default,
    /// as in the QLoRA recipe).
    #[arg(long)]
    pub no_double_quant: bool,
}

impl QuantArgs {
    pub fn format(&self) -> BaseFormat {
        match self.quant {
            QuantArg::None => BaseFormat::Dense,
            QuantArg::Nf4 => BaseFormat::Nf4 {
                double: !self.no_double_quant,
            },
        }
    }

    /// For `run_config.json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "quant": self.quant,
            "double_quant": self.quant == QuantArg::Nf4 && !self.no_double_quant,
        })
    }
}

/// A random model (N(0, 0.02) on the device, as `init_on_device`) with its layers' linear
/// weights quantized as `base`, drawn one layer at a time so that the dense model never sits
/// on the device whole: what `bench-train --quant` measures.
pub fn init_quantized<B: ModelBackend>(
    config: &shared::GptNeoxConfig,
    base: BaseFormat,
    device: &B::Device,
) -> GptNeoxForCausalLM<B> {
    let one = shared::GptNeoxConfig {
        num_hidden_layers: 1,
        ..config.clone()
    };
    let mut model = quantize_loaded(GptNeoxForCausalLM::init_on_device(&one, 0.02, device), base);
    // The other layers come from 1-token-vocabulary models: only their layer is kept, so their
    // embeddings need not be drawn at full size.
    let layer_only = shared::GptNeoxConfig {
        vocab_size: 1,
        ..one
    };
    for _ in 1..config.num_hidden_layers {
        let next = GptNeoxForCausalLM::init_on_device(&layer_only, 0.02, device);
        model
            .gpt_neox
            .layers
            .extend(quantize_loaded(next, base).gpt_neox.layers);
    }
    model
}

/// Quantize the layers' linear weights of a model already on the device (read back to the host,
/// quantized there, sent again); `embed_out` stays dense. `ModelDir::load_as` quantizes while
/// reading a checkpoint instead.
pub fn quantize_loaded<B: ModelBackend>(
    mut model: GptNeoxForCausalLM<B>,
    base: BaseFormat,
) -> GptNeoxForCausalLM<B> {
    let BaseFormat::Nf4 { double } = base else {
        return model;
    };
    for (_, lin) in model.linears_mut() {
        if let BaseWeight::Dense(w) = &lin.weight {
            let [d_in, d_out] = w.dims();
            let device = w.device();
            // HF layout [out, in]
            let hf: Vec<f32> = w
                .val()
                .transpose()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 weights");
            lin.weight = BaseWeight::Nf4(Nf4Weight::quantize(&hf, d_in, d_out, double, &device));
        }
    }
    model
}
