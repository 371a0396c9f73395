//! The operations of the model that a backend may run its own way: [`ModelBackend`].
//!
//! Plain backends compute them with burn's ops (attention with the backend's fused kernel where
//! it has one). Under autodiff (`autodiff_ops.rs`) each is one graph node whose backward pass
//! recomputes what it needs from small inputs instead of keeping large intermediates alive until
//! backward, as PyTorch's fused attention and bitsandbytes' `MatMul4Bit` do:
//! - attention keeps the fused qkv projection, not the rotary embedding's intermediates nor the
//!   `[batch, heads, T, T]` scores and probabilities, and its backward pass returns the qkv
//!   gradient in one piece (no zero-filled tensor per slice);
//! - GELU keeps its input, not the three intermediates of its formula;
//! - LayerNorm keeps its input, not the centred and the normalised input;
//! - the loss keeps the logits, not the log-probabilities and the exponentials (`[b, T, V]`
//!   each), and its gradient is `(softmax − one-hot)·weight` in three passes;
//! - an NF4 matmul keeps the 4-bit codes, not the dequantized weight.
//!
//! With `--dtype bf16` attention multiplies bf16 factors (its softmax stays f32), and attention,
//! GELU and LayerNorm (`bf16_stash`) keep those inputs in bf16, as a bf16 model in PyTorch keeps
//! its activations; GELU and LayerNorm compute in f32.
//!
//! Model code is generic over `B: ModelBackend`; training code over [`TrainBackend`].

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor, ModuleOps};
use burn::tensor::{Bool, FloatDType, IndexingUpdateOp, Int, Tensor, TensorPrimitive};

use crate::attention_blocks::{add_product_to_rows, attend_in_blocks};
use crate::base_weight::Nf4Weight;
use crate::rope::Rope;

pub trait ModelBackend: Backend {
    /// Whether ops are queued and run later (burn-fusion), random draws included: the RNG is
    /// then read when they run, not when they are called, so replicas on threads of their own
    /// would not draw the masks of their seeds (`dropout_seed`).
    const DEFERRED: bool = false;

    /// Host threads of the backend's own per device: CubeCL's device runner, which spin-waits
    /// for work (as the thread queueing it does, when the runner's buffer is full). Data
    /// parallel replicas on threads of their own need a core for each (`trainer`'s
    /// `Replicas`).
    const RUNNER_THREADS: usize = 0;

