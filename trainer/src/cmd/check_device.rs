//! `trainer check-device`: the demo model's forward, stage by stage, on a device against the
//! CPU (burn-flex, whose forward matches HF transformers' golden values): where a device's
//! numerics go wrong, the first stage whose relative difference jumps names the culprit.
//! Training benchmarks on random weights cannot show it (their loss is ~ln(vocab) either way).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::tensor::{Int, Tensor, TensorData};
use clap::Args;
use shared::ModelBackend;
use shared::model::GptNeoxForCausalLM;

use crate::device::DeviceArg;
use crate::with_backend;

#[derive(Debug, Args)]
pub struct CheckDeviceArgs {
    /// HF model folder or web package. Default: the bundled demo model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Prompt length (token ids `(7i + 3) mod vocab`).
    #[arg(long, default_value_t = 37)]
    pub len: usize,
    /// Largest relative L2 difference a stage may show.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
}

/// Each stage's name and values: the embedding, then for every layer its LayerNorms, the
/// attention's parts (projection, split, attention with and without the cache path), the MLP
/// and the layer's output, then the final LayerNorm and the logits.
fn stages<B: ModelBackend>(
    m: &GptNeoxForCausalLM<B>,
    len: usize,
    device: &B::Device,
) -> Vec<(String, Vec<f32>)> {
    let vocab = m.embed_out.d_output() as i64;
    let ids: Vec<i64> = (0..len as i64).map(|i| (7 * i + 3) % vocab).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, len]), device);
    let mut out = Vec::new();
    let mut keep = |name: String, t: Tensor<B, 4>| {
        let data = t.into_data().convert::<f32>();
        out.push((name, data.into_vec::<f32>().expect("f32 values")));
    };
    let rope = m.rope(0, len, device);
    let mut h = m.gpt_neox.embed_in.forward(ids);
    keep("embed_in".into(), h.clone().unsqueeze());
    for (i, layer) in m.gpt_neox.layers.iter().enumerate() {
        let x = layer.input_layernorm.forward(h.clone());
        keep(format!("{i}.input_layernorm"), x.clone().unsqueeze());
        let att = &layer.attention;
        let (nh, hd) = (att.num_heads, att.head_dim);
        let qkv = att
            .query_key_value
            .forward(x.clone())
            .reshape([1, len, nh, 3 * hd])
            .swap_dims(1, 2);
        keep(format!("{i}.query_key_value"), qkv.clone());
        let (q, k, v) = B::split_qkv_rope(qkv.clone(), &rope);
        keep(format!("{i}.rotary q"), q.clone());
        keep(format!("{i}.rotary k"), k.clone());
        keep(format!("{i}.split v"), v.clone());
        keep(
            format!("{i}.attention (cache path)"),
            B::causal_attention(q, k, v),
        );
        keep(
            format!("{i}.attention"),
            B::qkv_attention(qkv, &rope, false),
        );
        keep(
            format!("{i}.attention.dense"),
            att.forward(x, &rope, None).unsqueeze(),
        );
        let x2 = layer.post_attention_layernorm.forward(h.clone());
        keep(
            format!("{i}.post_attention_layernorm"),
            x2.clone().unsqueeze(),
        );
        keep(format!("{i}.mlp"), layer.mlp.forward(x2).unsqueeze());
        h = layer.forward(h, &rope, None);
        keep(format!("{i} (layer output)"), h.clone().unsqueeze());
    }
    let h = m.gpt_neox.final_layer_norm.forward(h);
    keep("final_layer_norm".into(), h.clone().unsqueeze());
    keep("logits".into(), m.embed_out.forward(h).unsqueeze());
    out
}

/// `‖a − b‖ / ‖b‖`.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        d += (*x as f64 - *y as f64).powi(2);
        n += (*y as f64).powi(2);
    }
    (d / n.max(f64::MIN_POSITIVE)).sqrt()
}

/// Each stage's relative L2 difference between the model's forward on `device` and on the
/// CPU, in [`stages`]' order.
pub fn differences<B: ModelBackend>(
    model: &Path,
    len: usize,
    device: &B::Device,
) -> Result<Vec<(String, f64)>> {
    let cpu = {
        let flex = burn::backend::flex::FlexDevice;
        let m = crate::cmd::load_model::<burn::backend::Flex>(model, None, &flex)?;
        stages(&m.model, len, &flex)
    };
    let m = crate::cmd::load_model::<B>(model, None, device)?;
    let dev = stages(&m.model, len, device);
    dev.into_iter()
        .zip(cpu)
        .map(|((name, a), (_, b))| {
            if a.len() != b.len() {
                bail!(
                    "stage {name}: {} values on the device, {} on the CPU",
                    a.len(),
                    b.len()
                );
            }
            let e = rel_l2(&a, &b);
            Ok((name, e))
        })
        .collect()
}

pub fn run(args: CheckDeviceArgs) -> Result<()> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| crate::paths::bundled(crate::paths::DEMO_MODEL));
    let diffs = with_backend!(args.device.clone(), |B, device| {
        differences::<B>(&model, args.len, &device)?
    });
    println!(
        "| stage | relative L2 difference, {:?} vs cpu |",
        args.device
    );
    println!("|---|---|");
    for (name, e) in &diffs {
        println!("| {name} | {e:.3e} |");
    }
    let over: Vec<&str> = diffs
        .iter()
        .filter(|(_, e)| e.is_nan() || *e > args.tolerance)
        .map(|(name, _)| name.as_str())
        .collect();
    if !over.is_empty() {
        bail!(
            "the device's forward differs from the CPU's by more than {} at: {}",
            args.tolerance,
            over.join(", ")
        );
    }
    println!("every stage within {}", args.tolerance);
    Ok(())
}
