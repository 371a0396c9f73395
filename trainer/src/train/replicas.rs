//! Data parallel replicas: one copy of the model and one AdamW per device, kept identical.
//!
//! Each replica is forked onto its device once, base weights included. Every step, the
//! devices' gradient sums are all-reduced (added on the first device, and the sum is copied
//! back to every device), and each device applies the same AdamW update to its own copy. Only
//! gradients cross devices, never weights: for LoRA that is a few MB per step whatever the
//! size of the frozen base. The replicas stay bit-identical because they apply identical
//! updates with identical kernels.

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use shared::GptNeoxForCausalLM;

use super::optim::{AdamW, GradSum};

pub struct Replicas<AB: AutodiffBackend> {
    /// `models[j]` lives on `devices[j]`; `models[0]` is the one evaluated and saved.
    models: Vec<GptNeoxForCausalLM<AB>>,
    opts: Vec<AdamW<AB::InnerBackend>>,
    devices: Vec<AB::Device>,
}

impl<AB: AutodiffBackend> Replicas<AB> {
    /// Fork `model` (already on `devices[0]`) onto every other device. `opt` makes the AdamW
    /// of each device (a fresh one, or one loaded from a checkpoint onto that device).
    pub fn new(
        model: GptNeoxForCausalLM<AB>,
        devices: &[AB::Device],
        mut opt: impl FnMut(&AB::Device) -> anyhow::Result<AdamW<AB::InnerBackend>>,
    ) -> anyhow::Result<Self> {
        let mut models = Vec::with_capacity(devices.len());
        for d in &devices[1..] {
            models.push(model.clone().fork(d));
        }
        models.insert(0, model);
        let opts = devices
            .iter()
            .map(&mut opt)
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            models,
            opts,
            devices: devices.to_vec(),
        })
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    pub fn model(&self, j: usize) -> &GptNeoxForCausalLM<AB> {
        &self.models[j]
    }

    pub fn device(&self, j: usize) -> &AB::Device {
        &self.devices[j]
    }

    /// The first device's copy and optimizer (what checkpoints hold).
    pub fn primary(&self) -> (&GptNeoxForCausalLM<AB>, &AdamW<AB::InnerBackend>) {
        (&self.models[0], &self.opts[0])
    }

    pub fn into_primary(mut self) -> GptNeoxForCausalLM<AB> {
        self.models.swap_remove(0)
    }

    /// Sum the per-device gradient sums onto the first device (the reduce half of the
    /// all-reduce). `sums[j]` must hold device `j`'s gradients.
    pub fn reduce(&self, sums: Vec<GradSum<AB::InnerBackend>>) -> GradSum<AB::InnerBackend> {
        let mut it = sums.into_iter();
        let mut total = it.next().unwrap_or_default();
        for other in it {
            total.merge(other, &self.devices[0]);
        }
        total
    }

    /// Copy `total` to every device (the broadcast half) and apply the same AdamW step on each.
    pub fn step(&mut self, total: GradSum<AB::InnerBackend>, lr: f64, grad_scale: f64) {
        let mut per_device = Vec::with_capacity(self.len());
        for d in &self.devices[1..] {
            per_device.push(total.to_device(d));
        }
        per_device.insert(0, total);
        let models = std::mem::take(&mut self.models);
        self.models = models
            .into_iter()
            .zip(self.opts.iter_mut())
            .zip(per_device.iter())
            .map(|((m, opt), g)| opt.step(m, g, lr, grad_scale))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::batch::collate;
    use crate::train::optim::AdamWConfig;
    use burn::backend::{Autodiff, Flex};
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;
    use shared::GptNeoxConfig;
    use shared::example::Example;
    use shared::lora::{LoraConfig, TargetModules};
    use shared::loss::causal_lm_nll_sum;

    type AB = Autodiff<Flex>;

    /// Every trainable parameter, flattened, in visiting order.
    struct Trainable(Vec<Vec<f32>>);
    impl ModuleVisitor<AB> for Trainable {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AB, D>>) {
            if p.is_require_grad() {
                self.0.push(p.val().into_data().to_vec().unwrap());
            }
        }
    }
    fn trainable(m: &GptNeoxForCausalLM<AB>) -> Vec<Vec<f32>> {
        let mut v = Trainable(Vec::new());
        m.visit(&mut v);
        v.0
    }

    #[test]
    fn replicas_apply_one_update_and_stay_identical() {
        let config = GptNeoxConfig::from_hf_json(
            r#"{"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 64, "rotary_pct": 0.5}"#,
        )
        .unwrap();
        let device = Default::default();
        let mut model = GptNeoxForCausalLM::<AB>::init(&config, 0.02, 1, &device);
        let lora = LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: TargetModules::List(vec!["query_key_value".into()]),
            use_rslora: false,
        };
        model.attach_lora(&lora, 2, &device);
        let before = trainable(&model);
        // Two "devices" (the one CPU device twice), each with its own slice of the batch.
        let mut reps = Replicas::new(model, &[device, device], |_| {
            Ok(AdamW::new(AdamWConfig::default()))
        })
        .unwrap();
        for step in 0..3 {
            let mut sums = Vec::new();
            for j in 0..2 {
                let ex = Example::lm(
                    (0..12)
                        .map(|i| ((i * 7 + j * 13 + step) % 64) as u32)
                        .collect(),
                );
                let b = collate::<AB>(&[&ex], 0, &device);
                let (loss, _) = causal_lm_nll_sum(reps.model(j).forward(b.ids, None), &b.labels);
                let mut s = GradSum::default();
                s.add(reps.model(j), &loss.backward());
                sums.push(s);
            }
            let total = reps.reduce(sums);
            reps.step(total, 1e-2, 1.0);
        }
        let (a, b) = (trainable(reps.model(0)), trainable(reps.model(1)));
        assert_eq!(a.len(), 4, "lora_A and lora_B of two layers");
        assert_eq!(a, b, "the replicas drifted apart");
        assert_ne!(a, before, "no update was applied");
    }
}
