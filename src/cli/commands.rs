//! The subcommands.

use super::{BaselineReportArgs, BenchArgs, Command, ScenarioArgs, SimulateArgs};
use super::{gpu_commands, validate_command};
use crate::metrics::RunReport;
use crate::model::{self, ModelSpec};
use crate::report;
use crate::sim::hardware::GPU_PRESETS;
use crate::sim::run::{self, PreparedRun, RecordOptions};
use crate::units::{GIB, MIB};
use crate::workload::{self, RunSpec};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

/// A failed command: bad input (exit 2) or a failure while running (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

pub(super) fn input(e: impl std::fmt::Display) -> CliError {
    CliError::Input(e.to_string())
}

pub fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Simulate(args) => simulate(args),
        Command::Explain(args) => explain(args),
        Command::Report(args) => report_folder(&args.results).map(|_| ()),
        Command::Models => {
            models();
            Ok(())
        }
        Command::Gpus => {
            gpus();
            Ok(())
        }
        Command::Bench(args) => bench(args),
        Command::Calibrate(args) => gpu_commands::calibrate(args),
        Command::BenchKernels(args) => gpu_commands::bench_kernels(args),
        Command::BenchEngine(args) => gpu_commands::bench_engine(args),
        Command::CompareProfiles(args) => gpu_commands::compare_profiles(args),
        Command::CheckProfile(args) => gpu_commands::check_profile(args),
        Command::CompareSummaries(args) => gpu_commands::compare_summaries(args),
        Command::RefitProfile(args) => gpu_commands::refit_profile(args),
        Command::Validate(args) => validate_command::validate(args),
        Command::BaselineReport(args) => baseline_report(args),
    }
}

/// Joins a validate folder with transformers' numbers; unreadable or inconsistent input is bad input (exit 2). A
/// missed target is a finding, not a failure.
fn baseline_report(args: BaselineReportArgs) -> Result<(), CliError> {
    let comparison = report::baseline::baseline_comparison(&args.validated, &args.baseline).map_err(input)?;
    if let Some(warning) = comparison.cards.warning() {
        eprintln!("warning: {warning}");
    }
    match &args.out {
        None => print!("{}", comparison.markdown()),
        Some(path) => {
            let md = comparison.markdown();
            report::write_markdown_file(path, &md).map_err(|e| anyhow::anyhow!(e))?;
            print!("{}", comparison.headline_markdown());
            eprintln!("report written to {}", path.display());
        }
    }
    Ok(())
}

pub(super) fn load(args: &ScenarioArgs) -> Result<Vec<RunSpec>, CliError> {
    workload::load_runs(&args.scenario, &args.sets, args.seed).map_err(input)
}

/// Resolves and checks every run before any is served, so bad input fails before work is done or output written.
pub(super) fn prepare_all(runs: &[RunSpec]) -> Result<Vec<PreparedRun>, CliError> {
    runs.par_iter()
        .map(run::prepare)
        .collect::<Result<Vec<_>, _>>()
        .map_err(input)
}

