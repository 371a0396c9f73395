//! NF4 quantization (QLoRA's base) against bitsandbytes: the host quantization gives bnb's packed
//! bytes and absmax values bit for bit, with and without double quantization, and the device
//! dequantization gives what `dequantize_4bit` gives, bit for bit
//! (`tests/fixtures/gen/make_qlora_golden.py`).

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use common::*;
use safetensors::SafeTensors;
use shared::base_weight::Nf4Weight;
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
