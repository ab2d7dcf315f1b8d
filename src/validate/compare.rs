//! Measured against simulated: per metric, per step, per plan, and over all runs.
//!
//! Relative error is |simulated − measured| / measured throughout (the measurement is the truth). The per-step
//! table predicts each *measured* step's plan with the cost model, so a step's error is the cost model's alone even
//! where the two executions' plans part ways.

use super::driver::{MeasuredParts, RunValidation};
use super::{HEADLINE_METRICS, RANKING_SEPARATION, TARGET_MEDIAN, TARGET_P95};
use crate::calib::engine_steps::GPU_BOUND_US;
use crate::metrics::{Cell, RunMetrics, StepKind, StepRecord, Summary, percentile_sorted};
use crate::model::GRAPH_BUCKETS;
use crate::sched::StepPlan;
use crate::sim::CostModel;
use crate::units::Nanos;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// |simulated − measured| / measured; 0 when both are 0, `None` when undefined (measured 0 alone, a value missing or
/// not finite).
pub fn relative_error(measured: Option<f64>, simulated: Option<f64>) -> Option<f64> {
    let (m, s) = (measured?, simulated?);
    if !m.is_finite() || !s.is_finite() {
        return None;
    }
    if m == 0.0 {
        return (s == 0.0).then_some(0.0);
    }
    Some((s - m).abs() / m.abs())
}

/// One summary metric of one run, both ways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    /// The summary column (`ttft_p95_ms`, …).
    pub metric: String,
    pub measured: Option<f64>,
    pub simulated: Option<f64>,
    pub rel_error: Option<f64>,
    /// For the headline metrics: the least and the most the simulation gives with every step's time scaled by each
    /// of [`super::SENSITIVITY_SCALES`] and as predicted — how far the cost model's own error, a percent or two a
    /// step, can move this metric through the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated_band: Option<(f64, f64)>,
}

impl MetricComparison {
    /// Whether the measured value lies within [`Self::simulated_band`] (`None` without both).
    pub fn measured_in_band(&self) -> Option<bool> {
        let (lo, hi) = self.simulated_band?;
        self.measured.map(|m| lo <= m && m <= hi)
    }

    /// The band's half-width relative to the simulated value ([`band_half_width`]).
    pub fn band_half_width(&self) -> Option<f64> {
        band_half_width(self.simulated?, self.simulated_band?)
    }
}

/// Half of a band (least, most) relative to the simulated value it was drawn around: (most − least) / 2 /
/// simulated; `None` where the simulated value is not positive.
pub fn band_half_width(simulated: f64, (least, most): (f64, f64)) -> Option<f64> {
    (simulated > 0.0).then(|| (most - least) / 2.0 / simulated)
}

/// Each headline metric's value in `simulated`, with its least and most over `simulated` and `scaled` (the same run
/// simulated with scaled step times); metrics a summary lacks are left out.
pub fn headline_bands(simulated: &Summary, scaled: &[Summary]) -> Vec<(&'static str, f64, (f64, f64))> {
    let value = |s: &Summary, metric: &str| {
        s.cells()
            .into_iter()
            .find(|(n, _)| n == metric)
            .and_then(|(_, c)| c.as_f64())
    };
    HEADLINE_METRICS
        .iter()
        .filter_map(|&(metric, _)| {
            let nominal = value(simulated, metric)?;
            let values: Option<Vec<f64>> = scaled.iter().map(|s| value(s, metric)).collect();
            let (lo, hi) = values?
                .into_iter()
                .fold((nominal, nominal), |(lo, hi), v| (lo.min(v), hi.max(v)));
            Some((metric, nominal, (lo, hi)))
        })
        .collect()
}

/// Sets the [`MetricComparison::simulated_band`] of each headline metric in `metrics` from the summaries of the
/// same run simulated with scaled step times (`scaled`) and as predicted (`simulated`).
pub fn set_bands(metrics: &mut [MetricComparison], simulated: &Summary, scaled: &[Summary]) {
    for (metric, _, band) in headline_bands(simulated, scaled) {
        if let Some(m) = metrics.iter_mut().find(|m| m.metric == metric) {
            m.simulated_band = Some(band);
        }
    }
}

/// Summary columns that restate the input (the workload, the model, the cache size), equal by construction: their
/// error says nothing about the cost model.
const INPUT_COLUMNS: [&str; 6] = [
    "requests",
    "completed",
    "prompt_tokens",
    "output_tokens",
    "kv_bytes_per_token",
    "kv_capacity_mib",
];

/// Every numeric summary column that describes an outcome, in `Summary::cells()` order.
pub fn compare_metrics(measured: &Summary, simulated: &Summary) -> Vec<MetricComparison> {
    let is_numeric = |cell: &Cell| matches!(cell, Cell::Int(_) | Cell::Float(_) | Cell::Null);
    measured
        .cells()
        .into_iter()
        .zip(simulated.cells())
        .filter(|((name, m), (_, s))| !INPUT_COLUMNS.contains(&name.as_str()) && is_numeric(m) && is_numeric(s))
        .map(|((name, m), (_, s))| {
            let (measured, simulated) = (m.as_f64(), s.as_f64());
            MetricComparison {
                metric: name,
                measured,
                simulated,
                rel_error: relative_error(measured, simulated),
                simulated_band: None,
            }
        })
        .collect()
}

