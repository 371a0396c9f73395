//! [`ModelBackend`] under autodiff: attention, GELU, LayerNorm, the loss and the NF4 matmul as
//! single graph nodes whose backward pass recomputes their large intermediates (`backend.rs`).
//!
//! Attention backward, with `P = softmax(q·kᵀ·c + mask)`, `c = 1/√d` and `g` the output's
//! gradient (what FlashAttention computes, here with `P` materialised for one layer at a time):
//! `dv = Pᵀ·g`, `dP = g·vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dq = dS·k·c`, `dk = dSᵀ·q·c`;
//! then through the rotary embedding (`Rope::apply_transpose`) and into one `[b, h, T, 3·d]`
//! gradient of the fused projection.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, FloatDType, Int, Tensor};

use crate::attention_blocks::{attend_in_blocks, query_blocks, rows};
use crate::backend::{
    ModelBackend, bf16_factor, causal_attention_bf16, from_prim, linear_in, to_prim,
};
use crate::base_weight::Nf4Weight;
use crate::rope::Rope;

/// What a node keeps for backward: `t`, or a bf16 copy with `bf16` (`--dtype bf16`).
fn stash<B: ModelBackend, const D: usize>(t: Tensor<B, D>, bf16: bool) -> FloatTensor<B> {
    to_prim(if bf16 { t.cast(FloatDType::BF16) } else { t })
}

/// [`crate::timeline::mark`] for a backward node's tensor: `label` at its start, and
/// [`BWD_OTHER`] at its end (burn's own backward ops run until the next node's mark).
fn mark_prim<B: ModelBackend>(t: &FloatTensor<B>, label: &'static str) {
    if crate::timeline::enabled() {
        B::mark(&B::float_device(t), label);
    }
}

/// The timeline's label for the backward work between this module's nodes.
const BWD_OTHER: &str = "bwd.other";

/// `d`, a node's last result, after marking the node's end ([`BWD_OTHER`]).
fn done<B: ModelBackend>(d: FloatTensor<B>) -> FloatTensor<B> {
    mark_prim::<B>(&d, BWD_OTHER);
    d
}

/// A frozen base product's backward label, guessed from its weight's `[in, out]` (GPT-NeoX's
/// four projections and the head).
fn matmul_label(i: usize, o: usize) -> &'static str {
    match (i, o) {
        _ if o == i => "dense.bwd",
        _ if o == 3 * i => "qkv.bwd",
        _ if i > o => "fc2.bwd",
        _ if o <= 4 * i => "fc1.bwd",
        _ => "head.bwd",
    }
}

#[derive(Debug)]
struct QkvAttention;

impl<B: ModelBackend> Backward<B, 1> for QkvAttention {
    /// q and k after the rotary embedding and v (tensors of their own, not views that would keep
    /// the whole fused projection alive), all three in bf16 with `bf16`; the rotary tables; the
    /// projection's dtype (its gradient's).
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        Rope<B>,
        DType,
    );

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (q, k, v, rope, dtype) = ops.state;
        let (q, k, v): (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) =
            (from_prim(q), from_prim(k), from_prim(v));
        // Kept in bf16: every matmul here takes bf16 factors too, as in the forward pass.
        let bf16 = q.dtype() == DType::BF16;
        unary::<B, _>(ops.parents, ops.node, grads, |g| {
            mark_prim::<B>(&g, "attention.bwd");
            let g: Tensor<B, 4> = from_prim(g);
            // rounded once for both products, and laid out once for both: it comes through the
            // transpose of the heads' `[b, T, h, d]` layout, which cuBLAS cannot batch
            let g = B::contiguous(if bf16 { g.cast(FloatDType::BF16) } else { g });
            let (dq, dk, dv) = attention_grads(q, k, v, g, bf16);
            done::<B>(to_prim(B::split_qkv_rope_backward(
                dq,
                dk,
                dv,
                &rope,
                dtype.into(),
            )))
        });
    }
}

/// q's, k's and v's gradients from the output's `g` (laid out and rounded as the products
/// take it), one query block at a time ([`query_blocks`]), the last and longest first: block
/// `r0..r1`'s queries see the first `r1` keys, so its scores are `[b, h, r1 − r0, r1]`, and its
/// key and value gradients are added into the first `r1` rows of the last block's
/// ([`ModelBackend::gemm_add_rows`]); q's gradient is the blocks' `dS·k` stacked
/// ([`ModelBackend::gemm_rows`]).
fn attention_grads<B: ModelBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    g: Tensor<B, 4>,
    bf16: bool,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let c = (q.dims()[3] as f64).powf(-0.5);
    // q's, k's and v's gradients, and the probabilities' (dp), in bf16 straight from the
    // products, as a bf16 model in PyTorch has them: half the bytes of f32 for the products to
    // write and the next kernels to read (the rotary transpose and the softmax's backward
    // compute in f32). The scores stay f32, for the exponential.
    let product = |a, b| match bf16 {
        true => B::gemm_as(a, b, true, FloatDType::BF16),
        false => B::gemm(a, b, false),
    };
    let blocks = query_blocks(q.dims());
    let whole = blocks.len() == 1;
    // each block's `dS·k`, multiplied at the end into q's gradient, block after block
    let mut dq_parts = Vec::with_capacity(blocks.len());
    let mut dkv: Option<(Tensor<B, 4>, Tensor<B, 4>)> = None;
    for r in blocks.into_iter().rev() {
        let seen = 0..r.end;
        let [qi, gi, ki, vi] = match whole {
            true => [&q, &g, &k, &v].map(Tensor::clone),
            false => [
                rows(&q, r.clone()),
                rows(&g, r),
                rows(&k, seen.clone()),
                rows(&v, seen),
            ],
        };
        let scores = B::gemm(qi.clone(), ki.clone().transpose(), bf16);
        let dp = product(gi.clone(), vi.transpose());
        // P and dS in one pass from the scores, P in f32 in between (unrounded, as autodiff
        // through the forward would read it), both written rounded to bf16 once for their
        // products
        let dtype_p = if bf16 {
            FloatDType::BF16
        } else {
            scores.dtype().into()
        };
        let (p, ds) = B::causal_softmax_backward(scores, dp, c, dtype_p);
        let (pt, dst) = (p.transpose(), ds.clone().transpose());
        dkv = Some(match dkv {
            None => (product(dst, qi), product(pt, gi)),
            Some((dk, dv)) => (
                B::gemm_add_rows(dk, dst, qi, bf16),
                B::gemm_add_rows(dv, pt, gi, bf16),
            ),
        });
        dq_parts.push((ds, ki));
    }
    dq_parts.reverse();
    let dq = match whole {
        true => {
            let (ds, k) = dq_parts.pop().expect("one block");
            product(ds, k)
        }
        false => {
            let out = if bf16 {
                FloatDType::BF16
            } else {
                q.dtype().into()
            };
            B::gemm_rows(dq_parts, bf16, out)
        }
    };
    let (dk, dv) = dkv.expect("a block");
    (dq, dk, dv)
}

