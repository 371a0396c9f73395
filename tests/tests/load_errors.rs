//! Bad checkpoints give errors that name the tensor, the shapes and the file; nothing panics.

mod common;

use std::fs;

use common::*;
use shared::model_dir::ModelDir;

fn load_err(dir: &std::path::Path) -> String {
    match ModelDir::<B>::load(dir, &DEVICE) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_safetensors_is_named() {
    let dir = copy_model("neox-a", "truncated");
    let f = dir.join("model.safetensors");
    let len = fs::metadata(&f).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(len - 100).unwrap();
    let msg = load_err(&dir);
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn missing_shard_is_named() {
    let dir = copy_model("neox-b", "missing-shard");
    let shard = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("model-00002"))
        .expect("neox-b has a second shard");
    fs::remove_file(dir.join(&shard)).unwrap();
    let msg = load_err(&dir);
    assert!(
        msg.contains(&shard) && msg.contains("model.safetensors.index.json"),
        "{msg}"
    );
}

#[test]
fn wrong_shape_names_tensor_shapes_and_file() {
    let dir = copy_model("neox-a", "wrong-shape");
    let cfg = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&cfg).unwrap()).unwrap();
    json["intermediate_size"] = 100.into();
    fs::write(&cfg, json.to_string()).unwrap();
    let msg = load_err(&dir);
    assert!(
        msg.contains("gpt_neox.layers.0.mlp.dense_h_to_4h.weight")
            && msg.contains("[96, 32]")
            && msg.contains("[100, 32]")
            && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_is_named() {
    // Rewrite neox-a's weights without `embed_out.weight`.
    let dir = copy_model("neox-a", "missing-tensor");
    let bytes = fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "embed_out.weight")
        .collect();
    safetensors::serialize_to_file(kept, None, &dir.join("model.safetensors")).unwrap();
    let msg = load_err(&dir);
    assert!(
        msg.contains("`embed_out.weight` is missing") && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn missing_tokenizer_and_weights_are_named() {
    let dir = copy_model("neox-a", "no-tokenizer");
    fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let msg = load_err(&dir);
    assert!(msg.contains("tokenizer.json"), "{msg}");

    let dir = copy_model("neox-a", "no-weights");
    fs::remove_file(dir.join("model.safetensors")).unwrap();
    let msg = load_err(&dir);
    assert!(msg.contains("no weights"), "{msg}");
}

#[test]
fn bad_config_is_named() {
    let dir = copy_model("neox-a", "bad-config");
    fs::write(dir.join("config.json"), r#"{"hidden_size": "wide"}"#).unwrap();
    let msg = load_err(&dir);
    assert!(
        msg.contains("config.json") && msg.contains("hidden_size"),
        "{msg}"
    );
}

#[test]
fn old_buffers_in_the_checkpoint_are_ignored() {
    // neox-a carries attention.bias, masked_bias and rotary_emb.inv_freq like old checkpoints.
    let ckpt = shared::Checkpoint::open_dir(&model_dir("neox-a")).unwrap();
    assert!(ckpt.names().any(|n| n.ends_with("attention.masked_bias")));
    ModelDir::<B>::load(&model_dir("neox-a"), &DEVICE).unwrap();
}