/// One measured step beside the cost model's prediction for its plan.
#[derive(Clone, Debug, PartialEq)]
pub struct StepComparison {
    pub index: u64,
    pub kind: StepKind,
    pub prefill_seqs: u32,
    pub decode_seqs: u32,
    pub prefill_tokens: u32,
    pub decode_tokens: u32,
    pub padding_tokens: u32,
    /// Context tokens attention reads, summed over the step's sequences.
    pub kv_read_tokens: u64,
    pub max_context: u64,
    pub measured: Nanos,
    pub predicted: Nanos,
    /// The host's time to issue the step, as the engine measured it and as the step model predicts it (`None`
    /// where the backend or the cost model gives none).
    pub measured_issue: Option<Nanos>,
    pub predicted_issue: Option<Nanos>,
    /// The GPU's time, first input copy to last kernel, measured and predicted (kernels and the gap between them).
    pub measured_gpu: Option<Nanos>,
    pub predicted_gpu: Option<Nanos>,
    /// The SM clock (MHz) the step ran at, and whether power or thermal management was holding it down, where the
    /// backend could read them.
    pub sm_mhz: Option<u32>,
    pub slowed: Option<bool>,
    /// Whether the host was issuing slower than calibrated around this step (see [`mark_host_slowed`]); `None`
    /// where too few decode steps nearby give their issue time, measured and predicted.
    pub host_slowed: Option<bool>,
}

/// Steps either side of a step whose decode steps say how fast the host was issuing around it.
pub const HOST_WINDOW: usize = 50;
/// Fewest decode steps in that window for a verdict.
pub const HOST_MIN_DECODES: usize = 10;
/// The median ratio of measured to predicted issue time of those decode steps above which the host counts as
/// slowed.
pub const HOST_SLOW: f64 = 1.25;

/// Marks each step whose host was issuing slower than calibrated: the decode steps within [`HOST_WINDOW`] steps of
/// it (at least [`HOST_MIN_DECODES`]) took, at the median, more than [`HOST_SLOW`] times their predicted issue time.
/// A decode step's issue is host work alone (its inputs copied, its graph launched: tens of µs), and there are
/// thousands of them, so they meter the host's speed through a run; an eager step is hundreds of launches and
/// follows it. On these machines the host's speed changes over tens of seconds (on an H200, decode steps issued in
/// 33 µs at the median for a sixth of a seed matrix and in 66 µs for another), which a step model calibrated once
/// cannot know.
pub fn mark_host_slowed(steps: &mut [StepComparison]) {
    let decodes: Vec<(usize, f64)> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == StepKind::Decode)
        .filter_map(|(i, s)| {
            let (m, p) = (s.measured_issue?, s.predicted_issue?);
            (p > Nanos::ZERO).then(|| (i, m.0 as f64 / p.0 as f64))
        })
        .collect();
    for (i, step) in steps.iter_mut().enumerate() {
        let from = decodes.partition_point(|&(j, _)| j + HOST_WINDOW < i);
        let to = decodes.partition_point(|&(j, _)| j <= i + HOST_WINDOW);
        let mut ratios: Vec<f64> = decodes[from..to].iter().map(|&(_, r)| r).collect();
        step.host_slowed = (ratios.len() >= HOST_MIN_DECODES).then(|| {
            ratios.sort_by(f64::total_cmp);
            percentile_sorted(&ratios, 50.0) > HOST_SLOW
        });
    }
}

impl StepComparison {
    /// (predicted − measured) / measured: positive when the model is pessimistic.
    pub fn signed_error(&self) -> f64 {
        if self.measured == Nanos::ZERO {
            return if self.predicted == Nanos::ZERO {
                0.0
            } else {
                f64::INFINITY
            };
        }
        (self.predicted.0 as f64 - self.measured.0 as f64) / self.measured.0 as f64
    }

    /// |predicted − measured| / measured.
    pub fn rel_error(&self) -> f64 {
        self.signed_error().abs()
    }

    /// The signed error of the host's issue time, where both sides give it.
    pub fn issue_signed_error(&self) -> Option<f64> {
        signed(self.measured_issue?, self.predicted_issue?)
    }

    /// The signed error of the GPU time, where both sides give it and the step was GPU-bound: its GPU work ended
    /// more than [`GPU_BOUND_US`] after the host had issued it all (a host-bound step's GPU time is the host's).
    pub fn gpu_signed_error(&self) -> Option<f64> {
        let (gpu, issue) = (self.measured_gpu?, self.measured_issue?);
        if gpu.0 as f64 <= issue.0 as f64 + GPU_BOUND_US * 1e3 {
            return None;
        }
        signed(gpu, self.predicted_gpu?)
    }
}

/// (predicted − measured) / measured, for a measured time above zero.
fn signed(measured: Nanos, predicted: Nanos) -> Option<f64> {
    (measured > Nanos::ZERO).then(|| (predicted.0 as f64 - measured.0 as f64) / measured.0 as f64)
}

