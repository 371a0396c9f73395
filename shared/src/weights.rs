//! Checkpoint files: single or sharded safetensors (f32, f16, bf16, f64), and natively also
//! `pytorch_model*.bin`. Tensors are read one at a time, by HF name, checked against the shape
//! the model expects, and converted to f32. Errors name the tensor and the file.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::Metadata};

use crate::error::LoadError;
use crate::quant::{self, QuantScheme};

/// Raw bytes of a weight file: memory-mapped natively, owned in the browser.
enum Bytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

struct SafetensorsFile {
    name: String,
    bytes: Bytes,
    data_start: usize,
    meta: Metadata,
}

enum WeightFile {
    Safetensors(SafetensorsFile),
    #[cfg(not(target_arch = "wasm32"))]
    Pytorch {
        name: String,
        tensors: HashMap<String, burn_store::TensorSnapshot>,
    },
}

impl WeightFile {
    fn name(&self) -> &str {
        match self {
            WeightFile::Safetensors(f) => &f.name,
            #[cfg(not(target_arch = "wasm32"))]
            WeightFile::Pytorch { name, .. } => name,
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            WeightFile::Safetensors(f) => f.meta.tensors().into_keys().collect(),
            #[cfg(not(target_arch = "wasm32"))]
            WeightFile::Pytorch { tensors, .. } => tensors.keys().cloned().collect(),
        }
    }
}

/// A host-side tensor in f32, row-major, in the file's (HF) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    /// The data of a 2-D tensor transposed (HF `[out, in]` ↔ burn `[in, out]`).
    pub fn transposed(&self) -> Vec<f32> {
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut out = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                out[c * rows + r] = self.data[r * cols + c];
            }
        }
        out
    }
}

/// All weight files of one checkpoint, with a name → file index.
pub struct Checkpoint {
    files: Vec<WeightFile>,
    index: HashMap<String, usize>,
    /// What to name in "missing tensor" errors: the file or the index.
    origin: String,
}

fn corrupt(file: &str, reason: impl ToString) -> LoadError {
    LoadError::Corrupt {
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

fn open_safetensors(name: String, bytes: Bytes) -> Result<SafetensorsFile, LoadError> {
    let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        let reason = match e {
            safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                "truncated or padded: the header's tensors do not end where the file ends"
                    .to_string()
            }
            other => format!("{other:?}"),
        };
        corrupt(&name, reason)
    })?;
    Ok(SafetensorsFile {
        name,
        bytes,
        data_start: 8 + n,
        meta,
    })
}

fn to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        _ => return None,
    })
}

impl Checkpoint {
    fn from_files(files: Vec<WeightFile>, origin: String) -> Self {
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for n in f.names() {
                index.insert(n, i);
            }
        }
        Self {
            files,
            index,
            origin,
        }
    }

    /// One safetensors file held in memory (the browser's path). `name` is used in errors.
    pub fn from_safetensors_bytes(parts: Vec<(String, Vec<u8>)>) -> Result<Self, LoadError> {
        let origin = parts
            .iter()
            .map(|p| p.0.clone())
            .collect::<Vec<_>>()
            .join(", ");
        let files = parts
            .into_iter()
            .map(|(name, bytes)| {
                open_safetensors(name, Bytes::Owned(bytes)).map(WeightFile::Safetensors)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_files(files, origin))
    }

    /// Where "missing tensor" errors point: the file or the index.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Every tensor name in the checkpoint.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Where `name` lives: the exact key, or the key without the `gpt_neox.` prefix (checkpoints
    /// saved from the base `GPTNeoXModel`).
    fn locate(&self, name: &str) -> Option<(&str, usize)> {
        if let Some((k, &i)) = self.index.get_key_value(name) {
            return Some((k, i));
        }
        let short = name.strip_prefix("gpt_neox.")?;
        self.index
            .get_key_value(short)
            .map(|(k, &i)| (k.as_str(), i))
    }

    /// Read tensor `name` as f32, checking its shape against `expected` (HF layout).
    pub fn tensor(&self, name: &str, expected: &[usize]) -> Result<HostTensor, LoadError> {
        let (t, file) = self.read_any(name)?;
        if t.shape != expected {
            return Err(LoadError::Shape {
                name: name.into(),
                file: file.into(),
                expected: expected.to_vec(),
                actual: t.shape,
            });
        }
        Ok(t)
    }

    /// Read tensor `name` as f32 whatever its shape.
    pub fn read(&self, name: &str) -> Result<HostTensor, LoadError> {
        self.read_any(name).map(|(t, _)| t)
    }

    fn read_any(&self, name: &str) -> Result<(HostTensor, &str), LoadError> {
        let Some((key, i)) = self.locate(name) else {
            if let Some(found) = self.read_quantized(name) {
                return found;
            }
            return Err(LoadError::MissingTensor {
                name: name.into(),
                file: self.origin.clone(),
            });
        };
        let file = &self.files[i];
        let (shape, data) = match file {
            WeightFile::Safetensors(f) => {
                let info = f.meta.info(key).expect("indexed name");
                let (a, b) = info.data_offsets;
                let bytes = &f.bytes[f.data_start + a..f.data_start + b];
                let data = to_f32(bytes, info.dtype).ok_or_else(|| LoadError::Dtype {
                    name: name.into(),
                    file: f.name.clone(),
                    dtype: format!("{:?}", info.dtype),
                })?;
                (info.shape.clone(), data)
            }
            #[cfg(not(target_arch = "wasm32"))]
            WeightFile::Pytorch {
                name: file_name,
                tensors,
            } => {
                let snap = &tensors[key];
                let td = snap
                    .to_data()
                    .map_err(|e| corrupt(file_name, format!("tensor `{key}`: {e:?}")))?;
                if !td.dtype.is_float() {
                    return Err(LoadError::Dtype {
                        name: name.into(),
                        file: file_name.clone(),
                        dtype: format!("{:?}", td.dtype),
                    });
                }
                let shape = td.shape.to_vec();
                let data = td
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| corrupt(file_name, format!("tensor `{key}`: {e:?}")))?;
                (shape, data)
            }
        };
        Ok((HostTensor { shape, data }, file.name()))
    }
}

