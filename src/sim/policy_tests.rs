//! Each policy's exact behaviour on small hand-checked workloads, and invariants on random ones.

use super::serving::{StepObserver, serve};
use super::{CostModel, LinearCost, SimExecutor, VirtualClock};
use crate::metrics::{MemoryModel, Recorder, RunMetrics, Slo};
use crate::sched::{
    ContinuousScheduler, GroupedScheduler, Scheduler, SchedulerLimits, StaticScheduler, StepPlan, final_kv_tokens,
};
use crate::units::Nanos;
use crate::workload::{ClosedLoop, Request, Workload};
use proptest::prelude::*;

fn limits(max_batch_size: u32) -> SchedulerLimits {
    SchedulerLimits {
        max_batch_size,
        max_batch_tokens: 8192,
        chunked_prefill: true,
        mix_prefill_decode: true,
        preemption: true,
        max_wait: Nanos::ZERO,
        block_size: 16,
        kv_capacity_slots: 1 << 20,
    }
}

/// `n` requests at t = 0, prompt 64, outputs alternating 16, 32, 16, …
fn burst(n: u32) -> Workload {
    let requests = (0..n)
        .map(|id| Request {
            id,
            arrival: Nanos::ZERO,
            prompt_len: 64,
            output_len: if id % 2 == 0 { 16 } else { 32 },
        })
        .collect();
    Workload {
        requests,
        closed_loop: None,
    }
}

/// `n` requests of one shape, one every `gap_ms` from t = 0.
fn evenly(n: u32, prompt_len: u32, output_len: u32, gap_ms: f64) -> Workload {
    let requests = (0..n)
        .map(|id| Request {
            id,
            arrival: Nanos::from_ms(gap_ms * f64::from(id)),
            prompt_len,
            output_len,
        })
        .collect();
    Workload {
        requests,
        closed_loop: None,
    }
}

/// 4 blocks of 4 tokens.
fn tiny_cache(mut l: SchedulerLimits) -> SchedulerLimits {
    l.block_size = 4;
    l.kv_capacity_slots = 16;
    l
}

fn every_step_20ms() -> LinearCost {
    LinearCost::from_units(20.0, 0.0, 0.0, 0.0)
}

fn run<S: Scheduler>(mut s: S, workload: &Workload, cost: &dyn CostModel) -> RunMetrics {
    let mut recorder = Recorder::new(workload.requests.len(), true, true);
    serve(
        &mut s,
        &mut SimExecutor { cost },
        &mut VirtualClock::default(),
        workload,
        &mut recorder,
        &mut (),
    )
    .expect("run completes");
    let memory = MemoryModel {
        weight_bytes: 0,
        workspace_bytes: 0,
        kv_bytes_per_slot: 1,
        kv_capacity_slots: 1,
    };
    recorder.finish(memory, Slo::default())
}

fn ms(v: Option<f64>) -> f64 {
    v.expect("stat present")
}

fn ttfts_ms(m: &RunMetrics) -> Vec<f64> {
    m.requests.iter().map(|r| r.ttft().unwrap().as_ms()).collect()
}

fn e2es_ms(m: &RunMetrics) -> Vec<f64> {
    m.requests.iter().map(|r| r.e2e().unwrap().as_ms()).collect()
}

#[test]
fn static_worked_example() {
    // Two batches of 4, each 1 prefill + 31 decodes (the longest target is 32): 64 steps of 20 ms.
    let m = run(StaticScheduler::new(limits(4)), &burst(8), &every_step_20ms());
    let s = &m.summary;
    assert_eq!(s.makespan_s, 1.28);
    assert_eq!(s.output_tokens, 192);
    assert!((s.output_tok_per_s - 150.0).abs() < 1e-9);
    assert!((ms(s.ttft_ms.mean) - 340.0).abs() < 1e-9);
    assert_eq!(s.itl_ms.p50, Some(20.0));
    assert_eq!(s.itl_ms.max, Some(20.0));
    assert_eq!(s.itl_ms.mean, Some(20.0));
    assert_eq!(s.steps, 64);
    assert_eq!(ttfts_ms(&m), [20.0, 20.0, 20.0, 20.0, 660.0, 660.0, 660.0, 660.0]);
    // The 16-token requests finish at step 16 of their batch; the batch runs on to step 32 regardless.
    assert_eq!(e2es_ms(&m), [320.0, 640.0, 320.0, 640.0, 960.0, 1280.0, 960.0, 1280.0]);
    // Every cache grows to its prompt + the longest output - 1, finished or not.
    assert!(m.requests.iter().all(|r| r.kv_peak_slots == 64 + 31));
    // Finished sequences keep decoding as padding: 2 of 4 sequences for 16 of the 31 decode steps, per batch.
    let padding: u32 = m.steps.iter().map(|s| s.padding_tokens).sum();
    assert_eq!(padding, 2 * 2 * 16);
    assert_eq!(m.steps.iter().map(|s| s.kv_slots).max(), Some(4 * 95));
}

