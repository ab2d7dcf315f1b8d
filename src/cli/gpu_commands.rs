//! The subcommands that need a GPU: calibrate, bench-kernels; and compare-profiles, which reads what they wrote.

use super::commands::{CliError, input, progress};
use super::{
    BenchEngineArgs, BenchKernelsArgs, CalibrateArgs, CheckProfileArgs, CompareProfilesArgs, CompareSummariesArgs,
    GpuModelArgs, RefitArgs,
};
use crate::calib::Profile;
use crate::calib::bench;
use crate::calib::compare::{OpErrors, PointError, agreement, out_of_sample, outside_summary};
use crate::calib::driver::{CalibrateConfig, Grid, calibrate_grids, tuning_points};
use crate::calib::engine_steps;
use crate::calib::profile::{ClockSummary, EngineSteps};
use crate::engine::{GemmBackend, GemmPolicy};
use crate::gpu::Gpu;
use crate::gpu::affinity::IssueCpu;
use crate::gpu::clocks::{ClockSampler, ClockTrace};
use crate::metrics::percentile_sorted;
use crate::model::{self, ModelSpec};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn model_of(t: &GpuModelArgs) -> Result<ModelSpec, CliError> {
    match &t.model_config {
        Some(path) => model::from_hf_config(path).map_err(input),
        None => model::by_name(&t.model).map_err(input),
    }
}

/// Opens GPU `ordinal` and pins this thread, which issues its work, as `cpu` says (see [`crate::gpu::affinity`]);
/// returns the GPU and how the thread issues: a core number or `none`. A core that cannot be had is an error; where
/// `auto` cannot pin (not Linux), a warning.
pub fn open_gpu(ordinal: usize, cpu: IssueCpu) -> Result<(Gpu, String), CliError> {
    let gpu = Gpu::new(ordinal).map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    let pinned = match gpu.pin_issuing_thread(cpu) {
        Ok(pinned) => pinned,
        Err(e) if cpu == IssueCpu::Auto => {
            eprintln!("warning: the thread issuing GPU work is not pinned to a CPU core: {e}");
            None
        }
        Err(e) => return Err(CliError::Input(e)),
    };
    if let Some(p) = &pinned {
        eprintln!("{}", p.describe());
    }
    Ok((gpu, pinned.map_or_else(|| "none".to_string(), |p| p.core.to_string())))
}

/// "NVIDIA H100 80GB HBM3" → "h100-80gb-hbm3": a folder name for a card.
pub fn gpu_slug(name: &str) -> String {
    let lower = name.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && *w != "nvidia")
        .collect();
    if words.is_empty() {
        "gpu".into()
    } else {
        words.join("-")
    }
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    // Written beside and renamed, so an interrupted run never leaves a truncated profile.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Measures one profile per grid, passes interleaved (see [`calibrate_grids`]), with a progress bar.
fn run_grids(gpu: &Gpu, cfg: &CalibrateConfig, grids: &[&Grid], what: &str) -> Result<Vec<Profile>, CliError> {
    let points: usize = grids.iter().map(|g| g.points()).sum();
    let tuning = grids
        .first()
        .map_or(0, |g| tuning_points(&cfg.model, g, gpu.info().sm_count as usize));
    let pb = progress(cfg.passes.max(1) * points + tuning + 2, what);
    let profiles =
        calibrate_grids(gpu, cfg, grids, &mut |_| pb.inc(1)).map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    pb.finish_and_clear();
    Ok(profiles)
}

