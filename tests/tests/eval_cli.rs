//! `trainer eval` against HF's token-weighted loss on a JSONL mixing ids, text and Alpaca lines.

mod common;

use common::*;
use trainer::cmd::eval::{EvalArgs, summarize};

fn args(model: &str, data: std::path::PathBuf) -> EvalArgs {
    EvalArgs {
        model: model_dir(model),
        adapter: None,
        data,
        template: Default::default(),
        max_len: 2048,
        json: true,
        device: trainer::device::DeviceArg::Cpu,
        quant: trainer::cmd::quant_args::QuantArgs {
            quant: trainer::cmd::quant_args::QuantArg::None,
            no_double_quant: false,
        },
    }
}

#[test]
fn eval_matches_hf_loss() {
    let g: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("eval_golden.json")).unwrap(),
    )
    .unwrap();
    let s = summarize(&args("neox-a", golden_dir().join("eval.jsonl"))).unwrap();
    assert_eq!(s.tokens as u64, g["tokens"].as_u64().unwrap());
    let want = g["mean_loss"].as_f64().unwrap();
    assert!(
        (s.mean_loss - want).abs() <= 1e-4 * want,
        "ours {} HF {want}",
        s.mean_loss
    );
}

#[test]
fn bad_line_is_reported_with_its_number() {
    let dir = temp_dir("eval-bad-line");
    let data = dir.join("data.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"대한민국\"}\n{\"instruction\": \"질문\"}\n",
    )
    .unwrap();
    let msg = format!("{:#}", summarize(&args("neox-a", data)).unwrap_err());
    assert!(
        msg.contains("data.jsonl:2") && msg.contains("output"),
        "{msg}"
    );

    let data = dir.join("ids.jsonl");
    std::fs::write(&data, "{\"input_ids\": [1, 2, 99999]}\n").unwrap();
    let msg = format!("{:#}", summarize(&args("neox-a", data)).unwrap_err());
    assert!(msg.contains("line 1") && msg.contains("99999"), "{msg}");
}
