//! `trainer sft` end to end on a fixture model: a run killed after a checkpoint and resumed
//! gives the same losses as an uninterrupted run (dropout on), outputs in PEFT's format, and
//! bad data is reported with its file and line.

mod common;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use common::*;

/// burn's backend RNG (dropout) is global and the loop reseeds it every micro-step: training
/// runs in parallel test threads would reseed each other's dropout, so they take turns.
static TRAINING: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(|e| e.into_inner())
}

fn sft(out: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let data = golden_dir().join("sft_small.jsonl");
    let mut args = vec![
        "trainer",
        "sft",
        "--model",
        "",
        "--data",
        "",
        "--eval-split",
        "0.2",
        "--max-len",
        "60",
        "--max-steps",
        "6",
        "--batch-size",
        "4",
        "--lr",
        "5e-3",
        "--lora-dropout",
        "0.1",
        "--target",
        "all-linear",
        "--save-every",
        "3",
        "--keep",
        "3",
        "--out",
        "",
        "--show-answers",
        "0",
    ];
    let model = model_dir("neox-a");
    args[3] = model.to_str().unwrap();
    args[5] = data.to_str().unwrap();
    let n = args.len();
    args[n - 3] = out.to_str().unwrap();
    args.extend_from_slice(extra);
    trainer::cli::run_args(args)
}

fn losses(out: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let _turn = one_at_a_time();
    let full = temp_dir("sft-full");
    sft(&full, &[]).unwrap();
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "metrics.jsonl",
        "loss.svg",
        "run_config.json",
    ] {
        assert!(full.join(f).is_file(), "{f} missing");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 4);

    // "Kill" after step 3: keep only checkpoint-3 and the metrics up to it, then resume.
    let cut = killed_after(&full, 3, "sft-resumed");
    sft(&cut, &["--resume"]).unwrap();
    assert_same_run(&full, &cut);
}

/// A copy of `full`'s output folder as a run killed right after checkpoint `step` left it.
fn killed_after(full: &Path, step: usize, name: &str) -> std::path::PathBuf {
    let cut = temp_dir(name);
    let ckpt = cut.join(format!("checkpoint-{step}"));
    std::fs::create_dir_all(&ckpt).unwrap();
    for e in std::fs::read_dir(full.join(format!("checkpoint-{step}"))).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), ckpt.join(e.file_name())).unwrap();
    }
    let head: Vec<String> = std::fs::read_to_string(full.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .take(step)
        .map(str::to_string)
        .collect();
    std::fs::write(cut.join("metrics.jsonl"), head.join("\n") + "\n").unwrap();
    cut
}

/// The same losses at every step (1e-6) and byte-identical adapters.
fn assert_same_run(full: &Path, resumed: &Path) {
    let (a, b) = (losses(full), losses(resumed));
    assert_eq!(a.len(), b.len());
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() <= 1e-6 * la.abs().max(1.0),
            "step {sa}: {la} vs resumed {lb}"
        );
    }
    let read = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    assert_eq!(read(full), read(resumed), "adapters differ");
}

/// Each device keeps its own AdamW: a two-device run resumed from a checkpoint continues
/// exactly as the uninterrupted run (every device's optimizer is restored, not just the first).
#[test]
fn resumed_two_device_run_matches_uninterrupted_run() {
    let _turn = one_at_a_time();
    let flags = ["--devices", "0,1", "--save-every", "2", "--keep", "3"];
    let full = sft_plain("ddp-full", "2", &flags);
    let cut = killed_after(&full, 2, "ddp-resumed");
    let mut resume = flags.to_vec();
    resume.push("--resume");
    sft_plain_in(&cut, "2", &resume);
    assert_same_run(&full, &cut);
}

#[test]
fn bad_data_names_file_and_line() {
    let _turn = one_at_a_time();
    let dir = temp_dir("sft-bad");
    let data = dir.join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\", \"output\": 7}\n",
    )
    .unwrap();
    let out = dir.join("out");
    let err = trainer::cli::run_args([
        "trainer",
        "sft",
        "--model",
        model_dir("neox-a").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("bad.jsonl: line 2") && msg.contains("`output` must be a string"),
        "{msg}"
    );
}

