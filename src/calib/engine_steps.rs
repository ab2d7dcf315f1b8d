//! What only whole steps show: `calibrate` runs synthetic steps on the engine — decode-only batches, prefill-only
//! chunks, mixed steps — and fits the engine's step model ([`EngineSteps`]): the host's time to issue a step (a line
//! in its token count, per step kind) and the tail that follows the last of host and GPU work (per kind, the
//! median residual against the op tables' prediction).

use super::profile::{
    EngineMemorySample, EngineStepSample, EngineSteps, GemmTable, Profile, SampledPlan, StepKind, StepKindModel,
    tuned_plan,
};
use crate::engine::forward::sizing;
use crate::engine::{
    Engine, EngineConfig, EngineError, GRAPH_BUCKETS, GemmBackend, GemmOp, GemmPolicy, GemmRule, StepTiming,
};
use crate::engine::{GpuExecutor, WallClock};
use crate::gpu::Gpu;
use crate::metrics::Recorder;
use crate::metrics::percentile_sorted;
use crate::model::{EngineSizing, StepShape, mapped_workspace};
use crate::sched::{DecodeSeq, PrefillChunk, ReqId, SchedulerLimits, StepOutcome, StepPlan};
use crate::sim::calibrated::CalibratedCost;
use crate::sim::run::{WARMUP_STEPS, engine_sizing, new_scheduler, warmup_of};
use crate::sim::serving::{ExecError, Executor, VirtualClock, serve};
use crate::units::Nanos;
use crate::workload::{PolicyKind, Request, Workload};

/// Timed repeats of each step shape (after one untimed).
pub(crate) const REPEATS: usize = 5;
const DECODE_BATCHES: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Cached tokens of the decode steps' sequences: 64 (one attention partition at every batch size, no merge, as
/// short prompts decode), 128 and 1024 (split into partitions, merged, at small batch sizes).
const DECODE_CONTEXTS: [u32; 3] = [64, 128, 1024];
const PREFILL_CHUNKS: [u32; 6] = [16, 64, 256, 1024, 2048, 4096];
/// (decodes, their context, prefill chunk) of the mixed steps.
const MIXED: [(u32, u32, u32); 4] = [(4, 1024, 64), (4, 1024, 512), (32, 1024, 64), (32, 1024, 512)];
/// Most tokens one prefill step of the setup holds.
const SETUP_TOKENS: u32 = 8192;
/// Sequences the calibration engine batches at most (its decode graphs go up to this many rows).
const ENGINE_SEQS: usize = 128;

/// How many points [`measure`] times (for a progress bar).
pub fn points() -> usize {
    DECODE_BATCHES.len() * DECODE_CONTEXTS.len() + PREFILL_CHUNKS.len() + MIXED.len() + serving_workloads(16).len()
}

/// Runs the synthetic steps on engines with seeded random weights on `gpu` and fits the step model against
/// `profile`'s op tables. Each group of steps gets an engine whose longest context is the group's (decode graphs
/// cover up to it, as in `validate`, which sizes its engines by the workload). Gives the GPU back.
pub fn measure(gpu: Gpu, profile: &Profile, on_point: &mut dyn FnMut(&str)) -> Result<(EngineSteps, Gpu), EngineError> {
    let model = profile.fingerprint.model.clone();
    let buckets: Vec<u32> = GRAPH_BUCKETS.iter().map(|&b| b as u32).collect();
    let cost = sample_pricing(profile, buckets.clone()).map_err(EngineError::Config)?;
    let gemm = gemm_policy(profile).map_err(EngineError::Config)?;
    // Every engine configured as `validate` configures its engines (a KV cache of most of the free memory): the
    // gaps fitted here are those of the engines the step model predicts.
    let config = |max_context: u32| {
        let sizing = EngineSizing {
            max_step_tokens: u64::from(SETUP_TOKENS),
            max_seqs: ENGINE_SEQS as u64,
            max_context: u64::from(max_context) + 2 * REPEATS as u64 + 2,
            block_size: profile.fingerprint.block_size,
            decode_graphs: true,
        };
        EngineConfig::serving(&sizing, u64::MAX, gemm.clone(), 0)
    };
    let mut samples = Vec::new();
    let mut memory = Vec::new();
    let mut gpu = Some(gpu);
    let mut group = |max_context: u32, run: &mut dyn FnMut(&mut StepBench) -> Result<(), EngineError>| {
        tracing::info!(max_context, "engine step group");
        let engine = Engine::random(
            gpu.take().expect("given back"),
            model.clone(),
            0x5eed,
            config(max_context),
        )?;
        let mut bench = StepBench {
            engine,
            cost: Some(&cost),
            next_id: 0,
            samples: &mut samples,
        };
        let done = run(&mut bench);
        let (g, closed) = close(bench.engine, &mut memory);
        gpu = Some(g);
        done.and(closed)
    };
    for &c in &DECODE_CONTEXTS {
        group(c, &mut |bench| {
            for &b in &DECODE_BATCHES {
                let ids = bench.prefilled(b, c)?;
                bench.decode_steps(&ids, c, None)?;
                bench.release(&ids);
                on_point("engine decode steps");
            }
            Ok(())
        })?;
    }
    let longest = PREFILL_CHUNKS.iter().max().copied().unwrap_or(1);
    group(longest, &mut |bench| {
        for &p in &PREFILL_CHUNKS {
            bench.prefill_steps(p)?;
            on_point("engine prefill steps");
        }
        Ok(())
    })?;
    let longest = MIXED.iter().map(|m| m.1.max(m.2)).max().unwrap_or(1);
    group(longest, &mut |bench| {
        for &(b, c, p) in &MIXED {
            let ids = bench.prefilled(b, c)?;
            bench.decode_steps(&ids, c, Some(p))?;
            bench.release(&ids);
            on_point("engine mixed steps");
        }
        Ok(())
    })?;
    // Steps as serving makes them, one after another through the serving loop: the gap and tail are fitted to
    // these (the shapes above, each repeated in isolation, fix the issue line).
    let mut serving = Vec::new();
    for (policy, workload, limits) in serving_workloads(profile.fingerprint.block_size) {
        // The longest context the policy reaches (a static batch decodes until its longest output), as `validate`
        // sizes its engines: no step outgrows the engine's buffers.
        let s = engine_sizing(
            policy,
            limits.max_batch_size,
            limits.max_batch_tokens,
            limits.block_size,
            &workload,
        );
        tracing::info!(?policy, "engine serving steps");
        let engine = Engine::random(
            gpu.take().expect("given back"),
            model.clone(),
            0x5eed,
            EngineConfig::serving(&s, u64::MAX, gemm.clone(), 0),
        )?;
        let mut executor = TimedExecutor {
            inner: GpuExecutor::new(engine, &workload),
            steps: Vec::new(),
        };
        // As `validate` measures a run: after a warm-up on the same engine, discarded, that takes each kind of step
        // the burst will take once.
        let warmup = warmup_of(&workload, limits.max_batch_size, WARMUP_STEPS);
        let served = serve(
            new_scheduler(policy, limits).as_mut(),
            &mut executor.inner,
            &mut VirtualClock::default(),
            &warmup,
            &mut Recorder::new(warmup.requests.len(), false, false),
            &mut (),
        )
        .and_then(|()| {
            let mut scheduler = new_scheduler(policy, limits);
            let mut recorder = Recorder::new(workload.requests.len(), true, false);
            serve(
                scheduler.as_mut(),
                &mut executor,
                &mut WallClock::new(),
                &workload,
                &mut recorder,
                &mut (),
            )?;
            // Priced after serving, so that the loop's recorded times hold only what `validate`'s hold.
            for ((plan, timing), record) in executor.steps.iter().zip(recorder.steps()) {
                let mut sample = sample_of(plan, Some(&cost), std::slice::from_ref(timing));
                sample.serving_us = Some(record.duration.0 as f64 / 1e3);
                serving.push(sample);
            }
            Ok(())
        });
        let (g, closed) = close(executor.inner.into_engine(), &mut memory);
        gpu = Some(g);
        served.map_err(|e| EngineError::Config(format!("serving steps: {e}")))?;
        closed?;
        on_point("engine serving steps");
    }
    samples.extend(serving);
    let overheads = memory
        .iter()
        .map(|m| {
            let computed = mapped_workspace(m.weight_bytes, m.computed_workspace_bytes);
            m.measured_workspace_bytes.saturating_sub(computed) as f64
        })
        .collect();
    let steps = EngineSteps {
        runtime_overhead_bytes: Some(median(overheads).round() as u64),
        memory_samples: memory,
        ..fit(samples, buckets)
    };
    Ok((steps, gpu.expect("given back")))
}