/// A tensor's bytes as stored, for tensors that are not floats (bitsandbytes' packed codes).
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
    /// The file it came from, for errors.
    pub file: String,
}

impl Checkpoint {
    /// Whether the checkpoint holds `name` (see [`Self::tensor`] for the names it accepts).
    pub fn contains(&self, name: &str) -> bool {
        self.locate(name).is_some()
    }

    /// Tensor `name` exactly as stored (safetensors files only).
    pub fn raw(&self, name: &str) -> Result<RawTensor, LoadError> {
        let Some((key, i)) = self.locate(name) else {
            return Err(LoadError::MissingTensor {
                name: name.into(),
                file: self.origin.clone(),
            });
        };
        match &self.files[i] {
            WeightFile::Safetensors(f) => {
                let info = f.meta.info(key).expect("indexed name");
                let (a, b) = info.data_offsets;
                Ok(RawTensor {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes: f.bytes[f.data_start + a..f.data_start + b].to_vec(),
                    file: f.name.clone(),
                })
            }
            #[cfg(not(target_arch = "wasm32"))]
            WeightFile::Pytorch { name: file, .. } => Err(LoadError::Unsupported {
                file: file.clone(),
                what: format!("tensor `{name}`: quantized weights are read from safetensors only"),
            }),
        }
    }
}

impl Checkpoint {
    /// `name` stored quantized by `trainer export-web`: `{name}.qweight` (u32 words) and
    /// `{name}.scales` (f32 `[rows, blocks]`), with the scheme in the file's `quant` metadata.
    fn read_quantized(&self, name: &str) -> Option<Result<(HostTensor, &str), LoadError>> {
        let (wkey, i) = self.locate(&format!("{name}.qweight"))?;
        match &self.files[i] {
            WeightFile::Safetensors(f) => Some(dequantize(name, wkey, f)),
            #[cfg(not(target_arch = "wasm32"))]
            WeightFile::Pytorch { .. } => None,
        }
    }
}