#[derive(Debug)]
struct StashBf16<const D: usize>;

impl<B: ModelBackend, const D: usize> Backward<B, 1> for StashBf16<D> {
    /// The stream's dtype.
    type State = DType;

    /// `dh += dhn`: the gradient the stream has so far (the residual sum's, registered before
    /// this node runs, since the sum comes later in the forward pass) taken out and added to
    /// the LayerNorms' bf16 one in one pass ([`ModelBackend::sum2_as`], in f32: the sum
    /// autodiff's own `register` would make after a cast node's cast).
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let [Some(parent)] = ops.parents else {
            return;
        };
        mark_prim::<B>(&g, "stash.bwd");
        let g: Tensor<B, D> = from_prim(g);
        let dtype = ops.state;
        // `Gradients` keys its tensors by node id and takes them out by autodiff tensor only:
        // the key is a tensor of the parent's node (its values are not read)
        let mut key = <Autodiff<B> as AutodiffBackend>::from_inner(to_prim(g.clone()));
        key.node = parent.clone();
        key.rc = std::sync::Arc::new(parent.id);
        let dh = match grads.remove::<B>(&key) {
            Some(old) => B::sum2_as(from_prim::<B, D>(old), g, dtype.into()),
            None => g.cast(dtype),
        };
        grads.register::<B>(parent.id, done::<B>(to_prim(dh)));
    }
}

#[derive(Debug)]
struct Gelu<const D: usize>;

impl<B: ModelBackend, const D: usize> Backward<B, 1> for Gelu<D> {
    /// The input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x: Tensor<B, D> = from_prim(ops.state);
        unary::<B, _>(ops.parents, ops.node, grads, |g| {
            mark_prim::<B>(&g, "gelu.bwd");
            done::<B>(to_prim(B::gelu_erf_backward(x, from_prim(g))))
        });
    }
}

#[derive(Debug)]
struct LayerNorm<const D: usize>;

impl<B: ModelBackend, const D: usize> Backward<B, 3> for LayerNorm<D> {
    /// The input, gamma, epsilon.
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma, eps) = ops.state;
        let g = grads.consume::<B>(&ops.node);
        mark_prim::<B>(&g, "layernorm.bwd");
        let g: Tensor<B, D> = from_prim(g);
        let [px, pgamma, pbeta] = ops.parents;
        let affine = pgamma.is_some() || pbeta.is_some();
        let (dx, dgb) = B::layernorm_backward(from_prim(x), from_prim(gamma), g, eps, affine);
        if let Some((dgamma, dbeta)) = dgb {
            if let Some(node) = pgamma {
                grads.register::<B>(node.id, to_prim(dgamma));
            }
            if let Some(node) = pbeta {
                grads.register::<B>(node.id, to_prim(dbeta));
            }
        }
        let dx = done::<B>(to_prim(dx));
        if let Some(node) = px {
            grads.register::<B>(node.id, dx);
        }
    }
}

#[derive(Debug)]
struct WeightedNll;

impl<B: ModelBackend> Backward<B, 1> for WeightedNll {
    /// The logits, targets and weights, and the dtype of the logits' gradient.
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>, FloatDType);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, weights, out) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |g| {
            mark_prim::<B>(&g, "loss.bwd");
            let targets = Tensor::<B, 3, Int>::from_primitive(targets);
            let d = B::weighted_nll_backward_as(
                from_prim(logits),
                targets,
                from_prim(weights),
                from_prim(g),
                out,
            );
            done::<B>(to_prim(d))
        });
    }
}

#[derive(Debug)]
struct Nf4Matmul<const D: usize>;

impl<B: ModelBackend, const D: usize> Backward<B, 1> for Nf4Matmul<D> {
    /// The weight's codes and scales: dequantized again here.
    type State = Nf4Weight<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let w = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |g| {
            mark_prim::<B>(&g, "nf4.bwd");
            // dx = g·Wᵀ, in the weight's compute dtype; `nf4_weight` is Wᵀ (`[out, in]`).
            done::<B>(to_prim(B::base_matmul::<D>(
                from_prim(g),
                B::nf4_weight(&w),
            )))
        });
    }
}

#[derive(Debug)]
struct BaseMatmul<const D: usize>;

impl<B: ModelBackend, const D: usize> Backward<B, 1> for BaseMatmul<D> {
    /// The frozen weight `[in, out]`, and the input's dtype.
    type State = (FloatTensor<B>, DType);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (w, dtype) = ops.state;
        let w: Tensor<B, 2> = from_prim(w);
        unary::<B, _>(ops.parents, ops.node, grads, |g| {
            let [i, o] = w.dims();
            mark_prim::<B>(&g, matmul_label(i, o));
            // dx = g·Wᵀ, multiplied as the forward pass multiplies, in the input's dtype
            done::<B>(to_prim(B::base_matmul_as::<D>(
                from_prim(g),
                w.transpose(),
                dtype.into(),
            )))
        });
    }
}

