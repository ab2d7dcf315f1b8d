//! The validation section of the reports (and `validation.md`): how far the simulation is from the measurement, per
//! metric against the targets, per step kind, per plan and per policy ranking. Built once as plain sections, then
//! written as markdown or HTML, so both say the same thing.

use super::{ReportError, markdown::aligned_table, markdown::escape as escape_md};
use crate::calib::engine_steps::GPU_BOUND_US;
use crate::validate::{
    HEADLINE_METRICS, HOST_MIN_DECODES, HOST_SLOW, HOST_WINDOW, PlanAgreement, RankingVerdict, RunSummary, STALL,
    SignedOver, StepKindAggregate, ValidationSummary, Verdict,
};
use std::path::Path;

/// `<results>/validation.json`: the summary a validation writes, and what marks a results folder as validated.
pub const VALIDATION_JSON: &str = "validation.json";

/// Reads `dir/validation.json` when the folder holds a validation.
pub fn load_validation(dir: &Path) -> Result<Option<ValidationSummary>, ReportError> {
    let path = dir.join(VALIDATION_JSON);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReportError::Io { path, source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| ReportError::Json { path, source })
}

/// A table cell: its text and, for numbers, the value (HTML sorts by it).
pub(super) struct Cell {
    pub text: String,
    pub number: Option<f64>,
}

impl Cell {
    fn text(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            number: None,
        }
    }

    fn number(text: String, value: f64) -> Cell {
        Cell {
            text,
            number: Some(value),
        }
    }
}

pub(super) struct Table {
    pub headers: Vec<String>,
    /// Right-aligned (numeric) columns.
    pub right: Vec<bool>,
    pub rows: Vec<Vec<Cell>>,
}

pub(super) struct Section {
    pub title: String,
    pub paragraphs: Vec<String>,
    pub table: Option<Table>,
}

/// A relative error as a percentage.
pub(super) fn percent(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:.2}%", 100.0 * v),
        Some(_) => "∞".to_owned(),
        None => super::render::MISSING.to_owned(),
    }
}

fn percent_cell(v: Option<f64>) -> Cell {
    match v {
        Some(x) if x.is_finite() => Cell::number(percent(v), x),
        _ => Cell::text(percent(v)),
    }
}

/// A median signed error and the steps it is over, as "-4.20% (312)"; the missing mark without one.
fn signed_over(v: Option<SignedOver>) -> Cell {
    match v {
        Some(x) if x.median.is_finite() => Cell::number(format!("{} ({})", percent(Some(x.median)), x.steps), x.median),
        _ => Cell::text(super::render::MISSING),
    }
}

/// One row per run with decode steps that gave their GPU time: run, policy, then the GPU time's median signed error
/// for each range of rows any run has ([`crate::validate::RunSummary::decode_gpu_by_rows`]); `None` without such a run.
fn decode_rows_table(v: &ValidationSummary) -> Option<Table> {
    let mut ranges: Vec<crate::validate::compare::RowsRange> = Vec::new();
    for g in v.runs.iter().flat_map(|r| &r.decode_gpu_by_rows) {
        if !ranges.contains(&(g.fewest, g.most)) {
            ranges.push((g.fewest, g.most));
        }
    }
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_unstable_by_key(|r| r.0);
    let columns = ranges.iter().map(|&(fewest, most)| (rows_title(fewest, most), true));
    let runs = v.runs.iter().filter(|r| !r.decode_gpu_by_rows.is_empty());
    Some(run_table(runs, columns.collect(), |r| {
        (ranges.iter())
            .map(|&(fewest, most)| {
                let g = r
                    .decode_gpu_by_rows
                    .iter()
                    .find(|g| (g.fewest, g.most) == (fewest, most));
                signed_over(g.map(|g| g.signed))
            })
            .collect()
    }))
}

/// A range of rows as the decode-rows table heads it: "16", "9–16", "257+".
fn rows_title(fewest: u32, most: Option<u32>) -> String {
    match most {
        Some(m) if m == fewest => format!("{m}"),
        Some(m) => format!("{fewest}–{m}"),
        None => format!("{fewest}+"),
    }
}

