//! Validation against a backend whose errors are known in advance: the run's own cost model times a factor per step
//! kind (see `fake`).

use super::fake::{Factors, PerturbedBackend};
use super::*;
use crate::metrics::StepKind;
use crate::sim::run::{PreparedRun, RecordOptions, prepare};
use crate::units::Nanos;
use crate::workload::{RunSpec, load_runs_str};
use std::path::Path;

/// Every policy at batch limit 4: 8 requests at once, prompts 64, outputs 16, 32, … on the analytic H100. Burst
/// arrivals: the scheduler's decisions do not depend on time, so the plans must agree whatever the step times.
const BURST: &str = r#"
name = "validate-burst"
seed = 1
[model]
name = "qwen2.5-0.5b"
[hardware]
gpu = "h100-sxm"
[cost]
kind = "analytic"
[scheduler]
max_batch_size = 4
[workload]
arrival = "burst"
requests = 8
prompt_len = 64
output_len = [16, 32]
[sweep]
"scheduler.policy" = ["static", "continuous", "grouped"]
"#;

/// Open loop in real time: continuous batching with Poisson arrivals about as fast as steps.
const POISSON: &str = r#"
name = "validate-poisson"
seed = 2
[model]
name = "qwen2.5-0.5b"
[hardware]
gpu = "h100-sxm"
[cost]
kind = "analytic"
[scheduler]
policy = "continuous"
max_batch_size = 8
[workload]
arrival = "poisson"
rate = 200.0
requests = 24
prompt_len = 128
output_len = [8, 24]
"#;

fn runs(scenario: &str) -> (Vec<RunSpec>, Vec<PreparedRun>) {
    let specs = load_runs_str(scenario, Path::new("s.toml"), &[], None).unwrap();
    let prepared = specs.iter().map(|s| prepare(s).unwrap()).collect();
    (specs, prepared)
}

fn options(warmup_steps: u32) -> ValidateOptions {
    ValidateOptions {
        warmup_steps,
        record: RecordOptions {
            steps: true,
            token_trace_limit: 10_000,
        },
        repeats: 1,
    }
}

fn validate(scenario: &str, backend: &mut PerturbedBackend, warmup_steps: u32) -> Validation {
    let (specs, prepared) = runs(scenario);
    validate_runs(&specs, &prepared, backend, &options(warmup_steps), &mut |_| {}).unwrap()
}

fn error_of(v: &Validation, run: usize, metric: &str) -> f64 {
    v.runs[run]
        .metrics
        .iter()
        .find(|m| m.metric == metric)
        .unwrap_or_else(|| panic!("no {metric}"))
        .rel_error
        .unwrap()
}

fn aggregate_of<'a>(v: &'a Validation, metric: &str) -> &'a MetricAggregate {
    v.summary.metrics.iter().find(|m| m.metric == metric).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    // Step times are rounded to whole nanoseconds: a few parts per million.
    (a - b).abs() <= 1e-5 * b.abs().max(1e-9)
}

#[test]
fn step_errors_are_the_factor_of_each_step_kind() {
    let factors = Factors {
        decode: 1.02,
        prefill: 0.96,
        mixed: 1.10,
    };
    let mut backend = PerturbedBackend::new(factors);
    let v = validate(BURST, &mut backend, 4);
    let expected = |kind: StepKind| (factors.of(kind) - 1.0).abs() / factors.of(kind);
    let mut kinds = std::collections::HashSet::new();
    for run in &v.runs {
        assert!(run.plans.is_identical(), "{}: {}", run.name, run.plans.describe());
        assert_eq!(run.steps.len(), run.measured.metrics.steps.len());
        for s in &run.steps {
            kinds.insert(s.kind);
            assert!(
                (s.rel_error() - expected(s.kind)).abs() < 1e-6,
                "{} step {} ({:?}): error {} expected {}",
                run.name,
                s.index,
                s.kind,
                s.rel_error(),
                expected(s.kind)
            );
            // The sign says which way the model errs: it under-predicts the slowed decode and mixed steps.
            assert_eq!(s.signed_error() < 0.0, factors.of(s.kind) > 1.0);
        }
    }
    assert_eq!(
        kinds.len(),
        3,
        "the sweep has decode-only, prefill-only and mixed steps"
    );
    let by_kind: Vec<(&str, f64, f64)> = v
        .summary
        .steps
        .iter()
        .map(|k| (k.kind.as_str(), k.median.unwrap(), k.p95.unwrap()))
        .collect();
    assert_eq!(
        by_kind.iter().map(|k| k.0).collect::<Vec<_>>(),
        ["decode", "prefill", "mixed"]
    );
    for (kind, median, p95) in by_kind {
        let k = match kind {
            "decode" => StepKind::Decode,
            "prefill" => StepKind::Prefill,
            _ => StepKind::Mixed,
        };
        assert!(
            (median - expected(k)).abs() < 1e-6 && (p95 - expected(k)).abs() < 1e-6,
            "{kind}"
        );
    }
    // 2–10% off, no step of this sweep is a millisecond late, and the verdict has no stall line.
    assert!(v.summary.steps.iter().all(|k| k.stalled == Some(0)));
    assert!(!crate::report::validation_markdown(&v.summary, "burst").contains("Stalls:"));
}

#[test]
fn steps_a_millisecond_late_are_counted_as_stalled_by_kind() {
    // Mixed steps take three times their prediction; the others as predicted.
    let mut backend = PerturbedBackend::new(Factors {
        decode: 1.0,
        prefill: 1.0,
        mixed: 3.0,
    });
    let v = validate(BURST, &mut backend, 4);
    let steps = || v.runs.iter().flat_map(|r| &r.steps);
    let late = steps()
        .filter(|s| s.kind == StepKind::Mixed && s.predicted > Nanos(STALL.0 / 2))
        .count() as u64;
    assert!(late > 0, "the sweep has mixed steps of over half a millisecond");
    for k in &v.summary.steps {
        let want = if k.kind == "mixed" { late } else { 0 };
        assert_eq!(k.stalled, Some(want), "{}", k.kind);
    }
    // The verdict says so, with the count.
    let md = crate::report::validation_markdown(&v.summary, "burst");
    let steps: u64 = v.summary.steps.iter().map(|k| k.steps).sum();
    assert!(md.contains(&format!("Stalls: {late} of {steps} step(s)")), "{md}");
}