    /// `softmax(q·kᵀ/√d + causal mask)·v` for `q: [b, h, T, d]`, `k, v: [b, h, S, d]`, `S ≥ T`:
    /// query `i` sits at position `S − T + i` and sees keys `0..=S − T + i` (a KV cache holds
    /// the first `S − T`).
    fn causal_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
    ) -> Tensor<Self, 4> {
        let t = q.dims()[2];
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: t > 1,
        };
        burn::tensor::module::attention(q, k, v, None, None, options)
    }

    /// Causal self-attention over a whole sequence (no cache) from the fused projection
    /// `qkv: [b, h, T, 3·d]`, each head's q, k and v in turn, the rotary embedding applied to
    /// q and k ([`split_qkv`]). `bf16`: the two matmuls take bf16 factors
    /// ([`causal_attention_bf16`]) and q, k and v are written in bf16 (kept so under autodiff),
    /// the rotary embedding computed in f32 from a bf16 projection. Long sequences are attended
    /// in query blocks ([`attend_in_blocks`]).
    fn qkv_attention(qkv: Tensor<Self, 4>, rope: &Rope<Self>, bf16: bool) -> Tensor<Self, 4> {
        if bf16 {
            let (q, k, v) = Self::split_qkv_rope_as(qkv, rope, FloatDType::BF16);
            attend_in_blocks(q, k, v, causal_attention_bf16)
        } else {
            let (q, k, v) = Self::split_qkv_rope(qkv, rope);
            attend_in_blocks(q, k, v, Self::causal_attention)
        }
    }

    /// `a·b` for `a: [.., m, k]` and `b: [.., k, n]` (batch dimensions broadcast); with `bf16`
    /// from factors rounded to bf16 (tensor cores; a no-op cast for a factor already in bf16)
    /// with the product in f32, as a bf16 model in PyTorch multiplies ([`matmul`]). CUDA runs
    /// it on cuBLAS (`cublas.rs`).
    fn gemm<const D: usize>(a: Tensor<Self, D>, b: Tensor<Self, D>, bf16: bool) -> Tensor<Self, D> {
        matmul(a, b, bf16)
    }

    /// [`gemm`](Self::gemm) with the product written in `out` (cuBLAS writes it so directly);
    /// under autodiff one node, whose gradient comes in `out`.
    fn gemm_as<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        bf16: bool,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        Self::gemm(a, b, bf16).cast(out)
    }

    /// `acc` (`[b, h, S, n]`) with `a·b` (`[b, h, s, n]`, `s ≤ S`) added to its first `s` rows:
    /// the sum computed in f32 (the product from bf16 factors with `bf16`, as
    /// [`gemm`](Self::gemm)) and written in `acc`'s dtype, rounded once. Attention's key and
    /// value gradients gathered over its query blocks (`attention_blocks.rs`). CUDA runs it as
    /// one cuBLAS product with `β = 1` into `acc`'s rows.
    fn gemm_add_rows(
        acc: Tensor<Self, 4>,
        a: Tensor<Self, 4>,
        b: Tensor<Self, 4>,
        bf16: bool,
    ) -> Tensor<Self, 4> {
        add_product_to_rows(acc, a, b, bf16)
    }

    /// The products of `pairs` ([`gemm_as`](Self::gemm_as), `[b, h, mᵢ, n]` each) stacked along
    /// their rows, `[b, h, Σ mᵢ, n]`: attention's query gradient over its query blocks. CUDA
    /// writes each product straight into its rows (no concatenation).
    fn gemm_rows(
        pairs: Vec<(Tensor<Self, 4>, Tensor<Self, 4>)>,
        bf16: bool,
        out: FloatDType,
    ) -> Tensor<Self, 4> {
        let parts = pairs
            .into_iter()
            .map(|(a, b)| Self::gemm_as(a, b, bf16, out))
            .collect();
        Tensor::cat(parts, 2)
    }

    /// `x·w` for a frozen weight `w: [in, out]` (any strides: `Wᵀ` in a backward pass),
    /// multiplied in `w`'s dtype with the product back in `x`'s dtype (a bf16 or NF4 base;
    /// [`linear_in`]). CUDA runs it on cuBLAS; under autodiff it is one graph node whose
    /// backward pass multiplies by `wᵀ` the same way.
    fn base_matmul<const D: usize>(x: Tensor<Self, D>, w: Tensor<Self, 2>) -> Tensor<Self, D> {
        let out = x.dtype().into();
        Self::base_matmul_as(x, w, out)
    }

    /// [`base_matmul`](Self::base_matmul) with the product written in `out` (cuBLAS writes it
    /// so directly: a bf16 input's product in f32 for the residual stream); under autodiff the
    /// input's gradient comes back in the input's dtype.
    fn base_matmul_as<const D: usize>(
        x: Tensor<Self, D>,
        w: Tensor<Self, 2>,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        linear_in(x, w).cast(out)
    }

    /// `softmax(scores·scale + causal mask)` over the last dimension of `scores: [b, h, T, S]`
    /// (`S ≥ T`: query `i` sees keys `0..=S − T + i`, as in
    /// [`causal_attention`](Self::causal_attention)), in the scores' dtype.
    fn causal_softmax(scores: Tensor<Self, 4>, scale: f64) -> Tensor<Self, 4> {
        let [b, h, t, s] = scores.dims();
        let scores = scores * scale;
        let scores = if t > 1 {
            let mask = Tensor::<Self, 2, Bool>::tril_mask([t, s], (s - t) as i64, &scores.device())
                .unsqueeze::<4>()
                .expand([b, h, t, s]);
            scores.mask_fill(mask, f32::MIN)
        } else {
            scores
        };
        softmax(scores, 3)
    }

    /// The gradient of the scores of [`causal_softmax`](Self::causal_softmax) from its output
    /// `p` and that output's gradient `dp`: `p ⊙ (dp − rowsum(p ⊙ dp))·scale`.
    fn softmax_backward(p: Tensor<Self, 4>, dp: Tensor<Self, 4>, scale: f64) -> Tensor<Self, 4> {
        let row = (p.clone() * dp.clone()).sum_dim(3);
        p * (dp - row) * scale
    }

    /// [`causal_softmax`](Self::causal_softmax) computed in the scores' dtype, the
    /// probabilities written in `dtype` (bf16 for the bf16 product that takes them).
    fn causal_softmax_as(
        scores: Tensor<Self, 4>,
        scale: f64,
        dtype: FloatDType,
    ) -> Tensor<Self, 4> {
        Self::causal_softmax(scores, scale).cast(dtype)
    }

    /// Attention's softmax backward from the scores: `P =`
    /// [`causal_softmax`](Self::causal_softmax)`(scores, scale)` and the scores' gradient
    /// [`softmax_backward`](Self::softmax_backward)`(P, dp, scale)`, both written in `dtype`
    /// (bf16 for the bf16 products that take them), P in between in the scores' dtype (the
    /// softmax's backward reads it unrounded, as autodiff through the forward pass would).
    fn causal_softmax_backward(
        scores: Tensor<Self, 4>,
        dp: Tensor<Self, 4>,
        scale: f64,
        dtype: FloatDType,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        let p = Self::causal_softmax(scores, scale);
        let dp = dp.cast(p.dtype());
        let ds = Self::softmax_backward(p.clone(), dp, scale);
        (p.cast(dtype), ds.cast(dtype))
    }

    /// [`split_qkv_rope`](Self::split_qkv_rope) computed in f32 (`qkv` may be bf16), q, k and
    /// v written in `dtype`.
    fn split_qkv_rope_as(
        qkv: Tensor<Self, 4>,
        rope: &Rope<Self>,
        dtype: FloatDType,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>, Tensor<Self, 4>) {
        let (q, k, v) = Self::split_qkv_rope(qkv.cast(FloatDType::F32), rope);
        (q.cast(dtype), k.cast(dtype), v.cast(dtype))
    }

    /// q and k (the rotary embedding applied) and v, `[b, h, T, d]` each, from the fused
    /// projection `qkv: [b, h, T, 3·d]` (each head's q, k and v in turn), as tensors of their
    /// own (not views of `qkv`).
    fn split_qkv_rope(
        qkv: Tensor<Self, 4>,
        rope: &Rope<Self>,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>, Tensor<Self, 4>) {
        let (q, k, v) = split_qkv(qkv, rope);
        (q, k, v * 1.0)
    }

    /// The adjoint of [`split_qkv_rope`](Self::split_qkv_rope): the gradient of `qkv` from
    /// those of q, k and v (the rotary embedding's transpose on q's and k's), written in
    /// `dtype` (the projection's).
    fn split_qkv_rope_backward(
        dq: Tensor<Self, 4>,
        dk: Tensor<Self, 4>,
        dv: Tensor<Self, 4>,
        rope: &Rope<Self>,
        dtype: FloatDType,
    ) -> Tensor<Self, 4> {
        // in f32 (the rotary tables'), from bf16 gradients too, as the kernel computes
        let f32 = |t: Tensor<Self, 4>| t.cast(FloatDType::F32);
        Tensor::cat(
            vec![
                rope.apply_transpose(f32(dq)),
                rope.apply_transpose(f32(dk)),
                f32(dv),
            ],
            3,
        )
        .cast(dtype)
    }

    /// `−Σ weights·log softmax(logits)[target]`, the sum over every position, for
    /// `logits: [b, T, V]` and `targets, weights: [b, T, 1]`.
    fn weighted_nll(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 3, Int>,
        weights: Tensor<Self, 3>,
    ) -> Tensor<Self, 1> {
        let picked = log_softmax(logits, 2).gather(2, targets);
        (picked * weights).sum().neg()
    }

    /// [`weighted_nll`](Self::weighted_nll), its gradient with respect to the logits written in
    /// `grad` under autodiff.
    fn weighted_nll_as(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 3, Int>,
        weights: Tensor<Self, 3>,
        grad: FloatDType,
    ) -> Tensor<Self, 1> {
        let _ = grad;
        Self::weighted_nll(logits, targets, weights)
    }

    /// The gradient of [`weighted_nll`](Self::weighted_nll) with respect to the logits, for the
    /// loss's gradient `g: [1]`: `(softmax(logits) − one-hot(target))·weight·g`, in the
    /// logits' dtype.
    fn weighted_nll_backward(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 3, Int>,
        weights: Tensor<Self, 3>,
        g: Tensor<Self, 1>,
    ) -> Tensor<Self, 3> {
        let dtype = logits.dtype().into();
        Self::weighted_nll_backward_as(logits, targets, weights, g, dtype)
    }

    /// [`weighted_nll_backward`](Self::weighted_nll_backward) written in `out` (computed in the
    /// logits' dtype).
    fn weighted_nll_backward_as(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 3, Int>,
        weights: Tensor<Self, 3>,
        g: Tensor<Self, 1>,
        out: FloatDType,
    ) -> Tensor<Self, 3> {
        let coef = weights * g.reshape([1, 1, 1]);
        let d = softmax(logits, 2) * coef.clone();
        d.scatter(2, targets, coef.neg(), IndexingUpdateOp::Add)
            .cast(out)
    }

    /// `a + b + c` written in `out`, each term cast to it and summed left to right; `b` may
    /// broadcast (a bias: `[1, …, 1, n]`). The CubeCL backends compute it in one pass, in f32,
    /// rounded once: a linear layer's product, bias and LoRA term, a parallel residual's three
    /// terms.
    fn sum3_as<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        c: Tensor<Self, D>,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        sum3_formula(a, b, c, out)
    }

    /// `a + b` (one shape) written in `out`, each term cast to it. The CubeCL backends compute
    /// it in one pass, in f32, rounded once (a cast and a sum otherwise).
    fn sum2_as<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        sum2_formula(a, b, out)
    }

    /// `(a + p) + (b + q) + c` written in `out`, each term cast to it; `p` and `q` broadcast
    /// (biases: `[1, …, 1, n]`). The CubeCL backends compute it in one pass, in f32, rounded
    /// once: a parallel residual, its two branches' products with their biases and the
    /// residual stream (three passes otherwise).
    fn sum5_as<const D: usize>(terms: [Tensor<Self, D>; 5], out: FloatDType) -> Tensor<Self, D> {
        sum5_formula(terms, out)
    }

    /// Exact GELU, `x·Φ(x) = x·(1 + erf(x/√2))/2` (HF's `gelu`), computed in f32 and written
    /// in `x`'s dtype.
    fn gelu_erf<const D: usize>(x: Tensor<Self, D>, bf16_stash: bool) -> Tensor<Self, D> {
        let _ = bf16_stash;
        let dtype = x.dtype();
        let x = x.cast(FloatDType::F32);
        (x.clone() * ((x / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5).cast(dtype)
    }

    /// [`gelu_erf`](Self::gelu_erf) of `x + bias` (`bias: [n]`, cast to `x`'s dtype and
    /// broadcast over the rows): a linear layer's product and its bias, which the CubeCL
    /// backends add where GELU reads the product, in f32, with no pass of its own.
    fn gelu_erf_bias<const D: usize>(
        x: Tensor<Self, D>,
        bias: Tensor<Self, 1>,
        bf16_stash: bool,
    ) -> Tensor<Self, D> {
        let bias = bias.cast(x.dtype()).unsqueeze();
        Self::gelu_erf(x + bias, bf16_stash)
    }

    /// The gradient of [`gelu_erf_bias`](Self::gelu_erf_bias) with respect to `x` (and, summed
    /// over the rows, to the bias), in `g`'s dtype.
    fn gelu_erf_bias_backward<const D: usize>(
        x: Tensor<Self, D>,
        bias: Tensor<Self, 1>,
        g: Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        let bias = bias.cast(x.dtype()).unsqueeze();
        Self::gelu_erf_backward(x + bias, g)
    }

    /// The gradient of [`gelu_erf`](Self::gelu_erf) at `x` for the output gradient `g`, in
    /// `g`'s dtype (`x` may be a bf16 copy), computed in f32: `g·(Φ(x) + x·φ(x))`.
    fn gelu_erf_backward<const D: usize>(
        x: Tensor<Self, D>,
        g: Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        let dtype = g.dtype();
        let (x, g) = (x.cast(FloatDType::F32), g.cast(FloatDType::F32));
        let cdf = ((x.clone() / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5;
        let pdf = (x.clone().powi_scalar(2) * -0.5).exp() * (2.0 * std::f64::consts::PI).powf(-0.5);
        (g * (cdf + x * pdf)).cast(dtype)
    }

    /// The residual stream `h` rounded to bf16, for a layer's LayerNorms to read and keep
    /// (`bf16_stash`): a cast. Under autodiff its gradient (the LayerNorms', bf16) is added to
    /// the stream's own (f32) in one pass, where a cast node would cast it first and autodiff
    /// add the two after.
    fn stash_bf16<const D: usize>(h: Tensor<Self, D>) -> Tensor<Self, D> {
        h.cast(FloatDType::BF16)
    }

    /// LayerNorm over the last dimension, `(x − mean)/√(var + ε)·gamma + beta` (biased
    /// variance), as burn's `layer_norm` op computes it, in gamma's dtype (`x` may be bf16),
    /// written in `out` (bf16 for the bf16 products that read it, `precision.rs`).
    fn layernorm<const D: usize>(
        x: Tensor<Self, D>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
        bf16_stash: bool,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        let _ = bf16_stash;
        let x = x.cast(gamma.dtype());
        let y = <Self as ModuleOps<Self>>::layer_norm(
            to_prim(x),
            to_prim(gamma),
            Some(to_prim(beta)),
            epsilon,
        );
        from_prim::<Self, D>(y).cast(out)
    }

    /// The gradients of [`layernorm`](Self::layernorm) for the output gradient `g`: the
    /// input's (in `g`'s dtype; `x` may be a bf16 copy) and, with `affine`, gamma's and beta's
    /// (`[n]`, summed over every position, in gamma's dtype), computed in gamma's dtype. With
    /// `x̂ = (x − mean)·rstd` and `d = g·gamma`:
    /// `dx = (d − mean(d) − x̂·mean(d·x̂))·rstd`, `dgamma = Σ g·x̂`, `dbeta = Σ g`.
    fn layernorm_backward<const D: usize>(
        x: Tensor<Self, D>,
        gamma: Tensor<Self, 1>,
        g: Tensor<Self, D>,
        epsilon: f64,
        affine: bool,
    ) -> LayerNormGrads<Self, D> {
        let out = g.dtype();
        let (x, g) = (x.cast(gamma.dtype()), g.cast(gamma.dtype()));
        let xc = x.clone() - x.mean_dim(D - 1);
        let rstd = ((xc.clone() * xc.clone()).mean_dim(D - 1) + epsilon)
            .sqrt()
            .recip();
        let xhat = xc * rstd.clone();
        let dxhat = g.clone() * gamma.unsqueeze::<D>();
        let mean_d = dxhat.clone().mean_dim(D - 1);
        let mean_dx = (dxhat.clone() * xhat.clone()).mean_dim(D - 1);
        let dx = (dxhat - mean_d - xhat.clone() * mean_dx) * rstd;
        let affine = affine.then(|| (per_feature(g.clone() * xhat), per_feature(g)));
        (dx.cast(out), affine)
    }

    /// `x·W` with `W` the NF4 weight dequantized (`[in, out]`), multiplied in the weight's
    /// compute dtype; the result comes back in `x`'s dtype.
    fn nf4_matmul<const D: usize>(x: Tensor<Self, D>, w: &Nf4Weight<Self>) -> Tensor<Self, D> {
        Self::base_matmul(x, Self::nf4_weight(w).transpose())
    }

    /// An NF4 weight dequantized, `[out, in]`, in the dtype its matmul runs in
    /// ([`Nf4Weight::compute_weight`]; CubeCL backends run it as one kernel).
    fn nf4_weight(w: &Nf4Weight<Self>) -> Tensor<Self, 2> {
        w.compute_weight()
    }

    /// Marks the GPU's time where it reaches the work queued next on `device` (`timeline.rs`,
    /// through [`crate::timeline::mark`]): CUDA only, a no-op elsewhere.
    fn mark(_device: &Self::Device, _label: &'static str) {}

    /// `t` laid out contiguously, copied once where it is a strided view that several products
    /// read (each would copy it for cuBLAS). The identity where layouts cost nothing.
    fn contiguous<const D: usize>(t: Tensor<Self, D>) -> Tensor<Self, D> {
        t
    }

    /// `parts` concatenated along `dim` (`Tensor::cat`; one part as it is). The CubeCL backends
    /// copy each part in one vector-wide pass (`kernels/copy.rs`).
    fn concat<const D: usize>(mut parts: Vec<Tensor<Self, D>>, dim: usize) -> Tensor<Self, D> {
        match parts.len() {
            1 => parts.pop().expect("one part"),
            _ => Tensor::cat(parts, dim),
        }
    }
}

/// LayerNorm's gradients: the input's, and with `affine` gamma's and beta's.
pub type LayerNormGrads<B, const D: usize> = (Tensor<B, D>, Option<(Tensor<B, 1>, Tensor<B, 1>)>);

/// `t` summed over every position, per feature (its last dimension): `[n]`.
pub fn per_feature<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, 1> {
    let n = t.dims()[D - 1];
    t.reshape([-1, n as i32]).sum_dim(0).reshape([n])
}

/// A backend that trains the model: autodiff over a [`ModelBackend`].
pub trait TrainBackend: AutodiffBackend<InnerBackend: ModelBackend> + ModelBackend {}

impl<B> TrainBackend for B where B: AutodiffBackend<InnerBackend: ModelBackend> + ModelBackend {}

/// `[b, h, T, 3·d]` → q and k (rotary embedding applied) and v, `[b, h, T, d]` each.
pub fn split_qkv<B: Backend>(
    qkv: Tensor<B, 4>,
    rope: &Rope<B>,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let d = qkv.dims()[3] / 3;
    let q = rope.apply(qkv.clone().narrow(3, 0, d));
    let k = rope.apply(qkv.clone().narrow(3, d, d));
    (q, k, qkv.narrow(3, 2 * d, d))
}

/// Row-major (contiguous) strides for `shape` (cuBLAS's plans and the CubeCL copies).
#[cfg(any(test, feature = "cubecl"))]
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

/// A product's factor as a bf16 product takes it: rounded to bf16 with `bf16` (a no-op cast
/// for a factor already in bf16), else as it is.
pub fn bf16_factor<B: Backend, const D: usize>(t: Tensor<B, D>, bf16: bool) -> Tensor<B, D> {
    match bf16 {
        true => t.cast(FloatDType::BF16),
        false => t,
    }
}

/// `a·b`, with `bf16` from factors rounded to bf16 (a GPU's tensor cores; a no-op cast for a
/// factor already in bf16) and the product back in f32, as a bf16 model in PyTorch multiplies.
pub fn matmul<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    bf16: bool,
) -> Tensor<B, D> {
    if bf16 {
        let bf = FloatDType::BF16;
        a.cast(bf).matmul(b.cast(bf)).cast(FloatDType::F32)
    } else {
        a.matmul(b)
    }
}

/// `x·w` (`w: [in, out]`) in `w`'s dtype, the product back in `x`'s dtype: burn's `linear`.
pub fn linear_in<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 2>) -> Tensor<B, D> {
    let (xd, wd) = (x.dtype(), w.dtype());
    if xd == wd {
        return burn::tensor::module::linear(x, w, None);
    }
    burn::tensor::module::linear(x.cast(wd), w, None).cast(xd)
}

/// [`ModelBackend::sum2_as`] as tensor ops: `a + b`, each cast to `out`.
fn sum2_formula<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    out: FloatDType,
) -> Tensor<B, D> {
    a.cast(out) + b.cast(out)
}

/// [`ModelBackend::sum3_as`] as tensor ops: `a + b + c`, each cast to `out`, left to right.
fn sum3_formula<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    c: Tensor<B, D>,
    out: FloatDType,
) -> Tensor<B, D> {
    a.cast(out) + b.cast(out) + c.cast(out)
}