#[test]
fn nan_loss_stops_with_a_checkpoint() {
    let _turn = one_at_a_time();
    let out = temp_dir("sft-nan");
    let err = trainer::cli::run_args([
        "trainer",
        "sft",
        "--model",
        model_dir("neox-a").to_str().unwrap(),
        "--data",
        golden_dir().join("sft_small.jsonl").to_str().unwrap(),
        "--max-len",
        "60",
        "--max-steps",
        "50",
        "--batch-size",
        "4",
        "--lr",
        "1e9",
        "--max-grad-norm",
        "0",
        "--warmup-ratio",
        "0",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("loss is NaN") || msg.contains("loss is inf"),
        "{msg}"
    );
    let (_, ckpt) = trainer::train::latest_checkpoint(&out).expect("a checkpoint was saved");
    // the weights from before the step whose loss was not finite (that step's update, queued
    // before the loss was read, is not what is saved)
    let w = adapter_values(&ckpt);
    assert!(!w.is_empty() && w.iter().all(|x| x.is_finite()), "{ckpt:?}");
}

/// Every value of `dir`'s adapter (f32), tensors in name order.
fn adapter_values(dir: &Path) -> Vec<f32> {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            st.tensor(n)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Data parallel on CPU replicas: 2 devices × batch 2 follow the loss trajectory of 1 device ×
/// batch 4 (dropout off, so both see the same function), and end with the same adapter.
#[test]
fn two_devices_match_one_device_with_the_whole_batch() {
    let _turn = one_at_a_time();
    let one = sft_plain("ddp-1x4", "4", &[]);
    let two = sft_plain("ddp-2x2", "2", &["--devices", "0,1"]);
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 5);
    for ((s1, l1), (s2, l2)) in a.iter().zip(&b) {
        assert_eq!(s1, s2);
        assert!(
            (l1 - l2).abs() <= 1e-5 * l1.abs(),
            "step {s1}: {l1} vs {l2}"
        );
    }
    // A real difference is visible: half the batch per step is another trajectory.
    let half = sft_plain("ddp-1x2", "2", &[]);
    let c = losses(&half);
    assert!((c[4].1 - a[4].1).abs() > 1e-4, "{} vs {}", c[4].1, a[4].1);
    let (wa, wb) = (adapter_values(&one), adapter_values(&two));
    let max = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-5, "adapters differ by {max}");
}

/// A short run with dropout off, `--batch-size batch`, `--grad-accum 2` and `extra` flags.
fn sft_plain(name: &str, batch: &str, extra: &[&str]) -> std::path::PathBuf {
    let out = temp_dir(name);
    sft_plain_in(&out, batch, extra);
    out
}

fn sft_plain_in(out: &Path, batch: &str, extra: &[&str]) {
    let data = golden_dir().join("sft_small.jsonl");
    let model = model_dir("neox-a");
    let mut args = vec![
        "trainer",
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--max-len",
        "60",
        "--max-steps",
        "5",
        "--batch-size",
        batch,
        "--grad-accum",
        "2",
        "--lr",
        "5e-3",
        "--lora-dropout",
        "0",
        "--target",
        "all-linear",
        "--show-answers",
        "0",
        "--out",
        out.to_str().unwrap(),
    ];
    if extra.contains(&"--lora-dropout") {
        let at = args.iter().position(|a| *a == "--lora-dropout").unwrap();
        args.drain(at..at + 2);
    }
    args.extend_from_slice(extra);
    trainer::cli::run_args(args).unwrap();
}