/// The burst on the committed H100 profiles (whose engine step model splits each step into host issue and GPU time),
/// and a stand-in engine that runs each step as predicted.
fn calibrated_burst() -> (String, PerturbedBackend) {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-80gb-hbm3/{model}.json");
    let scenario = BURST.replace(
        "kind = \"analytic\"",
        &format!("kind = \"calibrated\"\nprofile = \"{}\"", profile.display()),
    );
    (scenario, PerturbedBackend::new(Factors::uniform(1.0)))
}

#[test]
fn the_host_issue_and_the_gpu_time_of_each_step_are_compared_apart() {
    // The burst on a calibrated profile (its engine step model splits each step into host issue and GPU time); the
    // stand-in engine issues every step 20% slower than the model says and runs it on the GPU 10% faster.
    let (scenario, mut backend) = calibrated_burst();
    backend.parts = Some((1.2, 0.9));
    let v = validate(&scenario, &mut backend, 0);
    let (issue, gpu) = (1.0 / 1.2 - 1.0, 1.0 / 0.9 - 1.0);
    let mut gpu_bound = 0;
    for s in v.runs.iter().flat_map(|r| &r.steps) {
        assert!((s.issue_signed_error().unwrap() - issue).abs() < 1e-3, "{s:?}");
        // Only where the GPU work outlasted the host's issue by over 50 µs is the GPU time the GPU's own.
        let bound = s.measured_gpu.unwrap().0 > s.measured_issue.unwrap().0 + 50_000;
        match s.gpu_signed_error() {
            Some(e) => {
                assert!(bound && (e - gpu).abs() < 1e-3, "{s:?}");
                gpu_bound += 1;
            }
            None => assert!(!bound, "{s:?}"),
        }
    }
    assert!(gpu_bound > 0, "the decode steps are GPU-bound");
    // Issued 1.2× slower than predicted throughout: below the 1.25× that counts as a slowed host.
    let verdicts: Vec<bool> = v
        .runs
        .iter()
        .flat_map(|r| &r.steps)
        .filter_map(|s| s.host_slowed)
        .collect();
    assert!(!verdicts.is_empty() && verdicts.iter().all(|&slowed| !slowed));
    let held = v
        .runs
        .iter()
        .flat_map(|r| &r.steps)
        .filter(|s| s.slowed == Some(true))
        .count();
    assert!(held > 0 && v.summary.steps.iter().any(|k| k.slowed_share < Some(1.0)));
    for k in &v.summary.steps {
        assert!((k.issue.unwrap().median - issue).abs() < 1e-3, "{k:?}");
        assert_eq!(k.issue.unwrap().steps, k.steps);
        if let Some(g) = k.gpu {
            assert!((g.median - gpu).abs() < 1e-3, "{k:?}");
        }
        // The stand-in reads every other step's clock as held down (1,710 MHz), the others at 1,980 MHz.
        let of_kind: Vec<&StepComparison> = v
            .runs
            .iter()
            .flat_map(|r| &r.steps)
            .filter(|s| s.kind.as_str() == k.kind)
            .collect();
        let held = of_kind.iter().filter(|s| s.slowed == Some(true)).count();
        assert!(of_kind.iter().all(|s| s.slowed == Some(s.sm_mhz == Some(1710))));
        assert!(
            (k.slowed_share.unwrap() - held as f64 / of_kind.len() as f64).abs() < 1e-12,
            "{k:?}"
        );
        assert!([1710.0, 1845.0, 1980.0].contains(&k.sm_mhz_median.unwrap()), "{k:?}");
        // Over the GPU-bound steps at the full clock the GPU error is the same here.
        let unslowed = of_kind
            .iter()
            .filter(|s| s.slowed == Some(false) && s.gpu_signed_error().is_some())
            .count();
        assert_eq!(
            k.gpu_unslowed.map(|g| g.steps),
            (unslowed > 0).then_some(unslowed as u64),
            "{k:?}"
        );
        if let Some(g) = k.gpu_unslowed {
            assert!((g.median - gpu).abs() < 1e-3, "{k:?}");
        }
    }
    // The report shows them, in a section of their own.
    let md = crate::report::validation_markdown(&v.summary, "burst");
    assert!(
        md.contains("## Host, GPU and clock by step kind") && md.contains("-16.67%"),
        "{md}"
    );
    // Without parts (the analytic model predicts none, and this stand-in times none) nothing is shown.
    let v = validate(BURST, &mut PerturbedBackend::new(Factors::uniform(1.0)), 0);
    assert!(
        v.summary
            .steps
            .iter()
            .all(|k| k.issue.is_none() && k.sm_mhz_median.is_none())
    );
    let md = crate::report::validation_markdown(&v.summary, "burst");
    assert!(!md.contains("Host, GPU and clock"), "{md}");
}