pub fn calibrate(args: CalibrateArgs) -> Result<(), CliError> {
    let model = model_of(&args.target)?;
    let started = Instant::now();
    let (gpu, issue_cpu) = open_gpu(args.target.gpu, args.target.pin.cpu)?;
    let info = gpu.info().clone();
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("calibration").join(gpu_slug(&info.name)));
    let cfg = CalibrateConfig {
        model: model.clone(),
        warmup: args.target.warmup,
        repeats: args.target.repeats,
        passes: args.passes,
        block_size: args.block_size,
        grid: Grid::standard().with_padded_cublas_if(args.pad_cublas, true),
        cool_down: args.cool_down,
        graph_ours_rows_max: args.graph_ours_rows_max,
    };
    eprintln!(
        "calibrating {} on {} ({} SMs, compute capability {}.{})",
        model.name, info.name, info.sm_count, info.compute_capability.0, info.compute_capability.1
    );
    // With --check the offset grid is measured in the same run, pass for pass with the profile's own grid.
    let offset_grid = Grid::offset().with_padded_cublas_if(args.pad_cublas, false);
    let mut grids = vec![&cfg.grid];
    if args.check {
        grids.push(&offset_grid);
    }
    // The SM clock throughout, summed up per phase.
    let sampler = gpu.sample_clock(std::time::Duration::from_millis(10));
    let tables_started = Instant::now();
    let mut profiles = run_grids(&gpu, &cfg, &grids, "points")?.into_iter();
    let mut profile = profiles.next().expect("one profile per grid");
    // Whole steps on the engine: the host's issue time and the tail beyond the kernels.
    let engine_started = Instant::now();
    let pb = progress(engine_steps::points(), "engine steps");
    let (steps, _gpu) = engine_steps::measure(gpu, &profile, &mut |_| pb.inc(1))
        .map_err(|e| CliError::Failed(anyhow::anyhow!("engine steps: {e}")))?;
    pb.finish_and_clear();
    if let Some(trace) = sampler.map(ClockSampler::finish) {
        profile.run.clock_tables = clock_between(&trace, tables_started, engine_started);
        profile.run.clock_engine_steps = clock_between(&trace, engine_started, Instant::now());
    }
    for (what, c) in [
        ("op tables", &profile.run.clock_tables),
        ("engine steps", &profile.run.clock_engine_steps),
    ] {
        if let Some(c) = c {
            eprintln!("{}", clock_line(what, c));
        }
    }
    eprintln!(
        "{}",
        engine_steps_report(&steps, Some(engine_started.elapsed().as_secs_f64()))
    );
    profile.engine = Some(steps);
    profile.run.seconds = started.elapsed().as_secs_f64();
    profile.run.issue_cpu = Some(issue_cpu);
    let path = out.join(format!("{}.json", model.name));
    write(&path, &profile.to_json())?;
    let f = &profile.fingerprint;
    println!(
        "wrote {} — {:.1} s (measured: copy {:.0} GB/s, cuBLAS fp16 GEMM {:.1} TFLOP/s)",
        path.display(),
        profile.run.seconds,
        f.copy_bandwidth_gbps,
        f.gemm_tflops
    );
    if let Some(offset) = profiles.next() {
        write(&out.join(format!("{}.offset.json", model.name)), &offset.to_json())?;
        let md = check_report(&profile, &offset)?;
        write(&out.join(format!("{}.check.md", model.name)), &md)?;
        println!("{md}");
    }
    eprintln!("calibrate took {:.1} s in all", started.elapsed().as_secs_f64());
    Ok(())
}