/// A run's decode steps of one graph bucket whose GPU time the model missed by more than this at the median (signed,
/// either way) over at least [`BUCKET_OFF_STEPS`] steps: the run's engine off its profile at those rows for the whole
/// run — on an H100, qwen2.5-1.5b's 16-row graph ran 5–10% faster than priced in three of four Poisson runs' engines
/// and slower in the fourth's (`reports/pad-cool-h100/`) — whose error the run's latencies then carry.
const BUCKET_OFF: f64 = 0.05;
const BUCKET_OFF_STEPS: u64 = 20;

/// The verdict line on graph buckets off their profile for a whole run ([`BUCKET_OFF`]); `None` where none is.
fn buckets_off_line(v: &ValidationSummary) -> Option<String> {
    let off: Vec<String> = (v.runs.iter())
        .flat_map(|r| {
            (r.decode_gpu_by_rows.iter())
                .filter(|g| g.signed.steps >= BUCKET_OFF_STEPS && g.signed.median.abs() > BUCKET_OFF)
                .map(move |g| {
                    format!(
                        "{} at {} rows {:+.2}%",
                        r.run,
                        rows_title(g.fewest, g.most),
                        100.0 * g.signed.median
                    )
                })
        })
        .collect();
    (!off.is_empty()).then(|| {
        format!(
            "Decode graph buckets: in {} run-bucket pair(s) the decode steps' GPU time was off the model by more than \
             {:.0}% at the median over the whole run ({}; positive: priced too slow): the run's engine ran those rows \
             off its profile, and the run's latencies carry that error (\"Decode steps by rows, run by run\").",
            off.len(),
            100.0 * BUCKET_OFF,
            off.join(", ")
        )
    })
}

/// Each repeated run's measurements in the order taken (pass by pass): the pace of its steps against their predicted
/// times and its output throughput, the compared one marked. `None` where no run was measured more than once.
fn measurements_table(v: &ValidationSummary) -> Option<Table> {
    let repeated: Vec<_> = v.runs.iter().filter(|r| r.repeat_paces.len() > 1).collect();
    let n = repeated.iter().map(|r| r.repeat_paces.len()).max()?;
    let columns = (1..=n).map(|k| (format!("pass {k}"), true)).collect();
    Some(run_table(repeated, columns, |r| {
        let chosen = crate::validate::median_pace(&r.repeat_paces);
        (0..n)
            .map(|k| match r.repeat_paces.get(k) {
                Some(&p) => {
                    let tput = r
                        .repeat_throughputs
                        .get(k)
                        .map_or(String::new(), |t| format!(", {t:.1} tok/s"));
                    let engine = r
                        .repeat_engines
                        .get(k)
                        .map_or(String::new(), |e| format!(", engine #{e}"));
                    let mark = if k == chosen { " (compared)" } else { "" };
                    Cell::number(format!("×{p:.3}{tput}{engine}{mark}"), p)
                }
                None => Cell::text("-"),
            })
            .collect()
    }))
}

/// A table of one row per run of `runs`: its name and policy, then `cells` of it under `columns` (title, whether
/// right-aligned).
fn run_table<'a>(
    runs: impl IntoIterator<Item = &'a RunSummary>,
    columns: Vec<(String, bool)>,
    cells: impl Fn(&RunSummary) -> Vec<Cell>,
) -> Table {
    let (titles, aligned): (Vec<String>, Vec<bool>) = columns.into_iter().unzip();
    let mut headers = vec!["run".to_owned(), "policy".to_owned()];
    headers.extend(titles);
    let mut right = vec![false, false];
    right.extend(aligned);
    let rows = runs
        .into_iter()
        .map(|r| {
            let mut row = vec![Cell::text(&r.run), Cell::text(r.policy.clone().unwrap_or_default())];
            row.extend(cells(r));
            row
        })
        .collect();
    Table { headers, right, rows }
}

/// A table of one row per step kind: the kind as the report names it, then `cells` of it under `headers`
/// (right-aligned).
fn step_kind_table(v: &ValidationSummary, headers: &[&str], cells: impl Fn(&StepKindAggregate) -> Vec<Cell>) -> Table {
    let mut all = vec!["step kind".to_owned()];
    all.extend(headers.iter().map(|h| h.to_string()));
    let mut right = vec![false];
    right.extend(headers.iter().map(|_| true));
    Table {
        headers: all,
        right,
        rows: v
            .steps
            .iter()
            .map(|s| {
                let mut row = vec![Cell::text(kind_label(s))];
                row.extend(cells(s));
                row
            })
            .collect(),
    }
}