#[test]
fn decode_steps_are_given_run_by_run_by_their_graph_buckets_rows() {
    use super::compare::{RowsRange, bucket_rows};
    assert_eq!(bucket_rows(1), (1, Some(1)));
    assert_eq!(bucket_rows(2), (2, Some(2)));
    assert_eq!(bucket_rows(3), (3, Some(4)));
    assert_eq!(bucket_rows(4), (3, Some(4)));
    assert_eq!(bucket_rows(17), (17, Some(24)));
    assert_eq!(bucket_rows(256), (193, Some(256)));
    assert_eq!(bucket_rows(300), (257, None));

    // The burst on a calibrated profile, every step's GPU time reported 20% under the model's: +25% signed error.
    let (scenario, mut backend) = calibrated_burst();
    backend.parts = Some((1.0, 0.8));
    let v = validate(&scenario, &mut backend, 0);
    let mut ranges = 0;
    for (run, summary) in v.runs.iter().zip(&v.summary.runs) {
        let mut want: Vec<(RowsRange, u64)> = Vec::new();
        for s in run
            .steps
            .iter()
            .filter(|s| s.kind == StepKind::Decode && s.gpu_signed_error().is_some())
        {
            let rows = bucket_rows(s.decode_seqs);
            match want.iter_mut().find(|w| w.0 == rows) {
                Some(w) => w.1 += 1,
                None => want.push((rows, 1)),
            }
        }
        want.sort_by_key(|w| w.0.0);
        let got: Vec<(RowsRange, u64)> = summary
            .decode_gpu_by_rows
            .iter()
            .map(|g| ((g.fewest, g.most), g.signed.steps))
            .collect();
        assert_eq!(got, want, "{}", summary.run);
        assert!(!got.is_empty(), "{}", summary.run);
        ranges = ranges.max(got.len());
        for g in &summary.decode_gpu_by_rows {
            assert!((g.signed.median - 0.25).abs() < 1e-3, "{}: {g:?}", summary.run);
        }
    }
    assert!(ranges >= 2, "some run decodes batches of several sizes");
    let md = crate::report::validation_markdown(&v.summary, "burst");
    assert!(md.contains("## Decode steps by rows, run by run"), "{md}");
    assert!(md.contains("3–4"), "{md}");
    assert!(md.contains("25.00% ("), "{md}");
    // Every bucket 25% off for the whole run: the verdict names each run and bucket with enough steps.
    let off = (v.summary.runs.iter())
        .flat_map(|r| &r.decode_gpu_by_rows)
        .filter(|g| g.signed.steps >= 20)
        .count();
    assert!(off > 0, "some bucket has 20 steps");
    assert!(
        md.contains(&format!("- Decode graph buckets: in {off} run-bucket pair(s)")),
        "{md}"
    );
    for r in &v.summary.runs {
        for g in r.decode_gpu_by_rows.iter().filter(|g| g.signed.steps >= 20) {
            let rows = match g.most {
                Some(m) if m == g.fewest => m.to_string(),
                Some(m) => format!("{}–{m}", g.fewest),
                None => format!("{}+", g.fewest),
            };
            assert!(md.contains(&format!("{} at {rows} rows +25.00%", r.run)), "{md}");
        }
    }
    // GPU time as predicted: no bucket is off.
    let (scenario, mut backend) = calibrated_burst();
    backend.parts = Some((1.0, 1.0));
    let exact = validate(&scenario, &mut backend, 0);
    assert!(!crate::report::validation_markdown(&exact.summary, "burst").contains("Decode graph buckets"));
    // Without the GPU's time (the analytic model gives no parts): no such table.
    let plain = validate(BURST, &mut PerturbedBackend::new(Factors::uniform(1.0)), 0);
    assert!(plain.summary.runs.iter().all(|r| r.decode_gpu_by_rows.is_empty()));
    assert!(!crate::report::validation_markdown(&plain.summary, "burst").contains("by rows"));
}

/// A step of `kind` measured at `measured_ms` against a prediction of 1 ms, issued in `issue_us` against a predicted
/// 40 µs.
fn timed_step(kind: StepKind, measured_ms: f64, issue_us: Option<f64>) -> StepComparison {
    StepComparison {
        index: 0,
        kind,
        prefill_seqs: u32::from(kind != StepKind::Decode),
        decode_seqs: u32::from(kind != StepKind::Prefill),
        prefill_tokens: 0,
        decode_tokens: 0,
        padding_tokens: 0,
        kv_read_tokens: 0,
        max_context: 0,
        measured: Nanos::from_ms(measured_ms),
        predicted: Nanos::from_ms(1.0),
        measured_issue: issue_us.map(Nanos::from_us),
        predicted_issue: issue_us.map(|_| Nanos::from_us(40.0)),
        measured_gpu: None,
        predicted_gpu: None,
        sm_mhz: None,
        slowed: None,
        host_slowed: None,
    }
}

#[test]
fn the_decode_steps_around_a_step_say_whether_its_host_was_slowed() {
    use super::compare::{HOST_MIN_DECODES, HOST_WINDOW, mark_host_slowed};
    // 100 decode steps issued as calibrated (40 µs), then 140 issued in 60 µs (1.5×); a prefill after each 30th,
    // taking 1.2 ms (against 1 ms predicted) where the host was slow.
    let mut steps = Vec::new();
    for i in 0..240 {
        let issue = if i < 100 { 40.0 } else { 60.0 };
        steps.push(timed_step(StepKind::Decode, 1.0, Some(issue)));
        if i % 30 == 29 {
            steps.push(timed_step(
                StepKind::Prefill,
                if i < 100 { 1.0 } else { 1.2 },
                Some(900.0),
            ));
        }
    }
    mark_host_slowed(&mut steps);
    let verdicts: Vec<Option<bool>> = steps
        .iter()
        .filter(|s| s.kind == StepKind::Prefill)
        .map(|s| s.host_slowed)
        .collect();
    // Each prefill reads the decodes within 50 steps either side: the third (at step 92) sees about 60 fast ones
    // and 40 slow, the fourth (at 123) about 30 and 70.
    assert_eq!(
        verdicts,
        [false, false, false, true, true, true, true, true].map(Some),
        "window {HOST_WINDOW}"
    );
    // Decode steps are marked too, by their neighbours.
    assert_eq!(steps[0].host_slowed, Some(false));
    assert_eq!(steps.last().unwrap().host_slowed, Some(true));
    // Too few decode steps with both issue times nearby: no verdict.
    let mut few: Vec<StepComparison> = (0..HOST_MIN_DECODES - 1)
        .map(|_| timed_step(StepKind::Decode, 1.0, Some(80.0)))
        .chain((0..20).map(|_| timed_step(StepKind::Decode, 1.0, None)))
        .collect();
    mark_host_slowed(&mut few);
    assert!(few.iter().all(|s| s.host_slowed.is_none()));
    // The aggregate: the signed error over the steps whose host was not slowed, and the share that was.
    let mut v = validate(BURST, &mut PerturbedBackend::new(Factors::uniform(1.0)), 0);
    v.runs.truncate(1);
    v.runs[0].steps = steps;
    let summary = aggregate(&v.runs);
    let prefill = summary.steps.iter().find(|k| k.kind == "prefill").unwrap();
    assert_eq!(prefill.host_unslowed.map(|h| (h.steps, h.median)), Some((3, 0.0)));
    assert_eq!(prefill.host_slowed_share, Some(5.0 / 8.0));
    let md = crate::report::validation_markdown(&summary, "host");
    assert!(md.contains("step, host not slowed") && md.contains("62.50%"), "{md}");
}