/// Each measured step with the time `cost` predicts for the plan it ran. `plans[i]` is the plan of `steps[i]`, and
/// `parts[i]` how its time went, where the backend timed one part per step.
pub fn compare_steps(
    steps: &[StepRecord],
    plans: &[StepPlan],
    parts: &[MeasuredParts],
    cost: &dyn CostModel,
) -> Vec<StepComparison> {
    assert_eq!(steps.len(), plans.len(), "one plan per measured step");
    // Parts that do not line up with the steps say nothing about any one of them.
    let parts = if parts.len() == steps.len() {
        parts
    } else {
        if !parts.is_empty() {
            tracing::warn!(
                parts = parts.len(),
                steps = steps.len(),
                "the engine timed another number of steps than the run recorded: its per-step parts are left out"
            );
        }
        &[]
    };
    let us = |v: f64| Nanos::from_us(v);
    let mut compared = steps
        .iter()
        .zip(plans)
        .enumerate()
        .map(|(i, (step, plan))| {
            let shape = plan.shape();
            let measured = parts.get(i);
            let predicted = cost.plan_parts(plan, &shape);
            StepComparison {
                index: step.index,
                kind: step.kind(),
                prefill_seqs: step.prefill_seqs,
                decode_seqs: step.decode_seqs,
                prefill_tokens: step.prefill_tokens,
                decode_tokens: step.decode_tokens,
                padding_tokens: step.padding_tokens,
                kv_read_tokens: shape.kv_read_tokens,
                max_context: shape.max_context,
                measured: step.duration,
                predicted: cost.plan_time(plan, &shape),
                measured_issue: measured.map(|p| p.issue),
                predicted_issue: predicted.map(|p| us(p.issue_us)),
                measured_gpu: measured.and_then(|p| p.gpu),
                predicted_gpu: predicted.map(|p| us(p.gpu_us)),
                sm_mhz: measured.and_then(|p| p.sm_mhz),
                slowed: measured.and_then(|p| p.slowed),
                host_slowed: None,
            }
        })
        .collect::<Vec<_>>();
    mark_host_slowed(&mut compared);
    compared
}

/// Whether the scheduler planned the same steps in both executions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum PlanAgreement {
    Identical {
        steps: u64,
    },
    /// The first step whose plans differ (or where one execution had no more steps).
    Diverged {
        step: u64,
        measured_steps: u64,
        simulated_steps: u64,
        /// The plans at `step`, as text; `None` where that execution had ended.
        measured: Option<String>,
        simulated: Option<String>,
        cause: DivergenceCause,
    },
}

impl PlanAgreement {
    pub fn is_identical(&self) -> bool {
        matches!(self, PlanAgreement::Identical { .. })
    }

    /// One sentence for the reports.
    pub fn describe(&self) -> String {
        match self {
            PlanAgreement::Identical { steps } => format!("identical for all {steps} steps"),
            PlanAgreement::Diverged {
                step,
                measured_steps,
                simulated_steps,
                measured,
                simulated,
                cause,
            } => {
                let plan = |p: &Option<String>| p.clone().unwrap_or_else(|| "(no step)".to_owned());
                format!(
                    "diverged at step {step} (measured {measured_steps} steps, simulated {simulated_steps}): measured \
                     {}, simulated {}; {}",
                    plan(measured),
                    plan(simulated),
                    cause.describe()
                )
            }
        }
    }
}

/// Why two executions of one scheduler planned differently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DivergenceCause {
    /// The scheduler had seen different requests when it planned the step: with arrivals in real time (open loop,
    /// closed loop, a static batch's wait) a step that took a different time lets an arrival fall on the other side
    /// of a step boundary. Timing, not a different decision from the same input.
    ArrivalTiming {
        measured_arrived: u64,
        simulated_arrived: u64,
    },
    /// Both had seen the same requests: the scheduler decided differently on the same input, which it must not.
    SameArrivals { arrived: u64 },
}

impl DivergenceCause {
    pub fn describe(&self) -> String {
        match self {
            DivergenceCause::ArrivalTiming {
                measured_arrived,
                simulated_arrived,
            } => format!(
                "cause: arrival timing ({measured_arrived} requests had arrived when the measured step started, \
                 {simulated_arrived} in the simulation)"
            ),
            DivergenceCause::SameArrivals { arrived } => format!(
                "cause unexplained: both had seen the same {arrived} requests, so the scheduler decided differently \
                 on the same input"
            ),
        }
    }
}

/// A plan as one line: `prefill r0[0+64] r1[0+64 pad 8] · decode r2@65 r3@70* · preempt r5` (`*`: computed but
/// not emitted). Long plans are cut after 12 sequences.
pub fn describe_plan(plan: &StepPlan) -> String {
    const MAX: usize = 12;
    let mut parts: Vec<String> = Vec::new();
    let mut shown = 0usize;
    let total = plan.prefills.len() + plan.decodes.len();
    if !plan.prefills.is_empty() {
        let mut s = "prefill".to_owned();
        for c in plan.prefills.iter().take(MAX) {
            let _ = write!(s, " r{}[{}+{}", c.id, c.offset, c.len);
            if c.padding > 0 {
                let _ = write!(s, " pad {}", c.padding);
            }
            s.push(']');
            if !c.samples {
                s.push('…');
            }
            shown += 1;
        }
        parts.push(s);
    }
    if !plan.decodes.is_empty() && shown < MAX {
        let mut s = "decode".to_owned();
        for d in plan.decodes.iter().take(MAX - shown) {
            let _ = write!(s, " r{}@{}{}", d.id, d.context, if d.emits { "" } else { "*" });
            shown += 1;
        }
        parts.push(s);
    }
    if shown < total {
        parts.push(format!("+{} more", total - shown));
    }
    if !plan.preempted.is_empty() {
        let ids: Vec<String> = plan.preempted.iter().map(|id| format!("r{id}")).collect();
        parts.push(format!("preempt {}", ids.join(" ")));
    }
    if parts.is_empty() {
        "(empty)".to_owned()
    } else {
        parts.join(" · ")
    }
}

