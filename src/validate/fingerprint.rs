//! A calibration profile is only evidence about the GPU and kernels it was measured on. The simulator warns when
//! they differ; validate refuses, since its whole point is to judge the cost model on the hardware at hand.

use crate::calib::Profile;
use crate::model::ModelSpec;
use serde::{Deserialize, Serialize};

/// What identifies the GPU and the kernels a validation runs on (the CLI reads it from the device; `validate`
/// writes it to `device.json` beside the measured runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFingerprint {
    pub gpu_name: String,
    /// The card's UUID, when the driver gives it (absent from a `device.json` written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_uuid: Option<String>,
    /// "9.0"
    pub compute_capability: String,
    pub sm_count: u32,
    pub memory_bytes: u64,
    /// The kernel-mode driver version, when known.
    pub driver_version: Option<String>,
    /// The newest CUDA version the driver supports.
    pub cuda_version: String,
    /// `gpu::kernel_source_hash()` of this build.
    pub kernel_source_hash: String,
    /// [`crate::engine::ENGINE_REVISION`] of this build (0 in a `device.json` written before it was recorded).
    #[serde(default)]
    pub engine_revision: u32,
    /// The CPU core the thread issuing the GPU's work was pinned to, or `none` (see [`crate::gpu::affinity`]);
    /// absent from a `device.json` written before it was recorded (not pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_cpu: Option<String>,
}

/// What is wrong with a profile for this device and model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileCheck {
    /// Reasons to refuse the profile: another GPU, other kernels, another model.
    pub refusals: Vec<String>,
    /// Differences worth saying but not refusing: a driver or CUDA update rarely moves kernel times much.
    pub warnings: Vec<String>,
}

impl ProfileCheck {
    pub fn is_fresh(&self) -> bool {
        self.refusals.is_empty()
    }

    /// One message for a refused profile: what differs and what to do.
    pub fn refusal(&self, profile: &str) -> Option<String> {
        (!self.is_fresh()).then(|| {
            format!(
                "the calibration profile {profile} does not describe this GPU and build ({}); run `batchlab calibrate` \
                 on this GPU and point cost.profile at the new profile",
                self.refusals.join("; ")
            )
        })
    }
}

