//! Random initialisation as HF's `GPTNeoXPreTrainedModel._init_weights`: Linear and Embedding
//! weights ~ N(0, initializer_range), biases 0, LayerNorm weight 1 and bias 0. Drawn on the host
//! from a seeded generator, so every backend starts from the same weights.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig};
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};

use crate::attention::Attention;
use crate::config::GptNeoxConfig;
use crate::layer::Layer;
use crate::linear::Linear;
use crate::mlp::Mlp;
use crate::model::{GptNeoxForCausalLM, GptNeoxModel};
use crate::sampling::Rng;

struct Init<'a, B: Backend> {
    rng: Rng,
    std: f64,
    device: &'a B::Device,
}

impl<B: Backend> Init<'_, B> {
    fn normal(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                // Box–Muller.
                let u1 = self.rng.next_f64().max(f64::MIN_POSITIVE);
                let u2 = self.rng.next_f64();
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * self.std) as f32
            })
            .collect()
    }

    fn linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear<B> {
        let w = self.normal(d_in * d_out);
        Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [d_in, d_out]),
                self.device,
            )),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], self.device))),
            lora: None,
        }
    }

    fn layer_norm(&self, d: usize, eps: f64) -> LayerNorm<B> {
        LayerNormConfig::new(d).with_epsilon(eps).init(self.device)
    }
}

impl<B: Backend> GptNeoxForCausalLM<B> {
    /// Like [`Self::init`] but drawing the weights on the device (fast for large shapes in
    /// benchmarks; not reproducible across backends).
    pub fn init_on_device(
        config: &GptNeoxConfig,
        initializer_range: f64,
        device: &B::Device,
    ) -> Self {
        let normal = |shape: [usize; 2]| {
            Param::from_tensor(Tensor::<B, 2>::random(
                shape,
                Distribution::Normal(0.0, initializer_range),
                device,
            ))
        };
        let (h, f, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let lin = |d_in: usize, d_out: usize, bias: bool| Linear {
            weight: normal([d_in, d_out]),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
            lora: None,
        };
        let ln = || {
            LayerNormConfig::new(h)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        let layers = (0..config.num_hidden_layers)
            .map(|_| Layer {
                input_layernorm: ln(),
                post_attention_layernorm: ln(),
                attention: Attention {
                    query_key_value: lin(h, 3 * h, config.attention_bias),
                    dense: lin(h, h, config.attention_bias),
                    num_heads: config.num_attention_heads,
                    head_dim: config.head_dim,
                },
                mlp: Mlp {
                    dense_h_to_4h: lin(h, f, true),
                    dense_4h_to_h: lin(f, h, true),
                    act: config.hidden_act,
                },
                use_parallel_residual: config.use_parallel_residual,
            })
            .collect();
        Self {
            gpt_neox: GptNeoxModel {
                embed_in: Embedding {
                    weight: normal([v, h]),
                },
                layers,
                final_layer_norm: ln(),
            },
            embed_out: lin(h, v, false),
            rotary_ndims: config.rotary_ndims,
            rotary_base: config.rotary_emb_base,
        }
    }

    /// A freshly initialised model (for pretraining from scratch).
    pub fn init(
        config: &GptNeoxConfig,
        initializer_range: f64,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let mut i = Init::<B> {
            rng: Rng::new(seed),
            std: initializer_range,
            device,
        };
        let (h, f, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let embed = i.normal(v * h);
        let layers = (0..config.num_hidden_layers)
            .map(|_| Layer {
                input_layernorm: i.layer_norm(h, config.layer_norm_eps),
                post_attention_layernorm: i.layer_norm(h, config.layer_norm_eps),
                attention: Attention {
                    query_key_value: i.linear(h, 3 * h, config.attention_bias),
                    dense: i.linear(h, h, config.attention_bias),
                    num_heads: config.num_attention_heads,
                    head_dim: config.head_dim,
                },
                mlp: Mlp {
                    dense_h_to_4h: i.linear(h, f, true),
                    dense_4h_to_h: i.linear(f, h, true),
                    act: config.hidden_act,
                },
                use_parallel_residual: config.use_parallel_residual,
            })
            .collect();
        let final_layer_norm = i.layer_norm(h, config.layer_norm_eps);
        let embed_out = i.linear(h, v, false);
        Self {
            gpt_neox: GptNeoxModel {
                embed_in: Embedding {
                    weight: Param::from_tensor(Tensor::from_data(
                        TensorData::new(embed, [v, h]),
                        device,
                    )),
                },
                layers,
                final_layer_norm,
            },
            embed_out,
            rotary_ndims: config.rotary_ndims,
            rotary_base: config.rotary_emb_base,
        }
    }
}
