//! Random initialisation as HF's `GPTNeoXPreTrainedModel._init_weights`: Linear and Embedding
//! weights ~ N(0, initializer_range), biases 0, LayerNorm weight 1 and bias 0. [`init`] draws on
//! the host from a seeded generator, so every backend starts from the same weights;
//! [`init_on_device`] draws on the device (fast for large benchmark shapes, not reproducible).
//!
//! [`init`]: GptNeoxForCausalLM::init
//! [`init_on_device`]: GptNeoxForCausalLM::init_on_device

use crate::ModelBackend;
use burn::module::Param;
use burn::nn::Embedding;

use crate::norm::LayerNorm;
use burn::tensor::{Distribution, Tensor, TensorData};

use crate::attention::Attention;
use crate::base_weight::BaseWeight;
use crate::config::GptNeoxConfig;
use crate::layer::Layer;
use crate::linear::Linear;
use crate::mlp::Mlp;
use crate::model::{GptNeoxForCausalLM, GptNeoxModel};
use crate::sampling::Rng;

impl<B: ModelBackend> GptNeoxForCausalLM<B> {
    /// The model with every weight matrix from `draw(shape)`, called in a fixed order (embedding,
    /// then per layer qkv, dense, h→4h, 4h→h, then the head); biases 0, LayerNorms identity.
    fn build(
        config: &GptNeoxConfig,
        device: &B::Device,
        mut draw: impl FnMut([usize; 2]) -> Tensor<B, 2>,
    ) -> Self {
        let (h, f, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let mut lin = |d_in: usize, d_out: usize, bias: bool| Linear {
            weight: BaseWeight::Dense(Param::from_tensor(draw([d_in, d_out]))),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
            lora: None,
        };
        let ln = || LayerNorm::new(h, config.layer_norm_eps, device);
        let BaseWeight::Dense(embed) = lin(v, h, false).weight else {
            unreachable!("lin makes dense weights")
        };
        let embed_in = Embedding { weight: embed };
        let layers = (0..config.num_hidden_layers)
            .map(|_| Layer {
                input_layernorm: ln(),
                post_attention_layernorm: ln(),
                attention: Attention {
                    query_key_value: lin(h, 3 * h, config.attention_bias),
                    dense: lin(h, h, config.attention_bias),
                    num_heads: config.num_attention_heads,
                    head_dim: config.head_dim,
                    bf16: false,
                },
                mlp: Mlp {
                    dense_h_to_4h: lin(h, f, true),
                    dense_4h_to_h: lin(f, h, true),
                    act: config.hidden_act,
                    bf16: false,
                },
                use_parallel_residual: config.use_parallel_residual,
            })
            .collect();
        Self {
            gpt_neox: GptNeoxModel {
                embed_in,
                layers,
                final_layer_norm: ln(),
            },
            embed_out: lin(h, v, false),
            rotary_ndims: config.rotary_ndims,
            rotary_base: config.rotary_emb_base,
        }
    }

    /// A freshly initialised model (for pretraining from scratch), reproducible from `seed`.
    pub fn init(
        config: &GptNeoxConfig,
        initializer_range: f64,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let mut rng = Rng::new(seed);
        Self::build(config, device, |shape| {
            let data: Vec<f32> = (0..shape[0] * shape[1])
                .map(|_| {
                    // Box–Muller.
                    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
                    let u2 = rng.next_f64();
                    ((-2.0 * u1.ln()).sqrt()
                        * (std::f64::consts::TAU * u2).cos()
                        * initializer_range) as f32
                })
                .collect();
            Tensor::from_data(TensorData::new(data, shape), device)
        })
    }

    /// Like [`Self::init`] but drawing the weights on the device.
    pub fn init_on_device(
        config: &GptNeoxConfig,
        initializer_range: f64,
        device: &B::Device,
    ) -> Self {
        Self::build(config, device, |shape| {
            Tensor::random(shape, Distribution::Normal(0.0, initializer_range), device)
        })
    }
}
