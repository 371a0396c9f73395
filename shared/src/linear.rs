//! A linear layer with HF's tensor names whose frozen base weight may carry a LoRA adapter
//! (PEFT's `LoraLayer`): `y = x·W + b + dropout(x)·A·B·scaling`.
//!
//! The base weight is the seam for quantized bases: an NF4 weight (QLoRA, `base_weight.rs`)
//! changes how `base_product` gets `W`, nothing else.

use crate::ModelBackend;
use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::{DType, Distribution, FloatDType, Tensor, backend::Backend};

use crate::base_weight::BaseWeight;

/// A LoRA adapter in burn layout: `lora_a` is `[in, r]` (PEFT's `lora_A.weight` is `[r, in]`),
/// `lora_b` is `[r, out]` (PEFT's `lora_B.weight` is `[out, r]`).
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    pub lora_a: Param<Tensor<B, 2>>,
    pub lora_b: Param<Tensor<B, 2>>,
    /// `alpha / r`, or `alpha / √r` with rsLoRA.
    pub scaling: f64,
    pub dropout: Dropout,
}

#[derive(Module, Debug)]
pub struct Linear<B: ModelBackend> {
    /// `[in, out]`; HF stores `[out, in]`. Dense or NF4.
    pub weight: BaseWeight<B>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub lora: Option<Lora<B>>,
}