/// Compares `profile`'s fingerprint with the device and model a validation runs.
pub fn check_profile(profile: &Profile, device: &DeviceFingerprint, model: &ModelSpec) -> ProfileCheck {
    let f = &profile.fingerprint;
    let mut check = ProfileCheck::default();
    let mut refuse = |what: &str, profile: String, device: String| {
        if profile != device {
            check
                .refusals
                .push(format!("{what}: profile measured {profile}, this device has {device}"));
        }
    };
    refuse("GPU", f.gpu_name.clone(), device.gpu_name.clone());
    refuse(
        "compute capability",
        f.compute_capability.clone(),
        device.compute_capability.clone(),
    );
    refuse("SM count", f.sm_count.to_string(), device.sm_count.to_string());
    refuse(
        "memory",
        format!("{} bytes", f.memory_bytes),
        format!("{} bytes", device.memory_bytes),
    );
    if f.kernel_source_hash != device.kernel_source_hash {
        check.refusals.push(format!(
            "kernels: profile measured kernel source {}, this build has {}",
            f.kernel_source_hash, device.kernel_source_hash
        ));
    }
    check.refusals.extend(profile.mismatches(model));
    if profile.engine.is_some() && f.engine_revision != device.engine_revision {
        check.warnings.push(format!(
            "engine: profile's whole steps were measured on engine revision {}, this build's engine is revision {} \
             (see ENGINE_REVISION): its step model may be off by several percent; calibrate again",
            f.engine_revision, device.engine_revision
        ));
    }
    if let (Some(profile_card), Some(card)) = (&f.gpu_uuid, &device.gpu_uuid)
        && profile_card != card
    {
        check.warnings.push(format!(
            "card: profile measured on another {} ({profile_card}), this one is {card}: kernel times, cuBLAS's \
             kernel choices and the host's launch rate differ between cards and machines of one model (on two H100 \
             machines, cuBLAS tables by up to 14%: README.md); calibrate this card for the closest predictions",
            f.gpu_name
        ));
    }
    if profile.engine.is_some() {
        // Which core does not matter (`auto` picks whichever issued fastest at start-up); pinned or not may.
        let core = |c: &Option<String>| c.as_deref().filter(|&c| c != "none").map(str::to_owned);
        let said = |c: &Option<String>| match core(c) {
            None => "not pinned to a CPU core".to_string(),
            Some(c) => format!("pinned to a CPU core ({c})"),
        };
        let (then, now) = (&profile.run.issue_cpu, &device.issue_cpu);
        if core(then).is_some() != core(now).is_some() {
            let (then, now) = (said(then), said(now));
            check.warnings.push(format!(
                "host: the profile's whole steps were measured with the thread issuing GPU work {then}, this run's is \
                 {now}: eager steps (hundreds of launches) may be issued at another rate; calibrate and validate \
                 with the same --cpu"
            ));
        }
    }
    if let Some(driver) = &device.driver_version
        && *driver != f.driver_version
    {
        check.warnings.push(format!(
            "driver: profile measured with {}, this device runs {driver}",
            f.driver_version
        ));
    }
    if f.cuda_version != device.cuda_version {
        check.warnings.push(format!(
            "CUDA: profile measured with {}, this driver supports {}",
            f.cuda_version, device.cuda_version
        ));
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn committed_profile() -> Profile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-80gb-hbm3/qwen2.5-0.5b.json");
        Profile::load(&path).unwrap()
    }

    fn device_of(profile: &Profile) -> DeviceFingerprint {
        let f = &profile.fingerprint;
        DeviceFingerprint {
            gpu_name: f.gpu_name.clone(),
            gpu_uuid: f.gpu_uuid.clone(),
            compute_capability: f.compute_capability.clone(),
            sm_count: f.sm_count,
            memory_bytes: f.memory_bytes,
            driver_version: Some(f.driver_version.clone()),
            cuda_version: f.cuda_version.clone(),
            kernel_source_hash: f.kernel_source_hash.clone(),
            engine_revision: f.engine_revision,
            issue_cpu: profile.run.issue_cpu.clone(),
        }
    }

    /// The profile is usable on `device`, with exactly one warning: that one.
    fn the_one_warning(profile: &Profile, device: &DeviceFingerprint, model: &ModelSpec) -> String {
        let check = check_profile(profile, device, model);
        assert!(check.is_fresh(), "{check:?}");
        assert_eq!(check.warnings.len(), 1, "{check:?}");
        check.warnings[0].clone()
    }

    #[test]
    fn a_profile_measured_with_the_issuing_thread_pinned_otherwise_is_used_with_a_warning() {
        let mut profile = committed_profile();
        let model = profile.fingerprint.model.clone();
        let mut device = device_of(&profile);
        // Profiles from before the pinning was recorded were measured unpinned: as `--cpu none`.
        profile.run.issue_cpu = None;
        device.issue_cpu = Some("none".into());
        assert_eq!(check_profile(&profile, &device, &model), ProfileCheck::default());
        profile.run.issue_cpu = Some("none".into());
        assert_eq!(check_profile(&profile, &device, &model), ProfileCheck::default());
        profile.run.issue_cpu = None;
        device.issue_cpu = Some("1".into());
        let w = the_one_warning(&profile, &device, &model);
        assert!(w.starts_with("host: "), "{w}");
        assert!(
            w.contains("not pinned to a CPU core") && w.contains("pinned to a CPU core (1)"),
            "{w}"
        );
        // Both pinned, to different cores (as `auto` may pick): nothing to say.
        profile.run.issue_cpu = Some("3".into());
        assert_eq!(check_profile(&profile, &device, &model), ProfileCheck::default());
        device.issue_cpu = Some("none".into());
        let w = &check_profile(&profile, &device, &model).warnings[0];
        assert!(
            w.contains("measured with the thread issuing GPU work pinned to a CPU core (3)"),
            "{w}"
        );
    }

    #[test]
    fn the_profile_of_this_device_is_fresh() {
        let profile = committed_profile();
        let model = profile.fingerprint.model.clone();
        let check = check_profile(&profile, &device_of(&profile), &model);
        assert_eq!(check, ProfileCheck::default());
        assert!(check.refusal("p.json").is_none());
    }

    #[test]
    fn another_card_of_the_same_model_is_used_with_a_warning_naming_both() {
        let mut profile = committed_profile();
        let model = profile.fingerprint.model.clone();
        profile.fingerprint.gpu_uuid = Some("GPU-8f2db272-c501-2cf9-920a-bcd9b57fbc7a".into());
        let mut device = device_of(&profile);
        assert_eq!(check_profile(&profile, &device, &model), ProfileCheck::default());
        device.gpu_uuid = Some("GPU-a3872a94-d7c7-f0d6-38d0-8008bd999ab9".into());
        let w = the_one_warning(&profile, &device, &model);
        assert!(
            w.starts_with("card: profile measured on another NVIDIA H100 80GB HBM3 (GPU-8f2db272"),
            "{w}"
        );
        assert!(w.contains("this one is GPU-a3872a94"), "{w}");
        // Either side unknown (a profile or a device.json from before UUIDs were kept): nothing to say.
        device.gpu_uuid = None;
        assert_eq!(check_profile(&profile, &device, &model), ProfileCheck::default());
        profile.fingerprint.gpu_uuid = None;
        device.gpu_uuid = Some("GPU-a3872a94-d7c7-f0d6-38d0-8008bd999ab9".into());
        assert_eq!(check_profile(&profile, &device, &model), ProfileCheck::default());
    }

    #[test]
    fn another_gpu_other_kernels_or_another_model_are_refused() {
        let profile = committed_profile();
        let model = profile.fingerprint.model.clone();
        let mut device = device_of(&profile);
        device.gpu_name = "NVIDIA RTX PRO 4000 Blackwell".into();
        device.sm_count += 2;
        device.kernel_source_hash = "0123".into();
        let check = check_profile(&profile, &device, &model);
        assert_eq!(check.refusals.len(), 3, "{:?}", check.refusals);
        assert!(check.refusals[0].starts_with("GPU: profile measured"));
        assert!(check.refusals[1].starts_with("SM count"));
        assert!(check.refusals[2].contains("this build has 0123"));
        let message = check.refusal("calibration/x/qwen2.5-0.5b.json").unwrap();
        assert!(message.contains("run `batchlab calibrate`"), "{message}");

        let other = crate::model::by_name("qwen2.5-1.5b").unwrap();
        let check = check_profile(&profile, &device_of(&profile), &other);
        assert!(!check.is_fresh());
        assert!(
            check.refusals.iter().any(|r| r.starts_with("model:")),
            "{:?}",
            check.refusals
        );
    }

    #[test]
    fn a_driver_update_only_warns() {
        let profile = committed_profile();
        let model = profile.fingerprint.model.clone();
        let mut device = device_of(&profile);
        device.driver_version = Some("999.1".into());
        device.cuda_version = "99.9".into();
        let check = check_profile(&profile, &device, &model);
        assert!(check.is_fresh());
        assert_eq!(check.warnings.len(), 2, "{:?}", check.warnings);
    }

    #[test]
    fn steps_measured_on_another_engine_revision_only_warn() {
        let profile = committed_profile();
        assert!(profile.engine.is_some());
        let model = profile.fingerprint.model.clone();
        let mut device = device_of(&profile);
        device.engine_revision = profile.fingerprint.engine_revision + 1;
        let check = check_profile(&profile, &device, &model);
        assert!(check.is_fresh());
        assert_eq!(check.warnings.len(), 1, "{:?}", check.warnings);
        assert!(check.warnings[0].starts_with("engine: "), "{:?}", check.warnings);
        assert!(check.warnings[0].contains("calibrate again"), "{:?}", check.warnings);
    }
}