/// What the backward pass of a matmul node needs: each factor only when the other one's
/// gradient is asked for, the factors' shapes and dtypes (for broadcast batch dimensions and
/// for gradients in their own dtype), and `bf16`.
#[derive(Debug, Clone)]
struct GemmState<B: ModelBackend> {
    a: Option<FloatTensor<B>>,
    b: Option<FloatTensor<B>>,
    shapes: [Vec<usize>; 2],
    dtypes: [DType; 2],
    bf16: bool,
}

#[derive(Debug)]
struct Gemm<const D: usize>;

/// `t` summed over the dimensions that `shape` broadcasts (size 1 there): a matmul factor's
/// batch dimensions, a bias's rows.
fn sum_to<B: ModelBackend, const D: usize>(mut t: Tensor<B, D>, shape: &[usize]) -> Tensor<B, D> {
    for (i, &n) in shape.iter().enumerate() {
        if n == 1 && t.dims()[i] != 1 {
            t = t.sum_dim(i);
        }
    }
    t
}

impl<B: ModelBackend, const D: usize> Backward<B, 2> for Gemm<D> {
    type State = GemmState<B>;

    /// `da = g·bᵀ`, `db = aᵀ·g`, multiplied as the forward product was (cuBLAS on CUDA).
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let g = grads.consume::<B>(&ops.node);
        mark_prim::<B>(&g, "lora.bwd");
        let g: Tensor<B, D> = from_prim(g);
        // bf16 factors: the gradient rounded to bf16 once for both products; without, the
        // products take one dtype: a gradient written in another (`gemm_as`) multiplies in
        // the factors'
        let g = g.cast(match s.bf16 {
            true => DType::BF16,
            false => s.dtypes[0],
        });
        let [pa, pb] = ops.parents;
        // a factor's gradient in its dtype: written so by the product (cuBLAS writes a bf16
        // input's gradient in bf16), or where the factor broadcast over batch dimensions,
        // summed over them first
        let batch = g.dims()[..D - 2].to_vec();
        let grad = |x: Tensor<B, D>, y: Tensor<B, D>, i: usize| {
            if s.shapes[i][..D - 2] == batch[..] {
                B::gemm_as(x, y, s.bf16, s.dtypes[i].into())
            } else {
                sum_to(B::gemm(x, y, s.bf16), &s.shapes[i]).cast(s.dtypes[i])
            }
        };
        if let (Some(node), Some(b)) = (pa, s.b) {
            let da = grad(g.clone(), from_prim::<B, D>(b).transpose(), 0);
            grads.register::<B>(node.id, to_prim(da));
        }
        if let (Some(node), Some(a)) = (pb, s.a) {
            let db = grad(from_prim::<B, D>(a).transpose(), g.clone(), 1);
            grads.register::<B>(node.id, to_prim(db));
        }
        mark_prim::<B>(&to_prim(g), BWD_OTHER);
    }
}

/// A sum of `N` terms (`sum3_as`, `sum5_as`).
#[derive(Debug)]
struct SumTerms<const N: usize, const D: usize>;

impl<B: ModelBackend, const N: usize, const D: usize> Backward<B, N> for SumTerms<N, D> {
    /// The terms' shapes (a broadcast one's gradient is summed back to it) and dtypes.
    type State = ([Vec<usize>; N], [DType; N]);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (shapes, dtypes) = ops.state;
        let g = grads.consume::<B>(&ops.node);
        mark_prim::<B>(&g, "sum.bwd");
        let g: Tensor<B, D> = from_prim(g);
        // terms of the sum's own shape and of one dtype share one gradient (a parallel
        // residual's two bf16 branches: one cast of `g`, not two)
        let mut cast: Vec<(DType, Tensor<B, D>)> = Vec::new();
        for ((parent, shape), dtype) in ops.parents.into_iter().zip(&shapes).zip(dtypes) {
            let Some(node) = parent else { continue };
            let grad = if shape[..] != g.dims()[..] {
                sum_to(g.clone(), shape).cast(dtype)
            } else if let Some((_, t)) = cast.iter().find(|(d, _)| *d == dtype) {
                t.clone()
            } else {
                let t = g.clone().cast(dtype);
                cast.push((dtype, t.clone()));
                t
            };
            grads.register::<B>(node.id, to_prim(grad));
        }
        mark_prim::<B>(&to_prim(g), BWD_OTHER);
    }
}

#[derive(Debug)]
struct GeluBias<const D: usize>;

impl<B: ModelBackend, const D: usize> Backward<B, 2> for GeluBias<D> {
    /// The input (or its bf16 copy) and the bias.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, bias) = ops.state;
        let (x, bias): (Tensor<B, D>, Tensor<B, 1>) = (from_prim(x), from_prim(bias));
        let g = grads.consume::<B>(&ops.node);
        mark_prim::<B>(&g, "gelu.bwd");
        let dx = B::gelu_erf_bias_backward(x, bias.clone(), from_prim(g));
        let [px, pb] = ops.parents;
        if let Some(node) = pb {
            let n = bias.dims()[0];
            let db = dx.clone().reshape([-1, n as i32]).sum_dim(0).reshape([n]);
            grads.register::<B>(node.id, to_prim(db.cast(bias.dtype())));
        }
        let dx = done::<B>(to_prim(dx));
        if let Some(node) = px {
            grads.register::<B>(node.id, dx);
        }
    }
}

/// Record `op` as the graph node that computed `y` (on the inner backend) from `inputs`;
/// `state`, what its backward needs, is built only when a gradient is asked for.
fn record<B, C, O, const N: usize, const D: usize>(
    op: O,
    inputs: [&FloatTensor<Autodiff<B, C>>; N],
    y: Tensor<B, D>,
    state: impl FnOnce() -> O::State,
) -> Tensor<Autodiff<B, C>, D>
where
    B: ModelBackend,
    C: CheckpointStrategy,
    O: Backward<B, N>,
{
    let nodes = inputs.map(|t| t.node.clone());
    let y = to_prim(y);
    from_prim(match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    })
}

