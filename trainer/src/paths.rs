//! The bundled defaults (data, base model, demo model) live in the repository; commands find
//! them relative to the working directory, else relative to the source tree they were built from.

use std::path::PathBuf;

pub const BASE_MODEL: &str = "models/law-tiny-base";
pub const DEMO_MODEL: &str = "models/law-tiny-demo";
pub const TRAIN_DATA: &str = "data/instructions/train.jsonl";
pub const HELDOUT_DATA: &str = "data/instructions/heldout.jsonl";
pub const CORPUS: &[&str] = &[
    "data/korean-law/kolaw/constitution.txt",
    "data/korean-law/kobill",
];

/// `rel` under the working directory if it exists there, else under the workspace root.
pub fn bundled(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}
