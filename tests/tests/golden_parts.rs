//! Pieces against HF: activations, rotary tables, tokenizer ids.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use shared::activation::Activation;
use shared::rope;
use shared::tokenizer::Tokenizer;

fn json(file: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir().join(file)).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn activations_match_act2fn() {
    let g = json("activations.json");
    let x = floats(&g["x"]);
    let outputs = g["outputs"].as_object().unwrap();
    assert!(
        outputs.len() >= 15,
        "fixture lists {} activations",
        outputs.len()
    );
    for (name, want) in outputs {
        let act = Activation::from_hf(name).unwrap_or_else(|| panic!("{name} unsupported"));
        let t = Tensor::<B, 1>::from_data(TensorData::new(x.clone(), [x.len()]), &DEVICE);
        let ours: Vec<f32> = act.forward(t, false).into_data().into_vec().unwrap();
        for ((o, w), xi) in ours.iter().zip(floats(want)).zip(&x) {
            assert!(
                (o - w).abs() <= 2e-5 * (1.0 + w.abs()),
                "{name}({xi}) = {o}, HF {w}"
            );
        }
    }
}

#[test]
fn rotary_tables_match_hf() {
    let g = json("rotary.json");
    let cfg =
        shared::GptNeoxConfig::from_hf_file(&model_dir("neox-b").join("config.json")).unwrap();
    let inv = rope::inv_freq(cfg.rotary_ndims, cfg.rotary_emb_base);
    let want = floats(&g["inv_freq"]);
    assert_eq!(inv.len(), want.len());
    for (a, b) in inv.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-7, "inv_freq {a} vs {b}");
    }
    let (cos, sin) = rope::tables(cfg.rotary_ndims, cfg.rotary_emb_base, 0, 4);
    let flat = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(floats)
            .collect::<Vec<_>>()
    };
    for (a, b) in cos
        .iter()
        .zip(flat(&g["cos"]))
        .chain(sin.iter().zip(flat(&g["sin"])))
    {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }
}

#[test]
fn tokenizer_matches_hf_tokenizers() {
    let tok = Tokenizer::from_file(&golden_dir().join("tokenizer.json"), None).unwrap();
    assert_eq!(tok.eos_id(), 0);
    assert_eq!(tok.pad_id(), 1);
    for case in json("tokenizer_golden.json").as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(
            tok.decode(&ids).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{text:?}"
        );
    }
}