/// The engine step model as fitted, and how well it reproduces the steps it was fitted to.
fn engine_steps_report(steps: &EngineSteps, seconds: Option<f64>) -> String {
    let took = seconds.map_or(String::new(), |s| format!(", {s:.1} s"));
    let mut s = format!(
        "engine steps ({} steps{took}): step = max(kernels + gap, issue) + tail\n",
        steps.samples.len()
    );
    for k in &steps.kinds {
        s.push_str(&format!(
            "  {:?}: gap {:.0} µs + {:.3} × kernels, issue {:.0} µs + {:.3} µs/token, tail {:.0} µs\n",
            k.kind, k.gap_us, k.gap_per_kernel_us, k.issue_base_us, k.issue_per_token_us, k.tail_us
        ));
        if !k.graph_gap_us.is_empty() {
            let gaps: Vec<String> = k
                .graph_gap_us
                .iter()
                .map(|(rows, gap)| format!("{rows} rows {gap:.0} µs"))
                .collect();
            s.push_str(&format!("    graph replays, gap by rows: {}\n", gaps.join(", ")));
        }
    }
    let mut errors: Vec<f64> = steps
        .samples
        .iter()
        .map(|x| {
            let tokens = f64::from(x.decode_seqs + x.prefill_tokens);
            let rows = (x.graph_rows > 0).then_some(x.graph_rows);
            (steps.step_us(x.kind, tokens, x.kernels_us, rows, x.splits()) - x.wall_us).abs() / x.wall_us
        })
        .collect();
    errors.sort_by(f64::total_cmp);
    s.push_str(&format!(
        "  fitted steps reproduced within {:.1}% (median), {:.1}% (worst)",
        100.0 * percentile_sorted(&errors, 50.0),
        100.0 * errors.last().copied().unwrap_or(0.0)
    ));
    s
}

/// The out-of-sample report: how well `profile` predicts what `offset` measured on its own grid.
fn check_report(profile: &Profile, offset: &Profile) -> Result<String, CliError> {
    let errors = out_of_sample(profile, offset).map_err(input)?;
    let f = &offset.fingerprint;
    let mut md = format!(
        "Out-of-sample check of `{}` on {} ({}): the profile's interpolation against {} points of an offset grid \
         measured in the same run, pass for pass with the profile's grid (so both saw the same clocks and \
         temperature). Rows in italics are tables the cost model does not use as they stand (it uses \
         the GEMM kernel the profile finds faster).\n\n| op | points | median error | p95 error | max error |\n\
         |---|---:|---:|---:|---:|\n",
        f.model.name,
        f.gpu_name,
        f.date,
        errors.iter().map(|e| e.errors.len()).sum::<usize>()
    );
    let mut all = Vec::new();
    for e in &errors {
        let op = if e.used { e.op.clone() } else { format!("*{}*", e.op) };
        md.push_str(&format!(
            "| {op} | {} | {:.2}% | {:.2}% | {:.2}% |\n",
            e.errors.len(),
            100.0 * e.median(),
            100.0 * e.p95(),
            100.0 * e.max()
        ));
        if e.used {
            all.extend(e.errors.iter().copied());
        }
    }
    let worst = worst_points(&errors, WORST_POINTS);
    let pooled = OpErrors {
        op: "all".into(),
        used: true,
        errors: all,
        points: Vec::new(),
    };
    md.push_str(&format!(
        "| **all the cost model uses** | {} | {:.2}% | {:.2}% | {:.2}% |\n",
        pooled.errors.len(),
        100.0 * pooled.median(),
        100.0 * pooled.p95(),
        100.0 * pooled.max()
    ));
    md.push_str(&format!(
        "\nThe {} points the cost model predicts worst:\n\n| op | shape | predicted µs | measured µs | error |\n\
         |---|---|---:|---:|---:|\n",
        worst.len()
    ));
    for (op, p) in worst {
        md.push_str(&format!(
            "| {op} | {} | {:.2} | {:.2} | {:+.2}% |\n",
            p.shape,
            p.predicted_us,
            p.measured_us,
            100.0 * (p.predicted_us - p.measured_us) / p.measured_us
        ));
    }
    Ok(md)
}

/// How many of the worst-predicted points the check report lists.
const WORST_POINTS: usize = 12;

/// The `n` points of the tables the cost model uses with the largest relative error, worst first.
fn worst_points(errors: &[OpErrors], n: usize) -> Vec<(&str, &PointError)> {
    let mut all: Vec<(&str, &PointError, f64)> = (errors.iter().filter(|e| e.used))
        .flat_map(|e| (e.points.iter().zip(&e.errors)).map(move |(p, &err)| (e.op.as_str(), p, err)))
        .collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2));
    all.into_iter().take(n).map(|(op, p, _)| (op, p)).collect()
}

