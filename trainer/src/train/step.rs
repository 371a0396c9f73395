//! Forward and backward of one micro-batch, layer by layer, optionally with per-layer activation
//! checkpointing (`--grad-checkpointing`, what HF's `gradient_checkpointing_enable` does).
//!
//! Without checkpointing, one autodiff graph spans the whole model. With it, the forward pass
//! keeps only each layer's input (no graph); the backward pass then walks the layers from the
//! top, recomputes one layer with a graph, and back-propagates the gradient of its output
//! through it, so the stored activations of a single layer are alive at any time. Dropout masks
//! are reproduced in the recomputation because each layer's masks are drawn from a seed of the
//! layer's own (`shared::dropout_seed`, per thread), in both modes (so both modes draw the same
//! masks, and replicas on threads of their own draw them as one thread would).

use burn::module::Module;
use burn::tensor::Tensor;
use shared::GptNeoxForCausalLM;
use shared::TrainBackend;
use shared::dropout_seed;
use shared::loss::causal_lm_nll_sum_as;

use super::batch::Batch;
use super::optim::GradSum;

/// The dropout seed of `layer` within a micro-batch seeded `seed`.
fn layer_seed(seed: u64, layer: usize) -> u64 {
    seed ^ (layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Run `batch` forward and backward; add the gradients of `loss_scale` × (summed token NLL) to
/// `grads` and return that scaled loss. `seed` seeds the dropout of this micro-batch.
pub fn forward_backward<AB: TrainBackend>(
    model: &GptNeoxForCausalLM<AB>,
    batch: Batch<AB>,
    loss_scale: f64,
    seed: u64,
    recompute: bool,
    grads: &mut GradSum<AB::InnerBackend>,
) -> Tensor<AB::InnerBackend, 1> {
    let device = batch.ids.device();
    let t = batch.ids.dims()[1];
    let rope = model.rope(0, t, &device);
    let embedded = model.gpt_neox.embed_in.forward(batch.ids);
    // the logits' gradient in the head's dtype: a bf16 head multiplies it in bf16 anyway
    let head = model.embed_out.weight.compute_dtype();
    let layers = &model.gpt_neox.layers;
    if !recompute {
        let mut h = embedded;
        for (l, layer) in layers.iter().enumerate() {
            dropout_seed::seed_layer(layer_seed(seed, l));
            h = layer.forward(h, &rope, None);
        }
        let (sum, _) = causal_lm_nll_sum_as(model.head(h), &batch.labels, head);
        dropout_seed::clear();
        let loss = sum * loss_scale;
        grads.add(model, &loss.backward());
        return loss.inner();
    }
    // Forward: keep each layer's input and nothing else. The layer runs with its weights
    // detached, so autodiff records nothing (burn frees unreachable graph nodes only at the
    // next backward), while dropout still draws its masks.
    let mut inputs: Vec<Tensor<AB::InnerBackend, 3>> = Vec::with_capacity(layers.len() + 1);
    inputs.push(embedded.clone().inner());
    for (l, layer) in layers.iter().enumerate() {
        dropout_seed::seed_layer(layer_seed(seed, l));
        let x = Tensor::from_inner(inputs[l].clone());
        inputs.push(layer.clone().no_grad().forward(x, &rope, None).inner());
    }
    // The head and the loss.
    let top = Tensor::<AB, 3>::from_inner(inputs.pop().expect("the last output")).require_grad();
    let (sum, _) = causal_lm_nll_sum_as(model.head(top.clone()), &batch.labels, head);
    let loss = sum * loss_scale;
    let g = loss.backward();
    grads.add(model, &g);
    let mut grad_out = top.grad(&g).expect("the loss depends on the last layer");
    // Backward through each layer, recomputed from its saved input.
    for (l, layer) in layers.iter().enumerate().rev() {
        dropout_seed::seed_layer(layer_seed(seed, l));
        let x =
            Tensor::<AB, 3>::from_inner(inputs.pop().expect("one input per layer")).require_grad();
        let y = layer.forward(x.clone(), &rope, None);
        let g = (y * Tensor::from_inner(grad_out)).sum().backward();
        grads.add(model, &g);
        grad_out = x.grad(&g).expect("a layer's output depends on its input");
    }
    dropout_seed::clear();
    // The embedding, if it is trained (pretraining).
    if model.gpt_neox.embed_in.weight.is_require_grad() {
        let g = (embedded * Tensor::from_inner(grad_out)).sum().backward();
        grads.add(model, &g);
    }
    loss.inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::batch::collate;
    use burn::backend::{Autodiff, Flex};
    use burn::module::{ModuleMapper, Param};
    use shared::GptNeoxConfig;
    use shared::example::Example;
    use shared::lora::{LoraConfig, TargetModules};

    /// burn's backend RNG is global: tests that seed it take turns.
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn model<AB: TrainBackend>(device: &AB::Device) -> GptNeoxForCausalLM<AB> {
        let config = GptNeoxConfig::from_hf_json(
            r#"{"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 3,
                "num_attention_heads": 4, "intermediate_size": 64, "rotary_pct": 0.5}"#,
        )
        .unwrap();
        GptNeoxForCausalLM::init(&config, 0.05, 7, device)
    }

    type Grads = Vec<(String, Vec<f32>)>;

    /// Loss and gradients of one micro-batch.
    fn run<AB: TrainBackend>(
        m: &GptNeoxForCausalLM<AB>,
        device: &AB::Device,
        seed: u64,
        recompute: bool,
    ) -> (f32, Grads) {
        let ex: Vec<Example> = (0..2)
            .map(|b| Example::lm((0..10).map(|i| ((i * 5 + b * 11) % 64) as u32).collect()))
            .collect();
        let refs: Vec<&Example> = ex.iter().collect();
        let batch = collate::<AB>(&refs, 0, device);
        let mut grads = GradSum::default();
        let loss = forward_backward(m, batch, 0.1, seed, recompute, &mut grads);
        let mut g: Grads = grads
            .grads
            .into_iter()
            .map(|(k, v)| (k, v.into_data().to_vec().unwrap()))
            .collect();
        g.sort_by(|a, b| a.0.cmp(&b.0));
        (loss.into_data().to_vec::<f32>().unwrap()[0], g)
    }

    fn assert_close(a: &Grads, b: &Grads) {
        assert_eq!(a.len(), b.len());
        for ((ka, va), (kb, vb)) in a.iter().zip(b) {
            assert_eq!(ka, kb);
            for (x, y) in va.iter().zip(vb) {
                assert!((x - y).abs() <= 1e-5 + 1e-4 * x.abs(), "{ka}: {x} vs {y}");
            }
        }
    }

    /// Every weight trained, the embedding included (pretraining): the same loss and gradients
    /// with and without recomputation.
    fn full_training<AB: TrainBackend>(device: &AB::Device) {
        let _turn = RNG.lock().unwrap_or_else(|e| e.into_inner());
        let m = model::<AB>(device);
        let (la, ga) = run(&m, device, 1, false);
        let (lb, gb) = run(&m, device, 1, true);
        assert!((la - lb).abs() <= 1e-6 * la.abs(), "{la} vs {lb}");
        assert!(ga.iter().any(|(k, _)| k == "gpt_neox.embed_in.weight"));
        assert!(ga.iter().any(|(k, _)| k == "embed_out.weight"));
        assert_eq!(ga.len(), 1 + 12 * 3 + 2 + 1, "every weight and bias");
        assert_close(&ga, &gb);
    }

    /// LoRA with dropout on every linear: the recomputed layers draw the first pass's masks.
    fn lora_dropout<AB: TrainBackend>(device: &AB::Device) {
        let _turn = RNG.lock().unwrap_or_else(|e| e.into_inner());
        let mut m = model::<AB>(device);
        let lora = LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.5,
            target_modules: TargetModules::Regex(".*".into()),
            use_rslora: false,
        };
        m.attach_lora(&lora, 3, device);
        // LoRA B starts at zero, which would hide A's dropout from the loss: set it to 0.1.
        let m = m.map(&mut NonZeroB);
        let (_, ga) = run(&m, device, 1, false);
        let (_, gb) = run(&m, device, 1, true);
        assert_eq!(
            ga.len(),
            3 * 4 * 2,
            "lora_A and lora_B of 4 linears in 3 layers"
        );
        assert_close(&ga, &gb);
        // Another seed draws other masks: the comparison above can fail.
        let (_, gc) = run(&m, device, 2, true);
        assert!(ga.iter().zip(&gc).any(|(a, c)| a.1 != c.1));
    }

    /// Sets every trainable parameter (here `lora_A` and `lora_B`) to 0.1.
    struct NonZeroB;
    impl<AB: TrainBackend> ModuleMapper<AB> for NonZeroB {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
            if p.is_require_grad() {
                let (id, t, mapper) = p.consume();
                let t = (t.zeros_like() + 0.1).detach().require_grad();
                Param::from_mapped_value(id, t, mapper)
            } else {
                p
            }
        }
    }

    #[test]
    fn recomputed_layers_give_the_full_graph_gradients() {
        full_training::<Autodiff<Flex>>(&Default::default());
    }

    #[test]
    fn recomputation_redraws_the_same_dropout_masks() {
        lora_dropout::<Autodiff<Flex>>(&Default::default());
    }

    /// The same on burn's wgpu backend (CubeCL kernels, as CUDA's; lavapipe runs them on a CPU).
    #[cfg(feature = "wgpu")]
    mod wgpu {
        type AB = burn::backend::Autodiff<burn::backend::Wgpu<f32, i32>>;

        #[test]
        fn recomputed_layers_give_the_full_graph_gradients() {
            super::full_training::<AB>(&Default::default());
        }

        #[test]
        fn recomputation_redraws_the_same_dropout_masks() {
            super::lora_dropout::<AB>(&Default::default());
        }
    }
}
