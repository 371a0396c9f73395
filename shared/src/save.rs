//! Writing HF-format files natively: safetensors (single or sharded with an index) holding a
//! model's weights under HF names, and the model folder around them.

use crate::ModelBackend;
use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Tensor, backend::Backend};
use safetensors::{Dtype, tensor::TensorView};

use crate::config::GptNeoxConfig;
use crate::model::GptNeoxForCausalLM;

/// A named f32 tensor in HF layout, ready to write.
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

/// `[in, out]` burn weight → HF `[out, in]`.
pub fn hf_linear<B: Backend>(name: String, w: Tensor<B, 2>) -> NamedTensor {
    let [d_in, d_out] = w.dims();
    NamedTensor {
        name,
        shape: vec![d_out, d_in],
        data: host(w.transpose()),
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {e}", path.display()))
}

/// Write tensors to one safetensors file (metadata `{"format": "pt"}`), via a temporary name and
/// a rename so a crash never leaves a half-written file under the final name.
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> std::io::Result<()> {
    write_safetensors_as(path, tensors, false)
}

/// [`write_safetensors`], optionally storing float16.
pub fn write_safetensors_as(
    path: &Path,
    tensors: &[NamedTensor],
    f16: bool,
) -> std::io::Result<()> {
    let dtype = if f16 { Dtype::F16 } else { Dtype::F32 };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| {
            if f16 {
                t.data
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect()
            } else {
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        })
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| TensorView::new(dtype, t.shape.clone(), b).map(|v| (t.name.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_err(path, format!("{e:?}")))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| io_err(&tmp, format!("{e:?}")))?;
    std::fs::rename(&tmp, path)
}

/// Every weight of the model under its HF name (LoRA adapters must be merged first).
pub fn hf_tensors<B: ModelBackend>(model: &GptNeoxForCausalLM<B>) -> Vec<NamedTensor> {
    let mut out = Vec::new();
    let vec1 = |name: String, t: Tensor<B, 1>| NamedTensor {
        name,
        shape: t.dims().to_vec(),
        data: host(t),
    };
    let ln = |out: &mut Vec<NamedTensor>, p: &str, l: &crate::norm::LayerNorm<B>| {
        out.push(vec1(format!("{p}.weight"), l.gamma.val()));
        if let Some(b) = &l.beta {
            out.push(vec1(format!("{p}.bias"), b.val()));
        }
    };
    let e = model.gpt_neox.embed_in.weight.val();
    out.push(NamedTensor {
        name: "gpt_neox.embed_in.weight".into(),
        shape: e.dims().to_vec(),
        data: host(e),
    });
    for (i, layer) in model.gpt_neox.layers.iter().enumerate() {
        let p = format!("gpt_neox.layers.{i}");
        ln(
            &mut out,
            &format!("{p}.input_layernorm"),
            &layer.input_layernorm,
        );
        ln(
            &mut out,
            &format!("{p}.post_attention_layernorm"),
            &layer.post_attention_layernorm,
        );
    }
    for (name, lin) in model.linears() {
        assert!(
            lin.lora.is_none(),
            "{name}: merge adapters before exporting"
        );
        out.push(hf_linear(format!("{name}.weight"), lin.weight.dense()));
        if let Some(b) = &lin.bias {
            out.push(vec1(format!("{name}.bias"), b.val()));
        }
    }
    ln(
        &mut out,
        "gpt_neox.final_layer_norm",
        &model.gpt_neox.final_layer_norm,
    );
    out.push(hf_linear(
        "embed_out.weight".into(),
        model.embed_out.weight.dense(),
    ));
    out
}

/// Write an HF model folder: `config.json`, weights (`model.safetensors`, or shards of at most
/// `max_shard_bytes` plus `model.safetensors.index.json`), and the given tokenizer files copied.
pub fn save_hf_folder<B: ModelBackend>(
    model: &GptNeoxForCausalLM<B>,
    config: &GptNeoxConfig,
    dir: &Path,
    max_shard_bytes: usize,
    copy_files: &[&Path],
    f16: bool,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tensors = hf_tensors(model);
    let mut shards: Vec<Vec<NamedTensor>> = vec![Vec::new()];
    let mut size = 0;
    for t in tensors {
        let bytes = t.data.len() * if f16 { 2 } else { 4 };
        if size > 0 && size + bytes > max_shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        shards.last_mut().unwrap().push(t);
    }
    if shards.len() == 1 {
        write_safetensors_as(&dir.join("model.safetensors"), &shards[0], f16)?;
    } else {
        let n = shards.len();
        let mut weight_map = serde_json::Map::new();
        let mut total = 0usize;
        for (k, shard) in shards.iter().enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", k + 1, n);
            for t in shard {
                weight_map.insert(t.name.clone(), file.clone().into());
                total += t.data.len() * 4;
            }
            write_safetensors_as(&dir.join(&file), shard, f16)?;
        }
        let index =
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)?,
        )?;
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config.to_hf_json())?,
    )?;
    for f in copy_files {
        if let Some(name) = f.file_name() {
            std::fs::copy(f, dir.join(name))?;
        }
    }
    Ok(())
}