/// `--grad-checkpointing` recomputes each layer instead of storing it: the same losses, with
/// dropout off and on. `--dtype bf16` multiplies the base in bf16: losses within bf16's
/// precision of f32's, but not identical.
#[test]
fn checkpointing_and_bf16_follow_the_f32_run() {
    let _turn = one_at_a_time();
    let base = losses(&sft_plain("prec-f32", "4", &[]));
    let ckpt = losses(&sft_plain("prec-ckpt", "4", &["--grad-checkpointing"]));
    let bf16 = losses(&sft_plain("prec-bf16", "4", &["--dtype", "bf16"]));
    let mut max_bf16 = 0f64;
    for (((s, a), (_, c)), (_, b)) in base.iter().zip(&ckpt).zip(&bf16) {
        assert!(
            (a - c).abs() <= 1e-5 * a.abs(),
            "step {s}: {a} vs checkpointed {c}"
        );
        max_bf16 = max_bf16.max((a - b).abs() / a.abs());
    }
    assert_eq!(base.len(), 5);
    assert!(
        max_bf16 > 1e-6 && max_bf16 < 2e-2,
        "bf16 relative loss difference {max_bf16}"
    );
    // With dropout on, the recomputed layers redraw the masks of the first pass.
    let drop = ["--lora-dropout", "0.3"];
    let a = sft_plain("drop", "4", &drop);
    let b = sft_plain(
        "drop-ckpt",
        "4",
        &[&drop[..], &["--grad-checkpointing"]].concat(),
    );
    for ((s, x), (_, y)) in losses(&a).iter().zip(&losses(&b)) {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs(),
            "step {s}: {x} vs checkpointed {y}"
        );
    }
    assert_ne!(losses(&a), base, "dropout changed nothing");
}

/// QLoRA: `--quant nf4` trains LoRA over the NF4 base. Its losses are not the dense run's (the
/// base differs by its quantization error) but stay near them; per-layer recomputation and two
/// data-parallel CPU replicas (the packed codes copied to each) follow the same trajectory; the
/// run config records the format; the adapter is a plain PEFT adapter that loads onto the
/// dense base.
#[test]
fn qlora_run_follows_the_dense_run_and_writes_a_peft_adapter() {
    let _turn = one_at_a_time();
    let dense = losses(&sft_plain("qlora-dense", "4", &[]));
    let out = sft_plain("qlora-nf4", "4", &["--quant", "nf4"]);
    let nf4 = losses(&out);
    let ckpt = losses(&sft_plain(
        "qlora-ckpt",
        "4",
        &["--quant", "nf4", "--grad-checkpointing"],
    ));
    let ddp = losses(&sft_plain(
        "qlora-ddp",
        "2",
        &["--quant", "nf4", "--devices", "0,1"],
    ));
    assert_eq!(nf4.len(), 5);
    let mut max_rel = 0f64;
    for (((s, q), (_, c)), ((_, p), (_, d))) in nf4.iter().zip(&ckpt).zip(ddp.iter().zip(&dense)) {
        assert!(
            (q - c).abs() <= 1e-5 * q,
            "step {s}: {q} vs checkpointed {c}"
        );
        assert!((q - p).abs() <= 1e-5 * q, "step {s}: {q} vs 2 devices {p}");
        max_rel = max_rel.max((q - d).abs() / d);
    }
    assert!(
        max_rel > 1e-4 && max_rel < 0.05,
        "nf4 vs dense relative loss difference {max_rel}"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["quant"]["quant"], "nf4");
    assert_eq!(cfg["quant"]["double_quant"], true);
    let device = Default::default();
    let mut m =
        shared::model_dir::ModelDir::<burn::backend::Flex>::load(&model_dir("neox-a"), &device)
            .unwrap()
            .model;
    shared::peft::load_adapter(&mut m, &out, &device).unwrap();
}

/// `--quant` is for LoRA: `pretrain --full --quant nf4` is refused by the command line.
#[test]
fn full_training_refuses_a_quantized_base() {
    let err = trainer::cli::run_args([
        "trainer",
        "pretrain",
        "--data",
        "x.txt",
        "--config",
        "c.json",
        "--tokenizer",
        "t.json",
        "--out",
        "o",
        "--full",
        "--quant",
        "nf4",
    ])
    .unwrap_err();
    assert!(err.to_string().contains("--quant"), "{err}");
}