/// How the report names a step kind: "decode-only", "prefill-only", "mixed".
fn kind_label(s: &StepKindAggregate) -> String {
    format!("{}-only", s.kind).replace("mixed-only", "mixed")
}

fn value(metric: &str, v: Option<f64>) -> String {
    super::render::format_metric(metric, v)
}

/// What the report calls a summary column.
pub(super) fn metric_title(metric: &str) -> String {
    match HEADLINE_METRICS.iter().find(|(m, _)| *m == metric) {
        Some((_, title)) => format!("{title} ({metric})"),
        None => metric.to_owned(),
    }
}

/// The one-line verdicts that open the section.
fn verdict_lines(v: &ValidationSummary) -> Vec<String> {
    let runs = v.runs.len();
    let identical = v.runs.iter().filter(|r| r.plans.is_identical()).count();
    let checked = v
        .ranking
        .iter()
        .filter(|g| g.verdict != RankingVerdict::NothingToCheck)
        .count();
    let reproduced = v
        .ranking
        .iter()
        .filter(|g| g.verdict == RankingVerdict::Reproduced)
        .count();
    let failing: Vec<String> = v
        .metrics
        .iter()
        .filter(|m| m.verdict.is_some_and(|x| x != Verdict::Pass))
        .map(|m| metric_title(&m.metric))
        .collect();
    let mut out = vec![
        if failing.is_empty() {
            format!(
                "Metrics: PASS — every headline metric within median ≤ {:.0}% and p95 ≤ {:.0}% over {runs} run(s).",
                100.0 * v.target_median,
                100.0 * v.target_p95
            )
        } else {
            format!("Metrics: FAIL — outside the targets: {}.", failing.join(", "))
        },
        format!(
            "Scheduler plans: {} — identical step for step in {identical} of {runs} run(s).",
            if identical == runs { "PASS" } else { "DIFFER" }
        ),
        if checked == 0 {
            format!(
                "Policy throughput ordering: nothing to check — no group of runs has two policies measured more than \
                 {:.0}% apart ({} group(s)).",
                100.0 * v.ranking_separation,
                v.ranking.len()
            )
        } else {
            format!(
                "Policy throughput ordering: {} — reproduced in {reproduced} of {checked} group(s) whose policies were \
                 measured more than {:.0}% apart.",
                if reproduced == checked { "PASS" } else { "FAIL" },
                100.0 * v.ranking_separation
            )
        },
    ];
    let stalled: u64 = v.steps.iter().filter_map(|k| k.stalled).sum();
    if stalled > 0 {
        let steps: u64 = v.steps.iter().map(|k| k.steps).sum();
        out.push(format!(
            "Stalls: {stalled} of {steps} step(s) took over {} ms longer than predicted (by kind below): a host \
             interruption or a kernel loaded mid-step does that, and such steps widen the tails whatever the model.",
            STALL.as_ms()
        ));
    }
    out.extend(buckets_off_line(v));
    let unmeasured = v.runs.iter().filter(|r| !r.memory_measured).count();
    if unmeasured > 0 {
        out.push(format!(
            "Memory was not measured in {unmeasured} of {runs} run(s): their measured peak memory is the simulator's \
             own model, so its error there is zero by construction."
        ));
    }
    let repeated: Vec<&RunSummary> = v.runs.iter().filter(|r| r.repeat_throughputs.len() > 1).collect();
    if let Some(n) = repeated.iter().map(|r| r.repeat_throughputs.len()).max() {
        // Each run's range across its measurements, relative to its middle one: the median and the largest over runs.
        let spread = |values: &[f64]| {
            let mut s = values.to_vec();
            s.sort_by(f64::total_cmp);
            (s[s.len() - 1] - s[0]) / s[(s.len() - 1) / 2]
        };
        let median_and_most = |mut spreads: Vec<f64>| {
            spreads.sort_by(f64::total_cmp);
            (
                percent(Some(spreads[(spreads.len() - 1) / 2])),
                percent(spreads.last().copied()),
            )
        };
        let (t_median, t_most) = median_and_most(repeated.iter().map(|r| spread(&r.repeat_throughputs)).collect());
        let paced: Vec<f64> = (repeated.iter())
            .filter(|r| r.repeat_paces.len() > 1)
            .map(|r| spread(&r.repeat_paces))
            .collect();
        let chosen = if paced.is_empty() {
            "the measurement with the median output throughput is the one compared".to_owned()
        } else {
            let (p_median, p_most) = median_and_most(paced);
            format!(
                "the measurement whose steps ran at the median pace against their predicted times (their measured \
                 time in all over their predicted time in all) is the one compared (under bursts mostly the one of \
                 median throughput; under open-loop arrivals, whose throughput the arrival rate sets, the median \
                 engine all the same); the pace ranged over {p_median} at the median run, {p_most} at most"
            )
        };
        out.push(format!(
            "Repeats: each of {} run(s) measured {n} times, in {n} passes over the runs, each on a freshly built \
             engine after its own warm-up; {chosen}. Output throughput ranged over {t_median} at the median run \
             across its measurements, {t_most} at most.",
            repeated.len(),
        ));
    }
    out.extend(v.profile_notes.iter().map(|n| format!("Cost model: {n}.")));
    out
}

