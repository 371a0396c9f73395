//! The model against HF transformers: logits, loss and incremental decoding of the tiny random
//! GPT-NeoX fixtures written by `tests/fixtures/gen/make_golden.py`.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use shared::loss::causal_lm_nll_sum;
use shared::model_dir::ModelDir;

const MODELS: [&str; 5] = ["neox-a", "neox-b", "neox-c", "neox-d", "neox-e"];

fn ids_tensor(rows: &[Vec<i64>]) -> Tensor<B, 2, Int> {
    let t = rows[0].len();
    let flat: Vec<i64> = rows.concat();
    Tensor::from_data(TensorData::new(flat, [rows.len(), t]), &DEVICE)
}

#[test]
fn logits_and_loss_match_hf() {
    for name in MODELS {
        let m = ModelDir::<B>::load(&model_dir(name), &DEVICE)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = golden(name);
        let logits = m.model.forward(ids_tensor(&g.input_ids), None);
        let ours: Vec<f32> = logits.clone().into_data().into_vec().unwrap();
        let err = rel_err(&ours, &g.logits);
        assert!(err <= 1e-4, "{name}: logits relative error {err}");

        let (sum, n) = causal_lm_nll_sum(logits, &g.input_ids);
        let loss = sum.into_scalar() as f64 / n as f64;
        let want = g.json["loss"].as_f64().unwrap();
        assert!(
            (loss - want).abs() <= 1e-4 * want.abs(),
            "{name}: loss {loss} vs HF {want}"
        );
    }
}

#[test]
fn incremental_decoding_matches_full_forward() {
    for name in ["neox-a", "neox-b"] {
        let m = ModelDir::<B>::load(&model_dir(name), &DEVICE).unwrap();
        let g = golden(name);
        let row = &g.input_ids[0];
        let t = row.len();
        let v = g.vocab;
        let mut cache = m.model.new_cache();
        // Prefill 10 tokens, then one token at a time.
        let prefill = 10;
        let last = m
            .model
            .forward_last(ids_tensor(&[row[..prefill].to_vec()]), Some(&mut cache));
        let mut steps = vec![(prefill - 1, last)];
        for (pos, &id) in row.iter().enumerate().skip(prefill) {
            let last = m
                .model
                .forward_last(ids_tensor(&[vec![id]]), Some(&mut cache));
            steps.push((pos, last));
        }
        assert_eq!(cache.len(), t);
        for (pos, logits) in steps {
            let ours: Vec<f32> = logits.into_data().into_vec().unwrap();
            let want = &g.logits[pos * v..(pos + 1) * v];
            let err = rel_err(&ours, want);
            assert!(err <= 1e-4, "{name}: position {pos} relative error {err}");
        }
    }
}

#[test]
fn future_tokens_do_not_change_earlier_logits() {
    let m = ModelDir::<B>::load(&model_dir("neox-a"), &DEVICE).unwrap();
    let g = golden("neox-a");
    let mut changed = g.input_ids[0].clone();
    changed[12] = (changed[12] + 1) % 300;
    let a: Vec<f32> = m
        .model
        .forward(ids_tensor(&[g.input_ids[0].clone()]), None)
        .into_data()
        .into_vec()
        .unwrap();
    let b: Vec<f32> = m
        .model
        .forward(ids_tensor(&[changed]), None)
        .into_data()
        .into_vec()
        .unwrap();
    let v = g.vocab;
    assert_eq!(a[..12 * v], b[..12 * v]);
    assert_ne!(a[12 * v..13 * v], b[12 * v..13 * v]);
}

#[test]
fn greedy_generation_matches_hf_generate() {
    use shared::generate::{GenerationConfig, generate};
    let g: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("generate_golden.json")).unwrap(),
    )
    .unwrap();
    for case in g.as_array().unwrap() {
        let name = case["model"].as_str().unwrap();
        let m = ModelDir::<B>::load(&model_dir(name), &DEVICE).unwrap();
        let ids = |v: &serde_json::Value| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect::<Vec<_>>()
        };
        let prompt = m
            .tokenizer
            .encode(case["prompt"].as_str().unwrap())
            .unwrap();
        assert_eq!(prompt, ids(&case["prompt_ids"]), "{name}: prompt ids");
        let cfg = GenerationConfig {
            max_new_tokens: 20,
            sampling: Default::default(),
            seed: 0,
            stop_ids: vec![m.tokenizer.eos_id()],
        };
        let (new, _) = pollster::block_on(generate(&m.model, &prompt, &cfg, &DEVICE, async |_| {
            std::ops::ControlFlow::Continue(())
        }))
        .unwrap();
        assert_eq!(new, ids(&case["new_ids"]), "{name}: {:?}", case["prompt"]);
    }
}
