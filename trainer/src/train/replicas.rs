//! Data parallel replicas: one copy of the model and one AdamW per device, kept identical.
//!
//! Each replica is copied onto its device once, base weights included. Every step, the
//! devices' gradient sums are all-reduced (added on the first device, and the sum is copied
//! back to every device), and each device applies the same AdamW update to its own copy. Only
//! gradients cross devices, never weights: for LoRA that is a few MB per step whatever the
//! size of the frozen base. The replicas stay bit-identical because they apply identical
//! updates with identical kernels.
//!
//! Each device's forward and backward passes are queued from a thread of its own
//! ([`Replicas::each_device`]): the host's share of a step (autodiff and kernel launches, some
//! 15 ms at the 1.3B shape) would otherwise add up over the devices, one after another, while
//! the first devices' GPUs wait for the next step.
//!
//! Copies between devices go through host memory, each device's gradients as one flat block.
//! burn 0.21 moves tensors between CubeCL devices with collective send/recv instead: NCCL on
//! CUDA (a library that must then be found at run time) and not implemented on wgpu, where it
//! panics. A few MB through the host cost milliseconds, and the devices must all be done with
//! their backward pass before the step anyway.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, Bool, Int, Tensor};
use shared::GptNeoxForCausalLM;
use shared::TrainBackend;

use super::optim::{AdamW, FlatGrads, GradSum};

pub struct Replicas<AB: TrainBackend> {
    /// `models[j]` lives on `devices[j]`; `models[0]` is the one evaluated and saved.
    models: Vec<GptNeoxForCausalLM<AB>>,
    opts: Vec<AdamW<AB::InnerBackend>>,
    devices: Vec<AB::Device>,
    /// Whether [`each_device`](Self::each_device) runs the replicas on threads of their own.
    threads: bool,
}

/// Copies every parameter to a device through host memory, keeping ids, `require_grad` and
/// dtypes (`from_data` with a device alone would make a bf16 base f32 on the other devices).
struct CopyTo<'a, B: Backend> {
    device: &'a B::Device,
}

/// `t` on `device` (of the same backend or another), through host memory, in its own dtype.
pub(crate) fn copy_to<A: Backend, B: Backend, const D: usize, K: BasicOps<A> + BasicOps<B>>(
    t: Tensor<A, D, K>,
    device: &B::Device,
) -> Tensor<B, D, K> {
    let data = t.into_data();
    let dtype = data.dtype;
    Tensor::from_data(data, (device, dtype))
}

impl<B: Backend> ModuleMapper<B> for CopyTo<'_, B> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        p.map(|t| {
            let grad = t.is_require_grad();
            let t = copy_to(t, self.device);
            if grad { t.require_grad() } else { t }
        })
    }
    fn map_int<const D: usize>(&mut self, p: Param<Tensor<B, D, Int>>) -> Param<Tensor<B, D, Int>> {
        p.map(|t| copy_to(t, self.device))
    }
    fn map_bool<const D: usize>(
        &mut self,
        p: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        p.map(|t| Tensor::from_data(t.into_data(), self.device))
    }
}

/// Whether [`Replicas::each_device`] can run `devices` replicas on threads of their own: not
/// where ops run later than they are called (burn-fusion, `shared::ModelBackend::DEFERRED`).
fn can_thread<AB: TrainBackend>(devices: usize) -> bool {
    devices > 1 && !AB::DEFERRED
}

/// Whether [`Replicas::each_device`] runs `devices` replicas on threads of their own:
/// `LAW_POLYGLOT_REPLICAS=threads` or `sequential`, and by default where the machine has a core
/// for each replica's thread and each of the backend's own (`ModelBackend::RUNNER_THREADS`):
/// two a device on CubeCL, one on the CPU. A CubeCL device's runner thread and the thread that
/// queues its work spin while they wait for each other: with fewer cores, threads that wait
/// for a core make every step slower (5× at 2 devices on 2 cores, under tools/fake-cuda).
fn parallel<AB: TrainBackend>(devices: usize) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    can_thread::<AB>(devices)
        && match std::env::var(REPLICAS_ENV).as_deref() {
            Ok("sequential") => false,
            Ok("threads") => true,
            _ => cores >= devices * (1 + AB::RUNNER_THREADS),
        }
}

/// `threads` or `sequential` ([`parallel`]).
const REPLICAS_ENV: &str = "LAW_POLYGLOT_REPLICAS";