/// [`ModelBackend::sum5_as`] as tensor ops: `(a + p) + (b + q) + c`, each cast to `out`.
fn sum5_formula<B: Backend, const D: usize>(
    terms: [Tensor<B, D>; 5],
    out: FloatDType,
) -> Tensor<B, D> {
    let [a, p, b, q, c] = terms.map(|t| t.cast(out));
    (a + p) + (b + q) + c
}

/// Whether a tensor of dims `t` broadcasts over one of dims `like` as a bias does:
/// `[1, …, 1, n]`, `n` being `like`'s last dimension.
#[cfg(feature = "cubecl")]
fn row_bias(t: &[usize], like: &[usize]) -> bool {
    let (last, rows) = t.split_last().expect("a tensor with dimensions");
    like.last() == Some(last) && rows.iter().all(|&n| n == 1)
}

/// Causal self-attention (`S = T`) with both matmuls from bf16 factors, the scores, the mask
/// and the softmax in f32, the output in bf16: HF's eager attention in a bf16 model, with f32
/// scores.
pub fn causal_attention_bf16<B: ModelBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    B::gemm_as(causal_probs(q, k, true), v, true, FloatDType::BF16)
}

/// The attention probabilities `softmax(q·kᵀ/√d + causal mask)`, `[b, h, T, S]`, materialised
/// (attention on the CubeCL backends and in bf16, and the reference in tests), in f32;
/// `bf16`: `q·kᵀ` from bf16 factors ([`matmul`]) and the probabilities, computed in f32,
/// written in bf16 (what the product with v would round them to).
pub fn causal_probs<B: ModelBackend>(q: Tensor<B, 4>, k: Tensor<B, 4>, bf16: bool) -> Tensor<B, 4> {
    let d = q.dims()[3];
    let scores = B::gemm(q, k.transpose(), bf16);
    let scale = (d as f64).powf(-0.5);
    if bf16 {
        B::causal_softmax_as(scores, scale, FloatDType::BF16)
    } else {
        B::causal_softmax(scores, scale)
    }
}