#[test]
fn a_step_more_than_a_millisecond_late_is_stalled() {
    let step = |measured_ms: f64, predicted_ms: f64| StepComparison {
        index: 0,
        kind: StepKind::Prefill,
        prefill_seqs: 1,
        decode_seqs: 0,
        prefill_tokens: 64,
        decode_tokens: 0,
        padding_tokens: 0,
        kv_read_tokens: 64,
        max_context: 64,
        measured: Nanos::from_ms(measured_ms),
        predicted: Nanos::from_ms(predicted_ms),
        measured_issue: None,
        predicted_issue: None,
        measured_gpu: None,
        predicted_gpu: None,
        sm_mhz: None,
        slowed: None,
        host_slowed: None,
    };
    assert!(step(3.6, 2.5).stalled());
    assert!(!step(3.4, 2.5).stalled(), "0.9 ms late");
    assert!(!step(20.0, 25.0).stalled(), "early");
    // Relative error alone would not tell: 40% late at 0.5 ms is not a stall, 10% late at 20 ms is.
    assert!(!step(0.7, 0.5).stalled() && step(22.0, 20.0).stalled());
}

#[test]
fn a_uniformly_slower_engine_gives_known_metric_errors() {
    let mut backend = PerturbedBackend::new(Factors::uniform(1.05));
    let v = validate(BURST, &mut backend, 0);
    for (i, run) in v.runs.iter().enumerate() {
        assert!(run.plans.is_identical());
        // Every time is 5% longer: throughput 5% lower, so the simulation is 5% above it; latencies are 5% longer,
        // so the simulation is 1 − 1/1.05 below them.
        assert!(close(error_of(&v, i, "output_tok_per_s"), 0.05), "{}", run.name);
        for metric in [
            "ttft_mean_ms",
            "ttft_p95_ms",
            "itl_mean_ms",
            "itl_p95_ms",
            "e2e_mean_ms",
            "makespan_s",
        ] {
            let e = error_of(&v, i, metric);
            assert!(close(e, 0.05 / 1.05), "{}: {metric} {e}", run.name);
        }
        // Memory is not measured by this backend: the measured run keeps the model, error zero by construction.
        assert!(!run.memory_measured);
        assert_eq!(error_of(&v, i, "peak_memory_mib"), 0.0);
        // Counts the scheduler decides are equal.
        assert_eq!(error_of(&v, i, "steps"), 0.0);
        assert!(
            run.metrics.iter().all(|m| m.metric != "requests"),
            "inputs are not compared"
        );
    }
    let throughput = aggregate_of(&v, "output_tok_per_s");
    assert_eq!(throughput.runs, 3);
    assert!(close(throughput.median.unwrap(), 0.05) && close(throughput.p95.unwrap(), 0.05));
    // 5% median misses the 3% target though the p95 is within 8%.
    assert_eq!(throughput.verdict, Some(Verdict::Fail));
    assert_eq!(aggregate_of(&v, "peak_memory_mib").verdict, Some(Verdict::Pass));
    assert_eq!(
        aggregate_of(&v, "steps").verdict,
        None,
        "only headline metrics are judged"
    );
    assert!(!v.summary.metrics_pass());
    assert!(v.summary.plans_identical());
    // Scaling every time keeps the policies' order.
    assert!(v.summary.ranking_reproduced());
    assert_eq!(v.summary.ranking.len(), 1);
    assert_eq!(v.summary.ranking[0].verdict, RankingVerdict::Reproduced);
    assert_eq!(v.summary.ranking[0].policies[0].policy, "continuous");

    let mut backend = PerturbedBackend::new(Factors::uniform(1.02));
    let v = validate(BURST, &mut backend, 0);
    assert!(v.summary.metrics_pass(), "{:?}", v.summary.metrics);
}

#[test]
fn warm_up_runs_on_the_backend_and_is_discarded() {
    let (specs, prepared) = runs(BURST);
    let measured_steps = |backend: &mut PerturbedBackend, warmup| {
        let v = validate_runs(&specs, &prepared, backend, &options(warmup), &mut |_| {}).unwrap();
        let steps: u64 = v.runs.iter().map(|r| r.steps.len() as u64).sum();
        (v, steps)
    };
    let mut cold = PerturbedBackend::new(Factors::uniform(1.0));
    let (cold_v, cold_steps) = measured_steps(&mut cold, 0);
    assert_eq!(cold.executed.get(), cold_steps);
    let mut warm = PerturbedBackend::new(Factors::uniform(1.0));
    let (warm_v, warm_steps) = measured_steps(&mut warm, 5);
    assert_eq!(warm_steps, cold_steps, "warm-up steps are not part of the measured run");
    // Each warm-up serves 4 requests with 5 output tokens: at least 5 steps per run.
    assert!(
        warm.executed.get() >= warm_steps + 3 * 5,
        "{} executed",
        warm.executed.get()
    );
    for (a, b) in cold_v.runs.iter().zip(&warm_v.runs) {
        assert_eq!(a.measured.metrics.summary, b.measured.metrics.summary);
    }
    let w = super::driver::warmup_workload(&prepared[0], 5);
    assert_eq!(w.requests.len(), 4);
    assert!(w.requests.iter().all(|r| r.output_len == 5));
    let arrivals: Vec<u64> = w.requests.iter().map(|r| r.arrival.0).collect();
    assert_eq!(arrivals, [0, 0, 0, 1]);
}