/// Closes `engine` (see [`Engine::close`]) and keeps its workspace, measured and computed.
fn close(engine: Engine, memory: &mut Vec<EngineMemorySample>) -> (Gpu, Result<(), EngineError>) {
    let sizing = sizing(engine.config(), engine.spec());
    let (gpu, measured) = engine.close();
    let kept = measured.map_err(EngineError::from).map(|m| {
        m.log();
        memory.push(EngineMemorySample {
            max_step_tokens: sizing.max_step_tokens,
            max_seqs: sizing.max_seqs,
            max_context: sizing.max_context,
            weight_bytes: m.memory.weights,
            measured_workspace_bytes: m.measured,
            computed_workspace_bytes: m.computed,
        });
    });
    (gpu, kept)
}

/// The serving workloads steps are measured in: bursts of mixed prompt and output lengths under continuous batching
/// (chunked prefill, so mixed steps occur) and under static batching (padded prefills).
fn serving_workloads(block_size: u32) -> Vec<(PolicyKind, Workload, SchedulerLimits)> {
    let prompts = [64u32, 200, 512, 96, 1024, 300, 128, 700];
    let outputs = [16u32, 48, 32, 64, 24];
    let requests = |n: usize| Workload {
        requests: (0..n)
            .map(|i| Request {
                id: i as u32,
                arrival: Nanos::ZERO,
                prompt_len: prompts[i % prompts.len()],
                output_len: outputs[i % outputs.len()],
            })
            .collect(),
        closed_loop: None,
    };
    let limits = |batch: u32, tokens: u32, chunked: bool| SchedulerLimits {
        max_batch_size: batch,
        max_batch_tokens: tokens,
        chunked_prefill: chunked,
        mix_prefill_decode: true,
        preemption: false,
        max_wait: Nanos::ZERO,
        block_size,
        kv_capacity_slots: 64 * 1200,
    };
    vec![
        (PolicyKind::Continuous, requests(40), limits(16, 1024, true)),
        (PolicyKind::Static, requests(16), limits(8, 8192, false)),
        // Decode steps of up to 64 sequences, as open-loop serving at higher rates makes them.
        (PolicyKind::Continuous, requests(96), limits(64, 1024, true)),
    ]
}

/// The serving loop's executor with each step's plan and timing kept.
struct TimedExecutor {
    inner: GpuExecutor,
    steps: Vec<(StepPlan, StepTiming)>,
}

impl Executor for TimedExecutor {
    fn execute(&mut self, plan: &StepPlan, shape: &StepShape) -> Result<Nanos, ExecError> {
        let took = self.inner.execute(plan, shape)?;
        self.steps.push((plan.clone(), self.inner.engine().last_timing()));
        Ok(took)
    }

    fn after_step(&mut self, outcome: &StepOutcome) {
        self.inner.after_step(outcome);
    }
}

/// The median of `v` (0 for none).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, 50.0)
}