impl<B: ModelBackend> Linear<B> {
    pub fn d_input(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn d_output(&self) -> usize {
        self.weight.dims()[1]
    }

    /// `x·W` with the frozen base. A base stored in another dtype (bf16, see `precision.rs`)
    /// multiplies in that dtype; the product comes in `out`. An NF4 base is dequantized first.
    fn base_product<const D: usize>(&self, x: Tensor<B, D>, out: FloatDType) -> Tensor<B, D> {
        match &self.weight {
            BaseWeight::Nf4(q) => B::nf4_matmul(x, q).cast(out),
            BaseWeight::Dense(w) => B::base_matmul_as(x, w.val(), out),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype().into();
        self.forward_with(x, None, dtype, true).0
    }

    /// [`forward`](Self::forward) with the result in `dtype`: the base multiplies `x` cast to
    /// `dtype` (a bf16 projection from an f32 input casts it once, as its bf16 product would
    /// anyway), while the adapter takes `x` as it is, in its own dtype.
    pub fn forward_as<const D: usize>(&self, x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
        self.forward_with(x, Some(dtype), dtype, true).0
    }

    /// [`forward`](Self::forward) with the result in `out`, the base multiplying `x` as it is
    /// (a bf16 input's product written in f32 for the residual stream, with no cast after).
    pub fn forward_to<const D: usize>(&self, x: Tensor<B, D>, out: FloatDType) -> Tensor<B, D> {
        self.forward_with(x, None, out, true).0
    }

    /// [`forward_as`](Self::forward_as) without the bias: the product (with the adapter's
    /// term) and the bias, for the caller to add where it reads the product anyway (GELU, a
    /// residual sum: one pass over the activations fewer).
    pub fn forward_parts_as<const D: usize>(
        &self,
        x: Tensor<B, D>,
        dtype: FloatDType,
    ) -> (Tensor<B, D>, Option<Tensor<B, 1>>) {
        self.forward_with(x, Some(dtype), dtype, false)
    }

    /// [`forward_to`](Self::forward_to) without the bias, as
    /// [`forward_parts_as`](Self::forward_parts_as).
    pub fn forward_parts_to<const D: usize>(
        &self,
        x: Tensor<B, D>,
        out: FloatDType,
    ) -> (Tensor<B, D>, Option<Tensor<B, 1>>) {
        self.forward_with(x, None, out, false)
    }

    /// The base multiplies `x` cast to `base_in` (or as it is), the result in `out`; with
    /// `with_bias` the bias is added, else returned.
    fn forward_with<const D: usize>(
        &self,
        x: Tensor<B, D>,
        base_in: Option<FloatDType>,
        out: FloatDType,
        with_bias: bool,
    ) -> (Tensor<B, D>, Option<Tensor<B, 1>>) {
        let base_x = |x: Tensor<B, D>| match base_in {
            Some(dtype) => x.cast(dtype),
            None => x,
        };
        let bias = self.bias.as_ref().map(|b| b.val());
        let (bias, rest) = if with_bias {
            (bias, None)
        } else {
            (None, bias)
        };
        let y = match &self.lora {
            None => add_bias(self.base_product(base_x(x), out), bias),
            Some(l) => {
                let a = l.lora_a.val();
                // as one `[positions, in]` matrix: A's and B's gradients are then one product
                // each (no per-sequence products summed afterwards). A bf16 input (`--dtype
                // bf16`) is multiplied as it is, by A rounded to bf16, with the product in f32
                // (as PEFT's f32 adapter over a bf16 input, whose cast to f32 is exact, up to
                // A's rounding): no f32 copy of it to write, keep and differentiate.
                let dims = x.dims();
                let bf16 = x.dtype() == DType::BF16;
                let xl = if bf16 {
                    x.clone()
                } else {
                    x.clone().cast(a.dtype())
                };
                let xl: Tensor<B, 2> = xl.reshape([-1, dims[D - 1] as i32]);
                // dropout as burn's `Dropout` draws it (the same mask), its `1/keep` applied with
                // the scaling to B (`[r, out]`) rather than to `[positions, in]` and
                // `[positions, out]` tensors: two passes over the activations fewer, forward
                // and backward
                let (xl, scale) = dropout(xl, l.dropout.prob, l.scaling);
                let xa = B::gemm(xl, a, bf16);
                let b = match scale {
                    1.0 => l.lora_b.val(),
                    s => l.lora_b.val() * s,
                };
                let mut dims_out = dims;
                dims_out[D - 1] = b.dims()[1];
                // with a bf16 input and result, the adapter's term in bf16 too, from bf16
                // factors: half the bytes of `[positions, out]` to write, sum and differentiate
                let delta = if bf16 && out == FloatDType::BF16 {
                    B::gemm_as(xa, b, true, out)
                } else {
                    B::gemm(xa, b, false)
                };
                let delta = delta.reshape(dims_out);
                // the product, its bias and the adapter's term in one pass (`sum3_as`), each
                // in its own dtype and rounded to `out` once on the CubeCL backends
                let y = self.base_product(base_x(x), out);
                match bias {
                    Some(bias) => B::sum3_as(y, bias.unsqueeze(), delta, out),
                    None => y + delta.cast(out),
                }
            }
        };
        (y, rest)
    }

    /// Fold the adapter into the base weight: `W ← W + scaling·A·B`.
    pub fn merge(self) -> Self {
        match self.lora {
            None => self,
            Some(l) => {
                let w = self.weight.dense();
                let delta = (l.lora_a.val().matmul(l.lora_b.val()) * l.scaling).cast(w.dtype());
                Self {
                    weight: BaseWeight::Dense(Param::from_tensor(w + delta)),
                    bias: self.bias,
                    lora: None,
                }
            }
        }
    }
}

/// `y + bias` (the bias cast to `y`'s dtype, broadcast over the rows), or `y` without one.
pub fn add_bias<B: Backend, const D: usize>(
    y: Tensor<B, D>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    match bias {
        Some(b) => {
            let dtype = y.dtype();
            y + b.cast(dtype).unsqueeze()
        }
        None => y,
    }
}

/// `x` with dropout's mask applied (in training: where autodiff is on and `prob > 0`, the mask
/// drawn as `burn::nn::Dropout` draws it, from this thread's seed: `dropout_seed`), and `scale`
/// times dropout's `1/keep`, for the caller to apply to a small factor instead of the large
/// result.
fn dropout<B: Backend>(x: Tensor<B, 2>, prob: f64, scale: f64) -> (Tensor<B, 2>, f64) {
    if prob == 0.0 || !B::ad_enabled(&x.device()) {
        return (x, scale);
    }
    let keep = 1.0 - prob;
    if keep <= 0.0 {
        return (x.zeros_like(), scale);
    }
    // seeded for this thread's layer where the trainer set a seed (`dropout_seed`)
    let mask = crate::dropout_seed::seeded::<B, _>(&x.device(), || {
        x.random_like(Distribution::Bernoulli(keep))
    });
    (x * mask, scale / keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::DropoutConfig;
    use burn::tensor::Tolerance;

    /// The mask is the one `burn::nn::Dropout` draws from the same seed, and its `1/keep` comes
    /// back in the scale: `mask(x)·scale` is Dropout's output times the scaling.
    #[test]
    fn dropout_draws_burns_mask_and_returns_its_scale() {
        type AD = Autodiff<Flex>;
        let device = Default::default();
        let _turn = crate::global_rng();
        let x = Tensor::<AD, 2>::random([16, 24], Distribution::Normal(0.0, 1.0), &device);
        AD::seed(&device, 5);
        let (masked, scale) = dropout(x.clone(), 0.25, 2.0);
        assert_eq!(scale, 2.0 / 0.75);
        AD::seed(&device, 5);
        let burns = DropoutConfig::new(0.25).init().forward(x.clone());
        (masked * scale)
            .into_data()
            .assert_approx_eq::<f32>(&(burns * 2.0).into_data(), Tolerance::default());
        // without autodiff (inference) and at 0 it is the identity
        let (same, s) = dropout(x.clone().inner(), 0.25, 2.0);
        assert_eq!(s, 2.0);
        same.into_data()
            .assert_eq(&x.clone().inner().into_data(), true);
        assert_eq!(dropout(x, 0.0, 3.0).1, 3.0);
    }
}
