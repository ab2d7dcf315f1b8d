//! `batchlab validate`: the scenario's runs on the GPU engine and in the simulator, compared.
//!
//! The command is split so that everything but the GPU is testable on a CPU: [`validate`] checks the input and the
//! driver, opens the GPU, refuses a stale profile and gets a backend from [`gpu_backend`] — **the one place the GPU
//! engine plugs in** — then hands it to [`validate_with`], which runs, writes and reports with any
//! [`Backend`].

use super::ValidateArgs;
use super::commands::{CliError, folder_name, load, prepare_all, progress, report_folder};
use crate::calib::Profile;
use crate::gpu::Gpu;
use crate::report;
use crate::sim::run::{PreparedRun, RecordOptions, describe_run, profile_relative_path};
use crate::validate::{
    Backend, DeviceFingerprint, ValidateOptions, check_profile, validate_runs, write_device, write_validation,
};
use crate::workload::{CostKind, RunSpec};
use std::path::PathBuf;

/// `batchlab validate`.
pub fn validate(args: ValidateArgs) -> Result<(), CliError> {
    // Bad input is reported as such (exit 2) on any machine; the GPU is needed only to run.
    let runs = load(&args.scenario)?;
    let prepared = prepare_all(&runs)?;
    crate::gpu::require_driver().map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    let (gpu, issue_cpu) = super::gpu_commands::open_gpu(args.gpu, args.pin.cpu)?;
    let device = DeviceFingerprint {
        issue_cpu: Some(issue_cpu),
        ..device_fingerprint(&gpu)
    };
    let notes = check_profiles(&runs, &prepared, &device)?;
    for warning in &notes {
        eprintln!("warning: {warning}");
    }
    let mut backend = gpu_backend(gpu, args.prime_engines, args.keep_freed_memory)?;
    validate_with(&args, &runs, &prepared, backend.as_mut(), Some(&device), notes)
}

/// The GPU engine as the backend: for each run an engine built as the simulator sizes the run (model, KV cache of
/// `prepared.limits.kv_capacity_slots` slots in blocks of `prepared.limits.block_size`), a `GpuExecutor`, a fresh
/// `WallClock` after the warm-up, and the memory it measured (see [`crate::validate::EngineBackend`]); `prime_engines`
/// engines built, warmed up and closed before the first; with `keep_freed_memory` the device's pool is set to keep
/// what engines free ([`Gpu::keep_freed_memory`]) and, since their use then no longer shows in the driver's free
/// memory, memory is not measured.
pub fn gpu_backend(gpu: Gpu, prime_engines: u32, keep_freed_memory: bool) -> Result<Box<dyn Backend>, CliError> {
    if !keep_freed_memory {
        return Ok(Box::new(crate::validate::EngineBackend::new(gpu, prime_engines)));
    }
    gpu.keep_freed_memory()
        .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    Ok(Box::new(
        crate::validate::EngineBackend::new(gpu, prime_engines).without_memory(),
    ))
}

/// What identifies the device and this build's kernels, for [`check_profile`].
pub fn device_fingerprint(gpu: &Gpu) -> DeviceFingerprint {
    let info = gpu.info();
    let (major, minor) = info.compute_capability;
    DeviceFingerprint {
        gpu_name: info.name.clone(),
        gpu_uuid: info.uuid.clone(),
        compute_capability: format!("{major}.{minor}"),
        sm_count: info.sm_count,
        memory_bytes: info.total_memory_bytes,
        driver_version: crate::gpu::kernel_driver_version(),
        cuda_version: info.driver_cuda_version.clone(),
        kernel_source_hash: crate::gpu::kernel_source_hash(),
        engine_revision: crate::engine::ENGINE_REVISION,
        issue_cpu: None,
    }
}