/// Recomputes the out-of-sample report from a profile and an offset-grid profile written by `calibrate --check`.
pub fn check_profile(args: CheckProfileArgs) -> Result<(), CliError> {
    let profile = Profile::load(&args.profile).map_err(input)?;
    let offset = Profile::load(&args.offset).map_err(input)?;
    println!("{}", check_report(&profile, &offset)?);
    Ok(())
}

pub fn refit_profile(args: RefitArgs) -> Result<(), CliError> {
    let mut profile = Profile::load(&args.profile).map_err(input)?;
    let Some(before) = profile.engine.as_ref().map(|e| engine_steps_report(e, None)) else {
        return Err(input(format!(
            "{} holds no engine steps (calibrated before they were measured): calibrate again",
            args.profile.display()
        )));
    };
    engine_steps::refit(&mut profile).map_err(|e| input(format!("{}: {e}", args.profile.display())))?;
    let after = engine_steps_report(profile.engine.as_ref().expect("refitted"), None);
    write(&args.profile, &profile.to_json())?;
    println!("before:\n{before}\nafter:\n{after}\nwrote {}", args.profile.display());
    Ok(())
}

pub fn bench_engine(args: BenchEngineArgs) -> Result<(), CliError> {
    use crate::calib::bench_engine::{BenchPoints, DECODE_POINTS, EngineVariant, PREFILL_POINTS, bench_engine};
    let model = model_of(&args.target)?;
    // The profile is checked before the GPU is opened: a wrong path fails at once.
    let ours = match &args.plans {
        Some(path) => {
            let profile = Profile::load(path).map_err(input)?;
            if profile.fingerprint.model.name != model.name {
                return Err(input(format!(
                    "{}: a profile of {}, not of {}",
                    path.display(),
                    profile.fingerprint.model.name,
                    model.name
                )));
            }
            engine_steps::ours_with_tuned_plans(&profile).map_err(input)?
        }
        None => GemmPolicy::always(GemmBackend::Ours),
    };
    let (gpu, issue_cpu) = open_gpu(args.target.gpu, args.target.pin.cpu)?;
    let decode = if args.decode.is_empty() {
        DECODE_POINTS.to_vec()
    } else {
        args.decode
    };
    let prefill = if args.prefill.is_empty() {
        PREFILL_POINTS.to_vec()
    } else {
        args.prefill
    };
    let variants: Vec<EngineVariant> = EngineVariant::ALL
        .into_iter()
        .filter(|v| args.gemm.is_empty() || args.gemm.contains(&v.gemm))
        .filter(|v| args.launch.is_empty() || args.launch.contains(&v.succession))
        .collect();
    let after = args.prefill_after_decodes;
    let prefill_runs = prefill.len() * if after.is_some() { 2 } else { 1 };
    let engines = args.engines.max(1) as usize;
    let pb = progress(
        (decode.len() * (args.recapture as usize + 1) + prefill_runs) * variants.len() * engines + 2,
        "engine steps",
    );
    let at = BenchPoints {
        decode: &decode,
        prefill: &prefill,
        prefill_after_decodes: after,
        step_tokens: args.step_tokens,
        context: args.context,
        engines: args.engines,
        kv_tokens: args.kv_tokens,
        recaptures: args.recapture,
    };
    if args.keep_freed_memory {
        gpu.keep_freed_memory()
            .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    }
    let sampler = (args.clock_every).and_then(|ms| gpu.sample_clock(std::time::Duration::from_millis(ms)));
    let started = Instant::now();
    let (result, _gpu) = bench_engine(gpu, &model, at, &variants, &ours, &mut |_| pb.inc(1))
        .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    pb.finish_and_clear();
    let clock = sampler.map(|s| clock_between(&s.finish(), started, Instant::now()));
    let mut md = result.markdown();
    md.push_str(&match (args.clock_every, clock) {
        (None, _) => "\nThe SM clock was not read during the bench (--clock-every).\n".to_string(),
        (Some(ms), Some(Some(c))) => format!("\n{}, read every {ms} ms (--clock-every).\n", clock_line("bench", &c)),
        (Some(_), _) => "\nThe SM clock could not be read during the bench (no NVML, or no reading).\n".to_string(),
    });
    md.push_str(&match issue_cpu.as_str() {
        "none" => "\nThe thread issuing the GPU's work was not pinned to a CPU core (--cpu none).\n".to_string(),
        c => format!("\nThe thread issuing the GPU's work was pinned to CPU {c} (--cpu).\n"),
    });
    md.push_str(if args.keep_freed_memory {
        "\nThe allocator's pool kept the memory each engine freed for the next (--keep-freed-memory).\n"
    } else {
        "\nThe memory each engine freed went back to the driver at the next synchronisation (CUDA's default).\n"
    });
    if let Some(path) = &args.plans {
        md.push_str(&format!(
            "\nOur GEMM was launched with the plans `{}` tuned per weight shape and row count (the default plan \
             beyond them).\n",
            path.display()
        ));
    }
    if let Some(path) = &args.out {
        write(path, &md)?;
    }
    println!("{md}");
    Ok(())
}

