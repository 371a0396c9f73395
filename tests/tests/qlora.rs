//! NF4 quantization (QLoRA's base) against bitsandbytes: the host quantization gives bnb's packed
//! bytes and absmax values bit for bit, with and without double quantization, and the device
//! dequantization gives what `dequantize_4bit` gives, bit for bit
//! (`tests/fixtures/gen/make_qlora_golden.py`).

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use common::*;
use safetensors::SafeTensors;
use shared::base_weight::{BaseFormat, Nf4Weight};
use shared::model_dir::ModelDir;
use shared::nf4::{Absmax, Nf4, dynamic_map};

fn fixture() -> Vec<u8> {
    std::fs::read(golden_dir().join("../quant/nf4_golden.safetensors")).unwrap()
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    t.data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn u8s(st: &SafeTensors, name: &str) -> Vec<u8> {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::U8, "{name}");
    t.data().to_vec()
}

fn shape(st: &SafeTensors, name: &str) -> [usize; 2] {
    st.tensor(name).unwrap().shape().try_into().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn nf4_quantization_matches_bitsandbytes() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // a: single quantization, 259 values (a partial last block, an odd count)
    let a = Nf4::quantize(&f32s(&st, "a.weight"), 64, false);
    assert_eq!(a.bnb_bytes(), u8s(&st, "a.packed"), "a: packed codes");
    assert_eq!(a.absmax, Absmax::Plain(f32s(&st, "a.absmax")), "a: absmax");
    assert_eq!(bits(&a.dequantize()), bits(&f32s(&st, "a.dequant")));
    // b: double quantization, 300 blocks (two nested blocks)
    assert_eq!(
        bits(&dynamic_map()),
        bits(&f32s(&st, "b.code2")),
        "dynamic map"
    );
    let b = Nf4::quantize(&f32s(&st, "b.weight"), 64, true);
    assert_eq!(b.bnb_bytes(), u8s(&st, "b.packed"), "b: packed codes");
    let Absmax::Double {
        codes,
        absmax2,
        offset,
        ..
    } = &b.absmax
    else {
        panic!("double quantization")
    };
    assert_eq!(
        offset.to_bits(),
        f32s(&st, "b.offset")[0].to_bits(),
        "offset"
    );
    assert_eq!(bits(absmax2), bits(&f32s(&st, "b.absmax2")), "absmax2");
    assert_eq!(codes, &u8s(&st, "b.qabsmax"), "quantized absmax");
    assert_eq!(bits(&b.dequantize()), bits(&f32s(&st, "b.dequant")));
}

/// The device path (packed words, shifts, code-book lookup, block scales) on `B`.
fn device_dequant_matches<B: Backend>() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let device = Default::default();
    for (case, double) in [("a", false), ("b", true)] {
        let [out, inp] = shape(&st, &format!("{case}.weight"));
        let q = Nf4Weight::<B>::quantize(
            &f32s(&st, &format!("{case}.weight")),
            inp,
            out,
            double,
            &device,
        );
        let got = q.dequantize_hf();
        assert_eq!(got.dims(), [out, inp]);
        let got: Vec<f32> = got.into_data().to_vec().unwrap();
        assert_eq!(
            bits(&got),
            bits(&f32s(&st, &format!("{case}.dequant"))),
            "{case}"
        );
    }
}

#[test]
fn nf4_dequantizes_on_the_device_like_bitsandbytes() {
    device_dequant_matches::<Flex>();
    device_dequant_matches::<Autodiff<Flex>>();
}

/// A 4-bit checkpoint saved by transformers + bitsandbytes (`tests/fixtures/quant/neox-a-nf4`:
/// packed codes, u8 absmax codes, code books, quant_state JSON) loads as NF4 with no `--quant`,
/// with the 4-bit codes of our own quantization of the original f32 model, and its weights to
/// float rounding: bnb's `offset` is torch's f32 mean of the absmax values, ours the correctly
/// rounded mean, and they can differ in the last bit.
#[test]
fn saved_bnb_4bit_checkpoint_loads_as_our_quantization() {
    let device = Default::default();
    let saved = ModelDir::<Flex>::load(&golden_dir().join("../quant/neox-a-nf4"), &device)
        .unwrap()
        .model;
    let ours = ModelDir::<Flex>::load_as(
        &model_dir("neox-a"),
        &device,
        BaseFormat::Nf4 { double: true },
    )
    .unwrap()
    .model;
    let dense = |l: &shared::linear::Linear<Flex>| -> Vec<f32> {
        l.weight.dense().into_data().to_vec().unwrap()
    };
    let codes = |l: &shared::linear::Linear<Flex>| -> Vec<i64> {
        match &l.weight {
            shared::base_weight::BaseWeight::Nf4(q) => {
                q.codes.val().into_data().convert::<i64>().to_vec().unwrap()
            }
            _ => panic!("loaded dense"),
        }
    };
    for ((name, a), (_, b)) in saved.linears().iter().zip(ours.linears()) {
        assert_eq!(codes(a), codes(b), "{name}: 4-bit codes");
        let (x, y) = (dense(a), dense(b));
        assert!(rel_err(&x, &y) < 1e-6, "{name}: {}", rel_err(&x, &y));
    }
    assert!(!saved.embed_out.weight.is_quantized());
    assert_eq!(
        bits(&dense(&saved.embed_out)),
        bits(&dense(&ours.embed_out))
    );
}

/// A damaged quant_state names the tensor and the file.
#[test]
fn bad_bnb_quant_state_is_a_named_error() {
    let dir = temp_dir("bnb-bad-state");
    let src = golden_dir().join("../quant/neox-a-nf4");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let key = "gpt_neox.layers.1.mlp.dense_4h_to_h.weight.quant_state.bitsandbytes__nf4";
    let bad = b"{\"quant_type\": \"nf4\"".to_vec();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    for (name, view) in st.tensors() {
        if name == key {
            continue;
        }
        tensors.push((name, view));
    }
    let bad_view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![bad.len()], &bad)
            .unwrap();
    tensors.push((key.to_string(), bad_view));
    safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).unwrap();
    let err = ModelDir::<Flex>::load(&dir, &Default::default())
        .err()
        .expect("an error");
    let msg = err.to_string();
    assert!(
        msg.contains(key) && msg.contains("model.safetensors"),
        "{msg}"
    );
}

/// `--quant nf4` needs the dense weights of an HF folder; a web package (already quantized for
/// the browser) is refused with a message that says so.
#[test]
fn quantizing_a_web_package_is_refused() {
    let dir = repo().join("public/models/law-tiny-demo");
    let err =
        ModelDir::<Flex>::load_as(&dir, &Default::default(), BaseFormat::Nf4 { double: true })
            .err()
            .expect("an error");
    let msg = err.to_string();
    assert!(
        msg.contains("--quant") && msg.contains("law-tiny-demo"),
        "{msg}"
    );
}
