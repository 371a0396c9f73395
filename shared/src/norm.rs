//! LayerNorm over the last dimension with HF's `weight`/`bias` as `gamma`/`beta` (the field
//! names of `burn::nn::LayerNorm`, so parameter keys do not change), computed by
//! [`ModelBackend::layernorm`]: under autodiff one graph node that keeps only its input.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

use crate::ModelBackend;

#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// HF `weight`.
    pub gamma: Param<Tensor<B, 1>>,
    /// HF `bias`.
    pub beta: Option<Param<Tensor<B, 1>>>,
    pub epsilon: f64,
    /// Keep the input for backward in bf16 (`--dtype bf16`, `precision.rs`).
    pub bf16_stash: bool,
}

impl<B: Backend> LayerNorm<B> {
    /// The identity: weight 1, bias 0.
    pub fn new(d: usize, epsilon: f64, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([d], device)),
            beta: Some(Param::from_tensor(Tensor::zeros([d], device))),
            epsilon,
            bf16_stash: false,
        }
    }
}

impl<B: ModelBackend> LayerNorm<B> {
    /// The output in gamma's dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = self.gamma.val().dtype().into();
        self.forward_as(x, dtype)
    }

    /// The output written in `out` (bf16 for bf16 products to read, as a bf16 model's
    /// LayerNorm writes it; computed in f32 still).
    pub fn forward_as<const D: usize>(&self, x: Tensor<B, D>, out: FloatDType) -> Tensor<B, D> {
        let gamma = self.gamma.val();
        let beta = match &self.beta {
            Some(b) => b.val(),
            None => gamma.zeros_like(),
        };
        B::layernorm(x, gamma, beta, self.epsilon, self.bf16_stash, out)
    }
}