/// Compares the plans of two executions step by step. The runs' records (which must keep their steps) tell, at a
/// divergence, how many requests each execution had seen arrive when it planned that step.
pub fn compare_plans(
    measured_plans: &[StepPlan],
    simulated_plans: &[StepPlan],
    measured: &RunMetrics,
    simulated: &RunMetrics,
) -> PlanAgreement {
    let first_difference = measured_plans
        .iter()
        .zip(simulated_plans)
        .position(|(a, b)| a != b)
        .or_else(|| {
            (measured_plans.len() != simulated_plans.len()).then(|| measured_plans.len().min(simulated_plans.len()))
        });
    let Some(step) = first_difference else {
        return PlanAgreement::Identical {
            steps: measured_plans.len() as u64,
        };
    };
    // Requests delivered to the scheduler before it planned `step`: those arrived by the step's start (the loop
    // delivers every arrival due at or before `now` before it schedules). A missing step counts everything.
    let arrived = |run: &RunMetrics| -> u64 {
        match run.steps.get(step) {
            Some(s) => run.requests.iter().filter(|r| r.arrival <= s.start).count() as u64,
            None => run.requests.len() as u64,
        }
    };
    let (measured_arrived, simulated_arrived) = (arrived(measured), arrived(simulated));
    let cause = if measured_arrived != simulated_arrived {
        DivergenceCause::ArrivalTiming {
            measured_arrived,
            simulated_arrived,
        }
    } else {
        DivergenceCause::SameArrivals {
            arrived: measured_arrived,
        }
    };
    PlanAgreement::Diverged {
        step: step as u64,
        measured_steps: measured_plans.len() as u64,
        simulated_steps: simulated_plans.len() as u64,
        measured: measured_plans.get(step).map(describe_plan),
        simulated: simulated_plans.get(step).map(describe_plan),
        cause,
    }
}

/// Pass or fail against the targets, or nothing to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    NoData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::NoData => "no data",
        }
    }
}

/// One metric's relative error over all runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricAggregate {
    pub metric: String,
    /// Runs where the error is defined.
    pub runs: u64,
    pub median: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
    /// Against [`TARGET_MEDIAN`] and [`TARGET_P95`]; `None` for metrics without a target.
    pub verdict: Option<Verdict>,
    /// Headline metrics: over the runs with a [`MetricComparison::simulated_band`], how many measured within it,
    /// of how many, and the median of the bands' relative half-widths (informational: the verdict is the error's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<BandAggregate>,
}

/// How the simulated bands of one headline metric held the measurements, over the runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BandAggregate {
    pub runs: u64,
    pub measured_within: u64,
    pub median_half_width: Option<f64>,
    pub max_half_width: Option<f64>,
}

/// Step-time prediction error of one step kind, pooled over all runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepKindAggregate {
    pub kind: String,
    pub steps: u64,
    /// Of |predicted − measured| / measured.
    pub median: Option<f64>,
    pub p95: Option<f64>,
    /// Median of the signed error: positive when the model predicts this kind too slow.
    pub median_signed: Option<f64>,
    /// Steps that took more than [`STALL`] longer than predicted: what a host interruption or a kernel loaded in
    /// mid-step looks like, beyond any step model's reach. `None` in validations written before it was counted.
    #[serde(default)]
    pub stalled: Option<u64>,
    /// The host's issue time ([`StepComparison::issue_signed_error`]), over the steps both sides give it for;
    /// `None` where the backend or the cost model gave none.
    #[serde(default)]
    pub issue: Option<SignedOver>,
    /// The GPU time over the GPU-bound steps ([`StepComparison::gpu_signed_error`]).
    #[serde(default)]
    pub gpu: Option<SignedOver>,
    /// The same over the GPU-bound steps whose SM clock was not held down.
    #[serde(default)]
    pub gpu_unslowed: Option<SignedOver>,
    /// The median SM clock (MHz) of the steps whose clock was read, and the share of them it was held down in.
    #[serde(default)]
    pub sm_mhz_median: Option<f64>,
    #[serde(default)]
    pub slowed_share: Option<f64>,
    /// The step's signed error over the steps whose host was not slowed ([`mark_host_slowed`]), and the share of
    /// the steps with a verdict whose host was.
    #[serde(default)]
    pub host_unslowed: Option<SignedOver>,
    #[serde(default)]
    pub host_slowed_share: Option<f64>,
}

/// Step-time error per step kind over one policy's runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicySteps {
    pub policy: String,
    pub steps: Vec<StepKindAggregate>,
}

/// A median signed error and how many steps it is over.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedOver {
    pub median: f64,
    pub steps: u64,
}

impl SignedOver {
    /// Of `errors`; `None` for none.
    fn of(errors: Vec<f64>) -> Option<SignedOver> {
        let steps = errors.len() as u64;
        median_p95_max(errors).0.map(|median| SignedOver { median, steps })
    }
}

/// How much longer than predicted a step must take to count as stalled ([`StepKindAggregate::stalled`]).
pub const STALL: Nanos = Nanos(1_000_000);

impl StepComparison {
    /// The step took more than [`STALL`] longer than its prediction.
    pub fn stalled(&self) -> bool {
        self.measured > self.predicted + STALL
    }
}

/// One policy's throughput in a ranking group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyThroughput {
    pub policy: String,
    pub run: String,
    /// Output tokens per second.
    pub measured: f64,
    pub simulated: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankingVerdict {
    /// Every pair of policies measured more than 5% apart keeps its order in the simulation.
    Reproduced,
    /// Some pair measured more than 5% apart is ordered the other way (or tied) in the simulation.
    NotReproduced,
    /// No two policies were measured more than 5% apart: there is no ordering to reproduce.
    NothingToCheck,
}

impl RankingVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            RankingVerdict::Reproduced => "reproduced",
            RankingVerdict::NotReproduced => "NOT reproduced",
            RankingVerdict::NothingToCheck => "nothing to check (all within 5%)",
        }
    }
}