#[test]
fn warm_up_takes_a_mixed_step_where_the_run_can() {
    use crate::sim::serving::{SimExecutor, VirtualClock, serve};
    let (_, prepared) = runs(BURST);
    for run in &prepared {
        let w = super::driver::warmup_workload(run, 5);
        let mut scheduler = crate::sim::run::new_scheduler(run.policy, run.limits);
        let mut recorder = crate::metrics::Recorder::new(w.requests.len(), true, false);
        let mut executor = SimExecutor {
            cost: run.cost.as_ref(),
        };
        serve(
            scheduler.as_mut(),
            &mut executor,
            &mut VirtualClock::default(),
            &w,
            &mut recorder,
            &mut (),
        )
        .unwrap();
        let steps = recorder.finish(run.memory, run.slo).steps;
        let mixed = steps.iter().any(|s| s.prefill_seqs > 0 && s.decode_seqs > 0);
        // Continuous batching adds the late prompt to the others' decode step; static and grouped batching never
        // mix, in the warm-up as in the run.
        assert_eq!(
            mixed,
            run.policy == crate::workload::PolicyKind::Continuous,
            "{:?}",
            run.policy
        );
    }
}

#[test]
fn measured_memory_replaces_the_model() {
    let mut backend = PerturbedBackend::new(Factors::uniform(1.0));
    backend.memory_factor = Some(1.1);
    let v = validate(BURST, &mut backend, 0);
    let (_, prepared) = runs(BURST);
    for (i, run) in v.runs.iter().enumerate() {
        assert!(run.memory_measured);
        let mib = |b: u64| b as f64 / crate::units::MIB;
        let m = &run.measured.metrics.summary;
        let s = &run.simulated.metrics.summary;
        let weights = mib((prepared[i].memory.weight_bytes as f64 * 1.1).round() as u64);
        let workspace = mib((prepared[i].memory.workspace_bytes as f64 * 1.1).round() as u64);
        assert_eq!(m.weights_mib, weights);
        assert_eq!(m.peak_kv_mib, 0.0);
        assert_eq!(m.peak_memory_mib, weights + workspace);
        assert!(s.peak_kv_mib > 0.0);
        let expected = (s.peak_memory_mib - m.peak_memory_mib).abs() / m.peak_memory_mib;
        assert!(close(error_of(&v, i, "peak_memory_mib"), expected));
        // Time is untouched: the latency metrics agree exactly.
        assert_eq!(error_of(&v, i, "ttft_mean_ms"), 0.0);
    }
}

#[test]
fn a_policy_measured_much_slower_breaks_the_ranking() {
    let mut backend = PerturbedBackend::new(Factors::uniform(1.0));
    backend.policy_factor = vec![("continuous", 3.0)];
    let v = validate(BURST, &mut backend, 0);
    let group = &v.summary.ranking[0];
    assert_eq!(group.verdict, RankingVerdict::NotReproduced);
    assert!(
        group
            .swapped
            .iter()
            .any(|(hi, lo)| hi == "static" && lo == "continuous"),
        "{:?}",
        group.swapped
    );
    assert!(!v.summary.ranking_reproduced());
}

#[test]
fn step_errors_are_also_given_per_policy() {
    // Static batching's steps measured 5% slower than predicted, the others as predicted.
    let mut backend = PerturbedBackend::new(Factors::uniform(1.0));
    backend.policy_factor = vec![("static", 1.05)];
    let v = validate(BURST, &mut backend, 0);
    let policies: Vec<&str> = v.summary.steps_by_policy.iter().map(|p| p.policy.as_str()).collect();
    assert_eq!(policies, ["static", "continuous", "grouped"]);
    for p in &v.summary.steps_by_policy {
        let want = if p.policy == "static" { 1.0 / 1.05 - 1.0 } else { 0.0 };
        assert!(!p.steps.is_empty());
        for k in &p.steps {
            let signed = k.median_signed.unwrap();
            assert!((signed - want).abs() < 1e-5, "{} {}: {signed}", p.policy, k.kind);
        }
        let steps: u64 = p.steps.iter().map(|k| k.steps).sum();
        let of_runs: u64 = v
            .runs
            .iter()
            .filter(|r| r.policy().as_deref() == Some(p.policy.as_str()))
            .map(|r| r.steps.len() as u64)
            .sum();
        assert_eq!(steps, of_runs, "{}", p.policy);
    }
    // Run by run too.
    for r in &v.summary.runs {
        let want = if r.policy.as_deref() == Some("static") {
            1.0 / 1.05 - 1.0
        } else {
            0.0
        };
        assert!((r.decode_signed.unwrap() - want).abs() < 1e-5, "{}", r.run);
    }
    // Pooled, the slower policy holds a quarter of the decode steps: the pooled median hides it, the table shows it.
    let decode = v.summary.steps.iter().find(|k| k.kind == "decode").unwrap();
    assert!(decode.median_signed.unwrap().abs() < 1e-5);
    let md = crate::report::validation_markdown(&v.summary, "burst");
    assert!(md.contains("## Step time by policy"), "{md}");
    assert!(md.contains("| static     | decode-only  |"), "{md}");
    assert!(md.contains("decode steps: median signed error"), "{md}");
    assert!(md.contains("-4.76% |     #1 | identical |"), "{md}");
    // One policy: no such table.
    let one = validate(POISSON, &mut PerturbedBackend::new(Factors::uniform(1.0)), 0);
    assert!(one.summary.steps_by_policy.is_empty());
    assert!(!crate::report::validation_markdown(&one.summary, "poisson").contains("by policy"));
}