impl ModelBackend for burn::backend::Flex {}

/// CubeCL (CUDA, wgpu, WebGPU): the qkv split with the rotary embedding, the causal softmax,
/// the loss, GELU and LayerNorm run as the fused kernels of `kernels/`.
#[cfg(feature = "cubecl")]
impl<R, F, I, BT> ModelBackend for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    R::Server: burn_cubecl::cubecl::server::ComputeServer,
    R::Device: burn::tensor::backend::DeviceOps,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
    const RUNNER_THREADS: usize = 1;

    /// `softmax(q·kᵀ/√d + mask)·v` with the fused softmax kernel (burn's fallback without
    /// autotune runs the softmax, the scaling and the mask as a dozen kernels).
    fn causal_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
    ) -> Tensor<Self, 4> {
        Self::gemm(causal_probs(q, k, false), v, false)
    }

    #[cfg(feature = "cublas")]
    fn mark(device: &Self::Device, label: &'static str) {
        crate::timeline::record(device, label);
    }

    fn contiguous<const D: usize>(t: Tensor<Self, D>) -> Tensor<Self, D> {
        from_prim(crate::kernels::contiguous(to_prim(t)))
    }

    /// One part is made dense too (the heads' merge of attention's output reads it so).
    fn concat<const D: usize>(parts: Vec<Tensor<Self, D>>, dim: usize) -> Tensor<Self, D> {
        let prims: Vec<_> = parts.iter().map(|p| to_prim(p.clone())).collect();
        match crate::kernels::concat(&prims, dim) {
            Some(out) => from_prim(out),
            None => Tensor::cat(parts, dim),
        }
    }

    /// On cuBLAS where it loads (`cublas.rs`), else burn's matmul.
    #[cfg(feature = "cublas")]
    fn gemm<const D: usize>(a: Tensor<Self, D>, b: Tensor<Self, D>, bf16: bool) -> Tensor<Self, D> {
        let out = if bf16 {
            FloatDType::F32
        } else {
            a.dtype().into()
        };
        Self::gemm_as(a, b, bf16, out)
    }

    #[cfg(feature = "cublas")]
    fn gemm_as<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        bf16: bool,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        let (a, b) = (bf16_factor(a, bf16), bf16_factor(b, bf16));
        match crate::cublas::matmul(to_prim(a), to_prim(b), out.into()) {
            Ok(c) => from_prim(c),
            Err((a, b)) => matmul(from_prim(a), from_prim(b), bf16).cast(out),
        }
    }

    /// On cuBLAS where it loads, one product with `β = 1` into `acc`'s first rows (where `acc`
    /// is this call's alone, contiguous and of a dtype cuBLAS writes); else as the default.
    #[cfg(feature = "cublas")]
    fn gemm_add_rows(
        acc: Tensor<Self, 4>,
        a: Tensor<Self, 4>,
        b: Tensor<Self, 4>,
        bf16: bool,
    ) -> Tensor<Self, 4> {
        let (a, b) = (bf16_factor(a, bf16), bf16_factor(b, bf16));
        match crate::cublas::matmul_add_rows(to_prim(acc), to_prim(a), to_prim(b)) {
            Ok(acc) => from_prim(acc),
            Err([acc, a, b]) => {
                add_product_to_rows(from_prim(acc), from_prim(a), from_prim(b), bf16)
            }
        }
    }

    /// On cuBLAS where it loads, each product written into its rows of one tensor; else as
    /// the default.
    #[cfg(feature = "cublas")]
    fn gemm_rows(
        pairs: Vec<(Tensor<Self, 4>, Tensor<Self, 4>)>,
        bf16: bool,
        out: FloatDType,
    ) -> Tensor<Self, 4> {
        let pairs = pairs
            .into_iter()
            .map(|(a, b)| (to_prim(bf16_factor(a, bf16)), to_prim(bf16_factor(b, bf16))))
            .collect();
        match crate::cublas::matmul_rows(pairs, out.into()) {
            Ok(c) => from_prim(c),
            Err(pairs) => {
                let parts = pairs
                    .into_iter()
                    .map(|(a, b)| matmul(from_prim(a), from_prim(b), bf16).cast(out))
                    .collect();
                Tensor::cat(parts, 2)
            }
        }
    }

    /// On cuBLAS where it loads, the product straight in `out`; else burn's matmul.
    #[cfg(feature = "cublas")]
    fn base_matmul_as<const D: usize>(
        x: Tensor<Self, D>,
        w: Tensor<Self, 2>,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        let wd = w.dtype();
        let x = x.cast(wd);
        match crate::cublas::matmul(to_prim(x), to_prim(w.unsqueeze::<D>()), out.into()) {
            Ok(y) => from_prim(y),
            Err((x, w)) => from_prim::<Self, D>(x).matmul(from_prim(w)).cast(out),
        }
    }

    fn causal_softmax(scores: Tensor<Self, 4>, scale: f64) -> Tensor<Self, 4> {
        let dtype = scores.dtype().into();
        Self::causal_softmax_as(scores, scale, dtype)
    }

    fn causal_softmax_as(
        scores: Tensor<Self, 4>,
        scale: f64,
        dtype: FloatDType,
    ) -> Tensor<Self, 4> {
        from_prim(crate::kernels::causal_softmax(
            to_prim(scores),
            scale,
            dtype.into(),
        ))
    }

    fn nf4_weight(w: &Nf4Weight<Self>) -> Tensor<Self, 2> {
        use crate::kernels::{Nf4Parts, nf4_dequantize};
        let parts = match (&w.absmax, &w.nested) {
            (Some(a), _) => Nf4Parts::Plain {
                absmax: to_prim(a.val()),
            },
            (None, Some(n)) => Nf4Parts::Double {
                codes: n.codes.val().into_primitive(),
                absmax2: to_prim(n.absmax2.val()),
                code2: to_prim(n.code2.val()),
                offset: n.offset as f32,
            },
            (None, None) => unreachable!("an NF4 weight has absmax values"),
        };
        let out = if w.bf16 {
            burn::tensor::DType::BF16
        } else {
            burn::tensor::DType::F32
        };
        from_prim(nf4_dequantize(
            w.codes.val().into_primitive(),
            to_prim(w.code.val()),
            parts,
            [w.d_output, w.d_input],
            w.blocksize,
            out,
        ))
    }

    fn causal_softmax_backward(
        scores: Tensor<Self, 4>,
        dp: Tensor<Self, 4>,
        scale: f64,
        dtype: FloatDType,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        let (p, ds) = crate::kernels::causal_softmax_backward(
            to_prim(scores),
            to_prim(dp),
            scale,
            dtype.into(),
        );
        (from_prim(p), from_prim(ds))
    }

    fn split_qkv_rope(
        qkv: Tensor<Self, 4>,
        rope: &Rope<Self>,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>, Tensor<Self, 4>) {
        let dtype = qkv.dtype().into();
        Self::split_qkv_rope_as(qkv, rope, dtype)
    }

    fn split_qkv_rope_as(
        qkv: Tensor<Self, 4>,
        rope: &Rope<Self>,
        dtype: FloatDType,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>, Tensor<Self, 4>) {
        let (cos, sin) = rope.tables();
        let [q, k, v] = crate::kernels::split_qkv_rope(
            to_prim(qkv),
            to_prim(cos),
            to_prim(sin),
            rope.ndims(),
            dtype.into(),
        );
        (from_prim(q), from_prim(k), from_prim(v))
    }

    fn split_qkv_rope_backward(
        dq: Tensor<Self, 4>,
        dk: Tensor<Self, 4>,
        dv: Tensor<Self, 4>,
        rope: &Rope<Self>,
        dtype: FloatDType,
    ) -> Tensor<Self, 4> {
        let [b, h, t, d] = dq.dims();
        let parts = [to_prim(dq), to_prim(dk), to_prim(dv)];
        // written in the projection's own order, [b, T, h, 3·d], and handed back as the
        // [b, h, T, 3·d] view the forward pass took, so its reshape needs no copy. Allocated
        // dense: CUDA's pitched layout pads a row of 3·d bf16 (768 bytes) to 1024, the kernel
        // then wrote a dense [b, h, T, 3·d] of its own, and the reshape copied it (100 MB a
        // layer at the 1.3B shape; tools/fake-cuda's trace showed it).
        let shape = burn::tensor::Shape::new([b, t, h, 3 * d]);
        let out = crate::kernels::empty_like(&parts[0], shape, dtype.into());
        let out = from_prim::<Self, 4>(out).swap_dims(1, 2);
        let (cos, sin) = rope.tables();
        from_prim(crate::kernels::split_qkv_rope_backward(
            parts,
            to_prim(cos),
            to_prim(sin),
            rope.ndims(),
            to_prim(out),
        ))
    }

    fn weighted_nll(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 3, Int>,
        weights: Tensor<Self, 3>,
    ) -> Tensor<Self, 1> {
        let rows = crate::kernels::weighted_nll_rows(
            to_prim(logits),
            targets.into_primitive(),
            to_prim(weights),
        );
        from_prim::<Self, 1>(rows).sum()
    }

    fn weighted_nll_backward_as(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 3, Int>,
        weights: Tensor<Self, 3>,
        g: Tensor<Self, 1>,
        out: FloatDType,
    ) -> Tensor<Self, 3> {
        let coef = weights * g.reshape([1, 1, 1]);
        from_prim(crate::kernels::weighted_nll_backward(
            to_prim(logits),
            targets.into_primitive(),
            to_prim(coef),
            out.into(),
        ))
    }

    fn sum3_as<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        c: Tensor<Self, D>,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        let (da, db) = (a.dims(), b.dims());
        let bias = db != da;
        if c.dims() != da || (bias && !row_bias(&db, &da)) {
            return sum3_formula(a, b, c, out);
        }
        let (a, b, c) = (to_prim(a), to_prim(b), to_prim(c));
        from_prim(crate::kernels::sum3(a, b, c, bias, out.into()))
    }

    fn sum2_as<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        if a.dims() != b.dims() {
            return sum2_formula(a, b, out);
        }
        from_prim(crate::kernels::sum2(to_prim(a), to_prim(b), out.into()))
    }

    fn sum5_as<const D: usize>(terms: [Tensor<Self, D>; 5], out: FloatDType) -> Tensor<Self, D> {
        let d = terms[0].dims();
        let fits = terms[2].dims() == d
            && terms[4].dims() == d
            && row_bias(&terms[1].dims(), &d)
            && row_bias(&terms[3].dims(), &d)
            && terms[0].dtype() == terms[2].dtype()
            && terms[1].dtype() == terms[3].dtype();
        if !fits {
            return sum5_formula(terms, out);
        }
        from_prim(crate::kernels::sum5(terms.map(to_prim), out.into()))
    }

    fn gelu_erf_bias<const D: usize>(
        x: Tensor<Self, D>,
        bias: Tensor<Self, 1>,
        _bf16_stash: bool,
    ) -> Tensor<Self, D> {
        from_prim(crate::kernels::gelu_bias(to_prim(x), to_prim(bias)))
    }

    fn gelu_erf_bias_backward<const D: usize>(
        x: Tensor<Self, D>,
        bias: Tensor<Self, 1>,
        g: Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        from_prim(crate::kernels::gelu_bias_backward(
            to_prim(x),
            to_prim(bias),
            to_prim(g),
        ))
    }

    fn gelu_erf<const D: usize>(x: Tensor<Self, D>, _bf16_stash: bool) -> Tensor<Self, D> {
        from_prim(crate::kernels::gelu(to_prim(x)))
    }

    fn gelu_erf_backward<const D: usize>(
        x: Tensor<Self, D>,
        g: Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        from_prim(crate::kernels::gelu_backward(to_prim(x), to_prim(g)))
    }

    fn layernorm<const D: usize>(
        x: Tensor<Self, D>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
        _bf16_stash: bool,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        from_prim(crate::kernels::layernorm(
            to_prim(x),
            to_prim(gamma),
            to_prim(beta),
            epsilon,
            out.into(),
        ))
    }

    fn layernorm_backward<const D: usize>(
        x: Tensor<Self, D>,
        gamma: Tensor<Self, 1>,
        g: Tensor<Self, D>,
        epsilon: f64,
        affine: bool,
    ) -> LayerNormGrads<Self, D> {
        let dtype = gamma.dtype();
        let (dx, gx) = crate::kernels::layernorm_backward(
            to_prim(x),
            to_prim(gamma),
            to_prim(g.clone()),
            epsilon,
            affine,
        );
        // beta's gradient summed in gamma's dtype (a bf16 `g` holds 2⁸ positions' worth)
        let affine = gx.map(|gx| {
            (
                per_feature(from_prim::<Self, D>(gx)),
                per_feature(g.cast(dtype)),
            )
        });
        (from_prim(dx), affine)
    }
}

/// A float tensor's primitive, for the backend's own ops and kernels.
pub(crate) fn to_prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// A float primitive back as a tensor.
pub(crate) fn from_prim<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

#[cfg(feature = "fusion")]
impl<B: burn_fusion::FusionBackend> ModelBackend for burn_fusion::Fusion<B> {
    const DEFERRED: bool = true;
}