/// Refuses (as bad input) any calibration profile a run would be simulated with that was measured on another GPU,
/// with other kernels or for another model; returns the warnings worth printing (driver updates; runs judged with
/// an uncalibrated cost model), which `validation.md` repeats under its verdict.
pub fn check_profiles(
    runs: &[RunSpec],
    prepared: &[PreparedRun],
    device: &DeviceFingerprint,
) -> Result<Vec<String>, CliError> {
    let mut warnings = Vec::new();
    let mut checked: Vec<PathBuf> = Vec::new();
    let mut uncalibrated = Vec::new();
    for (spec, p) in runs.iter().zip(prepared) {
        let s = &spec.scenario;
        if s.cost.kind != CostKind::Calibrated {
            uncalibrated.push(spec.name.clone());
            continue;
        }
        let Some(rel) = profile_relative_path(s, &p.model) else {
            continue;
        };
        let path = spec.base_dir.join(&rel);
        if checked.contains(&path) {
            continue;
        }
        let profile = Profile::load(&path).map_err(|e| CliError::Input(format!("{}: {e}", describe_run(spec))))?;
        let check = check_profile(&profile, device, &p.model);
        if let Some(refusal) = check.refusal(&rel.display().to_string()) {
            return Err(CliError::Input(format!("{}: {refusal}", describe_run(spec))));
        }
        warnings.extend(
            check
                .warnings
                .into_iter()
                .map(|w| format!("profile {}: {w}", rel.display())),
        );
        checked.push(path);
    }
    if !uncalibrated.is_empty() {
        warnings.push(format!(
            "{} run(s) ({}) are simulated with an uncalibrated cost model: the errors judge that model, not a \
             calibration of this GPU",
            uncalibrated.len(),
            uncalibrated.join(", ")
        ));
    }
    Ok(warnings)
}