/// Dequantize `name` from its `.qweight`/`.scales` pair in file `f`.
fn dequantize<'a>(
    name: &str,
    wkey: &str,
    f: &'a SafetensorsFile,
) -> Result<(HostTensor, &'a str), LoadError> {
    let bad = |reason: String| corrupt(&f.name, format!("tensor `{name}`: {reason}"));
    let meta = f.meta.metadata().clone().unwrap_or_default();
    let scheme: QuantScheme = meta
        .get("quant")
        .ok_or_else(|| bad("quantized, but the file has no `quant` metadata".into()))?
        .parse()
        .map_err(bad)?;
    let skey = format!("{}.scales", wkey.trim_end_matches(".qweight"));
    let (Some(wi), Some(si)) = (f.meta.info(wkey), f.meta.info(&skey)) else {
        return Err(LoadError::MissingTensor {
            name: skey,
            file: f.name.clone(),
        });
    };
    if wi.dtype != Dtype::U32 || si.dtype != Dtype::F32 || wi.shape.len() != 2 {
        return Err(bad(format!(
            "expected u32 [rows, words] and f32 scales, found {:?} {:?} and {:?}",
            wi.dtype, wi.shape, si.dtype
        )));
    }
    let (rows, cols) = (wi.shape[0], wi.shape[1] * 32 / scheme.bits());
    // The block size is implied by the scales' shape: one scale per block of a row.
    let block = match si.shape[..] {
        [r, n] if r == rows && n > 0 && cols % n == 0 => cols / n,
        _ => 0,
    };
    if !quant::fits(cols, scheme, block) {
        return Err(bad(format!(
            "scales {:?} do not suit a {rows}x{cols} {} matrix",
            si.shape,
            scheme.name()
        )));
    }
    let bytes = |(a, b): (usize, usize)| &f.bytes[f.data_start + a..f.data_start + b];
    let words = bytes(wi.data_offsets)
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let scales = to_f32(bytes(si.data_offsets), Dtype::F32).expect("f32");
    let q = quant::Quantized { words, scales };
    let data = quant::dequantize(&q, rows * cols, scheme, block);
    Ok((
        HostTensor {
            shape: vec![rows, cols],
            data,
        },
        &f.name,
    ))
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use std::path::{Path, PathBuf};

    fn io(path: &Path, source: std::io::Error) -> LoadError {
        LoadError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    #[allow(unsafe_code)]
    fn mmap(path: &Path) -> Result<Bytes, LoadError> {
        let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
        // SAFETY: the map is read-only and lives as long as the checkpoint; a checkpoint file
        // changed by another process while loading is outside what we guard against (as in
        // safetensors and candle).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io(path, e))?;
        Ok(Bytes::Mmap(map))
    }

    fn open_file(path: &Path) -> Result<WeightFile, LoadError> {
        let name = path.display().to_string();
        if path.extension().is_some_and(|e| e == "safetensors") {
            return open_safetensors(name, mmap(path)?).map(WeightFile::Safetensors);
        }
        let reader =
            burn_store::pytorch::PytorchReader::new(path).map_err(|e| corrupt(&name, e))?;
        Ok(WeightFile::Pytorch {
            name,
            tensors: reader.into_tensors(),
        })
    }

    /// The shards an `*.index.json` names, each checked to exist.
    fn shards(index_path: &Path) -> Result<Vec<PathBuf>, LoadError> {
        let text = std::fs::read_to_string(index_path).map_err(|e| io(index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| corrupt(&index_path.display().to_string(), e))?;
        let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
            return Err(corrupt(
                &index_path.display().to_string(),
                "no `weight_map` object",
            ));
        };
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|n| {
                let p = dir.join(n);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(LoadError::MissingShard {
                        shard: p.display().to_string(),
                        index: index_path.display().to_string(),
                    })
                }
            })
            .collect()
    }

    impl Checkpoint {
        /// Open the given weight files (safetensors or torch `.bin`) as one checkpoint.
        pub fn open_files(paths: &[PathBuf]) -> Result<Self, LoadError> {
            let files = paths
                .iter()
                .map(|p| open_file(p))
                .collect::<Result<Vec<_>, _>>()?;
            let origin = paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            Ok(Self::from_files(files, origin))
        }

        /// Open the weights of an HF model folder: `model.safetensors.index.json` (sharded),
        /// `model.safetensors`, `pytorch_model.bin.index.json` or `pytorch_model.bin`.
        pub fn open_dir(dir: &Path) -> Result<Self, LoadError> {
            let candidates = [
                ("model.safetensors.index.json", true),
                ("model.safetensors", false),
                ("pytorch_model.bin.index.json", true),
                ("pytorch_model.bin", false),
            ];
            for (file, is_index) in candidates {
                let path = dir.join(file);
                if !path.is_file() {
                    continue;
                }
                let paths = if is_index {
                    shards(&path)?
                } else {
                    vec![path.clone()]
                };
                let files = paths
                    .iter()
                    .map(|p| open_file(p))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Self::from_files(files, path.display().to_string()));
            }
            Err(LoadError::NoWeights {
                dir: dir.display().to_string(),
            })
        }
    }
}