/// The runs that differ only in their policy, ranked by throughput both ways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankingGroup {
    /// What the runs share, as `name=value, …` (empty when they share everything but the policy).
    pub group: String,
    /// By measured throughput, highest first.
    pub policies: Vec<PolicyThroughput>,
    pub verdict: RankingVerdict,
    /// The pairs (higher measured, lower measured) the simulation orders the other way.
    pub swapped: Vec<(String, String)>,
}

/// A run's place in the ranking check: the labels other than the policy that identify its group.
pub struct RankEntry {
    pub group: String,
    pub policy: String,
    pub throughput: PolicyThroughput,
}

/// Ranks the policies within each group (groups in order of first appearance). Groups with a single policy are
/// left out: there is nothing to rank.
pub fn rank_policies(entries: Vec<RankEntry>) -> Vec<RankingGroup> {
    let mut groups: indexmap::IndexMap<String, Vec<PolicyThroughput>> = indexmap::IndexMap::new();
    for e in entries {
        groups.entry(e.group).or_default().push(PolicyThroughput {
            policy: e.policy,
            ..e.throughput
        });
    }
    groups
        .into_iter()
        .filter(|(_, p)| p.len() >= 2)
        .map(|(group, mut policies)| {
            policies.sort_by(|a, b| b.measured.total_cmp(&a.measured));
            let mut separated = false;
            let mut swapped = Vec::new();
            for (i, hi) in policies.iter().enumerate() {
                for lo in &policies[i + 1..] {
                    if hi.measured - lo.measured <= RANKING_SEPARATION * lo.measured {
                        continue;
                    }
                    separated = true;
                    if hi.simulated <= lo.simulated {
                        swapped.push((hi.policy.clone(), lo.policy.clone()));
                    }
                }
            }
            let verdict = match (separated, swapped.is_empty()) {
                (false, _) => RankingVerdict::NothingToCheck,
                (true, true) => RankingVerdict::Reproduced,
                (true, false) => RankingVerdict::NotReproduced,
            };
            RankingGroup {
                group,
                policies,
                verdict,
                swapped,
            }
        })
        .collect()
}

/// One run as the summary keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: String,
    pub policy: Option<String>,
    /// The run's labels as text, in order.
    pub labels: Vec<(String, String)>,
    pub plans: PlanAgreement,
    /// Whether the backend measured memory (otherwise the measured run carries the simulator's memory model).
    pub memory_measured: bool,
    pub steps: u64,
    pub metrics: Vec<MetricComparison>,
    /// Measured with `--repeats N`: each measurement's output throughput, in the order taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeat_throughputs: Vec<f64>,
    /// Measured with `--repeats N`: each measurement's pace (its steps' measured time in all over their predicted
    /// time in all; in validations written before 0f0a3de, 2026-12-07 09:50 UTC, the median over its steps of
    /// measured / predicted time), in the order taken; the median one is the one compared. Empty in validations
    /// written before measurements were chosen by pace (they were chosen by median output throughput).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeat_paces: Vec<f64>,
    /// Which engine of the validating process ran the compared measurement, counting from 1 every engine it built
    /// (priming ones too). `None` where the backend builds none (or in validations written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<u32>,
    /// Measured with `--repeats N`: which engine of the process ran each measurement, in the order taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeat_engines: Vec<u32>,
    /// The median signed error of the run's decode-only steps (positive: predicted too slow): an engine whose every
    /// decode step ran slower than another's at the same shapes shows here run by run. `None` without decode steps
    /// (or in validations written before it was kept).
    #[serde(default)]
    pub decode_signed: Option<f64>,
    /// The median signed error of the GPU time of the run's decode-only steps, by their rows in the ranges of the
    /// decode graph buckets ([`decode_gpu_by_rows`]). Empty where no decode step gave its GPU time (or in
    /// validations written before it was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode_gpu_by_rows: Vec<RowsSigned>,
}

/// A median signed error over the steps of `fewest` to `most` rows (`None`: no upper bound).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowsSigned {
    pub fewest: u32,
    pub most: Option<u32>,
    pub signed: SignedOver,
}

/// Fewest and most rows (`None`: no upper bound).
pub type RowsRange = (u32, Option<u32>);

/// The rows of the decode graph bucket that serves a decode step of `rows` rows: one more than the next smaller
/// bucket up to the bucket itself (a step of 3 rows replays the graph of 4, as one of 4 does); beyond the largest
/// bucket, no upper bound.
pub fn bucket_rows(rows: u32) -> RowsRange {
    let mut below = 0;
    for &b in &GRAPH_BUCKETS {
        let b = b as u32;
        if rows <= b {
            return (below + 1, Some(b));
        }
        below = b;
    }
    (below + 1, None)
}

/// The GPU time's median signed error of the decode-only steps among `steps` that give one
/// ([`StepComparison::gpu_signed_error`]), by [`bucket_rows`], fewest rows first.
pub fn decode_gpu_by_rows<'a>(steps: impl IntoIterator<Item = &'a StepComparison>) -> Vec<RowsSigned> {
    let mut groups: Vec<(RowsRange, Vec<f64>)> = Vec::new();
    for s in steps.into_iter().filter(|s| s.kind == StepKind::Decode) {
        let Some(e) = s.gpu_signed_error() else {
            continue;
        };
        let rows = bucket_rows(s.decode_seqs);
        match groups.iter_mut().find(|g| g.0 == rows) {
            Some(g) => g.1.push(e),
            None => groups.push((rows, vec![e])),
        }
    }
    groups.sort_by_key(|g| g.0.0);
    groups
        .into_iter()
        .filter_map(|((fewest, most), errors)| SignedOver::of(errors).map(|signed| RowsSigned { fewest, most, signed }))
        .collect()
}