#[test]
fn a_static_batch_computes_its_prompts_padding_but_never_caches_it() {
    let requests = [(10, 4), (40, 2), (25, 3)]
        .into_iter()
        .enumerate()
        .map(|(id, (prompt_len, output_len))| Request {
            id: id as u32,
            arrival: Nanos::ZERO,
            prompt_len,
            output_len,
        })
        .collect();
    let w = Workload {
        requests,
        closed_loop: None,
    };
    /// Every plan, in order.
    struct Plans(Vec<StepPlan>);
    impl<S: Scheduler> StepObserver<S> for Plans {
        fn after_plan(&mut self, _scheduler: &S, plan: &StepPlan) {
            self.0.push(plan.clone());
        }
    }
    let mut plans = Plans(Vec::new());
    let m = check_run(&mut StaticScheduler::new(limits(3)), &w, &mut plans);
    // The prefill computes every prompt padded to 40 tokens.
    let prefill = &plans.0[0];
    assert_eq!(
        prefill.prefills.iter().map(|c| (c.len, c.padding)).collect::<Vec<_>>(),
        [(40, 30), (40, 0), (40, 15)]
    );
    // Each decode attends to its own prompt and the tokens fed since: the padding is not in the cache.
    let contexts: Vec<Vec<u32>> = plans.0[1..]
        .iter()
        .map(|p| p.decodes.iter().map(|d| d.context).collect())
        .collect();
    assert_eq!(contexts, [[11, 41, 26], [12, 42, 27], [13, 43, 28]]);
    // Each cache grows to its own prompt + the longest output − 1 (finished sequences keep growing).
    let peaks: Vec<u64> = m.requests.iter().map(|r| r.kv_peak_slots).collect();
    assert_eq!(peaks, [13, 43, 28]);
    assert_eq!(m.steps.iter().map(|s| s.kv_slots).max(), Some(13 + 43 + 28));
}

#[test]
fn continuous_worked_example() {
    // Step 1 prefills 0–3. Requests 0 and 2 (16 tokens) leave after step 16; step 17 decodes 1 and 3 and
    // prefills 4 and 5 (first tokens at 340 ms). 1, 3 and 4 leave after step 32; step 33 admits 6 and 7
    // (660 ms). 5 and 6 leave after step 48, 7 after step 64: 1.28 s, as static, since every step costs the
    // same — but TTFT falls from 340 to 260 ms on average.
    let m = run(ContinuousScheduler::new(limits(4)), &burst(8), &every_step_20ms());
    let s = &m.summary;
    assert_eq!(ttfts_ms(&m), [20.0, 20.0, 20.0, 20.0, 340.0, 340.0, 660.0, 660.0]);
    assert_eq!(e2es_ms(&m), [320.0, 640.0, 320.0, 640.0, 640.0, 960.0, 960.0, 1280.0]);
    assert_eq!(s.makespan_s, 1.28);
    assert!((s.output_tok_per_s - 150.0).abs() < 1e-9);
    assert!((ms(s.ttft_ms.mean) - 260.0).abs() < 1e-9);
    assert_eq!((s.itl_ms.mean, s.itl_ms.max), (Some(20.0), Some(20.0)));
    assert_eq!(s.steps, 64);
    let step17 = &m.steps[16];
    assert_eq!(
        (step17.prefill_seqs, step17.decode_seqs, step17.prefill_tokens),
        (2, 2, 128)
    );
    // Paged cache: 16-token blocks, so a 64 + 15 = 79-token cache holds 5 blocks and 64 + 31 = 95 holds 6.
    let kv: Vec<u64> = m.requests.iter().map(|r| r.kv_peak_slots).collect();
    assert_eq!(kv, [80, 96, 80, 96, 80, 96, 80, 96]);
    assert_eq!(m.steps.iter().map(|s| s.padding_tokens).sum::<u32>(), 0);
}

