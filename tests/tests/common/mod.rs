//! Helpers shared by the end-to-end tests: fixture paths, golden tensors, comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

pub type B = burn::backend::Flex;
pub const DEVICE: burn::backend::flex::FlexDevice = burn::backend::flex::FlexDevice;

/// The workspace root (bundled models, `public/`, `web/dist`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden")
}

pub fn model_dir(name: &str) -> PathBuf {
    golden_dir().join(name)
}

/// `golden.safetensors` of a fixture model: (input_ids [2, T], logits [2, T, V] flat, V).
pub struct Golden {
    pub input_ids: Vec<Vec<i64>>,
    pub logits: Vec<f32>,
    pub vocab: usize,
    pub json: serde_json::Value,
}

pub fn golden(name: &str) -> Golden {
    golden_in(&model_dir(name))
}

/// `golden.safetensors` + `golden.json` of any fixture folder.
pub fn golden_in(dir: &Path) -> Golden {
    let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let [b, t] = [ids.shape()[0], ids.shape()[1]];
    let flat: Vec<i64> = ids
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let logits = st.tensor("logits").unwrap();
    let vocab = logits.shape()[2];
    let logits: Vec<f32> = logits
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    Golden {
        input_ids: (0..b).map(|r| flat[r * t..(r + 1) * t].to_vec()).collect(),
        logits,
        vocab,
        json,
    }
}

/// max |a - b| / max |b|.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// A fresh temporary folder for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("law-polyglot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copy a fixture model folder into a temporary one.
pub fn copy_model(name: &str, tag: &str) -> PathBuf {
    let dst = temp_dir(tag);
    for e in std::fs::read_dir(model_dir(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}