#[test]
fn real_time_arrivals_can_split_the_plans_and_the_cause_is_named() {
    // Same step times: the same plans, also with arrivals in real time.
    let mut exact = PerturbedBackend::new(Factors::uniform(1.0));
    let v = validate(POISSON, &mut exact, 0);
    assert!(v.runs[0].plans.is_identical());
    // (goodput is undefined: the scenario sets no SLO)
    let compared = v.runs[0].metrics.iter().filter(|m| m.metric != "goodput_req_per_s");
    assert!(compared.clone().count() > 30);
    assert!(
        compared.clone().all(|m| m.rel_error == Some(0.0)),
        "{:?}",
        v.runs[0].metrics
    );

    let mut slow = PerturbedBackend::new(Factors::uniform(1.5));
    let v = validate(POISSON, &mut slow, 0);
    let run = &v.runs[0];
    match &run.plans {
        PlanAgreement::Diverged {
            step,
            measured,
            simulated,
            cause:
                DivergenceCause::ArrivalTiming {
                    measured_arrived,
                    simulated_arrived,
                },
            ..
        } => {
            // The slower engine has seen more arrivals by the time it plans the step.
            assert!(
                measured_arrived > simulated_arrived,
                "{measured_arrived} vs {simulated_arrived}"
            );
            assert_ne!(measured, simulated);
            assert!(*step > 0);
        }
        other => panic!("expected a divergence from arrival timing, got {other:?}"),
    }
    assert!(!v.summary.plans_identical());
    // The step table still compares each measured step with the model's prediction of that very plan.
    assert!(run.steps.iter().all(|s| (s.rel_error() - 0.5 / 1.5).abs() < 1e-6));
}

#[test]
fn a_backend_failure_names_the_run() {
    let mut backend = PerturbedBackend::new(Factors::uniform(1.0));
    backend.fail_start = Some(1);
    let (specs, prepared) = runs(BURST);
    let err = validate_runs(&specs, &prepared, &mut backend, &options(0), &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("run r001 (scheduler.policy=\"continuous\")"), "{text}");
    assert!(text.ends_with("no engine for this one"), "{text}");
}

#[test]
fn the_files_hold_what_was_compared_and_the_report_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut backend = PerturbedBackend::new(Factors {
        decode: 1.02,
        prefill: 0.96,
        mixed: 1.10,
    });
    let v = validate(BURST, &mut backend, 2);
    write_validation(out, &v, "validate-burst").unwrap();

    let results = crate::report::load_results(out).unwrap();
    assert_eq!(results.validation.as_ref(), Some(&v.summary));
    for (run, tables) in v.runs.iter().zip(&results.runs) {
        let steps = tables.step_errors.as_ref().expect("step_errors.parquet");
        assert_eq!(steps.height(), run.steps.len());
        let measured = steps.column("measured_ms").unwrap().f64().unwrap().get(0).unwrap();
        assert_eq!(measured, run.steps[0].measured.as_ms());
        let comparison = std::fs::read_to_string(out.join("runs").join(&run.name).join("comparison.csv")).unwrap();
        assert!(
            comparison.starts_with("metric,measured,simulated,rel_error\n"),
            "{comparison}"
        );
        assert_eq!(comparison.lines().count(), run.metrics.len() + 1);
        // The results' summary is the measured one; the simulated runs are under simulated/.
        let tps = results.summary.column("output_tok_per_s").unwrap().f64().unwrap();
        assert!(
            tps.iter()
                .any(|x| x == Some(run.measured.metrics.summary.output_tok_per_s))
        );
        assert!(
            out.join("simulated/runs")
                .join(&run.name)
                .join("steps.parquet")
                .is_file()
        );
    }
    let all = std::fs::read_to_string(out.join("validation.csv")).unwrap();
    assert!(all.starts_with("run,metric,measured,simulated,rel_error\n"));
    let md = std::fs::read_to_string(out.join("validation.md")).unwrap();
    assert!(md.starts_with("# Validation: validate-burst\n"), "{md}");
    assert!(
        md.contains("- Scheduler plans: PASS — identical step for step in 3 of 3 run(s)."),
        "{md}"
    );
    assert!(md.contains("| mixed "), "{md}");
    assert!(md.contains("9.09%"), "the mixed steps' error: {md}");
    // Decode steps dominate, 2% off: within the targets.
    assert!(md.contains("- Metrics: PASS"), "{md}");

    // simulate writing into the same folder afterwards removes the validation: it would describe other runs.
    crate::report::write_results(out, &[v.runs[0].simulated.clone()]).unwrap();
    assert!(!out.join("validation.json").exists());
    assert!(crate::report::load_results(out).unwrap().validation.is_none());
}

#[test]
fn summaries_compared_offline_judge_as_the_validation_did() {
    let factors = Factors {
        decode: 1.05,
        prefill: 0.9,
        mixed: 1.2,
    };
    let v = validate(BURST, &mut PerturbedBackend::new(factors), 4);
    let dir = tempfile::tempdir().unwrap();
    let rows = |name: &str, reports: Vec<crate::metrics::RunReport>| -> Vec<serde_json::Value> {
        let out = dir.path().join(name);
        std::fs::create_dir_all(&out).unwrap();
        crate::report::write_summary(&out, &reports).unwrap();
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
    };
    let measured = rows("measured", v.runs.iter().map(|r| r.measured.clone()).collect());
    let simulated = rows("simulated", v.runs.iter().map(|r| r.simulated.clone()).collect());
    let (offline, unmeasured) = compare::compare_summary_rows(&measured, &simulated).unwrap();
    assert!(unmeasured.is_empty());
    assert_eq!(offline.len(), HEADLINE_METRICS.len());
    for m in &offline {
        let online = aggregate_of(&v, &m.metric);
        assert_eq!((m.runs, m.verdict), (online.runs, online.verdict), "{}", m.metric);
        for (a, b) in [(m.median, online.median), (m.p95, online.p95), (m.max, online.max)] {
            assert!(close(a.unwrap(), b.unwrap()), "{}: {a:?} against {b:?}", m.metric);
        }
    }
    assert!(
        aggregate_of(&v, "itl_mean_ms").median.unwrap() > 0.01,
        "the factors show"
    );
    // A measured run the simulation lacks, or run with other settings, is refused; so is a run measured twice.
    assert!(compare::compare_summary_rows(&measured, &simulated[1..]).is_err());
    let mut other = simulated.clone();
    other[0]["scheduler.policy"] = serde_json::json!("something else");
    let err = compare::compare_summary_rows(&measured, &other).unwrap_err();
    assert!(err.contains("other settings"), "{err}");
    let twice = [measured.clone(), measured[..1].to_vec()].concat();
    assert!(compare::compare_summary_rows(&twice, &simulated).is_err());
    // Part of the sweep measured (here the last two runs, numbered from r000 as a validation of them alone would
    // number them) against the whole sweep simulated: matched by settings, the rest named as not measured.
    let mut part: Vec<serde_json::Value> = measured[1..].to_vec();
    for (i, row) in part.iter_mut().enumerate() {
        row["run"] = serde_json::json!(format!("r{i:03}"));
    }
    let (some, unmeasured) = compare::compare_summary_rows(&part, &simulated).unwrap();
    assert_eq!(unmeasured, [simulated[0]["run"].as_str().unwrap()]);
    let ttft = |ms: &[MetricAggregate]| ms.iter().find(|m| m.metric == "ttft_mean_ms").unwrap().clone();
    assert_eq!(ttft(&some).runs, 2);
    // The same two runs under their own names give the same errors.
    let (named, _) = compare::compare_summary_rows(&measured[1..], &simulated).unwrap();
    assert_eq!(ttft(&some), ttft(&named));
}