/// A step's sample: the medians of `timings` (repeats of `plan`), and what the op tables predict for it.
fn sample_of(plan: &StepPlan, cost: Option<&CalibratedCost>, timings: &[StepTiming]) -> EngineStepSample {
    let median = |f: &dyn Fn(&StepTiming) -> f64| median(timings.iter().map(f).collect());
    let shape = plan.shape();
    let decodes = plan.decodes.len() as u32;
    EngineStepSample {
        kind: StepKind::of(shape.decode_seqs, shape.prefill_seqs),
        decode_seqs: decodes,
        decode_context: if decodes > 0 {
            (shape.decode_context_sum / u64::from(decodes)) as u32
        } else {
            0
        },
        prefill_seqs: shape.prefill_seqs as u32,
        prefill_tokens: shape.prefill_tokens as u32,
        issue_us: median(&|t| t.issue_ns as f64 / 1e3),
        gpu_us: median(&|t| t.gpu_ns.unwrap_or(0) as f64 / 1e3),
        wall_us: median(&|t| t.total_ns as f64 / 1e3),
        kernels_us: cost.map_or(0.0, |c| c.kernels_us(plan, &shape)),
        graph_rows: timings.first().and_then(|t| t.graph_rows).unwrap_or(0) as u32,
        serving_us: None,
        plan: Some(SampledPlan::of(plan)),
    }
}

/// The profile's GEMM choice as engine rules: the cost model's choice is constant over each interval between two
/// grid points (it looks both tables up at the next point up), so one rule per grid point reproduces it; each rule
/// carries the launch plan the profile tuned for its point (as its `ours_us` was measured).
pub fn gemm_policy(profile: &Profile) -> Result<GemmPolicy, String> {
    policy_by(profile, |table, rows| {
        if table.ours_faster(rows) {
            GemmBackend::Ours
        } else {
            GemmBackend::Cublas
        }
    })
}

/// Our kernel for every GEMM, launched with the plans `profile` tuned (the default plan where it tuned none).
pub fn ours_with_tuned_plans(profile: &Profile) -> Result<GemmPolicy, String> {
    policy_by(profile, |_, _| GemmBackend::Ours)
}

/// One rule per grid point of our kernel in each GEMM table, its backend from `backend(table, rows)`, its plan the
/// tuned one; cuBLAS padded where the table timed it so ([`GemmTable::cublas_padded`]), up to the grid's end.
fn policy_by(profile: &Profile, backend: impl Fn(&GemmTable, f64) -> GemmBackend) -> Result<GemmPolicy, String> {
    let mut rules = Vec::new();
    for (name, op) in [
        ("qkv", GemmOp::Qkv),
        ("o", GemmOp::O),
        ("gate_up", GemmOp::GateUp),
        ("down", GemmOp::Down),
        ("lm_head", GemmOp::LmHead),
    ] {
        let table = profile.gemm_table(name)?;
        for &x in &table.ours_us.x {
            let rows = x as usize;
            rules.push(GemmRule {
                op,
                max_rows: rows,
                backend: backend(table, x),
                plan: tuned_plan(&table.ours_plans, rows),
                pad: table.cublas_padded,
            });
        }
        let last = table.ours_us.x.last().copied().unwrap_or(1.0);
        rules.push(GemmRule {
            op,
            max_rows: usize::MAX,
            backend: backend(table, last),
            plan: None,
            pad: false,
        });
    }
    Ok(GemmPolicy {
        default: GemmBackend::Cublas,
        rules,
        graph_ours_rows: profile.graph_ours_rows as usize,
    })
}

/// Synthetic steps on an engine: sequences set up untimed, then the steps of interest repeated and timed.
pub(crate) struct StepBench<'a> {
    pub(crate) engine: Engine,
    /// For each sample's `kernels_us` (0 without a profile).
    pub(crate) cost: Option<&'a CalibratedCost>,
    pub(crate) next_id: ReqId,
    pub(crate) samples: &'a mut Vec<EngineStepSample>,
}

impl StepBench<'_> {
    pub(crate) fn new_ids(&mut self, n: u32, prompt_len: u32) -> Result<Vec<ReqId>, EngineError> {
        let ids: Vec<ReqId> = (0..n).map(|i| self.next_id + i).collect();
        self.next_id += n;
        for &id in &ids {
            self.engine.register(id, prompt_len)?;
        }
        Ok(ids)
    }

    pub(crate) fn release(&mut self, ids: &[ReqId]) {
        for &id in ids {
            self.engine.release(id);
        }
    }

    /// `n` new sequences with `context` prompt tokens each, prefilled (untimed), a token sampled for each.
    pub(crate) fn prefilled(&mut self, n: u32, context: u32) -> Result<Vec<ReqId>, EngineError> {
        let ids = self.new_ids(n, context)?;
        let per_step = (SETUP_TOKENS / context).max(1) as usize;
        for group in ids.chunks(per_step) {
            let plan = StepPlan {
                prefills: group.iter().map(|&id| PrefillChunk::whole(id, context)).collect(),
                ..StepPlan::default()
            };
            self.engine.step(&plan)?;
            self.engine.record_memory()?;
        }
        Ok(ids)
    }

    /// Decode steps of `ids` (each `context` tokens cached), with a fresh prefill chunk of `mixed` tokens beside
    /// them if given; the first untimed.
    pub(crate) fn decode_steps(&mut self, ids: &[ReqId], context: u32, mixed: Option<u32>) -> Result<(), EngineError> {
        let mut timings = Vec::new();
        let mut plan = StepPlan::default();
        for step in 0..=REPEATS as u32 {
            plan.clear();
            plan.decodes = ids
                .iter()
                .map(|&id| DecodeSeq::emitting(id, context + 1 + step))
                .collect();
            let fresh = match mixed {
                Some(p) => {
                    let fresh = self.new_ids(1, p)?;
                    plan.prefills.push(PrefillChunk::whole(fresh[0], p));
                    fresh
                }
                None => Vec::new(),
            };
            let timing = self.step_then_release(&plan, &fresh)?;
            if step > 0 {
                timings.push(timing);
            } else {
                // The untimed step's host calls (where they are timed) are not the point's.
                self.engine.take_host_calls();
            }
        }
        self.record(&plan, &timings);
        Ok(())
    }

    /// Runs `plan`, notes the memory used, then releases `done` (sequences the step was their last for).
    fn step_then_release(&mut self, plan: &StepPlan, done: &[ReqId]) -> Result<StepTiming, EngineError> {
        let out = self.engine.step(plan)?;
        self.engine.record_memory()?;
        self.release(done);
        Ok(out.timing)
    }

    /// Prefill-only steps of `seqs` fresh `len`-token prompts together, back to back; the first untimed.
    pub(crate) fn prefill_batch_steps(&mut self, seqs: u32, len: u32) -> Result<(), EngineError> {
        self.prefill_batch_steps_after_decodes((seqs, len), &[], 0, 0)
            .map(|_| ())
    }

    /// [`Self::prefill_batch_steps`], each step right after `decodes` decode steps of the sequences `running` (untimed;
    /// replayed as graphs), as serving issues a new prompt's prefill between decode steps rather than back to back.
    /// `context`: the running sequences' tokens before; returns them after.
    pub(crate) fn prefill_batch_steps_after_decodes(
        &mut self,
        (seqs, len): (u32, u32),
        running: &[ReqId],
        mut context: u32,
        decodes: u32,
    ) -> Result<u32, EngineError> {
        let mut timings = Vec::new();
        let (mut plan, mut decode) = (StepPlan::default(), StepPlan::default());
        for step in 0..=REPEATS {
            for _ in 0..decodes {
                context += 1;
                decode.clear();
                decode.decodes = running.iter().map(|&id| DecodeSeq::emitting(id, context)).collect();
                self.engine.step(&decode)?;
            }
            let ids = self.new_ids(seqs, len)?;
            plan.clear();
            plan.prefills = ids.iter().map(|&id| PrefillChunk::whole(id, len)).collect();
            let timing = self.step_then_release(&plan, &ids)?;
            if step > 0 {
                timings.push(timing);
            } else {
                self.engine.take_host_calls();
            }
        }
        self.record(&plan, &timings);
        Ok(context)
    }

    /// Prefill-only steps of one fresh `chunk`-token prompt; the first untimed.
    pub(crate) fn prefill_steps(&mut self, chunk: u32) -> Result<(), EngineError> {
        self.prefill_batch_steps(1, chunk)
    }

    /// Keeps the medians of `timings` for `plan` (the last of its repeats: shapes differ by one token of context).
    fn record(&mut self, plan: &StepPlan, timings: &[StepTiming]) {
        self.samples.push(sample_of(plan, self.cost, timings));
    }
}