pub(super) fn progress(len: usize, what: &str) -> ProgressBar {
    if len < 2 {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    let template = format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} (eta {{eta}})");
    pb.set_style(
        ProgressStyle::with_template(&template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

fn simulate(args: SimulateArgs) -> Result<(), CliError> {
    let runs = load(&args.scenario)?;
    let prepared = prepare_all(&runs)?;
    let pb = progress(runs.len(), "runs");
    let serve = |(spec, p): (&RunSpec, &PreparedRun)| {
        let options = RecordOptions::from_scenario(&spec.scenario);
        let result = run::serve_prepared(p, options)
            .map(|metrics| RunReport {
                name: spec.name.clone(),
                labels: run::labels(spec, p),
                metrics,
            })
            .map_err(|e| anyhow::anyhow!("{}: {e}", run::describe_run(spec)));
        pb.inc(1);
        result
    };
    let reports: Vec<RunReport> = if args.serial {
        runs.iter().zip(&prepared).map(serve).collect::<Result<_, _>>()?
    } else {
        runs.par_iter().zip(&prepared).map(serve).collect::<Result<_, _>>()?
    };
    pb.finish_and_clear();
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("out").join(folder_name(&runs[0].scenario.name)));
    report::write_results(&out, &reports).map_err(|e| anyhow::anyhow!(e))?;
    let bands = if args.sensitivity {
        let bands = sensitivity(&runs, &prepared, &reports, args.serial)?;
        report::write_sensitivity(&out.join("sensitivity.csv"), &bands).map_err(|e| anyhow::anyhow!(e))?;
        bands
    } else {
        Vec::new()
    };
    if !args.no_report {
        report_folder(&out)?;
    }
    if !args.quiet {
        let shared: Vec<String> = report::shared_labels(&reports)
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        if !shared.is_empty() {
            println!("{}\n", shared.join(" · "));
        }
        println!("{}", report::markdown_table(&reports));
        print_sensitive(&bands);
    }
    eprintln!("{} run(s) written to {}", reports.len(), out.display());
    Ok(())
}

/// A headline metric moving by more than this (half its band, relative to the simulated value) is printed.
const SENSITIVE: f64 = 0.05;

/// Every run's headline metrics with their bands over [`run::SENSITIVITY_SCALES`].
fn sensitivity(
    runs: &[RunSpec],
    prepared: &[PreparedRun],
    reports: &[RunReport],
    serial: bool,
) -> Result<Vec<report::SensitivityRow>, CliError> {
    let pb = progress(runs.len(), "runs, step times scaled");
    let band = |((spec, p), r): ((&RunSpec, &PreparedRun), &RunReport)| {
        let scaled = run::scaled_summaries(p, RecordOptions::from_scenario(&spec.scenario))
            .map_err(|e| anyhow::anyhow!("{}: {e}", run::describe_run(spec)))?;
        pb.inc(1);
        Ok::<_, anyhow::Error>(
            crate::validate::compare::headline_bands(&r.metrics.summary, &scaled)
                .into_iter()
                .map(|(metric, simulated, (least, most))| report::SensitivityRow {
                    run: spec.name.clone(),
                    metric,
                    simulated,
                    least,
                    most,
                })
                .collect::<Vec<_>>(),
        )
    };
    let rows: Vec<Vec<report::SensitivityRow>> = if serial {
        runs.iter()
            .zip(prepared)
            .zip(reports)
            .map(band)
            .collect::<Result<_, _>>()?
    } else {
        runs.par_iter()
            .zip(prepared)
            .zip(reports)
            .map(band)
            .collect::<Result<_, _>>()?
    };
    pb.finish_and_clear();
    Ok(rows.into_iter().flatten().collect())
}

/// The metrics whose band is wider than [`SENSITIVE`] either way.
fn print_sensitive(bands: &[report::SensitivityRow]) {
    if bands.is_empty() {
        return;
    }
    let wide: Vec<&report::SensitivityRow> = bands.iter().filter(|b| b.half_width() > SENSITIVE).collect();
    if wide.is_empty() {
        println!(
            "\nSensitivity: with every step 1-2% shorter or longer no headline metric moves by more than {:.0}%.",
            100.0 * SENSITIVE
        );
        return;
    }
    println!(
        "\nSensitivity: metrics that move by more than {:.0}% when every step is 1-2% shorter or longer (sensitivity.csv):",
        100.0 * SENSITIVE
    );
    for b in wide {
        println!(
            "  {} {}: {:.2} simulated, {:.2} to {:.2} (±{:.0}%)",
            b.run,
            b.metric,
            b.simulated,
            b.least,
            b.most,
            100.0 * b.half_width()
        );
    }
}

/// Draws the report of a results folder.
pub(super) fn report_folder(dir: &std::path::Path) -> Result<report::ReportFiles, CliError> {
    if !dir.join("summary.parquet").is_file() {
        return Err(CliError::Input(format!(
            "{} is not a results folder (no summary.parquet): give the --out folder of `batchlab simulate` or `validate`",
            dir.display()
        )));
    }
    if !dir.join("runs").is_dir() {
        return Err(CliError::Input(format!(
            "{} has no runs/ folder: the report is drawn from each run's tables there. A simulated folder gets them \
             back from `batchlab simulate <scenario> --out {}`; a validated one kept without them (as those under \
             reports/ are) only by validating again",
            dir.display(),
            dir.display()
        )));
    }
    // ReportError's message already carries its cause: passed on as text, so it is not printed twice.
    let files = report::render_report(dir, report::render_charts).map_err(|e| anyhow::anyhow!(e.to_string()))?;
    eprintln!("report: {} ({} charts)", files.html.display(), files.charts.len());
    Ok(files)
}

/// A scenario name made safe as a folder name.
pub(super) fn folder_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("scenario{s}")
    } else {
        s
    }
}

