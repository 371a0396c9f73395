//! PEFT adapters written by Python PEFT (fixtures from `make_peft.py`): we reproduce PEFT's
//! logits, its trainable-parameter line and its merged model; a wrong base is a named error.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use shared::model_dir::ModelDir;
use trainer::cmd::load_model;

fn logits(m: &shared::GptNeoxForCausalLM<B>, rows: &[Vec<i64>]) -> Vec<f32> {
    let t = rows[0].len();
    let ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(rows.concat(), [rows.len(), t]), &DEVICE);
    m.forward(ids, None).into_data().into_vec().unwrap()
}

fn peft_golden(name: &str) -> Golden {
    golden_in(&golden_dir().join(name))
}

#[test]
fn peft_adapters_reproduce_peft_logits() {
    for (adapter, base) in [("peft-a", "neox-a"), ("peft-b", "neox-b")] {
        let m =
            load_model::<B>(&model_dir(base), Some(&golden_dir().join(adapter)), &DEVICE).unwrap();
        let g = peft_golden(adapter);
        let err = rel_err(&logits(&m.model, &g.input_ids), &g.logits);
        assert!(err <= 1e-4, "{adapter}: relative error {err}");
        let line = trainer::cmd::sft::trainable_line(&m.model);
        assert_eq!(
            line,
            g.json["trainable_line"].as_str().unwrap(),
            "{adapter}"
        );
    }
}

#[test]
fn merge_matches_peft_merge_and_reloads() {
    let m = load_model::<B>(
        &model_dir("neox-a"),
        Some(&golden_dir().join("peft-a")),
        &DEVICE,
    )
    .unwrap();
    let g = peft_golden("peft-merged-a");
    let merged = m.model.merge_lora();
    assert!(rel_err(&logits(&merged, &g.input_ids), &g.logits) <= 1e-4);
    // `trainer merge` writes an HF folder (sharded here) that loads back to the same logits.
    let out = temp_dir("merge");
    trainer::cli::run_args([
        "trainer",
        "merge",
        "--base",
        model_dir("neox-a").to_str().unwrap(),
        "--adapter",
        golden_dir().join("peft-a").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-shard-mb",
        "0",
    ])
    .unwrap();
    assert!(out.join("model.safetensors.index.json").is_file());
    assert!(out.join("tokenizer.json").is_file());
    let back = ModelDir::<B>::load(&out, &DEVICE).unwrap();
    assert!(rel_err(&logits(&back.model, &g.input_ids), &g.logits) <= 1e-4);
}

#[test]
fn adapter_for_another_base_is_a_named_error() {
    let err = load_model::<B>(
        &model_dir("neox-a"),
        Some(&golden_dir().join("peft-b")),
        &DEVICE,
    )
    .err()
    .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("lora_A.weight") && msg.contains("adapter_model.safetensors"),
        "{msg}"
    );
}

/// `trainer export-web --adapter` merges a PEFT adapter into an f32 web package whose logits are
/// PEFT's `merge_and_unload` logits.
#[test]
fn export_web_with_a_peft_adapter_matches_peft_merge() {
    let g = peft_golden("peft-merged-a");
    let out = temp_dir("web-peft").join("peft-a-web");
    trainer::cli::run_args([
        "trainer",
        "export-web",
        "--model",
        model_dir("neox-a").to_str().unwrap(),
        "--adapter",
        golden_dir().join("peft-a").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quant",
        "f32",
    ])
    .unwrap();
    let m = ModelDir::<B>::load(&out, &DEVICE).unwrap();
    let err = rel_err(&logits(&m.model, &g.input_ids), &g.logits);
    assert!(err <= 1e-4, "relative error {err}");
    // The adapter matters: the base alone is far from PEFT's merged logits.
    let base = ModelDir::<B>::load(&model_dir("neox-a"), &DEVICE).unwrap();
    assert!(rel_err(&logits(&base.model, &g.input_ids), &g.logits) > 1e-2);
}