/// A step is GPU-bound when its GPU work ended this much after the host had issued it all.
pub const GPU_BOUND_US: f64 = 50.0;

/// Per kind, over every measured step of that kind (the repeated shapes and the serving steps): the issue line by
/// least squares over (tokens, issue µs); the tail as the median of wall − GPU time; the gap by least squares over
/// (kernels, GPU time − kernels) of the GPU-bound steps — a line where it grows with the kernels' time, else their
/// median (a gap that shrank as steps grew would predict big steps faster than their own kernels).
/// The step model of `samples`, for an engine whose decode graphs have `graph_buckets` rows.
pub fn fit(samples: Vec<EngineStepSample>, graph_buckets: Vec<u32>) -> EngineSteps {
    let mut kinds = Vec::new();
    for kind in StepKind::ALL {
        let of: Vec<&EngineStepSample> = samples.iter().filter(|s| s.kind == kind).collect();
        if of.is_empty() {
            continue;
        }
        let points: Vec<(f64, f64)> = of.iter().map(|s| (tokens(s), s.issue_us)).collect();
        let (base, per_token) = least_squares_without_stalls(&points);
        let gaps: Vec<(f64, f64)> = of
            .iter()
            .filter(|s| s.gpu_us - s.issue_us > GPU_BOUND_US)
            .map(|s| (s.kernels_us, s.gpu_us - s.kernels_us))
            .collect();
        let (gap_us, gap_per_kernel_us) = match least_squares(&gaps) {
            _ if gaps.is_empty() => (0.0, 0.0),
            (g0, slope) if slope > 0.0 && g0 >= 0.0 => (g0, slope),
            _ => (median(gaps.iter().map(|g| g.1).collect()), 0.0),
        };
        // Graph replays: the gap by the graph's rows (the median of each bucket's steps), over all of them and over
        // those whose longest decode was split into partitions or not.
        let graph_gaps = |keep: &dyn Fn(&EngineStepSample) -> bool| {
            let mut by_rows: Vec<(u32, f64)> = Vec::new();
            let mut rows: Vec<u32> = of.iter().map(|s| s.graph_rows).filter(|&r| r > 0).collect();
            rows.sort_unstable();
            rows.dedup();
            for r in rows {
                let gaps: Vec<f64> = of
                    .iter()
                    .filter(|s| s.graph_rows == r && s.gpu_us - s.issue_us > GPU_BOUND_US && keep(s))
                    .map(|s| s.gpu_us - s.kernels_us)
                    .collect();
                if !gaps.is_empty() {
                    by_rows.push((r, median(gaps)));
                }
            }
            by_rows
        };
        let graph_gap_us = graph_gaps(&|_| true);
        let graph_gap_split_us = graph_gaps(&|s| s.splits());
        let graph_gap_unsplit_us = graph_gaps(&|s| !s.splits());
        kinds.push(StepKindModel {
            kind,
            gap_us,
            gap_per_kernel_us,
            issue_base_us: base,
            issue_per_token_us: per_token,
            tail_us: median(of.iter().map(|s| s.wall_us - s.gpu_us).collect()),
            graph_gap_us,
            graph_gap_split_us,
            graph_gap_unsplit_us,
            loop_us: median(of.iter().filter_map(|s| s.serving_us.map(|t| t - s.wall_us)).collect()),
        });
    }
    EngineSteps {
        kinds,
        samples,
        graph_buckets,
        runtime_overhead_bytes: None,
        memory_samples: Vec::new(),
    }
}

/// The cost model a measured step is priced by (its `kernels_us`): `profile`'s op tables, decode steps replayed as the
/// graphs of `graph_buckets` on an engine of [`ENGINE_SEQS`] sequences. `measure` and `refit` price alike.
fn sample_pricing(profile: &Profile, graph_buckets: Vec<u32>) -> Result<CalibratedCost, String> {
    let model = profile.fingerprint.model.clone();
    Ok(CalibratedCost::new(profile, &model, "calibration")?.with_graphs(graph_buckets, Some(ENGINE_SEQS as u32)))
}