/// The matmul node of [`ModelBackend::gemm`] and [`ModelBackend::gemm_as`] (`out`).
fn gemm_node<B: ModelBackend, C: CheckpointStrategy, const D: usize>(
    a: Tensor<Autodiff<B, C>, D>,
    b: Tensor<Autodiff<B, C>, D>,
    bf16: bool,
    out: Option<FloatDType>,
) -> Tensor<Autodiff<B, C>, D> {
    let (a, b) = (to_prim(a), to_prim(b));
    let ai = from_prim::<B, D>(a.primitive.clone());
    let bi = from_prim::<B, D>(b.primitive.clone());
    let dtypes = [ai.dtype(), bi.dtype()];
    // bf16 factors rounded once, here: the backward products read the copies the forward one
    // did (the same numbers, without a cast kernel each for LoRA's A, B and x·A every layer)
    let (ai, bi) = (bf16_factor(ai, bf16), bf16_factor(bi, bf16));
    let y = match out {
        Some(out) => B::gemm_as(ai.clone(), bi.clone(), bf16, out),
        None => B::gemm(ai.clone(), bi.clone(), bf16),
    };
    let (keep_a, keep_b) = (!b.node.requirement.is_none(), !a.node.requirement.is_none());
    record(Gemm::<D>, [&a, &b], y, || GemmState {
        shapes: [ai.dims().to_vec(), bi.dims().to_vec()],
        dtypes,
        a: keep_a.then(|| to_prim(ai)),
        b: keep_b.then(|| to_prim(bi)),
        bf16,
    })
}

/// The inner tensors of autodiff `terms`, their shapes and dtypes.
#[allow(clippy::type_complexity)]
fn inner_terms<B: ModelBackend, C: CheckpointStrategy, const N: usize, const D: usize>(
    terms: &[FloatTensor<Autodiff<B, C>>; N],
) -> ([Tensor<B, D>; N], [Vec<usize>; N], [DType; N]) {
    let inner = terms
        .each_ref()
        .map(|t| from_prim::<B, D>(t.primitive.clone()));
    let shapes = inner.each_ref().map(|t| t.dims().to_vec());
    let dtypes = inner.each_ref().map(|t| t.dtype());
    (inner, shapes, dtypes)
}

impl<B: ModelBackend, C: CheckpointStrategy> ModelBackend for Autodiff<B, C> {
    const DEFERRED: bool = B::DEFERRED;
    const RUNNER_THREADS: usize = B::RUNNER_THREADS;

    fn mark(device: &Self::Device, label: &'static str) {
        B::mark(device, label);
    }

    fn qkv_attention(qkv: Tensor<Self, 4>, rope: &Rope<Self>, bf16: bool) -> Tensor<Self, 4> {
        let qkv = to_prim(qkv);
        let rope = rope.inner();
        let inner = from_prim::<B, 4>(qkv.primitive.clone());
        let dtype = inner.dtype();
        let (q, k, v, y) = if bf16 {
            // written in bf16 once: the forward matmuls and the state share them
            let (q, k, v) = B::split_qkv_rope_as(inner, &rope, FloatDType::BF16);
            let y = attend_in_blocks(q.clone(), k.clone(), v.clone(), causal_attention_bf16);
            (q, k, v, y)
        } else {
            let (q, k, v) = B::split_qkv_rope(inner, &rope);
            let y = attend_in_blocks(q.clone(), k.clone(), v.clone(), B::causal_attention);
            (q, k, v, y)
        };
        record(QkvAttention, [&qkv], y, || {
            (to_prim(q), to_prim(k), to_prim(v), rope, dtype)
        })
    }

    fn gelu_erf<const D: usize>(x: Tensor<Self, D>, bf16_stash: bool) -> Tensor<Self, D> {
        let x = to_prim(x);
        let inner = from_prim::<B, D>(x.primitive.clone());
        let y = B::gelu_erf(inner.clone(), false);
        record(Gelu::<D>, [&x], y, || stash(inner, bf16_stash))
    }

    fn layernorm<const D: usize>(
        x: Tensor<Self, D>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
        bf16_stash: bool,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        let (x, gamma, beta) = (to_prim(x), to_prim(gamma), to_prim(beta));
        let inner = from_prim::<B, D>(x.primitive.clone());
        let y = B::layernorm(
            inner.clone(),
            from_prim(gamma.primitive.clone()),
            from_prim(beta.primitive.clone()),
            epsilon,
            false,
            out,
        );
        record(LayerNorm::<D>, [&x, &gamma, &beta], y, || {
            (stash(inner, bf16_stash), gamma.primitive.clone(), epsilon)
        })
    }

    fn weighted_nll(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 3, Int>,
        weights: Tensor<Self, 3>,
    ) -> Tensor<Self, 1> {
        let dtype = logits.dtype().into();
        Self::weighted_nll_as(logits, targets, weights, dtype)
    }

    fn weighted_nll_as(
        logits: Tensor<Self, 3>,
        targets: Tensor<Self, 3, Int>,
        weights: Tensor<Self, 3>,
        grad: FloatDType,
    ) -> Tensor<Self, 1> {
        let logits = to_prim(logits);
        let targets = targets.into_primitive();
        let weights = to_prim(weights).primitive;
        let y = B::weighted_nll(
            from_prim(logits.primitive.clone()),
            Tensor::from_primitive(targets.clone()),
            from_prim(weights.clone()),
        );
        record(WeightedNll, [&logits], y, || {
            (logits.primitive.clone(), targets, weights, grad)
        })
    }

