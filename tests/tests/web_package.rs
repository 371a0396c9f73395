//! `trainer export-web` packages: an f32 package reproduces the source model's logits exactly,
//! a q4 one stays within its quantization error, and every bad file or manifest field is an
//! error that names it; a failed export leaves the previous package in place.

mod common;

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use common::{B, DEVICE, repo, temp_dir};
use shared::model_dir::ModelDir;

fn export(out: &Path, quant: &str) -> anyhow::Result<()> {
    trainer::cli::run_args([
        "trainer",
        "export-web",
        "--out",
        out.to_str().unwrap(),
        "--quant",
        quant,
    ])
}

fn logits(dir: &Path) -> Vec<f32> {
    let m = ModelDir::<B>::load(dir, &DEVICE).unwrap();
    let ids = m
        .tokenizer
        .encode("### Instruction:\n헌법 제1조는?\n\n### Response:\n")
        .unwrap();
    let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let n = ids.len();
    let x = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), &DEVICE);
    m.model
        .forward(x, None)
        .into_data()
        .into_vec::<f32>()
        .unwrap()
}

fn load_err(dir: &Path) -> String {
    match ModelDir::<B>::load(dir, &DEVICE) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn f32_package_is_exact_and_q4_is_close() {
    let source = logits(&repo().join("models/law-tiny-demo"));
    let f32_dir = temp_dir("demo-f32");
    export(&f32_dir, "f32").unwrap();
    assert_eq!(logits(&f32_dir), source);
    let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let rel_err = |quant: &str| {
        let dir = temp_dir(&format!("demo-{quant}"));
        export(&dir, quant).unwrap();
        let diff: Vec<f32> = logits(&dir)
            .iter()
            .zip(&source)
            .map(|(a, b)| a - b)
            .collect();
        (rms(&diff) / rms(&source), dir)
    };
    let (q8, _) = rel_err("q8");
    let (q4, q4_dir) = rel_err("q4");
    // A q4 step is 127/7 ≈ 18 times a q8 step: the errors must scale about so (a scheme that
    // ignored its bits, or mixed them up, would not).
    assert!(
        q4 < 0.25 && (8.0..40.0).contains(&(q4 / q8)),
        "relative RMS error q4 {q4}, q8 {q8}"
    );
    // The committed package is what export-web writes today.
    let committed = repo().join("public/models/law-tiny-demo");
    let m1 = std::fs::read(committed.join("model-00001-of-00001.safetensors")).unwrap();
    let m2 = std::fs::read(q4_dir.join("model-00001-of-00001.safetensors")).unwrap();
    assert!(
        m1 == m2,
        "public/models/law-tiny-demo is stale: rerun tools/build_models.sh"
    );
}

#[test]
fn bad_files_and_fields_are_named() {
    let dir = temp_dir("demo-bad");
    export(&dir, "q8").unwrap();
    let shard = dir.join("model-00001-of-00001.safetensors");
    let good = std::fs::read(&shard).unwrap();

    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    std::fs::write(&shard, &flipped).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model-00001-of-00001.safetensors") && e.contains("sha256"),
        "{e}"
    );

    std::fs::write(&shard, &good[..good.len() - 10]).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model-00001-of-00001.safetensors") && e.contains("bytes"),
        "{e}"
    );
    std::fs::write(&shard, &good).unwrap();

    let manifest_path = dir.join("manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 6] = [
        ("total_bytes", |j| j["total_bytes"] = "many".into()),
        ("files[0].sha256", |j| {
            j["files"][0]["sha256"] = "abc".into()
        }),
        ("files[1].name", |j| {
            j["files"][1]["name"] = "../etc/passwd".into()
        }),
        ("format", |j| j["format"] = "law-polyglot-web/99".into()),
        ("generation.top_p", |j| {
            j["generation"]["top_p"] = 0.0.into()
        }),
        ("config", |j| j["config"]["hidden_size"] = 250.into()),
    ];
    for (field, edit) in cases {
        let mut j = json.clone();
        edit(&mut j);
        std::fs::write(&manifest_path, j.to_string()).unwrap();
        let e = load_err(&dir);
        assert!(
            e.contains("manifest.json") && e.contains(field),
            "{field}: {e}"
        );
    }
    let mut j = json.clone();
    j.as_object_mut().unwrap().remove("files");
    std::fs::write(&manifest_path, j.to_string()).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("files"), "{e}");
    std::fs::write(&manifest_path, &manifest).unwrap();

    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn a_failed_export_keeps_the_old_package() {
    let dir = temp_dir("keep-me");
    export(&dir, "q4").unwrap();
    let before = std::fs::read(dir.join("manifest.json")).unwrap();
    let err = trainer::cli::run_args([
        "trainer",
        "export-web",
        "--model",
        "/nonexistent/model",
        "--out",
        dir.to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent/model"), "{err:#}");
    assert_eq!(std::fs::read(dir.join("manifest.json")).unwrap(), before);
    let bad_id = trainer::cli::run_args(["trainer", "export-web", "--out", "/tmp/Bad Name"]);
    assert!(format!("{:#}", bad_id.unwrap_err()).contains("model id"));
}