/// The step model fitted again to a profile's own measured steps (what `calibrate` would fit to them now): each
/// sample that kept its plan is priced again by this batchlab's cost model first (`kernels_us`), the others keep
/// the pricing they were measured with.
pub fn refit(profile: &mut Profile) -> Result<bool, String> {
    let Some(e) = profile.engine.as_ref() else {
        return Ok(false);
    };
    let cost = sample_pricing(profile, e.graph_buckets.clone())?;
    let kernels: Vec<Option<f64>> = e
        .samples
        .iter()
        .map(|s| {
            s.plan.as_ref().map(|p| {
                let plan = p.plan();
                cost.kernels_us(&plan, &plan.shape())
            })
        })
        .collect();
    let mut e = profile.engine.take().expect("checked above");
    for (s, k) in e.samples.iter_mut().zip(kernels) {
        if let Some(k) = k {
            s.kernels_us = k;
        }
    }
    // The memory measured with the steps is kept as it is: there is nothing to fit.
    profile.engine = Some(EngineSteps {
        runtime_overhead_bytes: e.runtime_overhead_bytes,
        memory_samples: e.memory_samples,
        ..fit(e.samples, e.graph_buckets)
    });
    Ok(true)
}

fn tokens(s: &EngineStepSample) -> f64 {
    f64::from(s.decode_seqs + s.prefill_tokens)
}

/// A point this many median absolute deviations (of the residuals from the line through the points kept so far)
/// above that line is a stall.
const STALL_MADS: f64 = 5.0;
/// ... and at least this far above it (µs): steps of one shape differ by this much without stalling.
const STALL_FLOOR_US: f64 = 500.0;

/// The least-squares line through `points` after dropping stalls: points far above a first fit (see
/// [`STALL_MADS`], [`STALL_FLOOR_US`]). A host that stalls now and then while issuing a step (an engine's first
/// step of a kind, for one) would otherwise tilt the line: a few 15 ms issues among 2 ms ones made it fall with the
/// step's size.
fn least_squares_without_stalls(points: &[(f64, f64)]) -> (f64, f64) {
    let mut kept = points.to_vec();
    // Each pass drops the points far above the line fitted to those kept so far; a line tilted by big stalls may
    // hide smaller ones until the big ones are gone.
    for _ in 0..8 {
        let (b, m) = least_squares(&kept);
        let residuals: Vec<f64> = kept.iter().map(|p| p.1 - (b + m * p.0)).collect();
        let mad = median(residuals.iter().map(|r| r.abs()).collect());
        let limit = (STALL_MADS * mad).max(STALL_FLOOR_US);
        let next: Vec<(f64, f64)> = kept
            .iter()
            .zip(&residuals)
            .filter(|(_, r)| **r <= limit)
            .map(|(p, _)| *p)
            .collect();
        if next.len() == kept.len() || next.is_empty() {
            return (b, m);
        }
        kept = next;
    }
    least_squares(&kept)
}

