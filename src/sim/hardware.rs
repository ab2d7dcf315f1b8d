//! GPU specs for the analytic cost model and for sizing the KV cache: vendor datasheet figures, overridable per
//! scenario (`[hardware]`).

use crate::workload::HardwareSection;
use serde::Serialize;

/// What the analytic roofline needs to know about a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GpuSpec {
    /// The preset's name (kept when figures are overridden).
    pub name: &'static str,
    /// Device memory as the datasheet states it. Datasheet "GB" of HBM and GDDR are binary in practice (80 GB =
    /// 5 stacks of 16 GiB), and the driver keeps a little: nvidia-smi shows 79.6 GiB on an "80 GB" H100.
    pub memory_gib: f64,
    /// Peak DRAM bandwidth, GB/s (10^9 bytes a second).
    pub mem_bandwidth_gbps: f64,
    /// Dense (no 2:4 sparsity) fp16 tensor-core throughput with fp32 accumulation, TFLOP/s.
    pub fp16_tflops: f64,
    /// Host-side cost of one kernel launch in an eager (no CUDA graph) forward pass, µs.
    pub launch_overhead_us: f64,
}

/// Launch-to-launch gap of back-to-back small kernels in an eager PyTorch/cuBLAS forward pass on a recent x86 host.
pub const DEFAULT_LAUNCH_OVERHEAD_US: f64 = 4.0;

/// The built-in GPUs. Sparse-tensor figures in datasheets are twice the dense ones; we always use dense.
pub const GPU_PRESETS: &[GpuSpec] = &[
    // NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: 80 GB HBM3, 3.35 TB/s, FP16 Tensor Core 1,979 TFLOPS
    // with sparsity → 989 dense.
    GpuSpec {
        name: "h100-sxm",
        memory_gib: 80.0,
        mem_bandwidth_gbps: 3350.0,
        fp16_tflops: 989.0,
        launch_overhead_us: DEFAULT_LAUNCH_OVERHEAD_US,
    },
    // NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: 141 GB HBM3e, 4.8 TB/s, FP16 Tensor Core 1,979 TFLOPS
    // with sparsity → 989 dense (same compute as H100 SXM).
    GpuSpec {
        name: "h200",
        memory_gib: 141.0,
        mem_bandwidth_gbps: 4800.0,
        fp16_tflops: 989.0,
        launch_overhead_us: DEFAULT_LAUNCH_OVERHEAD_US,
    },
    // NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM: 80 GB HBM2e, 2,039 GB/s, FP16 Tensor Core 312 TFLOPS
    // (624 with sparsity).
    GpuSpec {
        name: "a100-80gb",
        memory_gib: 80.0,
        mem_bandwidth_gbps: 2039.0,
        fp16_tflops: 312.0,
        launch_overhead_us: DEFAULT_LAUNCH_OVERHEAD_US,
    },
    // NVIDIA L40S datasheet: 48 GB GDDR6 with ECC, 864 GB/s, FP16 Tensor Core 362.05 TFLOPS (733 with sparsity).
    GpuSpec {
        name: "l40s",
        memory_gib: 48.0,
        mem_bandwidth_gbps: 864.0,
        fp16_tflops: 362.05,
        launch_overhead_us: DEFAULT_LAUNCH_OVERHEAD_US,
    },
    // NVIDIA Ada Lovelace GPU architecture whitepaper, GeForce RTX 4090: 24 GB GDDR6X, 1,008 GB/s, peak FP16
    // Tensor TFLOPS with FP32 accumulate 165.2 (GeForce runs fp32 accumulation at half the fp16-accumulate 330.3).
    GpuSpec {
        name: "rtx-4090",
        memory_gib: 24.0,
        mem_bandwidth_gbps: 1008.0,
        fp16_tflops: 165.2,
        launch_overhead_us: DEFAULT_LAUNCH_OVERHEAD_US,
    },
    // NVIDIA RTX PRO 4000 Blackwell datasheet: 24 GB GDDR7 with ECC, 672 GB/s, and only "1,290 AI TOPS" (FP4 with
    // 2:4 sparsity) for the tensor cores. Derived: dense halves it (645 FP4), each step FP4 → FP8 → FP16 halves it
    // again: 1290 / 8 = 161.25 TFLOPS FP16. Professional Blackwell parts run FP16 with FP32 accumulation at full
    // rate (the RTX PRO 6000 Blackwell datasheet's 4,000 AI TOPS / 8 ≈ its 504 FP16/FP32-accumulate TFLOPS), so
    // this is the fp32-accumulate figure. Not measured: calibrate to confirm.
    GpuSpec {
        name: "rtx-pro-4000-blackwell",
        memory_gib: 24.0,
        mem_bandwidth_gbps: 672.0,
        fp16_tflops: 161.25,
        launch_overhead_us: DEFAULT_LAUNCH_OVERHEAD_US,
    },
];

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum HardwareError {
    #[error("unknown GPU `{name}`; presets: {}", preset_names().join(", "))]
    Unknown { name: String },
    #[error("hardware.{key} must be {bound}, got {value}")]
    OutOfRange {
        key: &'static str,
        bound: &'static str,
        value: f64,
    },
}

/// Names of the presets, in table order.
pub fn preset_names() -> Vec<&'static str> {
    GPU_PRESETS.iter().map(|g| g.name).collect()
}

impl GpuSpec {
    /// A preset by name (case-insensitive).
    pub fn preset(name: &str) -> Result<GpuSpec, HardwareError> {
        GPU_PRESETS
            .iter()
            .find(|g| g.name.eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| HardwareError::Unknown { name: name.to_string() })
    }

