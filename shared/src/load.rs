//! Build a [`GptNeoxForCausalLM`] from a [`Checkpoint`] with HF tensor names.
//! HF Linear weights are `[out, in]`; burn's are `[in, out]`: transposed here, on the host.

use crate::ModelBackend;
use burn::module::Param;
use burn::nn::Embedding;

use crate::norm::LayerNorm;

use crate::linear::Linear;
use burn::tensor::{Tensor, TensorData};

use crate::attention::Attention;
use crate::base_weight::{BaseFormat, BaseWeight, Nf4Weight};
use crate::config::GptNeoxConfig;
use crate::error::LoadError;
use crate::layer::Layer;
use crate::mlp::Mlp;
use crate::model::{GptNeoxForCausalLM, GptNeoxModel};
use crate::weights::Checkpoint;

struct Loader<'a, B: ModelBackend> {
    ckpt: &'a Checkpoint,
    device: &'a B::Device,
    /// How the layers' linear weights are held (`embed_out` stays dense, as in transformers).
    base: BaseFormat,
}

impl<B: ModelBackend> Loader<'_, B> {
    fn param<const D: usize>(&self, data: Vec<f32>, shape: [usize; D]) -> Param<Tensor<B, D>> {
        Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), self.device))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Param<Tensor<B, 1>>, LoadError> {
        let t = self.ckpt.tensor(name, &[len])?;
        Ok(self.param(t.data, [len]))
    }

    fn linear(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Linear<B>, LoadError> {
        self.linear_as(prefix, d_in, d_out, bias, self.base)
    }

    fn linear_as(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        base: BaseFormat,
    ) -> Result<Linear<B>, LoadError> {
        // A weight transformers + bitsandbytes saved in 4-bit stays NF4 whatever `base` asks.
        let weight = if crate::bnb4::is_4bit(self.ckpt, prefix) {
            let q = crate::bnb4::read(self.ckpt, prefix, d_out, d_in)?;
            BaseWeight::Nf4(Nf4Weight::from_host(&q, d_in, d_out, self.device))
        } else {
            let w = self
                .ckpt
                .tensor(&format!("{prefix}.weight"), &[d_out, d_in])?;
            match base {
                BaseFormat::Dense => BaseWeight::Dense(self.param(w.transposed(), [d_in, d_out])),
                BaseFormat::Nf4 { double } => BaseWeight::Nf4(Nf4Weight::quantize(
                    &w.data,
                    d_in,
                    d_out,
                    double,
                    self.device,
                )),
            }
        };
        let bias = bias
            .then(|| self.vector(&format!("{prefix}.bias"), d_out))
            .transpose()?;
        Ok(Linear {
            weight,
            bias,
            lora: None,
        })
    }

    fn layer_norm(&self, prefix: &str, d: usize, eps: f64) -> Result<LayerNorm<B>, LoadError> {
        Ok(LayerNorm {
            gamma: self.vector(&format!("{prefix}.weight"), d)?,
            beta: Some(self.vector(&format!("{prefix}.bias"), d)?),
            epsilon: eps,
            bf16_stash: false,
        })
    }

    fn layer(&self, c: &GptNeoxConfig, i: usize) -> Result<Layer<B>, LoadError> {
        let p = format!("gpt_neox.layers.{i}");
        let (h, f) = (c.hidden_size, c.intermediate_size);
        Ok(Layer {
            input_layernorm: self.layer_norm(
                &format!("{p}.input_layernorm"),
                h,
                c.layer_norm_eps,
            )?,
            post_attention_layernorm: self.layer_norm(
                &format!("{p}.post_attention_layernorm"),
                h,
                c.layer_norm_eps,
            )?,
            attention: Attention {
                query_key_value: self.linear(
                    &format!("{p}.attention.query_key_value"),
                    h,
                    3 * h,
                    c.attention_bias,
                )?,
                dense: self.linear(&format!("{p}.attention.dense"), h, h, c.attention_bias)?,
                num_heads: c.num_attention_heads,
                head_dim: c.head_dim,
                bf16: false,
            },
            mlp: Mlp {
                dense_h_to_4h: self.linear(&format!("{p}.mlp.dense_h_to_4h"), h, f, true)?,
                dense_4h_to_h: self.linear(&format!("{p}.mlp.dense_4h_to_h"), f, h, true)?,
                act: c.hidden_act,
                bf16: false,
            },
            use_parallel_residual: c.use_parallel_residual,
        })
    }
}

impl<B: ModelBackend> GptNeoxForCausalLM<B> {
    /// Load every weight of `config`'s shape from `ckpt` onto `device`. Extra tensors in the
    /// checkpoint (old buffers such as `attention.bias`, `masked_bias`, `rotary_emb.inv_freq`)
    /// are ignored.
    pub fn load(
        config: &GptNeoxConfig,
        ckpt: &Checkpoint,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        Self::load_as(config, ckpt, device, BaseFormat::Dense)
    }

    /// [`Self::load`] with the layers' linear weights held as `base` (NF4 for QLoRA: each
    /// weight is quantized on the host as it is read, so the dense model never sits on the
    /// device). `embed_out` stays dense.
    pub fn load_as(
        config: &GptNeoxConfig,
        ckpt: &Checkpoint,
        device: &B::Device,
        base: BaseFormat,
    ) -> Result<Self, LoadError> {
        let l = Loader::<B> { ckpt, device, base };
        let (v, h) = (config.vocab_size, config.hidden_size);
        let embed = ckpt.tensor("gpt_neox.embed_in.weight", &[v, h])?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| l.layer(config, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            gpt_neox: GptNeoxModel {
                embed_in: Embedding {
                    weight: l.param(embed.data, [v, h]),
                },
                layers,
                final_layer_norm: l.layer_norm(
                    "gpt_neox.final_layer_norm",
                    h,
                    config.layer_norm_eps,
                )?,
            },
            embed_out: l.linear_as("embed_out", h, v, false, BaseFormat::Dense)?,
            rotary_ndims: config.rotary_ndims,
            rotary_base: config.rotary_emb_base,
        })
    }
}