/// (intercept, slope) of the least-squares line through `points`; a flat line through their mean when x does not
/// vary.
fn least_squares(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return (my, 0.0);
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    (my - slope * mx, slope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::profile::graph_rows;

    fn sample(kind: StepKind, decodes: u32, prefill: u32, issue: f64, kernels: f64, wall: f64) -> EngineStepSample {
        EngineStepSample {
            kind,
            decode_seqs: decodes,
            decode_context: 100,
            prefill_seqs: u32::from(prefill > 0),
            prefill_tokens: prefill,
            issue_us: issue,
            gpu_us: kernels,
            wall_us: wall,
            kernels_us: kernels,
            graph_rows: 0,
            serving_us: None,
            plan: None,
        }
    }

    #[test]
    fn a_sampled_plan_prices_as_the_plan_it_was_taken_from() {
        let plan = StepPlan::new(
            vec![
                PrefillChunk {
                    id: 7,
                    offset: 256,
                    len: 64,
                    padding: 0,
                    samples: true,
                },
                PrefillChunk {
                    id: 9,
                    offset: 0,
                    len: 512,
                    padding: 100,
                    samples: false,
                },
            ],
            vec![
                DecodeSeq {
                    id: 3,
                    context: 700,
                    emits: true,
                },
                DecodeSeq {
                    id: 4,
                    context: 90,
                    emits: false,
                },
            ],
        );
        let again = SampledPlan::of(&plan).plan();
        assert_eq!(again.shape(), plan.shape());
        assert_eq!((again.prefills.len(), again.decodes.len()), (2, 2));
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-80gb-hbm3/qwen2.5-0.5b.json");
        let profile = Profile::load(&path).unwrap();
        let model = profile.fingerprint.model.clone();
        let cost = CalibratedCost::new(&profile, &model, "test").unwrap();
        assert_eq!(
            cost.kernels_us(&again, &again.shape()),
            cost.kernels_us(&plan, &plan.shape())
        );
        // It survives the profile's JSON.
        let sample = EngineStepSample {
            plan: Some(SampledPlan::of(&plan)),
            ..sample(StepKind::Mixed, 2, 576, 2000.0, 3000.0, 3100.0)
        };
        let json = serde_json::to_string(&sample).unwrap();
        assert_eq!(serde_json::from_str::<EngineStepSample>(&json).unwrap(), sample);
    }

    #[test]
    fn a_refit_prices_the_samples_that_kept_their_plan_again_and_leaves_the_others() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-80gb-hbm3/qwen2.5-0.5b.json");
        let mut profile = Profile::load(&path).unwrap();
        let engine = profile.engine.as_mut().unwrap();
        // The first sample with a plan priced as nothing; the second without one, its pricing kept.
        let plan = StepPlan::new(Vec::new(), (0..4).map(|i| DecodeSeq::emitting(i, 300)).collect());
        engine.samples[0].plan = Some(SampledPlan::of(&plan));
        engine.samples[0].kernels_us = 0.0;
        engine.samples[1].plan = None;
        let kept = engine.samples[1].kernels_us;
        let buckets = engine.graph_buckets.clone();
        assert_eq!(refit(&mut profile), Ok(true));
        let model = profile.fingerprint.model.clone();
        let cost = CalibratedCost::new(&profile, &model, "test")
            .unwrap()
            .with_graphs(buckets, Some(ENGINE_SEQS as u32));
        let samples = &profile.engine.as_ref().unwrap().samples;
        assert_eq!(samples[0].kernels_us, cost.kernels_us(&plan, &plan.shape()));
        assert!(samples[0].kernels_us > 0.0);
        assert_eq!(samples[1].kernels_us, kept);
    }

    #[test]
    fn the_runtime_overhead_is_optional_survives_a_refit_and_round_trips() {
        // A profile measured before the overhead was (the committed one without its memory fields): it loads,
        // without one.
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-80gb-hbm3/qwen2.5-0.5b.json");
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let fields = json["engine"]
            .as_object_mut()
            .expect("the committed profile has engine steps");
        fields.remove("runtime_overhead_bytes");
        fields.remove("memory_samples");
        let old = std::env::temp_dir().join(format!("batchlab-old-profile-{}.json", std::process::id()));
        std::fs::write(&old, json.to_string()).unwrap();
        let mut profile = Profile::load(&old).unwrap();
        std::fs::remove_file(&old).unwrap();
        let engine = profile.engine.as_mut().unwrap();
        assert_eq!(engine.runtime_overhead_bytes, None);
        assert!(engine.memory_samples.is_empty());
        engine.runtime_overhead_bytes = Some(36 << 20);
        engine.memory_samples = vec![EngineMemorySample {
            max_step_tokens: 8192,
            max_seqs: 128,
            max_context: 1036,
            weight_bytes: 988_065_536,
            measured_workspace_bytes: 400 << 20,
            computed_workspace_bytes: 364 << 20,
        }];
        let measured = profile.clone();
        assert_eq!(refit(&mut profile), Ok(true));
        let (a, b) = (profile.engine.as_ref().unwrap(), measured.engine.as_ref().unwrap());
        assert_eq!(
            (a.runtime_overhead_bytes, &a.memory_samples),
            (b.runtime_overhead_bytes, &b.memory_samples)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        std::fs::write(&file, profile.to_json()).unwrap();
        assert_eq!(Profile::load(&file).unwrap(), profile);
    }

    #[test]
    fn the_fit_recovers_a_known_step_model() {
        // Issue 800 + 0.5/token; kernels in a step take 100 µs more than the tables; GPU time = max(kernels + 100,
        // issue + 10); the tail after the GPU is 40 µs.
        let issue = |t: f64| 800.0 + 0.5 * t;
        let mut samples = Vec::new();
        for (b, kernels) in [(1u32, 300.0f64), (8, 500.0), (64, 1900.0), (256, 3000.0)] {
            let t = f64::from(b);
            let gpu = (kernels + 100.0).max(issue(t) + 10.0);
            let mut s = sample(StepKind::Decode, b, 0, issue(t), kernels, gpu + 40.0);
            s.gpu_us = gpu;
            samples.push(s);
        }
        let m = fit(samples, Vec::new());
        let d = m.kind(StepKind::Decode).expect("decode fitted");
        assert!((d.issue_base_us - 800.0).abs() < 1e-6 && (d.issue_per_token_us - 0.5).abs() < 1e-9);
        assert!((d.tail_us - 40.0).abs() < 1e-6, "{d:?}");
        assert!((d.gap_us - 100.0).abs() < 1e-6, "{d:?}");
        assert!(m.kind(StepKind::Prefill).is_none());
        // Host-bound and GPU-bound steps: max(kernels + gap, issue) + tail.
        assert!((m.step_us(StepKind::Decode, 1.0, 300.0, None, false) - 840.5).abs() < 1e-6);
        assert!((m.step_us(StepKind::Decode, 256.0, 3000.0, None, false) - 3140.0).abs() < 1e-6);
        // A kind without samples: the kernels alone.
        assert_eq!(m.step_us(StepKind::Mixed, 10.0, 123.0, None, false), 123.0);
        // No step came through the serving loop: nothing is added for it.
        assert_eq!(d.loop_us, 0.0);
    }

    #[test]
    fn the_serving_loops_own_time_is_the_median_excess_of_its_records_over_the_engines_wall_time() {
        let mut samples = Vec::new();
        for (i, excess) in [12.0, 9.0, 30.0, 11.0, 10.0].into_iter().enumerate() {
            let wall = 1000.0 + 100.0 * i as f64;
            let mut s = sample(StepKind::Decode, 1 + i as u32, 0, 50.0, wall - 40.0, wall);
            s.gpu_us = wall - 20.0;
            s.serving_us = Some(wall + excess);
            samples.push(s);
        }
        // Steps repeated in isolation (no loop around them) leave it alone.
        samples.push(sample(StepKind::Decode, 3, 0, 50.0, 900.0, 1000.0));
        let m = fit(samples, Vec::new());
        let d = m.kind(StepKind::Decode).unwrap();
        assert!((d.loop_us - 11.0).abs() < 1e-9, "{d:?}");
        let without = StepKindModel {
            loop_us: 0.0,
            ..d.clone()
        };
        let bare = EngineSteps {
            kinds: vec![without],
            ..m.clone()
        };
        let (with, no) = (
            m.step_us(StepKind::Decode, 4.0, 1200.0, None, false),
            bare.step_us(StepKind::Decode, 4.0, 1200.0, None, false),
        );
        assert!((with - no - 11.0).abs() < 1e-9, "{with} vs {no}");
    }

    /// The committed H100 profile of qwen2.5-0.5b.
    fn committed_h100_profile() -> Profile {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/calibration/h100-80gb-hbm3/qwen2.5-0.5b.json"
        );
        Profile::load(std::path::Path::new(path)).expect("committed profile")
    }

    #[test]
    fn the_engine_runs_the_gemm_the_cost_model_prices() {
        let mut profile = committed_h100_profile();
        // The committed profile may find cuBLAS faster everywhere; our kernel at a third of its measured time on
        // the qkv and o tables makes it the faster there, so both backends are chosen somewhere.
        for t in profile.gemm.iter_mut().filter(|t| t.name == "qkv" || t.name == "o") {
            t.ours_us.y.iter_mut().for_each(|y| *y /= 3.0);
        }
        let policy = gemm_policy(&profile).expect("every GEMM table");
        let mut both = [false, false];
        for (name, op) in [
            ("qkv", GemmOp::Qkv),
            ("o", GemmOp::O),
            ("gate_up", GemmOp::GateUp),
            ("down", GemmOp::Down),
            ("lm_head", GemmOp::LmHead),
        ] {
            let table = profile.gemm_table(name).unwrap();
            for rows in (1..10_000).step_by(7) {
                let ours = table.ours_faster(rows as f64);
                both[usize::from(ours)] = true;
                let want = if ours { GemmBackend::Ours } else { GemmBackend::Cublas };
                assert_eq!(policy.backend(op, rows), want, "{name} at {rows} rows");
            }
        }
        assert_eq!(both, [true, true], "the profile picks each backend somewhere");
    }

    /// A profile that timed cuBLAS at every padded row count has the engine run it padded, within its grid only;
    /// the rules stay at our kernel's points.
    #[test]
    fn cublas_runs_padded_where_the_profile_timed_it_so() {
        let mut profile = committed_h100_profile();
        assert!(
            profile.gemm.iter().all(|t| t.cublas_padded),
            "the committed profiles timed cuBLAS padded"
        );
        let policy = gemm_policy(&profile).expect("every GEMM table");
        assert!(
            policy.rules.iter().any(|r| r.pad),
            "the engine runs cuBLAS padded with them"
        );
        // The same tables as a profile of before read them (`calibrate --unpadded-cublas`): cuBLAS on the rows asked.
        for t in &mut profile.gemm {
            t.cublas_padded = false;
        }
        let policy = gemm_policy(&profile).expect("every GEMM table");
        assert!(
            policy.rules.iter().all(|r| !r.pad),
            "a profile of before: cuBLAS on the rows asked"
        );
        for t in &mut profile.gemm {
            let last = t.cublas_us.x.last().copied().unwrap() as u32;
            let x: Vec<f64> = crate::model::cublas_grid(last).into_iter().map(f64::from).collect();
            t.cublas_us = crate::calib::interp::Curve::new(x.clone(), x.iter().map(|&r| t.cublas_us.at(r)).collect());
            t.cublas_spread = vec![0.0; x.len()];
            t.cublas_padded = true;
        }
        profile.check().unwrap();
        let policy = gemm_policy(&profile).expect("every GEMM table");
        let qkv: Vec<&GemmRule> = policy.rules.iter().filter(|r| r.op == GemmOp::Qkv).collect();
        assert_eq!(qkv.len(), profile.gemm_table("qkv").unwrap().ours_us.x.len() + 1);
        assert!(qkv[..qkv.len() - 1].iter().all(|r| r.pad) && !qkv[qkv.len() - 1].pad);
        let cublas_at = |rows| (policy.backend(GemmOp::Qkv, rows), policy.cublas_m(GemmOp::Qkv, rows));
        assert_eq!(cublas_at(333), (GemmBackend::Cublas, 336));
        assert_eq!(cublas_at(8191).1, 8192);
        assert_eq!(cublas_at(9000).1, 9000, "beyond the grid, the rows asked");
        // The decode graphs' own choice comes with the profile.
        assert_eq!(policy.graph_ours_rows, profile.graph_ours_rows as usize);
        profile.graph_ours_rows = 0;
        assert_eq!(gemm_policy(&profile).unwrap().graph_ours_rows, 0);
        profile.graph_ours_rows = 24;
        assert_eq!(gemm_policy(&profile).unwrap().graph_ours_rows, 24);
    }

    #[test]
    fn ours_everywhere_keeps_the_committed_profiles_tuned_plans() {
        let profile = committed_h100_profile();
        let policy = ours_with_tuned_plans(&profile).expect("every GEMM table");
        for (name, op) in [
            ("qkv", GemmOp::Qkv),
            ("down", GemmOp::Down),
            ("lm_head", GemmOp::LmHead),
        ] {
            let table = profile.gemm_table(name).unwrap();
            assert!(
                !table.ours_plans.is_empty(),
                "{name}: the committed profile tuned its plans"
            );
            for rows in [1, 3, 8, 9, 16, 17, 33, 64, 65, 512] {
                let want = tuned_plan(&table.ours_plans, rows);
                assert_eq!(policy.choice(op, rows), (GemmBackend::Ours, want), "{name} at {rows}");
                assert_eq!(want.is_some(), rows <= crate::gpu::TUNED_MAX_ROWS, "{name} at {rows}");
            }
        }
    }

    #[test]
    fn the_engine_launches_the_plan_tuned_for_the_grid_point_above_its_rows() {
        use crate::calib::profile::TunedPlan;
        use crate::gpu::{GemmPlan, GemmTile};
        let mut profile = committed_h100_profile();
        let plan = |tile, split_k| GemmPlan { tile, split_k };
        let tuned = vec![
            TunedPlan {
                rows: 8,
                plan: plan(GemmTile::S8, 1),
            },
            TunedPlan {
                rows: 16,
                plan: plan(GemmTile::S16, 3),
            },
            TunedPlan {
                rows: 32,
                plan: plan(GemmTile::S32D, 2),
            },
        ];
        profile.gemm.iter_mut().for_each(|t| t.ours_plans.clear());
        let qkv = profile.gemm.iter_mut().find(|t| t.name == "qkv").unwrap();
        qkv.ours_us.y.iter_mut().for_each(|y| *y /= 3.0);
        qkv.ours_plans = tuned.clone();
        let policy = gemm_policy(&profile).expect("every GEMM table");
        for rows in 1..=64 {
            let (backend, chosen) = policy.choice(GemmOp::Qkv, rows);
            assert_eq!(backend, GemmBackend::Ours, "{rows}");
            assert_eq!(chosen, tuned_plan(&tuned, rows), "{rows}");
        }
        assert_eq!(policy.choice(GemmOp::Qkv, 9).1, Some(plan(GemmTile::S16, 3)));
        assert_eq!(
            policy.choice(GemmOp::Qkv, 33).1,
            None,
            "past the tuned points: the default plan"
        );
        assert!((1..100).all(|rows| policy.choice(GemmOp::O, rows).1.is_none()));
    }

    #[test]
    fn a_gap_that_grows_with_the_kernels_is_a_line_and_one_that_shrinks_a_median() {
        let step = |kernels: f64, gap: f64| {
            let mut s = sample(StepKind::Prefill, 0, 64, 100.0, kernels, kernels + gap + 30.0);
            s.gpu_us = kernels + gap;
            s
        };
        // Gap 500 + 0.05 × kernels.
        let m = fit(
            [1000.0, 3000.0, 9000.0].map(|k| step(k, 500.0 + 0.05 * k)).to_vec(),
            Vec::new(),
        );
        let p = m.kind(StepKind::Prefill).unwrap();
        assert!(
            (p.gap_us - 500.0).abs() < 1e-6 && (p.gap_per_kernel_us - 0.05).abs() < 1e-9,
            "{p:?}"
        );
        assert!((m.step_us(StepKind::Prefill, 64.0, 2000.0, None, false) - (2000.0 + 600.0 + 30.0)).abs() < 1e-6);
        // A shrinking gap: the median, flat.
        let m = fit(
            [1000.0, 2000.0, 3000.0].map(|k| step(k, 600.0 - 0.1 * k)).to_vec(),
            Vec::new(),
        );
        let p = m.kind(StepKind::Prefill).unwrap();
        assert_eq!((p.gap_us, p.gap_per_kernel_us), (400.0, 0.0));
    }

    #[test]
    fn graph_replays_get_the_median_gap_of_their_bucket() {
        let step = |rows: u32, kernels: f64, gap: f64| {
            let mut s = sample(StepKind::Decode, rows, 0, 20.0, kernels, kernels + gap + 30.0);
            s.gpu_us = kernels + gap;
            s.graph_rows = rows;
            s
        };
        let samples = vec![
            step(1, 900.0, 100.0),
            step(1, 950.0, 120.0),
            step(1, 980.0, 400.0),
            step(8, 1000.0, 250.0),
        ];
        let m = fit(samples, vec![1, 8]);
        let d = m.kind(StepKind::Decode).unwrap();
        assert_eq!(d.graph_gap_us, vec![(1, 120.0), (8, 250.0)]);
        assert_eq!(m.graph_buckets, vec![1, 8]);
        assert_eq!(graph_rows(&m.graph_buckets, 5, None), Some(8));
        assert_eq!(graph_rows(&m.graph_buckets, 5, Some(4)), None);
        assert!((m.step_us(StepKind::Decode, 5.0, 1000.0, Some(8), false) - 1280.0).abs() < 1e-9);
    }

    /// Replays whose longest decode is split into partitions get a gap of their own, as do those whose decodes are
    /// not; a bucket with steps of one kind only leaves the other curve without that point.
    #[test]
    fn split_and_unsplit_replays_are_fitted_apart() {
        let step = |rows: u32, longest: u32, gap: f64| {
            let mut s = sample(StepKind::Decode, rows, 0, 20.0, 1000.0, 1000.0 + gap + 30.0);
            s.gpu_us = 1000.0 + gap;
            s.graph_rows = rows;
            s.plan = Some(SampledPlan {
                decodes: (0..rows).map(|i| (if i == 0 { longest } else { 64 }, true)).collect(),
                prefills: Vec::new(),
            });
            s
        };
        let samples = vec![
            step(1, 100, 250.0),
            step(1, 200, 260.0),
            step(1, 1030, 430.0),
            step(8, 513, 320.0),
            step(8, 512, 270.0),
        ];
        assert!(samples[2].splits() && samples[3].splits() && !samples[4].splits());
        let m = fit(samples, vec![1, 8]);
        let d = m.kind(StepKind::Decode).unwrap();
        assert_eq!(d.graph_gap_us, vec![(1, 260.0), (8, 295.0)]);
        assert_eq!(d.graph_gap_split_us, vec![(1, 430.0), (8, 320.0)]);
        assert_eq!(d.graph_gap_unsplit_us, vec![(1, 255.0), (8, 270.0)]);
        assert!((m.step_us(StepKind::Decode, 1.0, 1000.0, Some(1), true) - (1000.0 + 430.0 + 30.0)).abs() < 1e-9);
        assert!((m.step_us(StepKind::Decode, 1.0, 1000.0, Some(1), false) - (1000.0 + 255.0 + 30.0)).abs() < 1e-9);
        // A profile fitted before the split was told apart: the one curve for both.
        let mut old = m.clone();
        old.kinds.iter_mut().for_each(|k| {
            k.graph_gap_split_us.clear();
            k.graph_gap_unsplit_us.clear();
        });
        assert!((old.step_us(StepKind::Decode, 1.0, 1000.0, Some(1), true) - (1000.0 + 260.0 + 30.0)).abs() < 1e-9);
    }

    #[test]
    fn stalls_do_not_tilt_the_issue_line() {
        // Issue time 2000 + 0.5 µs per token, ±20 µs, and three steps that stalled for 9–13 ms.
        let mut points: Vec<(f64, f64)> = (0..30)
            .map(|i| {
                let t = f64::from(30 + 35 * i);
                (t, 2000.0 + 0.5 * t + if i % 2 == 0 { 20.0 } else { -20.0 })
            })
            .collect();
        points.extend([(100.0, 15000.0), (400.0, 14000.0), (700.0, 11000.0)]);
        let (b, m) = least_squares(&points);
        assert!(b > 3000.0, "the plain fit is pulled up by the stalls: {b}");
        let (b, m2) = least_squares_without_stalls(&points);
        assert!(
            (b - 2000.0).abs() < 20.0 && (m2 - 0.5).abs() < 0.05,
            "{b} {m2} (plain slope {m})"
        );
        // Without stalls nothing is dropped: the plain line.
        let clean = &points[..30];
        assert_eq!(least_squares_without_stalls(clean), least_squares(clean));
    }

    #[test]
    fn least_squares_of_a_constant_x_is_the_mean() {
        assert_eq!(least_squares(&[(3.0, 1.0), (3.0, 3.0)]), (2.0, 0.0));
    }
}