/// A validation over all its runs: `validation.json`, and what the reports draw from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationSummary {
    pub target_median: f64,
    pub target_p95: f64,
    pub ranking_separation: f64,
    /// The headline metrics first (in [`HEADLINE_METRICS`] order, with verdicts), then every other compared metric.
    pub metrics: Vec<MetricAggregate>,
    /// decode, prefill, mixed: the kinds that occurred.
    pub steps: Vec<StepKindAggregate>,
    /// The same per policy, in the order the runs name them, where the runs have more than one: policies plan
    /// different steps and size their engines differently, so an error that sits in one policy's steps shows here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps_by_policy: Vec<PolicySteps>,
    pub ranking: Vec<RankingGroup>,
    pub runs: Vec<RunSummary>,
    /// What checking the runs' cost model against the measuring card found worth saying without refusing it (a
    /// profile of another card of the same model, another driver or engine revision; runs with no calibration), as
    /// `validate` printed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile_notes: Vec<String>,
}

impl ValidationSummary {
    /// Every headline metric passes (a metric with no data does not).
    pub fn metrics_pass(&self) -> bool {
        self.metrics
            .iter()
            .filter_map(|m| m.verdict)
            .all(|v| v == Verdict::Pass)
    }

    pub fn plans_identical(&self) -> bool {
        self.runs.iter().all(|r| r.plans.is_identical())
    }

    pub fn ranking_reproduced(&self) -> bool {
        self.ranking.iter().all(|g| g.verdict != RankingVerdict::NotReproduced)
    }
}

/// A headline metric's verdict from its median and p95 error against [`TARGET_MEDIAN`] and [`TARGET_P95`].
fn verdict_of(median: Option<f64>, p95: Option<f64>) -> Verdict {
    match (median, p95) {
        (Some(med), Some(p)) if med <= TARGET_MEDIAN && p <= TARGET_P95 => Verdict::Pass,
        (Some(_), Some(_)) => Verdict::Fail,
        _ => Verdict::NoData,
    }
}

fn median_p95_max(mut values: Vec<f64>) -> (Option<f64>, Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None, None);
    }
    values.sort_by(f64::total_cmp);
    (
        Some(percentile_sorted(&values, 50.0)),
        Some(percentile_sorted(&values, 95.0)),
        values.last().copied(),
    )
}

/// Step-time error per step kind (decode, prefill, mixed: those that occur) over `steps`.
fn kind_aggregates(steps: &[&StepComparison]) -> Vec<StepKindAggregate> {
    [StepKind::Decode, StepKind::Prefill, StepKind::Mixed]
        .into_iter()
        .filter_map(|kind| {
            let of_kind = || steps.iter().copied().filter(|s| s.kind == kind);
            let abs: Vec<f64> = of_kind().map(StepComparison::rel_error).collect();
            if abs.is_empty() {
                return None;
            }
            let count = abs.len() as u64;
            let (median, p95, _) = median_p95_max(abs);
            let (median_signed, _, _) = median_p95_max(of_kind().map(|s| s.signed_error()).collect());
            let part =
                |get: &dyn Fn(&StepComparison) -> Option<f64>| SignedOver::of(of_kind().filter_map(get).collect());
            let issue = part(&StepComparison::issue_signed_error);
            let gpu = part(&StepComparison::gpu_signed_error);
            let gpu_unslowed = part(&|s| s.gpu_signed_error().filter(|_| s.slowed == Some(false)));
            let clocks: Vec<f64> = of_kind().filter_map(|s| s.sm_mhz).map(f64::from).collect();
            let share = |flags: Vec<bool>| {
                (!flags.is_empty()).then(|| flags.iter().filter(|&&b| b).count() as f64 / flags.len() as f64)
            };
            let slowed_share = share(of_kind().filter_map(|s| s.slowed).collect());
            let host_unslowed = part(&|s| (s.host_slowed == Some(false)).then(|| s.signed_error()));
            let host_slowed_share = share(of_kind().filter_map(|s| s.host_slowed).collect());
            Some(StepKindAggregate {
                kind: kind.as_str().to_owned(),
                steps: count,
                median,
                p95,
                median_signed,
                stalled: Some(of_kind().filter(|s| s.stalled()).count() as u64),
                issue,
                gpu,
                gpu_unslowed,
                sm_mhz_median: median_p95_max(clocks).0,
                slowed_share,
                host_unslowed,
                host_slowed_share,
            })
        })
        .collect()
}