/// The validation as sections, in reading order.
pub(super) fn sections(v: &ValidationSummary) -> Vec<Section> {
    let mut out = Vec::new();
    out.push(Section {
        title: "Verdict".to_owned(),
        paragraphs: verdict_lines(v),
        table: None,
    });

    let metric_rows = v
        .metrics
        .iter()
        .map(|m| {
            vec![
                Cell::text(metric_title(&m.metric)),
                Cell::number(m.runs.to_string(), m.runs as f64),
                percent_cell(m.median),
                percent_cell(m.p95),
                percent_cell(m.max),
                Cell::text(m.verdict.map_or("", Verdict::as_str)),
            ]
        })
        .collect();
    out.push(Section {
        title: "Summary metrics".to_owned(),
        paragraphs: vec![format!(
            "Relative error |simulated − measured| / measured of each summary metric, over the runs where it is \
             defined. The first {} rows are the headline metrics, judged against median ≤ {:.0}% and p95 ≤ {:.0}%.",
            HEADLINE_METRICS.len(),
            100.0 * v.target_median,
            100.0 * v.target_p95
        )],
        table: Some(Table {
            headers: ["metric", "runs", "median", "p95", "max", "verdict"]
                .map(String::from)
                .to_vec(),
            right: vec![false, true, true, true, true, false],
            rows: metric_rows,
        }),
    });

    let band_rows: Vec<Vec<Cell>> = v
        .metrics
        .iter()
        .filter_map(|m| {
            let b = m.band?;
            Some(vec![
                Cell::text(metric_title(&m.metric)),
                Cell::number(b.runs.to_string(), b.runs as f64),
                percent_cell(b.median_half_width),
                percent_cell(b.max_half_width),
                Cell::number(format!("{} of {}", b.measured_within, b.runs), b.measured_within as f64),
            ])
        })
        .collect();
    if !band_rows.is_empty() {
        let scales: Vec<String> = crate::validate::SENSITIVITY_SCALES
            .iter()
            .map(|f| format!("{f}"))
            .collect();
        out.push(Section {
            title: "Sensitivity to the step times".to_owned(),
            paragraphs: vec![format!(
                "Each run simulated again with every step's predicted time multiplied by {} (a percent or two, \
                 about the median error of one step's prediction): how far each headline metric moves (half the \
                 range of the five simulations, relative to the simulation as predicted), and in how many runs \
                 the measured value lies within that range. A wide band means the schedule amplifies small \
                 timing differences — near saturation a step that ends a little earlier or later lets an arrival \
                 into another batch — so no model of step times predicts that metric more closely than the band. \
                 Informational: the verdicts above are the errors of the simulation as predicted.",
                scales.join(", ")
            )],
            table: Some(Table {
                headers: ["metric", "runs", "band, median ±", "band, max ±", "measured within"]
                    .map(String::from)
                    .to_vec(),
                right: vec![false, true, true, true, true],
                rows: band_rows,
            }),
        });
    }

    out.push(Section {
        title: "Step time by step kind".to_owned(),
        paragraphs: vec![format!(
            "Each measured step against the cost model's prediction for the plan it ran, pooled over all runs. \
                 Signed error is (predicted − measured) / measured: positive means the model predicts the step too \
                 slow. Stalled: steps that took over {} ms longer than predicted, as a host interruption or a kernel \
                 loaded in mid-step does; many of them say the machine's host, not the model, sets the tails.",
            STALL.as_ms(),
        )],
        table: Some(step_kind_table(
            v,
            &["steps", "median error", "p95 error", "median signed error", "stalled"],
            |s| {
                vec![
                    Cell::number(s.steps.to_string(), s.steps as f64),
                    percent_cell(s.median),
                    percent_cell(s.p95),
                    percent_cell(s.median_signed),
                    match s.stalled {
                        Some(n) => Cell::number(n.to_string(), n as f64),
                        None => Cell::text(super::render::MISSING),
                    },
                ]
            },
        )),
    });

    if v.steps.iter().any(|s| s.issue.is_some() || s.sm_mhz_median.is_some()) {
        out.push(Section {
            title: "Host, GPU and clock by step kind".to_owned(),
            paragraphs: vec![format!(
                "Which part of a step the model errs in, where the engine timed each step's parts: the host's time to \
                 issue the step, and the GPU's time from its first input copy to its last kernel — over the \
                 GPU-bound steps (GPU work ending over {GPU_BOUND_US} µs after the host had issued it all; a \
                 host-bound step's GPU time is the host's), and over those of them whose SM clock power and thermal \
                 management were not holding down. Each is the median signed error (as above) and over how many \
                 steps. The clock is NVML's SM clock read every few milliseconds during the measured run: a card \
                 under sustained load may hold its own clock down (an H200 was seen at 1,605-1,710 of 1,980 MHz for \
                 tens of seconds), and two columns say how often it did and whether the steps it did it in are \
                 the ones the model misses. The host's speed changes too: around a step whose decode steps (within \
                 {HOST_WINDOW} steps, at least {HOST_MIN_DECODES}) took over {HOST_SLOW} times their predicted issue \
                 time at the median, the host counts as slowed; the last columns give the step's signed error over \
                 the steps whose host was not, and the share of steps whose host was."
            )],
            table: Some(step_kind_table(
                v,
                &[
                    "host issue",
                    "GPU",
                    "GPU, clock not held down",
                    "SM clock: median MHz",
                    "steps at a held-down clock",
                    "step, host not slowed",
                    "steps with the host slowed",
                ],
                |s| {
                    vec![
                        signed_over(s.issue),
                        signed_over(s.gpu),
                        signed_over(s.gpu_unslowed),
                        match s.sm_mhz_median {
                            Some(m) => Cell::number(format!("{m:.0}"), m),
                            None => Cell::text(super::render::MISSING),
                        },
                        percent_cell(s.slowed_share),
                        signed_over(s.host_unslowed),
                        percent_cell(s.host_slowed_share),
                    ]
                },
            )),
        });
    }

    if !v.steps_by_policy.is_empty() {
        out.push(Section {
            title: "Step time by policy".to_owned(),
            paragraphs: vec![
                "The same per policy, over each policy's runs: the policies plan different steps, and an engine \
                 serving a run is sized for what its policy can plan (static batching: a full batch of the longest \
                 prompt), so an error that sits in one policy's steps — and in that policy's latency metrics — shows \
                 here. Signed errors as above; GPU: over the GPU-bound steps."
                    .to_owned(),
            ],
            table: Some(Table {
                headers: [
                    "policy",
                    "step kind",
                    "steps",
                    "median error",
                    "p95 error",
                    "median signed error",
                    "GPU",
                ]
                .map(str::to_owned)
                .to_vec(),
                right: vec![false, false, true, true, true, true, true],
                rows: v
                    .steps_by_policy
                    .iter()
                    .flat_map(|p| {
                        p.steps.iter().map(|s| {
                            vec![
                                Cell::text(&p.policy),
                                Cell::text(kind_label(s)),
                                Cell::number(s.steps.to_string(), s.steps as f64),
                                percent_cell(s.median),
                                percent_cell(s.p95),
                                percent_cell(s.median_signed),
                                signed_over(s.gpu),
                            ]
                        })
                    })
                    .collect(),
            }),
        });
    }

    if let Some(table) = measurements_table(v) {
        out.push(Section {
            title: "Measurements, pass by pass".to_owned(),
            paragraphs: vec![
                "Each repeated run's measurements in the order taken, one a pass over the runs, each on an engine of \
                 its own: the pace of its steps (the median over them of measured / predicted time; above 1, its \
                 engine ran slower than the profile predicts), its output throughput and which engine of the process \
                 it ran on (where the GPU engine ran it). The engine that a run got, \
                 not the cost model, sets the spread of a row; an engine that ran slow in every run of one pass shows \
                 as a column."
                    .to_owned(),
            ],
            table: Some(table),
        });
    }

    if let Some(table) = decode_rows_table(v) {
        out.push(Section {
            title: "Decode steps by rows, run by run".to_owned(),
            paragraphs: vec![
                "The median signed error of each run's decode-only steps' GPU time (as above, over the GPU-bound \
                 steps) and over how many steps, by how many sequences a step decodes, in the ranges of the engine's \
                 decode graph buckets (a step of 3 or 4 sequences replays the graph of 4): an engine slower than the \
                 profile at some rows and not at others, or one run's engine slower than another's at the same rows, \
                 shows here."
                    .to_owned(),
            ],
            table: Some(table),
        });
    }

    let diverged: Vec<Vec<Cell>> = v
        .runs
        .iter()
        .filter(|r| !r.plans.is_identical())
        .map(|r| vec![Cell::text(&r.run), Cell::text(r.plans.describe())])
        .collect();
    out.push(Section {
        title: "Scheduler plans".to_owned(),
        paragraphs: vec![if diverged.is_empty() {
            format!(
                "In every run the scheduler planned the same steps in the measured and the simulated execution ({} \
                 steps in all): the differences above are cost-model error, not different scheduling.",
                v.runs.iter().map(|r| r.steps).sum::<u64>()
            )
        } else {
            format!(
                "{} run(s) planned differently from some step on; the first divergence of each is below. With arrivals \
                 in real time a step that takes a different time can let an arrival fall on the other side of a step \
                 boundary (cause: arrival timing); a divergence with the same arrivals would be a scheduler bug.",
                diverged.len()
            )
        }],
        table: (!diverged.is_empty()).then(|| Table {
            headers: vec!["run".to_owned(), "first divergence".to_owned()],
            right: vec![false, false],
            rows: diverged,
        }),
    });

    let ranking_rows: Vec<Vec<Cell>> = v
        .ranking
        .iter()
        .map(|g| {
            let list = |get: fn(&crate::validate::PolicyThroughput) -> f64| {
                g.policies
                    .iter()
                    .map(|p| format!("{} {:.1}", p.policy, get(p)))
                    .collect::<Vec<_>>()
                    .join(" > ")
            };
            let mut verdict = g.verdict.as_str().to_owned();
            if !g.swapped.is_empty() {
                let pairs: Vec<String> = g.swapped.iter().map(|(a, b)| format!("{a}/{b}")).collect();
                verdict += &format!(" (swapped: {})", pairs.join(", "));
            }
            vec![
                Cell::text(if g.group.is_empty() {
                    "(all runs)".to_owned()
                } else {
                    g.group.clone()
                }),
                Cell::text(list(|p| p.measured)),
                Cell::text(list(|p| p.simulated)),
                Cell::text(verdict),
            ]
        })
        .collect();
    out.push(Section {
        title: "Policy throughput ordering".to_owned(),
        paragraphs: vec![format!(
            "Runs that differ only in their policy, by measured output throughput (tok/s), highest first. Wherever two \
             policies were measured more than {:.0}% apart the simulation must order them the same way.",
            100.0 * v.ranking_separation
        )],
        table: (!ranking_rows.is_empty()).then(|| Table {
            headers: ["runs sharing", "measured (tok/s)", "simulated (tok/s)", "verdict"]
                .map(String::from)
                .to_vec(),
            right: vec![false, false, false, false],
            rows: ranking_rows,
        }),
    });

    let mut columns: Vec<(String, bool)> = (HEADLINE_METRICS.iter())
        .map(|(_, title)| (format!("{title}: measured / simulated (error)"), true))
        .collect();
    columns.push(("decode steps: median signed error".to_owned(), true));
    let engines = v.runs.iter().any(|r| r.engine.is_some());
    if engines {
        columns.push(("engine".to_owned(), true));
    }
    columns.push(("plans".to_owned(), false));
    let runs_table = run_table(&v.runs, columns, |r| {
        let mut row = Vec::new();
        for (metric, _) in HEADLINE_METRICS {
            let m = r.metrics.iter().find(|m| m.metric == metric);
            row.push(match m {
                Some(m) => {
                    let text = format!(
                        "{} / {} ({})",
                        value(metric, m.measured),
                        value(metric, m.simulated),
                        percent(m.rel_error)
                    );
                    match m.rel_error {
                        Some(e) => Cell::number(text, e),
                        None => Cell::text(text),
                    }
                }
                None => Cell::text(super::render::MISSING),
            });
        }
        row.push(percent_cell(r.decode_signed));
        if engines {
            row.push(match r.engine {
                Some(e) => Cell::number(format!("#{e}"), f64::from(e)),
                None => Cell::text(super::render::MISSING),
            });
        }
        row.push(Cell::text(match &r.plans {
            PlanAgreement::Identical { .. } => "identical".to_owned(),
            PlanAgreement::Diverged { step, .. } => format!("differ from step {step}"),
        }));
        row
    });
    out.push(Section {
        title: "Runs".to_owned(),
        paragraphs: vec![
            "Each run's headline metrics measured and simulated, the median signed error of its decode-only \
             steps' predicted times (positive: predicted too slow) and, where the GPU engine ran it, which engine of \
             the validating process did (#1 the first built, priming engines counted: on H100s the third engine a \
             process built ran its steps fastest). Every summary column of both is in \
             `runs/<run>/comparison.csv` (all runs: `validation.csv`); the measured runs' tables are in `runs/`, the \
             simulated ones' in `simulated/`, and each run's per-step table in `runs/<run>/step_errors.parquet`."
                .to_owned(),
        ],
        table: Some(runs_table),
    });
    out
}