/// Every run is simulated again with its step times scaled by each of `SENSITIVITY_SCALES`: a headline metric's band
/// holds the simulation as predicted, and a machine that runs every step exactly 1% slower than predicted (one of the
/// scales) is measured within every band, although its errors are a percent.
#[test]
fn each_headline_metric_gets_the_band_of_step_times_a_percent_or_two_off() {
    let mut backend = PerturbedBackend::new(Factors::uniform(1.01));
    let v = validate(BURST, &mut backend, 0);
    for run in &v.runs {
        for (metric, _) in HEADLINE_METRICS {
            let m = run.metrics.iter().find(|m| m.metric == metric).unwrap();
            let (lo, hi) = m
                .simulated_band
                .unwrap_or_else(|| panic!("{}: {metric} has no band", run.name));
            let simulated = m.simulated.unwrap();
            assert!(
                lo <= simulated && simulated <= hi,
                "{}: {metric} {simulated} outside {lo}..{hi}",
                run.name
            );
            assert_eq!(m.measured_in_band(), Some(true), "{}: {metric} {m:?}", run.name);
        }
        // Throughput moves with the step times: a band, not a point; the error of the prediction itself stays.
        let tput = run.metrics.iter().find(|m| m.metric == "output_tok_per_s").unwrap();
        assert!(tput.band_half_width().unwrap() > 0.005, "{tput:?}");
        assert!(tput.rel_error.unwrap() > 0.005, "{tput:?}");
        // Other columns get none.
        assert!(
            run.metrics
                .iter()
                .find(|m| m.metric == "makespan_s")
                .unwrap()
                .simulated_band
                .is_none()
        );
    }
    let band = aggregate_of(&v, "ttft_mean_ms").band.unwrap();
    assert_eq!((band.runs, band.measured_within), (3, 3));
    assert!(aggregate_of(&v, "makespan_s").band.is_none());
    // The verdict is still the error's: 1% off everywhere passes the 3% target, and the report says what the bands are.
    assert!(v.summary.metrics_pass());
    let md = crate::report::validation_markdown(&v.summary, "burst");
    assert!(
        md.contains("## Sensitivity to the step times") && md.contains("3 of 3"),
        "{md}"
    );
    assert!(
        !md.contains("   the median"),
        "a paragraph without its line breaks' indentation: {md}"
    );
}

/// A backend 5% slower than every scale is measured outside the bands.
#[test]
fn a_machine_slower_than_every_scale_is_measured_outside_the_band() {
    let mut backend = PerturbedBackend::new(Factors::uniform(1.05));
    let v = validate(BURST, &mut backend, 0);
    let band = aggregate_of(&v, "output_tok_per_s").band.unwrap();
    assert_eq!((band.runs, band.measured_within), (3, 0));
    // Peak memory does not depend on time: its band is the simulated value, and the backend measures none.
    let mem = aggregate_of(&v, "peak_memory_mib").band.unwrap();
    assert_eq!(mem.measured_within, 3);
    assert_eq!(mem.median_half_width, Some(0.0));
}