#[test]
fn continuous_separate_prefill_steps_delay_decodes() {
    // With mix_prefill_decode = false, step 17 prefills 4 and 5 alone, so 1 and 3 wait one step for their 17th
    // token (a 40 ms gap) and are still running when 4 leaves after step 32: step 33 prefills 6 alone, 1 and 3
    // finish at step 34, step 35 prefills 7, which then needs 31 decode steps: 66 steps instead of 64.
    let mut l = limits(4);
    l.mix_prefill_decode = false;
    let m = run(ContinuousScheduler::new(l), &burst(8), &every_step_20ms());
    assert_eq!(ttfts_ms(&m), [20.0, 20.0, 20.0, 20.0, 340.0, 340.0, 660.0, 700.0]);
    assert_eq!(m.summary.itl_ms.max, Some(40.0));
    assert!(m.steps.iter().all(|s| s.prefill_seqs == 0 || s.decode_seqs == 0));
    assert_eq!(m.summary.makespan_s, 1.32);
}

#[test]
fn grouped_worked_example() {
    // Same workload. Until step 16 all four caches have one length and grouped behaves as static. Then 4 and 5
    // join with shorter caches and every iteration runs one decode step per distinct length: 2, then 3 steps to
    // advance each request by one token. Makespan 2.24 s (112 steps), 85.7 tok/s: the loss from divergent lengths.
    let m = run(GroupedScheduler::new(limits(4)), &burst(8), &every_step_20ms());
    let s = &m.summary;
    assert_eq!(ttfts_ms(&m), [20.0, 20.0, 20.0, 20.0, 340.0, 340.0, 940.0, 1040.0]);
    assert_eq!(
        e2es_ms(&m),
        [320.0, 1020.0, 320.0, 1020.0, 920.0, 1920.0, 1860.0, 2240.0]
    );
    assert_eq!(s.makespan_s, 2.24);
    assert_eq!(s.steps, 112);
    assert!((s.output_tok_per_s - 192.0 / 2.24).abs() < 1e-9);
    assert!((ms(s.ttft_ms.mean) - 342.5).abs() < 1e-9);
    // Request 5's token at step 50 is followed by {1, 3}, the prefill of 7, {7}, {6} before its next at step 55.
    assert_eq!(s.itl_ms.max, Some(100.0));
    assert!((ms(s.itl_ms.mean) - 860.0 / 23.0).abs() < 1e-9);
    // Contiguous per-request caches: prompt + output - 1.
    let kv: Vec<u64> = m.requests.iter().map(|r| r.kv_peak_slots).collect();
    assert_eq!(kv, [79, 95, 79, 95, 79, 95, 79, 95]);
}

#[test]
fn static_waits_for_a_full_batch_or_the_deadline() {
    // Open loop, one request every 10 ms, batches of 4, max_wait 35 ms, 2 steps a batch. Batch 1 is full when
    // request 3 arrives at 30 ms: launched at once, first tokens at 50. Requests 4 (40 ms) and 5 (50 ms) wait for
    // the batch in flight to end at 70; then the oldest has waited 30 < 35 ms, so the batch launches at 75.
    let w = evenly(6, 8, 2, 10.0);
    let mut l = limits(4);
    l.max_wait = Nanos::from_ms(35.0);
    let m = run(StaticScheduler::new(l), &w, &every_step_20ms());
    assert_eq!(ttfts_ms(&m), [50.0, 40.0, 30.0, 20.0, 55.0, 45.0]);
    assert_eq!(m.steps[0].start, Nanos::from_ms(30.0));
    assert_eq!(m.steps[2].start, Nanos::from_ms(75.0));
}

#[test]
fn static_deadline_launches_a_partial_batch() {
    let w = evenly(1, 8, 1, 0.0);
    let mut l = limits(4);
    l.max_wait = Nanos::from_ms(25.0);
    let m = run(StaticScheduler::new(l), &w, &every_step_20ms());
    assert_eq!(m.steps[0].start, Nanos::from_ms(25.0));
    assert_eq!(ttfts_ms(&m), [45.0]);
}

#[test]
fn continuous_preempts_the_newest_and_recomputes() {
    // 4 blocks of 4 tokens = 16 slots. Two requests of prompt 4 and 8 outputs: each ends at 4 + 7 = 11 tokens =
    // 3 blocks, so both cannot finish together: the newer one is evicted and recomputed.
    let w = evenly(2, 4, 8, 0.0);
    let m = run(ContinuousScheduler::new(tiny_cache(limits(8))), &w, &every_step_20ms());
    assert!(m.requests.iter().all(|r| r.is_complete()));
    assert_eq!(m.requests[0].preemptions, 0);
    assert!(m.requests[1].preemptions >= 1);
    assert_eq!(m.summary.preemptions, u64::from(m.requests[1].preemptions));
    assert!(m.steps.iter().all(|s| s.kv_slots <= 16));
    // Request 0 is never slowed by the eviction: 8 steps back to back.
    assert_eq!(m.requests[0].e2e(), Some(Nanos::from_ms(160.0)));
}