fn cell_text(cell: &Cell) -> String {
    match cell {
        Cell::Str(s) => s.clone(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => f.to_string(),
        Cell::Bool(b) => b.to_string(),
        Cell::Null => String::new(),
    }
}

/// Labels that name the policy (`policy`, the sweep axis `scheduler.policy`).
fn is_policy_label(name: &str) -> bool {
    name == "policy" || name.ends_with(".policy")
}

/// Everything the reports say about a validation, from its runs.
pub fn aggregate(runs: &[RunValidation]) -> ValidationSummary {
    let mut names: Vec<String> = HEADLINE_METRICS.iter().map(|(m, _)| (*m).to_owned()).collect();
    for run in runs {
        for m in &run.metrics {
            if !names.contains(&m.metric) {
                names.push(m.metric.clone());
            }
        }
    }
    let metrics = names
        .into_iter()
        .map(|name| {
            let errors: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.metrics.iter().find(|m| m.metric == name)?.rel_error)
                .collect();
            let runs_with = errors.len() as u64;
            let (median, p95, max) = median_p95_max(errors);
            let headline = HEADLINE_METRICS.iter().any(|(m, _)| *m == name);
            let verdict = headline.then_some(verdict_of(median, p95));
            let of_runs = || runs.iter().filter_map(|r| r.metrics.iter().find(|m| m.metric == name));
            let within: Vec<bool> = of_runs().filter_map(MetricComparison::measured_in_band).collect();
            let (median_half_width, _, max_half_width) =
                median_p95_max(of_runs().filter_map(MetricComparison::band_half_width).collect());
            let band = (!within.is_empty()).then(|| BandAggregate {
                runs: within.len() as u64,
                measured_within: within.iter().filter(|&&w| w).count() as u64,
                median_half_width,
                max_half_width,
            });
            MetricAggregate {
                metric: name,
                runs: runs_with,
                median,
                p95,
                max,
                verdict,
                band,
            }
        })
        .collect();

    let all: Vec<&StepComparison> = runs.iter().flat_map(|r| &r.steps).collect();
    let steps = kind_aggregates(&all);
    let mut policies: Vec<String> = Vec::new();
    for p in runs.iter().filter_map(RunValidation::policy) {
        if !policies.contains(&p) {
            policies.push(p);
        }
    }
    let steps_by_policy = if policies.len() > 1 {
        policies
            .into_iter()
            .map(|policy| {
                let of_policy: Vec<&StepComparison> = runs
                    .iter()
                    .filter(|r| r.policy().as_deref() == Some(policy.as_str()))
                    .flat_map(|r| &r.steps)
                    .collect();
                PolicySteps {
                    steps: kind_aggregates(&of_policy),
                    policy,
                }
            })
            .collect()
    } else {
        Vec::new()
    };

    // A group is named by the labels that tell groups apart: those that vary between runs, policy aside.
    let label_text = |r: &RunValidation, name: &str| -> Option<String> {
        r.labels.iter().find(|(n, _)| n == name).map(|(_, v)| cell_text(v))
    };
    let varying: Vec<&str> = runs
        .first()
        .map(|first| {
            first
                .labels
                .iter()
                .map(|(name, _)| name.as_str())
                .filter(|name| !is_policy_label(name))
                .filter(|name| runs.iter().any(|r| label_text(r, name) != label_text(first, name)))
                .collect()
        })
        .unwrap_or_default();
    let entries = runs
        .iter()
        .filter_map(|r| {
            let policy = r.policy()?;
            // Runs that differ in any label but the policy differ in a varying one: those name the group.
            let group: Vec<String> = varying
                .iter()
                .map(|name| format!("{name}={}", label_text(r, name).unwrap_or_default()))
                .collect();
            let group = group.join(", ");
            Some(RankEntry {
                group,
                policy: policy.clone(),
                throughput: PolicyThroughput {
                    policy,
                    run: r.name.clone(),
                    measured: r.measured.metrics.summary.output_tok_per_s,
                    simulated: r.simulated.metrics.summary.output_tok_per_s,
                },
            })
        })
        .collect();

    ValidationSummary {
        target_median: TARGET_MEDIAN,
        target_p95: TARGET_P95,
        ranking_separation: RANKING_SEPARATION,
        metrics,
        steps,
        steps_by_policy,
        ranking: rank_policies(entries),
        runs: runs
            .iter()
            .map(|r| RunSummary {
                run: r.name.clone(),
                policy: r.policy(),
                labels: r
                    .labels
                    .iter()
                    .map(|(name, value)| (name.clone(), cell_text(value)))
                    .collect(),
                plans: r.plans.clone(),
                memory_measured: r.memory_measured,
                steps: r.steps.len() as u64,
                metrics: r.metrics.clone(),
                repeat_throughputs: r.repeat_throughputs.clone(),
                repeat_paces: r.repeat_paces.clone(),
                engine: r.engine,
                repeat_engines: r.repeat_engines.clone(),
                decode_signed: median_p95_max(
                    (r.steps.iter())
                        .filter(|s| s.kind == StepKind::Decode)
                        .map(StepComparison::signed_error)
                        .collect(),
                )
                .0,
                decode_gpu_by_rows: decode_gpu_by_rows(&r.steps),
            })
            .collect(),
        profile_notes: Vec::new(),
    }
}