/// Validates prepared runs with `backend` and writes the results (and, unless `--no-report`, the report) to the
/// output folder, with `device.json` when the device is known; prints the verdicts unless `--quiet`. Missing the
/// targets is a finding, not a failure: the exit code is 0 whenever every run executed.
pub fn validate_with(
    args: &ValidateArgs,
    runs: &[RunSpec],
    prepared: &[PreparedRun],
    backend: &mut dyn Backend,
    device: Option<&DeviceFingerprint>,
    profile_notes: Vec<String>,
) -> Result<(), CliError> {
    let first = &runs[0].scenario;
    let options = ValidateOptions {
        warmup_steps: args.warmup_steps,
        record: RecordOptions::from_scenario(first),
        repeats: args.repeats,
    };
    // One tick per measurement: with --repeats the runs are measured in passes over all of them.
    let pb = match options.repeats {
        0 | 1 => progress(runs.len(), "runs"),
        n => progress(runs.len() * n as usize, "measurements"),
    };
    let mut validation = validate_runs(runs, prepared, backend, &options, &mut |_| pb.inc(1))
        .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    validation.summary.profile_notes = profile_notes;
    pb.finish_and_clear();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(format!("{}-validate", folder_name(&first.name))));
    write_validation(&out, &validation, &first.name).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(device) = device {
        write_device(&out, device).map_err(|e| anyhow::anyhow!(e))?;
    }
    if !args.no_report {
        report_folder(&out)?;
    }
    if !args.quiet {
        println!("{}", report::headline_markdown(&validation.summary));
    }
    eprintln!(
        "{} run(s) validated, written to {} (validation.md has every table)",
        validation.runs.len(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ScenarioArgs;
    use crate::validate::fake::{Factors, PerturbedBackend};
    use std::path::Path;

    fn args(scenario: PathBuf, out: PathBuf, no_report: bool) -> ValidateArgs {
        ValidateArgs {
            scenario: ScenarioArgs {
                scenario,
                sets: Vec::new(),
                seed: None,
            },
            out: Some(out),
            gpu: 0,
            pin: crate::cli::PinArgs {
                cpu: crate::gpu::affinity::IssueCpu::Free,
            },
            warmup_steps: 2,
            repeats: 1,
            prime_engines: 1,
            keep_freed_memory: false,
            quiet: true,
            no_report,
        }
    }

    #[test]
    fn validate_with_a_backend_writes_the_results_and_the_report() {
        let tmp = tempfile::tempdir().unwrap();
        let scenario = tmp.path().join("s.toml");
        std::fs::write(
            &scenario,
            r#"
name = "cli-validate"
[model]
name = "qwen2.5-0.5b"
[cost]
kind = "analytic"
[scheduler]
max_batch_size = 4
[workload]
arrival = "burst"
requests = 6
prompt_len = 32
output_len = [4, 8]
[sweep]
"scheduler.policy" = ["static", "continuous"]
"#,
        )
        .unwrap();
        let a = args(scenario, tmp.path().join("out"), false);
        let runs = load(&a.scenario).unwrap();
        let prepared = prepare_all(&runs).unwrap();
        let mut backend = PerturbedBackend::new(Factors::uniform(1.1));
        let device = device_of_committed_profile();
        let note = "profile p.json: card: profile measured on another card".to_owned();
        validate_with(&a, &runs, &prepared, &mut backend, Some(&device), vec![note.clone()]).unwrap();
        let out = tmp.path().join("out");
        for file in [
            "summary.csv",
            "validation.md",
            "validation.json",
            "device.json",
            "report.html",
            "report.md",
        ] {
            assert!(out.join(file).is_file(), "{file}");
        }
        let written: DeviceFingerprint =
            serde_json::from_str(&std::fs::read_to_string(out.join("device.json")).unwrap()).unwrap();
        assert_eq!(written, device);
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        assert!(html.contains("<section id=\"validation\">"));
        // What the profile check said is kept under the verdict, not only printed.
        let md = std::fs::read_to_string(out.join("validation.md")).unwrap();
        assert!(md.contains(&format!("- Cost model: {note}.")), "{md}");
        assert!(html.contains("Metrics: FAIL"), "10% slower misses the targets");
        assert!(out.join("charts/validation_parity.png").is_file());
        assert!(out.join("charts/step_error_by_kind.svg").is_file());
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        let validation = md.find("## Validation: simulated against measured").unwrap();
        assert!(validation < md.find("## Charts").unwrap());
        assert!(md.contains("![Simulated vs measured, per run](charts/validation_parity.png)"));
    }

    fn seed_matrix() -> (Vec<RunSpec>, Vec<PreparedRun>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed-matrix.toml");
        // The first three runs (qwen2.5-0.5b, the three policies) are enough.
        let runs: Vec<RunSpec> = crate::workload::load_runs(&path, &[], None)
            .unwrap()
            .into_iter()
            .take(3)
            .collect();
        let prepared = prepare_all(&runs).unwrap();
        (runs, prepared)
    }

    fn device_of_committed_profile() -> DeviceFingerprint {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-80gb-hbm3/qwen2.5-0.5b.json");
        let f = Profile::load(&path).unwrap().fingerprint;
        DeviceFingerprint {
            gpu_name: f.gpu_name,
            gpu_uuid: f.gpu_uuid,
            compute_capability: f.compute_capability,
            sm_count: f.sm_count,
            memory_bytes: f.memory_bytes,
            driver_version: Some(f.driver_version),
            cuda_version: f.cuda_version,
            kernel_source_hash: f.kernel_source_hash,
            engine_revision: f.engine_revision,
            issue_cpu: None,
        }
    }

    #[test]
    fn the_committed_profile_passes_on_its_gpu_and_is_refused_elsewhere() {
        let (runs, prepared) = seed_matrix();
        let device = device_of_committed_profile();
        assert_eq!(check_profiles(&runs, &prepared, &device).unwrap(), Vec::<String>::new());

        let h200 = DeviceFingerprint {
            gpu_name: "NVIDIA H200".into(),
            memory_bytes: 150_000_000_000,
            ..device
        };
        let err = check_profiles(&runs, &prepared, &h200).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.starts_with("run r000 ("), "{text}");
        assert!(text.contains("GPU: profile measured NVIDIA H100"), "{text}");
        assert!(text.contains("run `batchlab calibrate`"), "{text}");
    }

    #[test]
    fn a_profile_from_another_engine_revision_is_used_with_a_warning_naming_it() {
        let (runs, prepared) = seed_matrix();
        let committed = device_of_committed_profile();
        let device = DeviceFingerprint {
            engine_revision: committed.engine_revision + 1,
            ..committed
        };
        let warnings = check_profiles(&runs, &prepared, &device).unwrap();
        // The three runs share one profile: one warning.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("profile ../calibration/h100-80gb-hbm3/qwen2.5-0.5b.json: engine: "),
            "{warnings:?}"
        );
    }
}