#[test]
fn continuous_without_preemption_reserves_whole_requests() {
    let w = evenly(2, 4, 8, 0.0);
    let mut l = tiny_cache(limits(8));
    l.preemption = false;
    let m = run(ContinuousScheduler::new(l), &w, &every_step_20ms());
    assert_eq!(m.summary.preemptions, 0);
    // Request 1 cannot be admitted until request 0 frees its 3 blocks.
    assert_eq!(ttfts_ms(&m), [20.0, 180.0]);
}

#[test]
fn chunked_prefill_splits_prompts_to_the_token_budget() {
    let w = evenly(1, 100, 2, 0.0);
    let mut l = limits(8);
    l.max_batch_tokens = 32;
    let m = run(ContinuousScheduler::new(l), &w, &every_step_20ms());
    let chunks: Vec<u32> = m.steps.iter().map(|s| s.prefill_tokens).collect();
    assert_eq!(chunks, [32, 32, 32, 4, 0]);
    assert_eq!(ttfts_ms(&m), [80.0]);
}

#[test]
fn closed_loop_clients_send_after_completion() {
    // 2 clients, 4 requests of one output token each: each step serves both clients' requests.
    let mut w = evenly(4, 8, 1, 0.0);
    w.closed_loop = Some(ClosedLoop {
        clients: 2,
        think: Nanos::from_ms(5.0),
    });
    let m = run(ContinuousScheduler::new(limits(8)), &w, &every_step_20ms());
    let arrivals: Vec<f64> = m.requests.iter().map(|r| r.arrival.as_ms()).collect();
    assert_eq!(arrivals, [0.0, 0.0, 25.0, 25.0]);
    assert_eq!(m.summary.makespan_s, 0.045);
}

/// Checks invariants after every step of a continuous scheduler.
struct KvChecks;

impl StepObserver<ContinuousScheduler> for KvChecks {
    fn after_plan(&mut self, s: &ContinuousScheduler, _plan: &StepPlan) {
        s.check_invariants().unwrap();
        assert!(s.kv_slots() <= s.kv_capacity(), "KV over-committed");
    }
    fn after_complete(&mut self, s: &ContinuousScheduler) {
        s.check_invariants().unwrap();
    }
}

struct CapacityCheck;

impl<S: Scheduler> StepObserver<S> for CapacityCheck {
    fn after_plan(&mut self, s: &S, plan: &StepPlan) {
        assert!(!plan.is_empty());
        assert!(
            s.kv_slots() <= s.kv_capacity(),
            "KV over-committed: {} > {}",
            s.kv_slots(),
            s.kv_capacity()
        );
    }
}

fn check_run<S: Scheduler>(s: &mut S, w: &Workload, observer: &mut dyn StepObserver<S>) -> RunMetrics {
    let cost = LinearCost::from_units(1.0, 3.0, 0.1, 0.5);
    let mut recorder = Recorder::new(w.requests.len(), true, true);
    serve(
        s,
        &mut SimExecutor { cost: &cost },
        &mut VirtualClock::default(),
        w,
        &mut recorder,
        observer,
    )
    .expect("run completes");
    assert_eq!(s.kv_slots(), 0, "KV leaked after the run");
    let memory = MemoryModel {
        weight_bytes: 0,
        workspace_bytes: 0,
        kv_bytes_per_slot: 1,
        kv_capacity_slots: 1,
    };
    recorder.finish(memory, Slo::default())
}

fn assert_served_exactly(w: &Workload, m: &RunMetrics) {
    assert_eq!(m.requests.len(), w.requests.len());
    for r in &m.requests {
        assert!(
            r.is_complete(),
            "request {} incomplete: {}/{}",
            r.id,
            r.tokens,
            r.output_len
        );
        assert!(r.first_token.unwrap() > r.arrival);
    }
    let tokens = m.tokens.as_ref().unwrap();
    assert_eq!(
        tokens.len() as u64,
        w.requests.iter().map(|r| u64::from(r.output_len)).sum::<u64>()
    );
    let mut last = vec![None; w.requests.len()];
    for t in tokens {
        let prev = last[t.request as usize].replace((t.index, t.time));
        match prev {
            None => assert_eq!(t.index, 0),
            Some((i, time)) => {
                assert_eq!(t.index, i + 1, "tokens of request {} out of order", t.request);
                assert!(t.time > time, "token times of request {} do not increase", t.request);
            }
        }
    }
}