/// The headline metrics of measured runs (summary rows of one or more `validate` folders) compared with the
/// simulated runs of the same settings (the summary rows of one `simulate` folder, which may hold more of the
/// scenario's sweep), judged against the targets; and the simulated runs no measured run matched, by name. A
/// measured run is matched with the simulated run of its name if their settings (every column before the first
/// outcome) agree, else with the one whose settings but the name agree (a part of a sweep validated on its own
/// numbers its runs from r000). A measured run with no match, or two measured runs of one simulated run, is an
/// error.
pub fn compare_summary_rows(
    measured: &[serde_json::Value],
    simulated: &[serde_json::Value],
) -> Result<(Vec<MetricAggregate>, Vec<String>), String> {
    let run_of = |row: &serde_json::Value| row.get("run").and_then(|r| r.as_str()).map(str::to_owned);
    let number = |row: &serde_json::Value, metric: &str| row.get(metric).and_then(serde_json::Value::as_f64);
    // Every column before the first outcome restates the run (scenario, seed, sweep settings, model, policy).
    let settings = |row: &serde_json::Value, with_name: bool| -> Vec<(String, serde_json::Value)> {
        row.as_object()
            .map(|o| {
                o.iter()
                    .take_while(|(k, _)| k.as_str() != "requests")
                    .filter(|(k, _)| with_name || k.as_str() != "run")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Each simulated run's settings with and without its name, worked out once.
    let candidates: Vec<[Vec<(String, serde_json::Value)>; 2]> = simulated
        .iter()
        .map(|s| [settings(s, true), settings(s, false)])
        .collect();
    let mut taken = vec![false; simulated.len()];
    let mut errors: Vec<Vec<f64>> = vec![Vec::new(); HEADLINE_METRICS.len()];
    for m in measured {
        let run = run_of(m).ok_or("a measured row has no `run`")?;
        let mine = [settings(m, true), settings(m, false)];
        let same = |k: usize| candidates.iter().position(|c| c[k] == mine[k]);
        // With the name first, then without it.
        let i = same(0).or_else(|| same(1)).ok_or_else(|| {
            let named = simulated.iter().any(|s| run_of(s).as_deref() == Some(run.as_str()));
            if named {
                format!("run {run} was run with other settings in the two summaries (not the same scenario?)")
            } else {
                format!("run {run} is measured but no simulated run has its settings")
            }
        })?;
        if std::mem::replace(&mut taken[i], true) {
            return Err(format!(
                "simulated run {} has two measured runs of its settings (the same part of the sweep given twice?)",
                run_of(&simulated[i]).unwrap_or_default()
            ));
        }
        let s = &simulated[i];
        for (k, (metric, _)) in HEADLINE_METRICS.iter().enumerate() {
            if let Some(e) = relative_error(number(m, metric), number(s, metric)) {
                errors[k].push(e);
            }
        }
    }
    let unmeasured = (simulated.iter().zip(&taken))
        .filter(|(_, t)| !**t)
        .map(|(s, _)| run_of(s).unwrap_or_default())
        .collect();
    let metrics = HEADLINE_METRICS
        .iter()
        .zip(errors)
        .map(|((metric, _), errors)| {
            let runs = errors.len() as u64;
            let (median, p95, max) = median_p95_max(errors);
            MetricAggregate {
                metric: (*metric).to_owned(),
                runs,
                median,
                p95,
                max,
                verdict: Some(verdict_of(median, p95)),
                band: None,
            }
        })
        .collect();
    Ok((metrics, unmeasured))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(group: &str, policy: &str, measured: f64, simulated: f64) -> RankEntry {
        RankEntry {
            group: group.to_owned(),
            policy: policy.to_owned(),
            throughput: PolicyThroughput {
                policy: String::new(),
                run: format!("{group}-{policy}"),
                measured,
                simulated,
            },
        }
    }

    #[test]
    fn relative_error_is_against_the_measurement() {
        assert_eq!(relative_error(Some(100.0), Some(103.0)), Some(0.03));
        assert_eq!(relative_error(Some(100.0), Some(97.0)), Some(0.03));
        assert_eq!(relative_error(Some(0.0), Some(0.0)), Some(0.0));
        assert_eq!(relative_error(Some(0.0), Some(1.0)), None);
        assert_eq!(relative_error(None, Some(1.0)), None);
        assert_eq!(relative_error(Some(f64::NAN), Some(1.0)), None);
    }

    #[test]
    fn ranking_checks_only_pairs_measured_more_than_5_percent_apart() {
        let groups = rank_policies(vec![
            // Reproduced: continuous > grouped > static both ways.
            entry("a", "static", 100.0, 120.0),
            entry("a", "continuous", 300.0, 310.0),
            entry("a", "grouped", 200.0, 190.0),
            // static and grouped within 5% (swapped in the simulation: allowed), continuous far ahead (kept).
            entry("b", "static", 100.0, 101.0),
            entry("b", "grouped", 104.0, 99.0),
            entry("b", "continuous", 200.0, 250.0),
            // Everything within 5%: nothing to check even though the simulation reverses it.
            entry("c", "static", 100.0, 130.0),
            entry("c", "continuous", 103.0, 100.0),
            // Continuous measured 10% ahead of static, simulated behind: not reproduced.
            entry("d", "static", 100.0, 100.0),
            entry("d", "continuous", 110.0, 99.0),
            // A tie in the simulation does not reproduce a measured gap.
            entry("e", "static", 100.0, 50.0),
            entry("e", "continuous", 200.0, 50.0),
            // One policy: not a group.
            entry("f", "static", 1.0, 2.0),
        ]);
        let verdicts: Vec<(&str, RankingVerdict)> = groups.iter().map(|g| (g.group.as_str(), g.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("a", RankingVerdict::Reproduced),
                ("b", RankingVerdict::Reproduced),
                ("c", RankingVerdict::NothingToCheck),
                ("d", RankingVerdict::NotReproduced),
                ("e", RankingVerdict::NotReproduced),
            ]
        );
        let order: Vec<&str> = groups[0].policies.iter().map(|p| p.policy.as_str()).collect();
        assert_eq!(order, ["continuous", "grouped", "static"]);
        assert_eq!(groups[3].swapped, [("continuous".to_owned(), "static".to_owned())]);
        assert!(groups[1].swapped.is_empty());
    }

    #[test]
    fn plans_describe_compactly() {
        use crate::sched::{DecodeSeq, PrefillChunk};
        let plan = StepPlan {
            prefills: vec![PrefillChunk {
                id: 3,
                offset: 0,
                len: 64,
                padding: 8,
                samples: true,
            }],
            decodes: vec![
                DecodeSeq {
                    id: 1,
                    context: 70,
                    emits: true,
                },
                DecodeSeq {
                    id: 2,
                    context: 70,
                    emits: false,
                },
            ],
            preempted: vec![5],
        };
        assert_eq!(
            describe_plan(&plan),
            "prefill r3[0+64 pad 8] · decode r1@70 r2@70* · preempt r5"
        );
        assert_eq!(describe_plan(&StepPlan::default()), "(empty)");
    }
}