    /// One node: each term's gradient is the output's (summed over a bias's broadcast), in the
    /// term's dtype.
    fn sum3_as<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        c: Tensor<Self, D>,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        let terms = [a, b, c].map(to_prim);
        let (inner, shapes, dtypes) = inner_terms::<B, C, 3, D>(&terms);
        let [ia, ib, ic] = inner;
        let y = B::sum3_as(ia, ib, ic, out);
        record(SumTerms::<3, D>, terms.each_ref(), y, || (shapes, dtypes))
    }

    /// One node, as [`sum3_as`](Self::sum3_as).
    fn sum5_as<const D: usize>(terms: [Tensor<Self, D>; 5], out: FloatDType) -> Tensor<Self, D> {
        let terms = terms.map(to_prim);
        let (inner, shapes, dtypes) = inner_terms::<B, C, 5, D>(&terms);
        let y = B::sum5_as(inner, out);
        record(SumTerms::<5, D>, terms.each_ref(), y, || (shapes, dtypes))
    }

    fn stash_bf16<const D: usize>(h: Tensor<Self, D>) -> Tensor<Self, D> {
        let h = to_prim(h);
        let inner = from_prim::<B, D>(h.primitive.clone());
        let dtype = inner.dtype();
        record(StashBf16::<D>, [&h], inner.cast(FloatDType::BF16), || dtype)
    }

    /// One node whose backward reads the input (bf16 with `bf16_stash`) and the bias.
    fn gelu_erf_bias<const D: usize>(
        x: Tensor<Self, D>,
        bias: Tensor<Self, 1>,
        bf16_stash: bool,
    ) -> Tensor<Self, D> {
        let (x, bias) = (to_prim(x), to_prim(bias));
        let inner = from_prim::<B, D>(x.primitive.clone());
        let b = from_prim::<B, 1>(bias.primitive.clone());
        let y = B::gelu_erf_bias(inner.clone(), b.clone(), false);
        record(GeluBias::<D>, [&x, &bias], y, || {
            (stash(inner, bf16_stash), to_prim(b))
        })
    }

    /// One node whose backward products run as the forward one does (on cuBLAS on CUDA): the
    /// LoRA products, where burn's matmul node would multiply on CubeCL.
    fn gemm<const D: usize>(a: Tensor<Self, D>, b: Tensor<Self, D>, bf16: bool) -> Tensor<Self, D> {
        gemm_node(a, b, bf16, None)
    }

    /// As [`gemm`](Self::gemm), the product written in `out` (its gradient comes in `out`).
    fn gemm_as<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        bf16: bool,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        gemm_node(a, b, bf16, Some(out))
    }

    /// One node for a frozen weight, so the backward product runs as the forward one does (on
    /// cuBLAS on CUDA); a weight that trains takes burn's graph.
    fn base_matmul_as<const D: usize>(
        x: Tensor<Self, D>,
        w: Tensor<Self, 2>,
        out: FloatDType,
    ) -> Tensor<Self, D> {
        let w = to_prim(w);
        if !w.node.requirement.is_none() {
            return linear_in(x, from_prim(w)).cast(out);
        }
        let x = to_prim(x);
        let w = from_prim::<B, 2>(w.primitive);
        let inner = from_prim::<B, D>(x.primitive.clone());
        let dtype = inner.dtype();
        let y = B::base_matmul_as(inner, w.clone(), out);
        record(BaseMatmul::<D>, [&x], y, || (to_prim(w), dtype))
    }

    fn nf4_matmul<const D: usize>(x: Tensor<Self, D>, w: &Nf4Weight<Self>) -> Tensor<Self, D> {
        let x = to_prim(x);
        let w = w.clone().valid();
        let y = B::nf4_matmul(from_prim::<B, D>(x.primitive.clone()), &w);
        record(Nf4Matmul::<D>, [&x], y, || w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention_blocks::with_blocks;
    use crate::backend::{causal_probs, split_qkv};
    use burn::backend::Flex;
    use burn::tensor::TensorPrimitive;
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::{Distribution, Tolerance};

    type AD = Autodiff<Flex>;

    /// `x`, requiring a gradient when `on`.
    /// Each tracked tensor's gradient in `g` is its twin's in `rg` (shape, dtype, values); an
    /// untracked one has none.
    fn same_grads<const D: usize>(
        pairs: impl IntoIterator<Item = ((Tensor<AD, D>, Tensor<AD, D>), bool)>,
        g: &<AD as AutodiffBackend>::Gradients,
        rg: &<AD as AutodiffBackend>::Gradients,
    ) {
        for ((x, rx), on) in pairs {
            assert_eq!(x.grad(g).is_some(), on);
            if on {
                let (got, want) = (x.grad(g).unwrap(), rx.grad(rg).unwrap());
                assert_eq!(got.dims(), want.dims());
                assert_eq!(got.dtype(), want.dtype());
                got.into_data()
                    .assert_approx_eq::<f32>(&want.into_data(), Tolerance::default());
            }
        }
    }

    fn track<const D: usize>(x: &Tensor<AD, D>, on: bool) -> Tensor<AD, D> {
        if on {
            x.clone().require_grad()
        } else {
            x.clone()
        }
    }

    fn random(shape: [usize; 4], seed: u64) -> Tensor<AD, 4> {
        let _turn = crate::global_rng();
        <Flex as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// The fused node against autodiff through the slices, the rotary embedding (partial, as
    /// GPT-NeoX's) and the materialised softmax.
    #[test]
    fn qkv_attention_gradient_matches_the_materialised_graph() {
        against_the_materialised_graph(6);
    }

    /// The same in query blocks: 3 of 2, 2 and 3 queries (the keys they see grow, the key and
    /// value gradients are gathered over the blocks), and 2 of 3 and 4.
    #[test]
    fn qkv_attention_in_blocks_matches_the_materialised_graph() {
        for n in [3, 2] {
            with_blocks(n, 1, || against_the_materialised_graph(7));
        }
    }

    fn against_the_materialised_graph(t: usize) {
        let device = Default::default();
        let rope = Rope::<AD>::new(4, 8, 10000.0, 0, t, &device);
        let qkv0 = random([2, 3, t, 24], 1);
        let w = random([2, 3, t, 8], 4); // a loss that weighs every output differently
        let qkv = qkv0.clone().require_grad();
        let fused = AD::qkv_attention(qkv.clone(), &rope, false);
        let g = (fused.clone() * w.clone()).sum().backward();
        let rqkv = qkv0.require_grad();
        let (q, k, v) = split_qkv(rqkv.clone(), &rope);
        let reference = causal_probs(q, k, false).matmul(v);
        let rg = (reference.clone() * w).sum().backward();
        let tol = Tolerance::default();
        fused
            .into_data()
            .assert_approx_eq::<f32>(&reference.into_data(), tol);
        let (a, b) = (qkv.grad(&g).unwrap(), rqkv.grad(&rg).unwrap());
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), tol);
    }

    /// With `bf16`, the node's gradient against autodiff through the same bf16 products
    /// (burn's cast and matmul ops): far closer to it than the f32 node's gradient is, so the
    /// backward matmuls take bf16 factors as the forward ones do.
    #[test]
    fn bf16_attention_gradient_matches_the_bf16_graph() {
        let device = Default::default();
        let rope = Rope::<AD>::new(4, 8, 10000.0, 0, 6, &device);
        let (qkv0, w) = (random([2, 3, 6, 24], 31), random([2, 3, 6, 8], 32));
        let rx = qkv0.clone().require_grad();
        let (q, k, v) = split_qkv(rx.clone(), &rope);
        // the bf16 output (as the node's) read in f32
        let rg = (causal_attention_bf16(q, k, v).cast(FloatDType::F32) * w.clone())
            .sum()
            .backward();
        let reference = rx.grad(&rg).unwrap();
        let distance = |bf16: bool| {
            let x = qkv0.clone().require_grad();
            let y = AD::qkv_attention(x.clone(), &rope, bf16).cast(FloatDType::F32);
            let g = (y * w.clone()).sum().backward();
            (x.grad(&g).unwrap() - reference.clone())
                .abs()
                .mean()
                .into_scalar()
        };
        let (d16, d32) = (distance(true), distance(false));
        assert!(d32 > 0.0 && d16 < 0.05 * d32, "bf16 {d16}, f32 {d32}");
    }

    /// In bf16 and query blocks (3 of 2, 2 and 3 queries) the gradient is as far from the f32
    /// graph's as the whole sequence's bf16 gradient is: the blocks' key and value gradients
    /// are summed in f32 and rounded once more, not rounded at each block.
    #[test]
    fn bf16_attention_in_blocks_is_as_close_to_f32() {
        let device = Default::default();
        let rope = Rope::<AD>::new(4, 8, 10000.0, 0, 9, &device);
        let (qkv0, w) = (random([2, 3, 9, 24], 33), random([2, 3, 9, 8], 34));
        let rx = qkv0.clone().require_grad();
        let (q, k, v) = split_qkv(rx.clone(), &rope);
        let rg = (causal_probs(q, k, false).matmul(v) * w.clone())
            .sum()
            .backward();
        let truth = rx.grad(&rg).unwrap();
        let grad = || {
            let x = qkv0.clone().require_grad();
            let y = AD::qkv_attention(x.clone(), &rope, true).cast(FloatDType::F32);
            x.grad(&(y * w.clone()).sum().backward()).unwrap()
        };
        let distance =
            |a: Tensor<Flex, 4>, b: Tensor<Flex, 4>| -> f32 { (a - b).abs().mean().into_scalar() };
        let (whole, blocks) = (grad(), with_blocks(3, 1, grad));
        let (dw, db) = (
            distance(whole.clone(), truth.clone()),
            distance(blocks.clone(), truth),
        );
        assert!(dw > 0.0 && db < 1.2 * dw, "blocks {db}, whole {dw}");
        let apart = distance(blocks, whole);
        assert!(
            apart < 0.5 * dw,
            "blocks and whole {apart} apart, whole from f32 {dw}"
        );
    }

    /// Decoding after a cache (T < S): the backend's attention with the bottom-right causal mask.
    #[test]
    fn attention_after_a_cache_matches_the_materialised_softmax() {
        let (q, k, v) = (
            random([2, 3, 5, 4], 1),
            random([2, 3, 7, 4], 2),
            random([2, 3, 7, 4], 3),
        );
        let (q, k, v) = (q.inner(), k.inner(), v.inner());
        let fused = Flex::causal_attention(q.clone(), k.clone(), v.clone());
        let reference = causal_probs(q, k, false).matmul(v);
        fused
            .into_data()
            .assert_approx_eq::<f32>(&reference.into_data(), Tolerance::default());
    }

    #[test]
    fn gelu_gradient_matches_the_formula_graph() {
        let x0 = random([2, 3, 4, 5], 7) * 3.0;
        let w = random([2, 3, 4, 5], 8);
        let x = x0.clone().require_grad();
        let y = AD::gelu_erf(x.clone(), false);
        let g = (y.clone() * w.clone()).sum().backward();
        let rx = x0.require_grad();
        let r = rx.clone() * ((rx.clone() / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5;
        let rg = (r.clone() * w).sum().backward();
        y.into_data()
            .assert_approx_eq::<f32>(&r.into_data(), Tolerance::default());
        let (a, b) = (x.grad(&g).unwrap(), rx.grad(&rg).unwrap());
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::default());
    }

    #[test]
    fn gelu_bias_gradients_match_the_formula_graph() {
        let x0 = random([2, 3, 4, 5], 17) * 3.0;
        let b0: Tensor<AD, 1> = random([1, 1, 1, 5], 18).reshape([5]);
        let w = random([2, 3, 4, 5], 19);
        let (x, b) = (x0.clone().require_grad(), b0.clone().require_grad());
        let y = AD::gelu_erf_bias(x.clone(), b.clone(), false);
        let g = (y.clone() * w.clone()).sum().backward();
        let (rx, rb) = (x0.require_grad(), b0.require_grad());
        let z = rx.clone() + rb.clone().unsqueeze();
        let r = z.clone() * ((z / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5;
        let rg = (r.clone() * w).sum().backward();
        y.into_data()
            .assert_approx_eq::<f32>(&r.into_data(), Tolerance::default());
        x.grad(&g)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&rx.grad(&rg).unwrap().into_data(), Tolerance::default());
        b.grad(&g)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&rb.grad(&rg).unwrap().into_data(), Tolerance::default());
    }

    #[test]
    fn sum5_gradients_match_burns_sums() {
        let [a0, c0, e0, up] = [51, 52, 53, 54].map(|s| random([1, 2, 5, 6], s).reshape([2, 5, 6]));
        let [p0, q0] = [55, 56].map(|s| random([1, 1, 1, 6], s).reshape([1, 1, 6]));
        let terms = [&a0, &p0, &c0, &q0, &e0];
        let tracked = [true, true, false, true, true];
        let ts = [0, 1, 2, 3, 4].map(|i| track(terms[i], tracked[i]));
        let y = AD::sum5_as(ts.clone(), FloatDType::F32);
        let g = (y.clone() * up.clone()).sum().backward();
        let rs = [0, 1, 2, 3, 4].map(|i| track(terms[i], tracked[i]));
        let [ra, rp, rc, rq, re] = rs.clone();
        let r = (ra + rp) + (rc + rq) + re;
        let rg = (r.clone() * up).sum().backward();
        y.into_data()
            .assert_approx_eq::<f32>(&r.into_data(), Tolerance::default());
        same_grads(ts.into_iter().zip(rs).zip(tracked), &g, &rg);
    }

    #[test]
    fn sum3_gradients_match_burns_sums() {
        // a linear layer's product, a broadcast bias and a LoRA term in another dtype; the
        // terms of a residual; some untracked
        let a0: Tensor<AD, 3> = random([1, 2, 5, 6], 41).reshape([2, 5, 6]);
        let bias: Tensor<AD, 3> = random([1, 1, 1, 6], 42).reshape([1, 1, 6]);
        let full: Tensor<AD, 3> = random([1, 2, 5, 6], 43).reshape([2, 5, 6]);
        let c0: Tensor<AD, 3> = random([1, 2, 5, 6], 44).reshape([2, 5, 6]);
        let up: Tensor<AD, 3> = random([1, 2, 5, 6], 45).reshape([2, 5, 6]);
        for (b0, tracked) in [(&bias, [true, true, true]), (&full, [true, false, true])] {
            for c_dtype in [FloatDType::F32, FloatDType::BF16] {
                let c1 = c0.clone().cast(c_dtype);
                let [a, b, c] = [(&a0, 0), (b0, 1), (&c1, 2)].map(|(t, i)| track(t, tracked[i]));
                let y = AD::sum3_as(a.clone(), b.clone(), c.clone(), FloatDType::F32);
                let g = (y.clone() * up.clone()).sum().backward();
                let [ra, rb, rc] = [(&a0, 0), (b0, 1), (&c1, 2)].map(|(t, i)| track(t, tracked[i]));
                let r = ra.clone() + rb.clone() + rc.clone().cast(FloatDType::F32);
                let rg = (r.clone() * up.clone()).sum().backward();
                y.into_data()
                    .assert_approx_eq::<f32>(&r.into_data(), Tolerance::default());
                same_grads(
                    [(a, ra), (b, rb), (c, rc)].into_iter().zip(tracked),
                    &g,
                    &rg,
                );
            }
        }
    }

    #[test]
    fn gemm_gradients_match_burns_matmul() {
        // a LoRA product: a batch of inputs times a weight broadcast over the batch
        let a0: Tensor<AD, 3> = random([1, 3, 5, 6], 31).reshape([3, 5, 6]);
        let b0: Tensor<AD, 3> = random([1, 1, 6, 4], 32).reshape([1, 6, 4]);
        let up: Tensor<AD, 3> = random([1, 3, 5, 4], 33).reshape([3, 5, 4]);
        let cases = [
            (false, true, true),
            (false, false, true),
            (false, true, false),
            (true, true, true),
        ];
        for (bf16, ta, tb) in cases {
            let (a, b) = (track(&a0, ta), track(&b0, tb));
            let y = AD::gemm(a.clone(), b.clone(), bf16);
            let g = (y.clone() * up.clone()).sum().backward();
            let (ra, rb) = (track(&a0, ta), track(&b0, tb));
            let r = crate::backend::matmul(ra.clone(), rb.clone(), bf16);
            let rg = (r.clone() * up.clone()).sum().backward();
            y.into_data()
                .assert_approx_eq::<f32>(&r.into_data(), Tolerance::default());
            same_grads([((a, ra), ta), ((b, rb), tb)], &g, &rg);
        }
    }

    #[test]
    fn base_matmul_gradient_matches_burns_linear() {
        let x0: Tensor<AD, 3> = random([2, 3, 5, 6], 21).reshape([6, 5, 6]);
        let w0: Tensor<AD, 2> = random([1, 1, 6, 4], 22).reshape([6, 4]);
        let up: Tensor<AD, 3> = random([1, 6, 5, 4], 23).reshape([6, 5, 4]);
        for (bf16, w_trains) in [(false, false), (true, false), (false, true)] {
            let w = if bf16 {
                w0.clone().cast(FloatDType::BF16)
            } else {
                w0.clone()
            };
            // the node (frozen weight) or burn's graph (a weight that trains), against linear
            let (x, w1) = (x0.clone().require_grad(), track(&w, w_trains));
            let y = AD::base_matmul(x.clone(), w1.clone());
            let g = (y.clone() * up.clone()).sum().backward();
            let (rx, rw) = (x0.clone().require_grad(), track(&w, w_trains));
            let r = crate::backend::linear_in(rx.clone(), rw.clone());
            let rg = (r.clone() * up.clone()).sum().backward();
            assert_eq!(y.dtype(), DType::F32);
            y.into_data()
                .assert_approx_eq::<f32>(&r.into_data(), Tolerance::default());
            let (a, b) = (x.grad(&g).unwrap(), rx.grad(&rg).unwrap());
            a.into_data()
                .assert_approx_eq::<f32>(&b.into_data(), Tolerance::default());
            assert_eq!(w1.grad(&g).is_some(), w_trains);
            if w_trains {
                let (a, b) = (w1.grad(&g).unwrap(), rw.grad(&rg).unwrap());
                a.into_data()
                    .assert_approx_eq::<f32>(&b.into_data(), Tolerance::default());
            }
        }
    }

    #[test]
    fn layernorm_gradients_match_burns_graph() {
        let x0 = random([2, 3, 6, 8], 9) * 2.0 + 0.5;
        let w = random([2, 3, 6, 8], 10);
        let (g0, b0) = (
            random([1, 1, 1, 8], 11).reshape([8]),
            random([1, 1, 1, 8], 12).reshape([8]),
        );
        for tracked in [
            [true, true, true],
            [true, false, false],
            [false, true, true],
        ] {
            let inputs = || {
                let (x, g) = (track(&x0, tracked[0]), track(&g0, tracked[1]));
                (x, g, track(&b0, tracked[2]))
            };
            let (x, g, b) = inputs();
            let y = AD::layernorm(
                x.clone(),
                g.clone(),
                b.clone(),
                1e-5,
                false,
                FloatDType::F32,
            );
            let grads = (y.clone() * w.clone()).sum().backward();
            let (rx, rg, rb) = inputs();
            let r = Tensor::<AD, 4>::from_primitive(TensorPrimitive::Float(
                <AD as burn::tensor::ops::ModuleOps<AD>>::layer_norm(
                    rx.clone().into_primitive().tensor(),
                    rg.clone().into_primitive().tensor(),
                    Some(rb.clone().into_primitive().tensor()),
                    1e-5,
                ),
            ));
            let rgrads = (r.clone() * w.clone()).sum().backward();
            y.into_data()
                .assert_approx_eq::<f32>(&r.into_data(), Tolerance::default());
            if tracked[0] {
                let (a, e) = (x.grad(&grads).unwrap(), rx.grad(&rgrads).unwrap());
                a.into_data()
                    .assert_approx_eq::<f32>(&e.into_data(), Tolerance::default());
            }
            if tracked[1] {
                let (a, e) = (g.grad(&grads).unwrap(), rg.grad(&rgrads).unwrap());
                a.into_data()
                    .assert_approx_eq::<f32>(&e.into_data(), Tolerance::default());
                let (a, e) = (b.grad(&grads).unwrap(), rb.grad(&rgrads).unwrap());
                a.into_data()
                    .assert_approx_eq::<f32>(&e.into_data(), Tolerance::default());
            }
        }
    }

    #[test]
    fn nll_gradient_matches_the_log_softmax_graph() {
        let device = Default::default();
        let logits0 = random([2, 3, 1, 5], 13).reshape([2, 3, 5]) * 4.0;
        let targets = Tensor::<AD, 3, Int>::from_data(
            burn::tensor::TensorData::new(vec![4i64, 0, 2, 1, 1, 3], [2, 3, 1]),
            &device,
        );
        let weights = Tensor::<AD, 3>::from_data(
            burn::tensor::TensorData::new(vec![1.0f32, 0.0, 1.0, 1.0, 1.0, 0.0], [2, 3, 1]),
            &device,
        );
        let x = logits0.clone().require_grad();
        let y = AD::weighted_nll(x.clone(), targets.clone(), weights.clone()) * 0.7;
        let g = y.clone().backward();
        let rx = logits0.require_grad();
        let picked = burn::tensor::activation::log_softmax(rx.clone(), 2).gather(2, targets);
        let r = (picked * weights).sum().neg() * 0.7;
        let rg = r.clone().backward();
        y.into_data()
            .assert_approx_eq::<f32>(&r.into_data(), Tolerance::default());
        let (a, b) = (x.grad(&g).unwrap(), rx.grad(&rg).unwrap());
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::default());
    }

    /// Within bf16's precision of `exact` (relative to its largest value) and not equal to it.
    fn bf16_close(got: Tensor<Flex, 4>, exact: Tensor<Flex, 4>) {
        let scale = exact.clone().abs().max().into_scalar();
        let err = (got - exact).abs().max().into_scalar();
        assert!(err > 0.0, "the bf16 stash changed nothing");
        assert!(err <= 2e-2 * scale, "error {err} against {scale}");
    }

    /// With `bf16` attention multiplies bf16 factors and the kept inputs are rounded to bf16:
    /// outputs and gradients stay within bf16's precision of the f32 ones.
    #[test]
    fn bf16_stash_keeps_gradients_close() {
        let device = Default::default();
        let rope = Rope::<AD>::new(4, 8, 10000.0, 0, 6, &device);
        let (x0, w) = (random([2, 3, 6, 24], 21), random([2, 3, 6, 8], 22));
        let attention = |bf16: bool| {
            let x = x0.clone().require_grad();
            // bf16's output is bf16: read in f32
            let y = AD::qkv_attention(x.clone(), &rope, bf16).cast(FloatDType::F32);
            let g = (y.clone() * w.clone()).sum().backward();
            (y.inner(), x.grad(&g).unwrap())
        };
        // bf16 also multiplies in bf16, forward and backward, with or without autodiff
        let ((y16, g16), (y32, g32)) = (attention(true), attention(false));
        let plain =
            Flex::qkv_attention(x0.clone().inner(), &rope.inner(), true).cast(FloatDType::F32);
        plain.into_data().assert_eq(&y16.clone().into_data(), true);
        bf16_close(y16, y32);
        bf16_close(g16, g32);
        let w = random([2, 3, 6, 24], 23);
        let gelu = |bf16: bool| {
            let x = (x0.clone() * 2.0).require_grad();
            let g = (AD::gelu_erf(x.clone(), bf16) * w.clone()).sum().backward();
            x.grad(&g).unwrap()
        };
        bf16_close(gelu(true), gelu(false));
        let (gamma, beta) = (
            random([1, 1, 1, 24], 24).reshape([24]),
            random([1, 1, 1, 24], 25).reshape([24]),
        );
        let norm = |bf16: bool| {
            let x = (x0.clone() + 0.5).require_grad();
            let y = AD::layernorm(
                x.clone(),
                gamma.clone(),
                beta.clone(),
                1e-5,
                bf16,
                FloatDType::F32,
            );
            let g = (y * w.clone()).sum().backward();
            x.grad(&g).unwrap()
        };
        bf16_close(norm(true), norm(false));
    }
}