prop_compose! {
    fn workloads()(
        lens in prop::collection::vec((1u32..120, 1u32..40, 0u64..200), 1..24),
        closed in prop::option::of(1u32..5),
    ) -> Workload {
        let mut t = 0.0;
        let requests = lens.iter().enumerate().map(|(i, &(p, o, gap))| {
            t += gap as f64 * 0.25;
            Request { id: i as u32, arrival: Nanos::from_ms(t), prompt_len: p, output_len: o }
        }).collect();
        Workload { requests, closed_loop: closed.map(|clients| ClosedLoop { clients, think: Nanos::from_ms(1.0) }) }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn continuous_serves_every_request_exactly(
        w in workloads(),
        max_batch in 1u32..10,
        budget in 8u32..300,
        block_size in 1u32..20,
        extra_blocks in 0u64..8,
        chunked in any::<bool>(),
        mixed in any::<bool>(),
        preemption in any::<bool>(),
    ) {
        let need = w.requests.iter().map(|r| final_kv_tokens(r.prompt_len, r.output_len)).max().unwrap();
        let budget = if chunked {
            budget
        } else {
            // Unchunked, a prompt (after preemption: prompt + outputs so far) must fit one step's budget.
            budget.max(w.requests.iter().map(|r| r.prompt_len + r.output_len).max().unwrap())
        };
        let blocks = need.div_ceil(u64::from(block_size)) + extra_blocks;
        let l = SchedulerLimits {
            max_batch_size: max_batch,
            max_batch_tokens: budget,
            chunked_prefill: chunked,
            mix_prefill_decode: mixed,
            preemption,
            max_wait: Nanos::ZERO,
            block_size,
            kv_capacity_slots: blocks * u64::from(block_size),
        };
        let mut s = ContinuousScheduler::new(l);
        let m = check_run(&mut s, &w, &mut KvChecks);
        assert_served_exactly(&w, &m);
        if !preemption {
            prop_assert_eq!(m.summary.preemptions, 0);
        }
    }

    #[test]
    fn static_and_grouped_serve_every_request_exactly(
        w in workloads(),
        max_batch in 1u32..10,
        extra in 0u64..400,
        max_wait_ms in 0.0f64..30.0,
    ) {
        let need = w.requests.iter().map(|r| final_kv_tokens(r.prompt_len, r.output_len)).max().unwrap();
        // Static pads to the longest prompt and output of a batch.
        let padded_need = final_kv_tokens(
            w.requests.iter().map(|r| r.prompt_len).max().unwrap(),
            w.requests.iter().map(|r| r.output_len).max().unwrap(),
        );
        let mut l = limits(max_batch);
        l.max_wait = Nanos::from_ms(max_wait_ms);
        l.kv_capacity_slots = padded_need.max(need) + extra;
        let m = check_run(&mut StaticScheduler::new(l), &w, &mut CapacityCheck);
        assert_served_exactly(&w, &m);
        l.kv_capacity_slots = need + extra;
        let m = check_run(&mut GroupedScheduler::new(l), &w, &mut CapacityCheck);
        assert_served_exactly(&w, &m);
    }
}

/// A clock on which the host's work takes time: every reading of it costs `host`, and a step ends `duration` after
/// the moment its executor was called (as on the wall clock, whatever `start` the loop read before planning it).
struct HostClock {
    t: Nanos,
    host: Nanos,
}

impl super::serving::Clock for HostClock {
    fn now(&self) -> Nanos {
        self.t
    }

    fn wait_until(&mut self, t: Nanos) {
        self.t = self.t.max(t);
    }

    fn step_finished(&mut self, _start: Nanos, duration: Nanos) -> Nanos {
        // The loop's work between two steps, then the step.
        self.t = self.t + self.host + duration;
        self.t
    }
}

#[test]
fn a_steps_record_holds_the_loops_work_since_the_step_before() {
    let w = burst(2);
    let mut recorder = Recorder::new(w.requests.len(), true, false);
    let mut clock = HostClock {
        t: Nanos::ZERO,
        host: Nanos(7_000),
    };
    serve(
        &mut StaticScheduler::new(limits(2)),
        &mut SimExecutor {
            cost: &every_step_20ms(),
        },
        &mut clock,
        &w,
        &mut recorder,
        &mut (),
    )
    .expect("run completes");
    let steps = recorder.steps();
    assert_eq!(steps.len(), 32, "one prefill, 31 decodes to the longest output");
    // Back to back, each step's record runs from the end of the one before: the 7 µs of host work are in it, and
    // the records tile the run.
    for pair in steps.windows(2) {
        assert_eq!(pair[1].start, pair[0].end());
        assert_eq!(pair[1].duration, Nanos::from_ms(20.0) + Nanos(7_000));
    }
    assert_eq!(steps.last().unwrap().end(), clock.t);
}