/// `repeats` measures each run that many times, each on a fresh execution, in passes over all runs (not in a row),
/// and compares the one with the median output throughput: here every execution started is 10% fast, 20% slow, 2%
/// slow or 10% slow in turn, so each run's three measurements differ and which one is the median depends on the
/// order they were taken in.
#[test]
fn repeated_measurements_are_taken_in_passes_and_compare_the_median_one() {
    let mut backend = PerturbedBackend::new(Factors::uniform(1.0));
    let cycle = [0.9, 1.2, 1.02, 1.1];
    backend.start_factors = cycle.to_vec();
    let (specs, prepared) = runs(BURST);
    let opts = ValidateOptions {
        repeats: 3,
        ..options(0)
    };
    let mut ticks = Vec::new();
    let v = validate_runs(&specs, &prepared, &mut backend, &opts, &mut |run| {
        ticks.push(run.to_owned())
    })
    .unwrap();
    assert_eq!(backend.started, 9);
    let indices: Vec<usize> = specs.iter().map(|s| s.index).collect();
    assert_eq!(
        backend.started_runs,
        [indices.clone(), indices.clone(), indices].concat()
    );
    assert_eq!(ticks.len(), 9, "one progress tick per measurement");
    for (i, run) in v.runs.iter().enumerate() {
        // The factors this run's executions got, in the order taken, and their median.
        let factors: Vec<f64> = (i..9).step_by(3).map(|k| cycle[k % cycle.len()]).collect();
        let mut sorted = factors.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[1];
        // Each step `median` times its prediction: the compared measurement's error, not another's.
        assert!(
            run.steps
                .iter()
                .all(|s| (s.signed_error() - (1.0 - median) / median).abs() < 1e-4),
            "{} {factors:?}",
            run.name
        );
        let t = &run.repeat_throughputs;
        assert_eq!(t.len(), 3);
        // Throughput falls as the factor grows: the measurements' order matches the factors'.
        for a in 0..3 {
            for b in 0..3 {
                assert_eq!(t[a] > t[b], factors[a] < factors[b], "{t:?} {factors:?}");
            }
        }
        // Each measurement's pace is its factor.
        let paces = &run.repeat_paces;
        assert_eq!(paces.len(), 3);
        for (p, f) in paces.iter().zip(&factors) {
            assert!((p - f).abs() < 1e-4, "{paces:?} {factors:?}");
        }
        let chosen = factors.iter().position(|&f| f == median).unwrap();
        // Pass by pass: run i's measurements were the (i + 1)th, (i + 4)th and (i + 7)th executions started.
        let engines: Vec<u32> = (0..3).map(|k| (i + 3 * k + 1) as u32).collect();
        assert_eq!(run.repeat_engines, engines, "run {i}");
        assert_eq!(run.engine, Some(engines[chosen]), "run {i}");
        let compared = run.metrics.iter().find(|m| m.metric == "output_tok_per_s").unwrap();
        assert!(
            close(compared.measured.unwrap(), t[chosen]),
            "run {i}: {compared:?} {t:?}"
        );
    }
    let md = crate::report::validation_markdown(&v.summary, "burst");
    assert!(
        md.contains("Repeats: each of 3 run(s) measured 3 times, in 3 passes over the runs"),
        "{md}"
    );
    assert!(
        !md.contains("   measurement"),
        "a paragraph without its line breaks' indentation: {md}"
    );
    assert!(
        md.contains("the measurement whose steps ran at the median pace"),
        "{md}"
    );
    // Every measurement pass by pass, at its pace, the compared one (the median factor) marked.
    assert!(md.contains("## Measurements, pass by pass"), "{md}");
    for (i, run) in v.summary.runs.iter().enumerate() {
        let factors: Vec<f64> = (i..9).step_by(3).map(|k| cycle[k % cycle.len()]).collect();
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {} ", run.run)) && l.contains("tok/s"))
            .unwrap_or_else(|| panic!("no row of {}: {md}", run.run));
        let cells: Vec<&str> = line.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cells.len(), 5, "{line}");
        for ((k, cell), f) in cells[2..].iter().enumerate().zip(&factors) {
            assert!(cell.starts_with(&format!("×{f:.3}, ")), "{cell} {factors:?}");
            let engine = format!(", engine #{}", i + 3 * k + 1);
            assert!(
                cell.ends_with(&engine) || cell.ends_with(&format!("{engine} (compared)")),
                "{cell}"
            );
        }
        // The runs table names the compared measurement's engine.
        let row = md
            .lines()
            .rfind(|l| l.starts_with(&format!("| {} ", run.run)))
            .unwrap_or_else(|| panic!("no runs row of {}: {md}", run.run));
        assert!(row.contains(&format!(" #{} | ", run.engine.unwrap())), "{row}");
        let mut sorted = factors.clone();
        sorted.sort_by(f64::total_cmp);
        let marked: Vec<&&str> = cells.iter().filter(|c| c.ends_with("(compared)")).collect();
        assert_eq!(marked.len(), 1, "{line}");
        assert!(marked[0].starts_with(&format!("×{:.3}", sorted[1])), "{line}");
    }
    // One measurement: nothing to report beside it.
    let mut once = PerturbedBackend::new(Factors::uniform(1.0));
    once.start_factors = vec![0.9, 1.2, 1.02];
    let v = validate_runs(&specs, &prepared, &mut once, &options(0), &mut |_| {}).unwrap();
    assert_eq!(once.started, 3);
    assert!(
        v.runs
            .iter()
            .all(|r| r.repeat_throughputs.is_empty() && r.repeat_engines.is_empty())
    );
    // Measured once each: the runs' engines are the executions in order.
    let engines: Vec<Option<u32>> = v.runs.iter().map(|r| r.engine).collect();
    assert_eq!(engines, vec![Some(1), Some(2), Some(3)]);
    let md = crate::report::validation_markdown(&v.summary, "burst");
    assert!(!md.contains("Repeats:") && !md.contains("pass by pass"), "{md}");
}

/// Under open-loop arrivals a run's throughput follows the arrival rate and moves with the engine's speed only
/// through its last steps: the median measurement is the one whose steps ran at the median pace against their
/// predictions, over all of them.
#[test]
fn repeated_open_loop_runs_compare_the_median_engine() {
    let mut backend = PerturbedBackend::new(Factors::uniform(1.0));
    // Fast, slow, a little slow: the median engine is the third.
    backend.start_factors = vec![0.8, 1.3, 1.05];
    let (specs, prepared) = runs(POISSON);
    let opts = ValidateOptions {
        repeats: 3,
        ..options(0)
    };
    let v = validate_runs(&specs, &prepared, &mut backend, &opts, &mut |_| {}).unwrap();
    let run = &v.runs[0];
    let want = (1.0 - 1.05) / 1.05;
    assert!(
        run.steps.iter().all(|s| (s.signed_error() - want).abs() < 1e-4),
        "the compared measurement is the median engine's"
    );
    assert_eq!(run.repeat_paces.len(), 3);
    assert!((run.repeat_paces[2] - 1.05).abs() < 1e-4, "{:?}", run.repeat_paces);
}

/// A stall (one step far longer than predicted, as a host interruption makes) counts against the measurement it fell
/// on: of three at paces a fraction of a percent apart, the stalled one is not the one compared, even where the
/// median over its steps would have put it in the middle.
#[test]
fn a_stalled_measurement_is_not_the_median_one() {
    let mut backend = PerturbedBackend::new(Factors::uniform(1.0));
    // Without the stall the third measurement would be the median one.
    backend.start_factors = vec![1.0, 1.004, 1.002];
    backend.stall = Some((2, 5, Nanos::from_ms(50.0)));
    let (specs, prepared) = runs(BURST);
    let opts = ValidateOptions {
        repeats: 3,
        ..options(0)
    };
    let v = validate_runs(&specs[..1], &prepared[..1], &mut backend, &opts, &mut |_| {}).unwrap();
    let run = &v.runs[0];
    let paces = &run.repeat_paces;
    assert!(paces[2] > paces[1] && paces[1] > paces[0], "{paces:?}");
    let want = (1.0 - 1.004) / 1.004;
    assert!(
        run.steps.iter().all(|s| (s.signed_error() - want).abs() < 1e-4),
        "the compared measurement is the second, unstalled one"
    );
}