/// The clock readings of `trace` taken from `from` to `to`, summed up; `None` without any.
fn clock_between(trace: &ClockTrace, from: Instant, to: Instant) -> Option<ClockSummary> {
    ClockSummary::of(trace.between(from, to).map(|s| (s.sm_mhz, s.slowed())))
}

/// One line on the SM clock during `what`.
fn clock_line(what: &str, c: &ClockSummary) -> String {
    format!(
        "SM clock during the {what}: median {:.0} MHz, lowest {:.0} MHz, held down by power or thermal management in \
         {:.0}% of {} readings",
        c.median_mhz,
        c.min_mhz,
        100.0 * c.slowed_share,
        c.samples
    )
}

pub fn bench_kernels(args: BenchKernelsArgs) -> Result<(), CliError> {
    let model = model_of(&args.target)?;
    let (gpu, _) = open_gpu(args.target.gpu, args.target.pin.cpu)?;
    let uniform: Vec<(usize, usize)> = if args.decode.is_empty() {
        bench::DECODE_POINTS.to_vec()
    } else {
        args.decode.iter().map(|&(b, c)| (b as usize, c as usize)).collect()
    };
    let mut decode: Vec<Vec<usize>> = uniform.iter().map(|&(b, c)| vec![c; b]).collect();
    if args.mixed {
        let mixed = Grid::standard().mixed.into_iter().chain(Grid::offset().mixed);
        decode.extend(mixed.map(|c| c.into_iter().map(|x| x as usize).collect::<Vec<_>>()));
    }
    // Six timings per decode point (its default split and five partition sizes), about 50 for the rest.
    let pb = progress(50 + 6 * decode.len(), "kernels");
    let result = bench::bench_kernels(
        &gpu,
        &model,
        (args.target.warmup, args.target.repeats),
        &decode,
        &mut |_| pb.inc(1),
    )
    .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    pb.finish_and_clear();
    let md = result.markdown(&model.name);
    if let Some(path) = &args.out {
        write(path, &md)?;
    }
    println!("{md}");
    Ok(())
}