    /// The section's preset with its overrides applied. Every figure must be a finite number > 0, except the launch
    /// overhead, which may be 0 (a step replayed as one CUDA graph).
    pub fn resolve(section: &HardwareSection) -> Result<GpuSpec, HardwareError> {
        let mut gpu = GpuSpec::preset(&section.gpu)?;
        let overrides = [
            ("memory_gib", section.memory_gib, &mut gpu.memory_gib, false),
            (
                "mem_bandwidth_gbps",
                section.mem_bandwidth_gbps,
                &mut gpu.mem_bandwidth_gbps,
                false,
            ),
            ("fp16_tflops", section.fp16_tflops, &mut gpu.fp16_tflops, false),
            (
                "launch_overhead_us",
                section.launch_overhead_us,
                &mut gpu.launch_overhead_us,
                true,
            ),
        ];
        for (key, value, field, zero_ok) in overrides {
            let Some(value) = value else { continue };
            let in_range = value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0));
            if !in_range {
                let bound = if zero_ok { ">= 0" } else { "> 0" };
                return Err(HardwareError::OutOfRange { key, bound, value });
            }
            *field = value;
        }
        Ok(gpu)
    }

    pub fn memory_bytes(&self) -> u64 {
        (self.memory_gib * (1u64 << 30) as f64) as u64
    }

    pub fn mem_bandwidth_bytes_per_s(&self) -> f64 {
        self.mem_bandwidth_gbps * 1e9
    }

    pub fn fp16_flops_per_s(&self) -> f64 {
        self.fp16_tflops * 1e12
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(gpu: &str) -> HardwareSection {
        HardwareSection {
            gpu: gpu.to_string(),
            ..HardwareSection::default()
        }
    }

    #[test]
    fn presets_are_unique_and_positive() {
        let mut names = preset_names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), GPU_PRESETS.len());
        for g in GPU_PRESETS {
            assert!(
                g.memory_gib > 0.0 && g.mem_bandwidth_gbps > 0.0 && g.fp16_tflops > 0.0,
                "{g:?}"
            );
            assert!(g.launch_overhead_us >= 0.0, "{g:?}");
        }
    }

    #[test]
    fn every_preset_the_brief_names_exists() {
        for name in [
            "h100-sxm",
            "h200",
            "a100-80gb",
            "l40s",
            "rtx-4090",
            "rtx-pro-4000-blackwell",
        ] {
            assert_eq!(GpuSpec::preset(name).unwrap().name, name);
        }
        let h100 = GpuSpec::preset("H100-SXM").unwrap();
        assert_eq!(
            (h100.mem_bandwidth_bytes_per_s(), h100.fp16_flops_per_s()),
            (3.35e12, 989e12)
        );
        assert_eq!(h100.memory_bytes(), 80 << 30);
    }

    #[test]
    fn scenario_default_gpu_is_a_preset() {
        assert_eq!(GpuSpec::resolve(&HardwareSection::default()).unwrap().name, "h100-sxm");
    }

    #[test]
    fn unknown_gpu_lists_the_presets() {
        let msg = GpuSpec::preset("tpu-v5").unwrap_err().to_string();
        assert!(
            msg.contains("tpu-v5") && msg.contains("h100-sxm") && msg.contains("rtx-pro-4000-blackwell"),
            "{msg}"
        );
        assert!(matches!(
            GpuSpec::resolve(&section("b200")),
            Err(HardwareError::Unknown { .. })
        ));
    }

    #[test]
    fn overrides_replace_only_their_figure() {
        let s = HardwareSection {
            mem_bandwidth_gbps: Some(3000.0),
            launch_overhead_us: Some(0.0),
            ..section("h100-sxm")
        };
        let gpu = GpuSpec::resolve(&s).unwrap();
        let preset = GpuSpec::preset("h100-sxm").unwrap();
        assert_eq!(
            gpu,
            GpuSpec {
                mem_bandwidth_gbps: 3000.0,
                launch_overhead_us: 0.0,
                ..preset
            }
        );
    }

    #[test]
    fn bad_overrides_name_their_key() {
        let s = HardwareSection {
            mem_bandwidth_gbps: Some(-3.0),
            ..section("h200")
        };
        assert_eq!(
            GpuSpec::resolve(&s).unwrap_err().to_string(),
            "hardware.mem_bandwidth_gbps must be > 0, got -3"
        );
        let s = HardwareSection {
            memory_gib: Some(0.0),
            ..section("h200")
        };
        assert_eq!(
            GpuSpec::resolve(&s).unwrap_err().to_string(),
            "hardware.memory_gib must be > 0, got 0"
        );
        let s = HardwareSection {
            fp16_tflops: Some(f64::NAN),
            ..section("h200")
        };
        assert_eq!(
            GpuSpec::resolve(&s).unwrap_err().to_string(),
            "hardware.fp16_tflops must be > 0, got NaN"
        );
        let s = HardwareSection {
            fp16_tflops: Some(f64::INFINITY),
            ..section("h200")
        };
        assert!(GpuSpec::resolve(&s).is_err());
        let s = HardwareSection {
            launch_overhead_us: Some(-1.0),
            ..section("h200")
        };
        assert_eq!(
            GpuSpec::resolve(&s).unwrap_err().to_string(),
            "hardware.launch_overhead_us must be >= 0, got -1"
        );
    }
}
