//! `--device`: which burn backend a command runs on. Backends are instantiated only here, in
//! the binary; the model crate is generic.

use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceArg {
    /// burn's Flex backend (pure Rust, multi-threaded CPU).
    Cpu,
    /// NVIDIA GPU N (needs `--features cuda`).
    Cuda(usize),
    /// The default wgpu adapter (needs `--features wgpu`).
    Wgpu,
}

impl DeviceArg {
    /// What runs this device's matmuls, for benchmark output: cuBLAS on CUDA where libcublas
    /// loads (`shared::cublas`), else CubeCL's kernels, or Flex's on the CPU.
    pub fn matmul_impl(&self) -> &'static str {
        match self {
            Self::Cpu => "flex",
            #[cfg(all(feature = "cuda", not(feature = "fusion")))]
            Self::Cuda(_) => shared::cublas::backend_name(),
            #[allow(unreachable_patterns)]
            _ => "cubecl",
        }
    }
}

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(format!(
                    "unknown device {s:?}: use cpu, cuda, cuda:N or wgpu"
                )),
            },
        }
    }
}

/// `--devices 0,1,2,3`: device indices for data parallel training.
pub fn parse_indices(s: &str) -> Result<Vec<usize>, String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--devices {s:?}: expected indices like 0,1,2,3"))?;
    let mut uniq = v.clone();
    uniq.sort();
    uniq.dedup();
    if v.is_empty() || uniq.len() != v.len() {
        return Err(format!("--devices {s:?}: indices must be distinct"));
    }
    Ok(v)
}

/// `--dtype`: the compute dtype of the frozen base weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DTypeArg {
    F32,
    Bf16,
}

impl DTypeArg {
    pub fn float(self) -> burn::tensor::FloatDType {
        match self {
            Self::F32 => burn::tensor::FloatDType::F32,
            Self::Bf16 => burn::tensor::FloatDType::BF16,
        }
    }

    /// An error, instead of a panic at the first matmul, when `device` cannot compute in this
    /// dtype (as burn's matmul decides: the dtype must support arithmetic there).
    pub fn check<B: burn::tensor::backend::Backend>(
        self,
        device: &B::Device,
    ) -> anyhow::Result<()> {
        use burn::tensor::DType;
        use burn::tensor::backend::DTypeUsage;
        if self == Self::Bf16
            && !B::dtype_usage(device, DType::BF16).contains(DTypeUsage::Arithmetic)
        {
            anyhow::bail!(
                "--dtype bf16: {} ({device:?}) has no bf16 arithmetic; use --dtype f32",
                B::name(device)
            );
        }
        Ok(())
    }
}

/// `--devices` as parsed by clap.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceIndices(pub Vec<usize>);

impl FromStr for DeviceIndices {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_indices(s).map(Self)
    }
}

/// Devices of one backend by index (`--devices`).
pub trait IndexedDevice: Sized {
    fn with_index(&self, index: usize) -> anyhow::Result<Self>;
}

/// Several CPU "devices" are replicas on the same CPU: the data parallel logic runs (and is
/// tested) without GPUs.
impl IndexedDevice for burn::backend::flex::FlexDevice {
    fn with_index(&self, _: usize) -> anyhow::Result<Self> {
        Ok(Self)
    }
}

#[cfg(feature = "cuda")]
impl IndexedDevice for burn::backend::cuda::CudaDevice {
    fn with_index(&self, index: usize) -> anyhow::Result<Self> {
        cuda_device(index)
    }
}

#[cfg(feature = "wgpu")]
impl IndexedDevice for burn::backend::wgpu::WgpuDevice {
    fn with_index(&self, index: usize) -> anyhow::Result<Self> {
        match index {
            0 => Ok(self.clone()),
            _ => anyhow::bail!("wgpu runs on one adapter only"),
        }
    }
}

/// The training devices: `device` alone, or one per index of `--devices`.
pub fn training_devices<D: IndexedDevice + Clone>(
    device: &D,
    indices: Option<&DeviceIndices>,
) -> anyhow::Result<Vec<D>> {
    match indices {
        None => Ok(vec![device.clone()]),
        Some(list) => list.0.iter().map(|&i| device.with_index(i)).collect(),
    }
}

/// Run `$body` with `$B` bound to the backend type and `$dev` to the device value.
#[macro_export]
macro_rules! with_backend {
    ($arg:expr, |$B:ident, $dev:ident| $body:expr) => {{
        match $arg {
            $crate::device::DeviceArg::Cpu => {
                type $B = burn::backend::Flex;
                let $dev = burn::backend::flex::FlexDevice;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceArg::Cuda(index) => {
                type $B = burn::backend::Cuda<f32, i32>;
                let $dev = $crate::device::cuda_device(index)?;
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::device::DeviceArg::Wgpu => {
                type $B = burn::backend::Wgpu<f32, i32>;
                let $dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
                $body
            }
            #[allow(unreachable_patterns)]
            other => anyhow::bail!(
                "device {other:?} is not built into this binary: rebuild with `--features cuda` (cuda) or `--features wgpu` (wgpu)"
            ),
        }
    }};
}

/// Open CUDA device `index`, turning a missing driver or device into an error instead of a panic.
#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> anyhow::Result<burn::backend::cuda::CudaDevice> {
    use burn::tensor::Tensor;
    let device = burn::backend::cuda::CudaDevice::new(index);
    let probe = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(move || {
        Tensor::<burn::backend::Cuda<f32, i32>, 1>::zeros([1], &probe).into_data();
    });
    std::panic::set_hook(hook);
    match ok {
        Ok(()) => Ok(device),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            anyhow::bail!(
                "no usable CUDA device {index} (is the NVIDIA driver installed and the GPU visible?): {msg}"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceArg>(), Ok(DeviceArg::Cpu));
        assert_eq!("cuda:3".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(3)));
        assert!("tpu".parse::<DeviceArg>().is_err());
        assert!("cuda:x".parse::<DeviceArg>().is_err());
        assert_eq!(parse_indices("0,1, 3"), Ok(vec![0, 1, 3]));
        assert!(parse_indices("0,0").is_err() && parse_indices("a").is_err());
    }

    /// No driver (CI) or no such GPU: an error that says so, not a panic.
    #[cfg(feature = "cuda")]
    #[test]
    fn missing_cuda_device_is_an_error() {
        if let Err(e) = cuda_device(0) {
            assert!(e.to_string().contains("no usable CUDA device 0"), "{e}");
        }
        let e = cuda_device(999).unwrap_err().to_string();
        assert!(e.contains("no usable CUDA device 999"), "{e}");
    }
}