/// A folder's `summary.json` (or the file itself) as its rows.
fn summary_rows(path: &Path) -> Result<Vec<serde_json::Value>, CliError> {
    let file = if path.is_dir() {
        path.join("summary.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| input(format!("cannot read {}: {e}", file.display())))?;
    serde_json::from_str(&text).map_err(|e| input(format!("{} is not a summary.json: {e}", file.display())))
}

pub fn compare_summaries(args: CompareSummariesArgs) -> Result<(), CliError> {
    let mut measured = summary_rows(&args.measured)?;
    for more in &args.with {
        measured.extend(summary_rows(more)?);
    }
    let simulated = summary_rows(&args.simulated)?;
    let (metrics, unmeasured) = crate::validate::compare::compare_summary_rows(&measured, &simulated).map_err(input)?;
    let percent = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{:.2}%", 100.0 * v));
    println!("| metric | runs | median | p95 | max | verdict |\n|---|---:|---:|---:|---:|---|");
    for m in &metrics {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            m.metric,
            m.runs,
            percent(m.median),
            percent(m.p95),
            percent(m.max),
            m.verdict.map_or("", |v| v.as_str())
        );
    }
    if !unmeasured.is_empty() {
        println!(
            "\n{} of the {} simulated runs were not measured: {}.",
            unmeasured.len(),
            simulated.len(),
            unmeasured.join(", ")
        );
    }
    Ok(())
}

pub fn compare_profiles(args: CompareProfilesArgs) -> Result<(), CliError> {
    let a = Profile::load(&args.first).map_err(input)?;
    let b = Profile::load(&args.second).map_err(input)?;
    let rows = agreement(&a, &b).map_err(input)?;
    println!("| table | points | within spread | largest difference |\n|---|---:|---:|---:|");
    let (mut points, mut within) = (0, 0);
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2}% |",
            r.op,
            r.points,
            r.within_spread,
            100.0 * r.max_rel_diff
        );
        points += r.points;
        within += r.within_spread;
    }
    println!(
        "| **all** | {points} | {within} ({:.1}%) | |",
        100.0 * within as f64 / points.max(1) as f64
    );
    if let Some(line) = outside_summary(&rows) {
        println!("\n{line}");
    }
    let unmatched: usize = rows.iter().map(|r| r.unmatched).sum();
    if unmatched > 0 {
        let tables: Vec<&str> = (rows.iter().filter(|r| r.unmatched > 0))
            .map(|r| r.op.as_str())
            .collect();
        println!(
            "\nThe grids differ: {unmatched} point(s) measured by only one of the two were not compared ({}).",
            tables.join(", ")
        );
    }
    println!("\nrun times: {:.1} s and {:.1} s", a.run.seconds, b.run.seconds);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ClockSummary, OpErrors, PointError, clock_line, gpu_slug, worst_points};

    #[test]
    fn the_clock_line_gives_median_lowest_and_the_held_down_share() {
        let c = ClockSummary::of([(1980, false), (1410, true), (1965, false), (1980, false)]).unwrap();
        assert_eq!(
            clock_line("bench", &c),
            "SM clock during the bench: median 1972 MHz, lowest 1410 MHz, held down by power or thermal management \
             in 25% of 4 readings"
        );
    }

    #[test]
    fn the_worst_points_come_from_the_tables_the_model_uses_worst_first() {
        let point = |shape: &str, predicted_us: f64| PointError {
            shape: shape.into(),
            predicted_us,
            measured_us: 10.0,
        };
        let errors = |op: &str, used: bool, points| OpErrors::new(op.into(), used, points);
        let all = [
            errors("a", true, vec![point("a1", 11.0), point("a2", 7.0)]),
            errors("b", false, vec![point("b1", 20.0)]),
            errors("c", true, vec![point("c1", 10.5), point("c2", 12.0)]),
        ];
        let worst: Vec<(&str, &str)> = worst_points(&all, 3)
            .into_iter()
            .map(|(op, p)| (op, p.shape.as_str()))
            .collect();
        assert_eq!(worst, [("a", "a2"), ("c", "c2"), ("a", "a1")]);
    }

    #[test]
    fn gpu_slugs_are_folder_names() {
        assert_eq!(gpu_slug("NVIDIA H100 80GB HBM3"), "h100-80gb-hbm3");
        assert_eq!(gpu_slug("NVIDIA H200"), "h200");
        assert_eq!(gpu_slug("NVIDIA RTX PRO 4000 Blackwell"), "rtx-pro-4000-blackwell");
        assert_eq!(gpu_slug("???"), "gpu");
    }
}