/// The sections as markdown, headings at `level` (2 in `validation.md`, 3 in `report.md`).
pub fn markdown(v: &ValidationSummary, level: usize) -> String {
    let hashes = "#".repeat(level);
    let mut out = String::new();
    for section in sections(v) {
        out.push_str(&format!("{hashes} {}\n\n", section.title));
        let bullets = section.title == "Verdict";
        for p in &section.paragraphs {
            if bullets {
                out.push_str(&format!("- {p}\n"));
            } else {
                out.push_str(&format!("{p}\n\n"));
            }
        }
        if bullets {
            out.push('\n');
        }
        if let Some(table) = &section.table {
            let headers: Vec<String> = table.headers.iter().map(|h| escape_md(h)).collect();
            let rows: Vec<Vec<String>> = table
                .rows
                .iter()
                .map(|row| row.iter().map(|c| escape_md(&c.text)).collect())
                .collect();
            out.push_str(&aligned_table(&headers, &table.right, &rows));
            out.push('\n');
        }
    }
    out
}

/// What `validate` prints: the verdicts, the headline metrics and the step kinds (the first three sections, the
/// metrics table cut to the headline rows).
pub fn headline_markdown(v: &ValidationSummary) -> String {
    let mut short = v.clone();
    short.metrics.retain(|m| m.verdict.is_some());
    let full = markdown(&short, 2);
    // Up to the plans section: the rest is in validation.md.
    match full.find("## Scheduler plans") {
        Some(end) => full[..end].to_owned(),
        None => full,
    }
}