fn explain(args: ScenarioArgs) -> Result<(), CliError> {
    let runs = load(&args)?;
    let prepared = prepare_all(&runs)?;
    let first = &runs[0].scenario;
    println!("scenario `{}`: {} run(s), seed {}", first.name, runs.len(), first.seed);
    if let Some(d) = &first.description {
        println!("{}", d.trim());
    }
    for (spec, p) in runs.iter().zip(&prepared) {
        let s = &spec.scenario;
        let axes: Vec<String> = spec.axes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("\n{}  {}", spec.name, axes.join("  "));
        println!("  model     {}", describe_model(&p.model));
        println!(
            "  gpu       {} ({} GiB, {} GB/s, {} TFLOP/s fp16)",
            p.gpu.name, p.gpu.memory_gib, p.gpu.mem_bandwidth_gbps, p.gpu.fp16_tflops
        );
        println!("  cost      {}", p.cost.describe());
        let l = &p.limits;
        let policy = match p.policy {
            workload::PolicyKind::Continuous => format!(
                "continuous, max {} seqs, {} tokens/step, chunked prefill {}, mixed steps {}, preemption {}",
                l.max_batch_size,
                l.max_batch_tokens,
                on_off(l.chunked_prefill),
                on_off(l.mix_prefill_decode),
                on_off(l.preemption)
            ),
            workload::PolicyKind::Static => {
                format!(
                    "static, batches of {}, max wait {} ms",
                    l.max_batch_size, s.scheduler.max_wait_ms
                )
            }
            workload::PolicyKind::Grouped => format!("grouped, {} slots", l.max_batch_size),
        };
        println!("  policy    {policy}");
        let kv_gib = (l.kv_capacity_slots * p.memory.kv_bytes_per_slot) as f64 / GIB;
        println!(
            "  memory    weights {:.2} GiB, workspace {:.1} MiB, KV cache {} tokens ({kv_gib:.2} GiB, blocks of {})",
            p.memory.weight_bytes as f64 / GIB,
            p.memory.workspace_bytes as f64 / MIB,
            l.kv_capacity_slots,
            l.block_size
        );
        let w = &p.workload;
        let prompt: u64 = w.requests.iter().map(|r| u64::from(r.prompt_len)).sum();
        let output: u64 = w.requests.iter().map(|r| u64::from(r.output_len)).sum();
        let n = w.requests.len() as f64;
        let arrival = match w.closed_loop {
            Some(cl) => format!("closed loop, {} clients", cl.clients),
            None => format!("{:?}", s.workload.arrival).to_lowercase(),
        };
        println!(
            "  workload  {} requests, {arrival}, prompt mean {:.1} tokens, output mean {:.1} tokens",
            w.requests.len(),
            prompt as f64 / n,
            output as f64 / n
        );
    }
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn describe_model(m: &ModelSpec) -> String {
    format!(
        "{} ({:.1}M params, {:.2} GiB fp16, {} B KV/token, {} layers, {}/{} heads)",
        m.name,
        m.parameters() as f64 / 1e6,
        m.weight_bytes() as f64 / GIB,
        m.kv_bytes_per_token(),
        m.layers,
        m.heads,
        m.kv_heads
    )
}

fn models() {
    println!(
        "| model | params | weights GiB | KV B/token | layers | hidden | intermediate | heads | kv heads | vocab | tied |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for name in model::CATALOG {
        let m = model::by_name(name).expect("catalog entries resolve");
        println!(
            "| {} | {:.1}M | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.name,
            m.parameters() as f64 / 1e6,
            m.weight_bytes() as f64 / GIB,
            m.kv_bytes_per_token(),
            m.layers,
            m.hidden,
            m.intermediate,
            m.heads,
            m.kv_heads,
            m.vocab,
            if m.tied_embeddings { "yes" } else { "no" }
        );
    }
    println!(
        "\nAny Hugging Face config.json of the Qwen2/Llama family works too: [model] config = \"path/config.json\"."
    );
}

fn gpus() {
    println!("| gpu | memory GiB | bandwidth GB/s | fp16 dense TFLOP/s | launch µs |");
    println!("|---|---:|---:|---:|---:|");
    for g in GPU_PRESETS {
        println!(
            "| {} | {} | {} | {} | {} |",
            g.name, g.memory_gib, g.mem_bandwidth_gbps, g.fp16_tflops, g.launch_overhead_us
        );
    }
}

/// The built-in benchmark scenario.
const BENCH_SCENARIO: &str = include_str!("../../scenarios/bench-1m.toml");

fn bench(args: BenchArgs) -> Result<(), CliError> {
    let mut sets = args.sets.clone();
    if let Some(n) = args.requests {
        sets.push(format!("workload.requests={n}"));
    }
    let runs = match &args.scenario {
        Some(path) => workload::load_runs(path, &sets, None),
        None => workload::load_runs_str(
            BENCH_SCENARIO,
            std::path::Path::new("scenarios/bench-1m.toml"),
            &sets,
            None,
        ),
    }
    .map_err(input)?;
    for spec in &runs {
        let started = Instant::now();
        let prepared = run::prepare(spec).map_err(input)?;
        let prepared_at = started.elapsed();
        let metrics = run::serve_prepared(&prepared, RecordOptions::SUMMARY_ONLY)
            .map_err(|e| anyhow::anyhow!("{}: {e}", run::describe_run(spec)))?;
        let total = started.elapsed();
        let s = &metrics.summary;
        let n = s.requests as f64;
        println!(
            "bench {} ({} requests, {} steps)",
            run::describe_run(spec),
            s.requests,
            s.steps
        );
        println!("  generate + check   {:>9.3} s", prepared_at.as_secs_f64());
        println!("  simulate + summary {:>9.3} s", (total - prepared_at).as_secs_f64());
        println!(
            "  total              {:>9.3} s  → {:.0} simulated requests/s of wall time",
            total.as_secs_f64(),
            n / total.as_secs_f64()
        );
        match peak_rss_mib() {
            Some(mib) => println!("  peak memory (RSS)  {mib:>9.1} MiB"),
            None => println!("  peak memory (RSS)  unavailable on this platform"),
        }
        println!(
            "  simulated: makespan {:.1} s, {:.0} output tok/s, TTFT mean {:.1} ms, ITL mean {:.2} ms, mean batch {:.1}, {} preemptions",
            s.makespan_s,
            s.output_tok_per_s,
            s.ttft_ms.mean.unwrap_or(f64::NAN),
            s.itl_ms.mean.unwrap_or(f64::NAN),
            s.mean_batch_size,
            s.preemptions
        );
    }
    Ok(())
}

/// Peak resident memory of this process (Linux: VmHWM).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