impl<AB: TrainBackend> Replicas<AB> {
    /// Copy `model` (already on `devices[0]`) onto every other device. `opt` makes the AdamW
    /// of each device (a fresh one, or one loaded from a checkpoint onto that device).
    pub fn new(
        model: GptNeoxForCausalLM<AB>,
        devices: &[AB::Device],
        mut opt: impl FnMut(&AB::Device) -> anyhow::Result<AdamW<AB::InnerBackend>>,
    ) -> anyhow::Result<Self> {
        let mut models = Vec::with_capacity(devices.len());
        for d in &devices[1..] {
            models.push(if d == &devices[0] {
                model.clone().fork(d)
            } else {
                model.clone().map(&mut CopyTo { device: d })
            });
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
            threads: parallel::<AB>(devices.len()),
        })
    }

    /// Whether the replicas run on threads of their own ([`each_device`](Self::each_device)).
    pub fn threads(&self) -> bool {
        self.threads
    }

    /// The same replicas, on threads of their own or not (`threads` is ignored where
    /// [`each_device`](Self::each_device) says they cannot be).
    pub fn with_threads(mut self, threads: bool) -> Self {
        self.threads = threads && can_thread::<AB>(self.models.len());
        self
    }

    pub fn model(&self, j: usize) -> &GptNeoxForCausalLM<AB> {
        &self.models[j]
    }

    /// The first device's copy and optimizer (what checkpoints hold).
    pub fn primary(&self) -> (&GptNeoxForCausalLM<AB>, &AdamW<AB::InnerBackend>) {
        (&self.models[0], &self.opts[0])
    }

    /// Copies of [`primary`](Self::primary)'s model and optimizer as they are now: handles to
    /// the same tensors (no copy), which later steps replace rather than change.
    pub fn primary_snapshot(&self) -> (GptNeoxForCausalLM<AB>, AdamW<AB::InnerBackend>) {
        (self.models[0].clone(), self.opts[0].clone())
    }

    pub fn into_primary(mut self) -> GptNeoxForCausalLM<AB> {
        self.models.swap_remove(0)
    }

    /// `work(model_j, items_j)` for every device `j`, all at once: a thread per device (the
    /// first device's on this one), so that one device's host work (autodiff, kernel launches)
    /// does not wait for another's. Each thread queues its device's work on this thread's
    /// CubeCL stream (`shared::stream`: a device keeps one stream, as when this thread queues
    /// it all); the results are returned in device order. Dropout masks are seeded per thread
    /// (`shared::dropout_seed`), so the masks, and so the results, do not depend on the
    /// threads' timing. Otherwise ([`parallel`], [`with_threads`](Self::with_threads)) the
    /// devices run one after another on this thread.
    pub fn each_device<T: Send, R: Send>(
        &self,
        items: Vec<T>,
        work: impl Fn(&GptNeoxForCausalLM<AB>, T) -> R + Sync,
    ) -> Vec<R> {
        assert_eq!(items.len(), self.models.len(), "one item per device");
        if !self.threads {
            return self
                .models
                .iter()
                .zip(items)
                .map(|(m, t)| work(m, t))
                .collect();
        }
        let work = &work;
        // each device's work on the stream this thread queues it on the rest of the time
        let stream = shared::stream::Stream::current();
        std::thread::scope(|s| {
            let mut items = items.into_iter();
            let first = items.next().expect("at least one device");
            let others: Vec<_> = self.models[1..]
                .iter()
                .zip(items)
                .enumerate()
                .map(|(j, (m, t))| {
                    std::thread::Builder::new()
                        .name(format!("replica-{}", j + 1))
                        .spawn_scoped(s, move || stream.run(|| work(m, t)))
                        .expect("a thread for a replica")
                })
                .collect();
            let mut out = vec![work(&self.models[0], first)];
            out.extend(others.into_iter().map(|h| match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }));
            out
        })
    }

    /// Sum the per-device gradient sums onto the first device (the reduce half of the
    /// all-reduce), as one flat block per device. `sums[j]` holds device `j`'s gradients; a
    /// device that had no examples this step has an empty one. `None` when no device has any.
    pub fn reduce(
        &self,
        sums: Vec<GradSum<AB::InnerBackend>>,
    ) -> Option<FlatGrads<AB::InnerBackend>> {
        let mut flats = sums.iter().filter_map(GradSum::flatten);
        let mut total = flats.next()?;
        if total.flat.device() != self.devices[0] {
            total = total.to_device(&self.devices[0]);
        }
        for other in flats {
            assert_eq!(
                other.layout, total.layout,
                "every device computes the same gradients"
            );
            total.flat = total.flat + other.to_device(&self.devices[0]).flat;
        }
        Some(total)
    }

    /// Copy `total` to every device (the broadcast half) and apply the same AdamW step on each.
    pub fn step(&mut self, total: FlatGrads<AB::InnerBackend>, lr: f64) {
        let mut per_device = Vec::with_capacity(self.devices.len());
        if self.devices.len() > 1 {
            let data = total.flat.clone().into_data();
            for d in &self.devices[1..] {
                per_device.push(FlatGrads {
                    layout: total.layout.clone(),
                    flat: Tensor::from_data(data.clone(), d),
                });
            }
        }
        per_device.insert(0, total);
        let models = std::mem::take(&mut self.models);
        self.models = models
            .into_iter()
            .zip(self.opts.iter_mut())
            .zip(per_device.iter())
            .map(|((m, opt), g)| opt.step(m, g, lr))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::batch::collate;
    use crate::train::optim::AdamWConfig;
    use crate::train::step::forward_backward;
    use burn::backend::{Autodiff, Flex};
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;
    use shared::GptNeoxConfig;
    use shared::example::Example;
    use shared::lora::{LoraConfig, TargetModules};
    use shared::loss::causal_lm_nll_sum;

    /// Every trainable parameter, flattened, in visiting order.
    struct Trainable(Vec<Vec<f32>>);
    impl<AB: TrainBackend> ModuleVisitor<AB> for Trainable {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AB, D>>) {
            if p.is_require_grad() {
                self.0.push(p.val().into_data().to_vec().unwrap());
            }
        }
    }
    fn trainable<AB: TrainBackend>(m: &GptNeoxForCausalLM<AB>) -> Vec<Vec<f32>> {
        let mut v = Trainable(Vec::new());
        m.visit(&mut v);
        v.0
    }

    /// A 2-layer model with LoRA r4 on `targets`, dropout `dropout`, seeded.
    fn small_model<AB: TrainBackend>(
        dropout: f64,
        targets: TargetModules,
        device: &AB::Device,
    ) -> GptNeoxForCausalLM<AB> {
        let config = GptNeoxConfig::from_hf_json(
            r#"{"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 64, "rotary_pct": 0.5}"#,
        )
        .unwrap();
        let mut model = GptNeoxForCausalLM::<AB>::init(&config, 0.02, 1, device);
        let lora = LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout,
            target_modules: targets,
            use_rslora: false,
        };
        model.attach_lora(&lora, 2, device);
        model
    }

    /// Three data-parallel steps over `devices` (each its own slice of the batch, from a thread
    /// of its own): the replicas end bit-identical and updated. Returns the first replica's
    /// trainable weights.
    fn three_steps<AB: TrainBackend>(devices: &[AB::Device]) -> Vec<Vec<f32>> {
        let qkv = TargetModules::List(vec!["query_key_value".into()]);
        let model = small_model::<AB>(0.0, qkv, &devices[0]);
        let before = trainable(&model);
        // each device from a thread of its own
        let mut reps = Replicas::new(model, devices, |_| Ok(AdamW::new(AdamWConfig::default())))
            .unwrap()
            .with_threads(true);
        for step in 0..3 {
            let items: Vec<_> = devices.iter().enumerate().collect();
            let sums = reps.each_device(items, |m, (j, device)| {
                let ex = Example::lm(
                    (0..12)
                        .map(|i| ((i * 7 + j * 13 + step) % 64) as u32)
                        .collect(),
                );
                let b = collate::<AB>(&[&ex], 0, device);
                let (loss, _) = causal_lm_nll_sum(m.forward(b.ids, None), &b.labels);
                let mut s = GradSum::default();
                s.add(m, &loss.backward());
                s
            });
            let total = reps.reduce(sums).unwrap();
            reps.step(total, 1e-2);
        }
        let first = trainable(reps.model(0));
        assert_eq!(first.len(), 4, "lora_A and lora_B of two layers");
        for j in 1..devices.len() {
            assert_eq!(first, trainable(reps.model(j)), "replica {j} drifted apart");
        }
        assert_ne!(first, before, "no update was applied");
        first
    }

    /// Three steps of `forward_backward` on two CPU replicas with LoRA dropout 0.5 on every
    /// linear (several masks a layer), each device its own example and seed (as `sft` seeds
    /// them, from `seed`): the first replica's trainable weights, and the threads the devices
    /// ran on.
    fn dropout_steps(threads: bool, seed: u64) -> (Vec<Vec<f32>>, Vec<Option<String>>) {
        type AB = Autodiff<Flex>;
        let devices = [Default::default(), Default::default()];
        let model = small_model::<AB>(0.5, TargetModules::Regex(".*".into()), &devices[0]);
        let mut reps = Replicas::new(model, &devices, |_| Ok(AdamW::new(AdamWConfig::default())))
            .unwrap()
            .with_threads(threads);
        let mut names = Vec::new();
        for step in 0..3 {
            let items: Vec<_> = (0..2)
                .map(|j| {
                    let ex = Example::lm(
                        (0..12)
                            .map(|i| ((i * 7 + j * 13 + step) % 64) as u32)
                            .collect(),
                    );
                    (j, collate::<AB>(&[&ex], 0, &devices[j]))
                })
                .collect();
            let out = reps.each_device(items, |m, (j, b)| {
                let mut s = GradSum::default();
                let seed = seed ^ step as u64 ^ ((j as u64) << 40);
                forward_backward(m, b, 0.1, seed, false, &mut s);
                (s, std::thread::current().name().map(String::from))
            });
            let (sums, n): (Vec<_>, Vec<_>) = out.into_iter().unzip();
            names = n;
            let total = reps.reduce(sums).unwrap();
            reps.step(total, 1e-2);
        }
        (trainable(reps.model(0)), names)
    }

    /// Replicas on threads of their own draw the dropout masks one thread draws, so they train
    /// to the same weights, to the bit; and other seeds give other weights (the masks matter).
    #[test]
    fn threaded_replicas_train_as_one_thread() {
        let (threaded, names) = dropout_steps(true, 7);
        assert_eq!(
            names[1].as_deref(),
            Some("replica-1"),
            "the second device's own thread"
        );
        let (one, names) = dropout_steps(false, 7);
        assert_eq!(names[0], names[1], "both devices on this thread");
        assert_eq!(threaded, one);
        assert_ne!(dropout_steps(true, 8).0, one);
    }

    #[test]
    fn replicas_apply_one_update_and_stay_identical() {
        // Two "devices": the one CPU device twice.
        three_steps::<Autodiff<Flex>>(&[Default::default(), Default::default()]);
    }

    /// A bf16 base stays bf16 on every replica (the first CUDA run of `--devices 0,1 --dtype
    /// bf16` under tools/fake-cuda: the second replica's weights had become f32, and cuBLAS
    /// refused its f32 × f32 → bf16 products).
    #[test]
    fn copies_keep_each_weights_dtype() {
        use burn::tensor::{DType, FloatDType};
        struct Dtypes(Vec<DType>);
        impl<B: Backend> ModuleVisitor<B> for Dtypes {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                self.0.push(p.val().dtype());
            }
        }
        let dtypes = |m: &GptNeoxForCausalLM<Flex>| {
            let mut v = Dtypes(Vec::new());
            m.visit(&mut v);
            v.0
        };
        let config = GptNeoxConfig::from_hf_json(
            r#"{"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1,
                "num_attention_heads": 4, "intermediate_size": 64}"#,
        )
        .unwrap();
        let device = Default::default();
        let model =
            GptNeoxForCausalLM::<Flex>::init(&config, 0.02, 1, &device).cast_base(FloatDType::BF16);
        let before = dtypes(&model);
        assert!(before.contains(&DType::BF16) && before.contains(&DType::F32));
        let copy = model.map(&mut CopyTo { device: &device });
        assert_eq!(dtypes(&copy), before);
    }

    /// Two distinct wgpu devices (two instances of lavapipe here), so that the all-reduce
    /// really copies gradients between CubeCL clients, as between GPUs: the same result as the
    /// CPU replicas.
    #[cfg(feature = "wgpu")]
    #[test]
    fn replicas_on_two_wgpu_devices_match_the_cpu() {
        use burn::backend::wgpu::WgpuDevice;
        let cpu = three_steps::<Autodiff<Flex>>(&[Default::default(), Default::default()]);
        let devices = [WgpuDevice::DefaultDevice, WgpuDevice::Cpu];
        let gpu = three_steps::<Autodiff<burn::backend::Wgpu<f32, i32>>>(&devices);
        for (a, b) in cpu.iter().flatten().zip(gpu.iter().flatten()) {
            assert!((a - b).abs() <= 1e-5 + 1e-4 * a.abs(), "{a} vs {b}");
        }
    }
}
