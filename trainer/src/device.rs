//! `--device cpu|cuda|cuda:N`, and the check that the device can really be used.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::{Error, Result};

/// A device as requested on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// `cuda`: the visible GPUs, worker thread t of a process on GPU `t % n_gpus` (one thread:
    /// `cuda:0`).
    AnyCuda,
    /// The CUDA device with this index (every worker thread of a process on it).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Config(format!("--device '{s}': expected cpu, cuda or cuda:N"));
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::AnyCuda),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse().map(DeviceSpec::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::AnyCuda => f.write_str("cuda"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl DeviceSpec {
    /// The libtorch device, after checking that it exists.
    pub fn resolve(self) -> Result<tch::Device> {
        self.resolve_for(0)
    }

    /// The device of worker thread `thread` of a process, after checking that it exists.
    pub fn resolve_for(self, thread: usize) -> Result<tch::Device> {
        let index = match self {
            DeviceSpec::Cpu => return Ok(tch::Device::Cpu),
            DeviceSpec::AnyCuda => None,
            DeviceSpec::Cuda(i) => Some(i),
        };
        let unusable = |reason: String| Error::Device {
            device: self.to_string(),
            reason,
        };
        if !cfg!(torch_cuda_linked) {
            return Err(unusable(
                "this trainer was built without libtorch_cuda (its CUDA libraries were \
                 not installed at build time); build with `--features cuda` and run with \
                 LD_LIBRARY_PATH set to a CUDA-enabled torch/lib"
                    .into(),
            ));
        }
        let count = tch::Cuda::device_count();
        if count == 0 {
            return Err(unusable(
                "no CUDA GPU is visible (driver missing or no device)".into(),
            ));
        }
        match index {
            None => Ok(tch::Device::Cuda(thread % count as usize)),
            Some(i) if (i as i64) < count => Ok(tch::Device::Cuda(i)),
            Some(_) => Err(unusable(format!("only {count} CUDA device(s) are visible"))),
        }
    }
}

/// A libtorch device as the command line writes it: `cpu`, `cuda:1`.
pub fn name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Waits for queued work on `device` (for timing); a no-op on the CPU.
pub fn synchronize(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_cuda_and_index() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::AnyCuda);
        assert_eq!(DeviceSpec::AnyCuda.to_string(), "cuda");
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cuda_without_a_gpu_is_a_clear_error() {
        if tch::Cuda::is_available() {
            return; // a GPU machine: nothing to check here
        }
        let err = DeviceSpec::Cuda(0).resolve().unwrap_err().to_string();
        assert!(err.starts_with("device cuda:0: "), "{err}");
        let err = DeviceSpec::AnyCuda.resolve_for(3).unwrap_err().to_string();
        assert!(err.starts_with("device cuda: "), "{err}");
    }
}