/// `validation.md`: the validation alone.
pub fn validation_markdown(v: &ValidationSummary, title: &str) -> String {
    format!(
        "# Validation: {}\n\nMeasured against simulated, run by run: relative error = |simulated − measured| / \
         measured.\n\n{}",
        escape_md(title),
        markdown(v, 2)
    )
}

/// The sections as HTML, inside the report's `<section id="validation">`.
pub(super) fn html(v: &ValidationSummary) -> String {
    use super::html::{cell as td, escape, header, table};
    let mut out = String::new();
    for section in sections(v) {
        out.push_str(&format!("<h3>{}</h3>\n", escape(&section.title)));
        if section.title == "Verdict" {
            out.push_str("<ul class=\"findings\">\n");
            for p in &section.paragraphs {
                out.push_str(&format!("<li>{}</li>\n", escape(p)));
            }
            out.push_str("</ul>\n");
        } else {
            for p in &section.paragraphs {
                out.push_str(&format!("<p class=\"note\">{}</p>\n", escape(p)));
            }
        }
        if let Some(t) = &section.table {
            let headers: Vec<String> = t
                .headers
                .iter()
                .zip(&t.right)
                .map(|(h, right)| header(h, None, *right))
                .collect();
            let rows: Vec<Vec<String>> = t
                .rows
                .iter()
                .map(|row| row.iter().map(|c| td(Some(&c.text), c.number)).collect())
                .collect();
            out.push_str(&table(&headers, &rows, true));
        }
    }
    out
}
