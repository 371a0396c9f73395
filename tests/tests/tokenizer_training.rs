//! `trainer tokenizer` against HF tokenizers' BpeTrainer: trained on the same text with the
//! same settings, it must give the very vocabulary and merges of the Python-made fixture.

mod common;

use common::*;

#[test]
fn trained_tokenizer_equals_hf_tokenizers() {
    let out = temp_dir("tokenizer");
    let text = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/korean-law/kolaw/constitution.txt");
    trainer::cli::run_args([
        "trainer",
        "tokenizer",
        "--data",
        text.to_str().unwrap(),
        "--vocab-size",
        "384",
        "--min-frequency",
        "0",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let read = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let ours = read(out.join("tokenizer.json"));
    let hf = read(golden_dir().join("tokenizer.json"));
    assert_eq!(ours["model"]["vocab"], hf["model"]["vocab"]);
    assert_eq!(ours["model"]["merges"], hf["model"]["merges"]);
    assert_eq!(ours["pre_tokenizer"], hf["pre_tokenizer"]);
    assert_eq!(ours["added_tokens"], hf["added_tokens"]);
    // And it tokenizes like the fixture.
    let tok = shared::Tokenizer::from_file(&out.join("tokenizer.json"), None).unwrap();
    let golden = shared::Tokenizer::from_file(&golden_dir().join("tokenizer.json"), None).unwrap();
    let s = "대한민국은 민주공화국이다.\n### Response:\n";
    assert_eq!(tok.encode(s).unwrap(), golden.encode(s).unwrap());
}
