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
            other => anyhow::bail!(
                "device {other:?} is not built into this binary: rebuild with `--features cuda` for cuda (wgpu arrives with the web issue)"
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
    }
}
