//! The GPU engine against the f32 CPU reference (`batchlab::engine::ReferenceModel`) and against transformers.
//!
//! Every test that needs a GPU is `#[ignore]`d with the reason, so CI lists them as skipped. On a machine with an
//! NVIDIA GPU (sm_80+), its driver and NVRTC 13:
//!
//!     cargo test --release --test gpu_engine -- --ignored --test-threads=1
//!
//! The transformers comparison also needs a folder written by `scripts/hf_reference.py`:
//!
//!     python3 scripts/hf_reference.py odd /tmp/hf-odd
//!     python3 scripts/hf_reference.py qwen2.5-0.5b /tmp/hf-0.5b
//!     BATCHLAB_HF_REF=/tmp/hf-odd:/tmp/hf-0.5b cargo test --release --test gpu_engine -- --ignored transformers
//!
//! (`BATCHLAB_HF_REF` is a `:`-separated list of such folders; `BATCHLAB_HF_REFERENCE`, which the CPU reference's
//! own transformers check reads, is accepted too.)
//!
//! Every compared step must be within a relative L2 error of 1e-2 of the reference (the engine is fp16 with f32
//! accumulation; the references are f32). Decode inputs are the engine's own sampled tokens, fed to the reference
//! too, so a near-tie that the two break differently cannot make the sequences diverge.

use std::path::Path;

use batchlab::engine::{
    Engine, EngineConfig, EngineError, GemmBackend, GemmOp, GemmPolicy, GemmRule, GpuExecutor, HfLogits, HostWeights,
    KvCapacity, ReferenceModel, StepOutput, WallClock, WeightSource, prompt_token,
};
use batchlab::gpu::{GemmPlan, GemmTile, Gpu, Succession, init_uniform_value, mix64, reference::rel_l2};
use batchlab::metrics::Recorder;
use batchlab::model::ModelSpec;
use batchlab::sched::{
    ContinuousScheduler, DecodeSeq, PrefillChunk, ReqId, Scheduler, SchedulerLimits, StaticScheduler, StepPlan,
};
use batchlab::sim::serving::serve;
use batchlab::units::Nanos;
use batchlab::workload::{Request, Workload};

const TOL: f64 = 1e-2;
const PROMPT_SEED: u64 = 3;

/// Qwen2-like with odd counts: 7 query heads over 1 kv head (a GQA group of 7), q_dim (448) ≠ hidden (224),
/// biases, tied embeddings, a vocabulary that is not a multiple of 8.
fn odd_qwen() -> ModelSpec {
    ModelSpec {
        name: "odd-qwen".into(),
        hidden: 224,
        intermediate: 608,
        layers: 3,
        heads: 7,
        kv_heads: 1,
        head_dim: 64,
        vocab: 1001,
        tied_embeddings: true,
        rope_theta: 1_000_000.0,
        rms_eps: 1e-6,
        qkv_bias: true,
        max_context: 4096,
    }
}

/// Llama-like: head_dim 128, 6 query heads over 2 kv heads, no bias, untied lm_head.
fn llama_128() -> ModelSpec {
    ModelSpec {
        name: "llama-128".into(),
        hidden: 256,
        intermediate: 512,
        layers: 2,
        heads: 6,
        kv_heads: 2,
        head_dim: 128,
        vocab: 640,
        tied_embeddings: false,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        qkv_bias: false,
        max_context: 4096,
    }
}

fn gpu() -> Gpu {
    Gpu::new(0).unwrap_or_else(|e| panic!("these tests need a CUDA GPU: {e}"))
}

fn config(block_size: u32, gemm: GemmBackend) -> EngineConfig {
    config_with(block_size, GemmPolicy::always(gemm))
}

fn config_with(block_size: u32, gemm: GemmPolicy) -> EngineConfig {
    EngineConfig {
        block_size,
        kv: KvCapacity::Slots(4096),
        max_step_tokens: 256,
        max_seqs: 16,
        max_context: Some(1024),
        gemm,
        prompt_seed: PROMPT_SEED,
        // Timing the GPU work changes nothing computed: the tests run with it on, so it is exercised too.
        time_gpu: true,
        // Decode steps replay captured graphs (padded to their bucket), their kernels launched programmatically
        // where the GPU can: the logits below check that path.
        decode_graphs: true,
        succession: Succession::Programmatic,
    }
}

/// An engine and a reference with the same (host-drawn) weights.
fn pair(spec: &ModelSpec, seed: u64, block_size: u32, gemm: GemmBackend) -> (Engine, ReferenceModel) {
    pair_with(spec, seed, block_size, GemmPolicy::always(gemm))
}

fn pair_with(spec: &ModelSpec, seed: u64, block_size: u32, gemm: GemmPolicy) -> (Engine, ReferenceModel) {
    let weights = HostWeights::random(spec, seed);
    let engine = Engine::new(
        gpu(),
        spec.clone(),
        WeightSource::Host(&weights),
        config_with(block_size, gemm),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (engine, ReferenceModel::new(spec.clone(), weights))
}

/// Our kernel for every GEMM, launched as a calibration profile's tuned rules would (a plan per row range, none
/// of them the default one), for up to 64 rows; the default plan beyond.
fn tuned_ours() -> GemmPolicy {
    let plan = |tile, split_k| Some(GemmPlan { tile, split_k });
    let mut rules = Vec::new();
    for op in [GemmOp::Qkv, GemmOp::O, GemmOp::GateUp, GemmOp::Down, GemmOp::LmHead] {
        for (max_rows, plan) in [
            (8, plan(GemmTile::S8, 2)),
            (16, plan(GemmTile::S16, 3)),
            (32, plan(GemmTile::S32D, 2)),
            (48, plan(GemmTile::S32N, 1)),
            (64, plan(GemmTile::S64W, 3)),
        ] {
            rules.push(GemmRule {
                op,
                max_rows,
                backend: GemmBackend::Ours,
                plan,
                pad: false,
            });
        }
    }
    GemmPolicy {
        default: GemmBackend::Ours,
        rules,
        graph_ours_rows: 0,
    }
}

/// cuBLAS for every GEMM, on its rows padded as a profile that timed it so has the engine run it
/// (`batchlab::model::cublas_rows`: 3 rows run as 4, 29 as 32); the rows beyond the step's are never read.
fn padded_cublas() -> GemmPolicy {
    let rules = [GemmOp::Qkv, GemmOp::O, GemmOp::GateUp, GemmOp::Down, GemmOp::LmHead]
        .into_iter()
        .map(|op| GemmRule {
            op,
            max_rows: usize::MAX,
            backend: GemmBackend::Cublas,
            plan: None,
            pad: true,
        })
        .collect();
    GemmPolicy {
        default: GemmBackend::Cublas,
        rules,
        graph_ours_rows: 0,
    }
}

fn prompt(spec: &ModelSpec, id: ReqId, range: std::ops::Range<u32>) -> Vec<u32> {
    range.map(|p| prompt_token(PROMPT_SEED, id, p, spec.vocab)).collect()
}

fn chunk(id: ReqId, offset: u32, len: u32, padding: u32, samples: bool) -> PrefillChunk {
    PrefillChunk {
        id,
        offset,
        len,
        padding,
        samples,
    }
}

fn decode(id: ReqId, context: u32) -> DecodeSeq {
    DecodeSeq::emitting(id, context)
}

fn plan(prefills: Vec<PrefillChunk>, decodes: Vec<DecodeSeq>) -> StepPlan {
    StepPlan::new(prefills, decodes)
}

/// Row `id`'s logits in a step's output.
fn row(out: &StepOutput, id: ReqId, vocab: u32) -> &[f32] {
    let i = out
        .ids
        .iter()
        .position(|&x| x == id)
        .unwrap_or_else(|| panic!("request {id} sampled nothing"));
    &out.logits[i * vocab as usize..][..vocab as usize]
}

fn token(out: &StepOutput, id: ReqId) -> u32 {
    out.tokens[out.ids.iter().position(|&x| x == id).expect("sampled")]
}

fn check(what: &str, got: &[f32], want: &[f32]) -> f64 {
    let err = rel_l2(got, want);
    eprintln!("  {what}: rel L2 {err:.2e}");
    assert!(err <= TOL, "{what}: relative L2 error {err:.3e} > {TOL}");
    err
}

/// `steps` decode steps of every (id, context) in `seqs`, each checked against the reference fed the same token;
/// returns the last step's output (`last` without steps).
fn decode_and_check(
    engine: &mut Engine,
    reference: &mut ReferenceModel,
    seqs: &mut [(ReqId, u32)],
    last: &StepOutput,
    steps: usize,
) -> StepOutput {
    let vocab = engine.spec().vocab;
    let mut inputs: Vec<(ReqId, u32)> = seqs.iter().map(|&(id, _)| (id, token(last, id))).collect();
    let mut latest = last.clone();
    for step in 0..steps {
        let p = plan(vec![], seqs.iter().map(|&(id, ctx)| decode(id, ctx + 1)).collect());
        let out = engine
            .step_with_logits(&p)
            .unwrap_or_else(|e| panic!("decode {step}: {e}"));
        for ((id, ctx), (_, input)) in seqs.iter_mut().zip(inputs.iter_mut()) {
            let want = reference.decode(*id, *input);
            check(&format!("decode {step} of request {id}"), row(&out, *id, vocab), &want);
            *ctx += 1;
            *input = token(&out, *id);
        }
        latest = out;
    }
    latest
}

// ---------------------------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn prefill_of_odd_prompts_then_decodes_match_the_reference() {
    for (spec, block_size, gemm) in [
        (odd_qwen(), 16, GemmBackend::Cublas),
        (odd_qwen(), 8, GemmBackend::Ours),
        (llama_128(), 16, GemmBackend::Cublas),
    ] {
        eprintln!("{} block {block_size} {gemm:?}", spec.name);
        let (mut engine, mut reference) = pair(&spec, 11, block_size, gemm);
        let lens = [5u32, 13, 30];
        for (id, &len) in lens.iter().enumerate() {
            engine.register(id as ReqId, len).unwrap();
        }
        let p = plan(
            lens.iter()
                .enumerate()
                .map(|(id, &len)| chunk(id as ReqId, 0, len, 0, true))
                .collect(),
            vec![],
        );
        let out = engine.step_with_logits(&p).unwrap();
        assert_eq!(out.ids, vec![0, 1, 2]);
        for (id, &len) in lens.iter().enumerate() {
            let id = id as ReqId;
            let want = reference.prefill(id, &prompt(&spec, id, 0..len));
            check(
                &format!("prefill of request {id} ({len} tokens)"),
                row(&out, id, spec.vocab),
                &want,
            );
        }
        let mut seqs: Vec<(ReqId, u32)> = lens.iter().enumerate().map(|(i, &l)| (i as ReqId, l)).collect();
        decode_and_check(&mut engine, &mut reference, &mut seqs, &out, 10);
        engine.sequences().check_blocks().unwrap();
        if engine.gpu().info().compute_capability.0 >= 9 && gemm == GemmBackend::Ours {
            // The decodes above ran with kernels launching while their predecessors finished (a graph holding
            // cuBLAS kernels stays serial).
            assert!(
                engine.programmatic_edges() > 0,
                "no programmatic edge in the decode graphs"
            );
        }
    }
}

/// The host's time by kind of call, where asked: an eager prefill marks each op once a layer, a graphed decode
/// its graph's capture or, once captured, its upload and its graph's launch; nothing is summed when it is off.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn the_host_calls_of_a_step_are_timed_where_asked() {
    let spec = odd_qwen();
    let (mut engine, _) = pair(&spec, 5, 16, GemmBackend::Ours);
    let count = |calls: &[batchlab::engine::HostCalls], what: &str| {
        calls.iter().find(|c| c.what == what).map_or(0, |c| c.calls)
    };
    engine.register(0, 20).unwrap();
    engine.register(1, 9).unwrap();
    engine.step(&plan(vec![chunk(0, 0, 20, 0, true)], vec![])).unwrap();
    assert!(engine.take_host_calls().is_empty(), "off by default");
    engine.time_host_calls(true);
    engine.step(&plan(vec![chunk(1, 0, 9, 0, true)], vec![])).unwrap();
    let eager = engine.take_host_calls();
    let layers = u64::from(spec.layers);
    assert_eq!(count(&eager, "prepare"), 1, "{eager:?}");
    assert_eq!(count(&eager, "qkv gemm"), layers, "{eager:?}");
    assert_eq!(count(&eager, "prefill attention"), layers, "{eager:?}");
    assert_eq!(count(&eager, "down gemm"), layers, "{eager:?}");
    assert_eq!(count(&eager, "graph launch"), 0, "{eager:?}");
    assert!(eager.iter().all(|c| c.total > std::time::Duration::ZERO), "{eager:?}");
    // Two decodes: their graph is captured anew when the prefills moved a workspace its launches read, else
    // replayed; either way it is one call, and no op is launched on its own.
    engine.step(&plan(vec![], vec![decode(0, 21), decode(1, 10)])).unwrap();
    let first = engine.take_host_calls();
    assert_eq!(count(&first, "prepare"), 1, "{first:?}");
    assert_eq!(
        count(&first, "graph launch") + count(&first, "graph capture"),
        1,
        "{first:?}"
    );
    assert_eq!(count(&first, "qkv gemm"), 0, "{first:?}");
    // The same bucket again: now a replay of the graph, its inputs uploaded first.
    engine.step(&plan(vec![], vec![decode(0, 22), decode(1, 11)])).unwrap();
    let graphed = engine.take_host_calls();
    assert_eq!(count(&graphed, "prepare"), 1, "{graphed:?}");
    assert_eq!(count(&graphed, "upload"), 1, "{graphed:?}");
    assert_eq!(count(&graphed, "graph launch"), 1, "{graphed:?}");
    assert_eq!(count(&graphed, "graph capture"), 0, "{graphed:?}");
    assert_eq!(count(&graphed, "qkv gemm"), 0, "{graphed:?}");
    engine.time_host_calls(false);
    engine.step(&plan(vec![], vec![decode(0, 23), decode(1, 12)])).unwrap();
    assert!(engine.take_host_calls().is_empty(), "switched off");
}

/// Decode attention's merge counters are zero between steps: once the engine is built (its decode graphs captured and
/// each launched once on its padding step) and after decode steps split into several partitions, replayed from
/// graphs of several buckets and launched without a graph beside a prefill. (An engine that launched its graphs
/// without their own attention split left counters set, and a later step's logits came out NaN.)
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn decode_merge_counters_are_at_rest_between_steps() {
    let spec = odd_qwen();
    // Graphs up to 128 rows: the largest covers its contexts in partitions of 512 tokens while a one-row step splits
    // the same contexts into partitions of 256, so a graph launched with another bucket's split would leave counters
    // set.
    let cfg = EngineConfig {
        max_seqs: 128,
        ..config(16, GemmBackend::Ours)
    };
    let mut engine = Engine::random(gpu(), spec.clone(), 21, cfg).unwrap_or_else(|e| panic!("{e}"));
    assert!(engine.decode_counters_at_rest().unwrap(), "after the engine was built");
    // Prompts of 600 tokens (contexts up to 512 are never split): one kv head, so a few sequences split their
    // context into partitions of 256.
    let ids: Vec<ReqId> = (0..5).collect();
    for &id in &ids {
        engine.register(id, 600).unwrap();
        for offset in [0, 200, 400] {
            engine
                .step(&plan(vec![chunk(id, offset, 200, 0, offset == 400)], vec![]))
                .unwrap();
        }
    }
    assert!(engine.decode_counters_at_rest().unwrap(), "after the prefills");
    let mut context = 601;
    for rows in [1, 3, 5, 2] {
        let decodes = ids[..rows].iter().map(|&id| decode(id, context)).collect();
        let out = engine.step(&plan(vec![], decodes)).unwrap();
        assert!(out.timing.graph_rows.is_some(), "{rows} rows: a graph replay");
        assert!(
            engine.decode_counters_at_rest().unwrap(),
            "after a decode step of {rows} rows"
        );
        // Every sequence advances together: those left out of this step decode their missing token next.
        for &id in &ids[rows..] {
            let out = engine.step(&plan(vec![], vec![decode(id, context)])).unwrap();
            assert!(out.tokens.iter().all(|&t| t < spec.vocab), "{out:?}");
        }
        context += 1;
    }
    engine.register(9, 40).unwrap();
    let decodes = ids.iter().map(|&id| decode(id, context)).collect();
    engine.step(&plan(vec![chunk(9, 0, 40, 0, true)], decodes)).unwrap();
    assert!(engine.decode_counters_at_rest().unwrap(), "after a mixed step");
}

/// A decode graph launches its attention with exactly the step's own context partitions, not the most its bucket
/// was captured for (an engine sized for long contexts was measurably slower at short ones), and its logits stay
/// right as the split changes from step to step: one partition up to 512 tokens of context, three beyond.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn decode_graphs_launch_the_steps_own_partitions() {
    let spec = odd_qwen();
    let weights = HostWeights::random(&spec, 31);
    // Graphs for contexts up to 4,096: a one-row step could need 16 partitions of 256 tokens (one kv head).
    let cfg = EngineConfig {
        max_context: Some(4096),
        ..config(16, GemmBackend::Ours)
    };
    let mut engine =
        Engine::new(gpu(), spec.clone(), WeightSource::Host(&weights), cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut reference = ReferenceModel::new(spec.clone(), weights);
    let captured = engine.graph_launch_partitions(1).expect("a graph for one row");
    assert!(
        captured >= 16,
        "the one-row graph covers 4,096 tokens in {captured} partitions"
    );
    let len = 500;
    engine.register(0, len).unwrap();
    let out = engine
        .step_with_logits(&plan(vec![chunk(0, 0, len, 0, true)], vec![]))
        .unwrap();
    let want = reference.prefill(0, &prompt(&spec, 0, 0..len));
    check("prefill of 500 tokens", row(&out, 0, spec.vocab), &want);
    let mut seqs = vec![(0 as ReqId, len)];
    let mut last = out;
    // Contexts 501-512: unsplit; 513-524: three partitions of 256.
    for (steps, parts) in [(12, 1), (12, 3)] {
        let before = seqs[0].1;
        last = decode_and_check(&mut engine, &mut reference, &mut seqs, &last, steps);
        assert_eq!(
            engine.graph_launch_partitions(1),
            Some(parts),
            "decodes at contexts {}..={}",
            before + 1,
            seqs[0].1
        );
    }
    assert!(engine.decode_counters_at_rest().unwrap(), "after the decodes");
}

/// One step holding a decode, the last chunk of a chunked prefill and a whole prefill; then decodes of all three.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn mixed_step_and_chunked_prefill_match_the_reference() {
    // cuBLAS, cuBLAS on padded rows (then with decode graphs of up to 4 rows running our kernel, as a profile
    // may have them: the decodes of three sequences replay the graph of 4), then our kernel launched with tuned
    // plans (steps of 3 to 29 rows).
    let graph_ours = GemmPolicy {
        graph_ours_rows: 4,
        ..padded_cublas()
    };
    for policy in [
        GemmPolicy::always(GemmBackend::Cublas),
        padded_cublas(),
        graph_ours,
        tuned_ours(),
    ] {
        mixed_step_and_chunked_prefill(policy);
    }
}

fn mixed_step_and_chunked_prefill(policy: GemmPolicy) {
    let spec = odd_qwen();
    let (mut engine, mut reference) = pair_with(&spec, 12, 16, policy);
    let v = spec.vocab;
    engine.register(0, 9).unwrap();
    engine.register(1, 37).unwrap();
    engine.register(2, 7).unwrap();

    // Step 1: request 0 whole (samples), request 1's first 20 tokens (crosses a block boundary, does not sample).
    let out = engine
        .step_with_logits(&plan(vec![chunk(0, 0, 9, 0, true), chunk(1, 0, 20, 0, false)], vec![]))
        .unwrap();
    assert_eq!(out.ids, vec![0]);
    check(
        "prefill 0",
        row(&out, 0, v),
        &reference.prefill(0, &prompt(&spec, 0, 0..9)),
    );
    reference.forward(1, &prompt(&spec, 1, 0..20));
    let t0 = token(&out, 0);

    // Step 2: decode 0, request 1's remaining 17 tokens (samples), request 2 whole.
    let out = engine
        .step_with_logits(&plan(
            vec![chunk(1, 20, 17, 0, true), chunk(2, 0, 7, 0, true)],
            vec![decode(0, 10)],
        ))
        .unwrap();
    assert_eq!(out.ids, vec![0, 1, 2], "decodes first, then chunks");
    check("mixed: decode 0", row(&out, 0, v), &reference.decode(0, t0));
    check(
        "mixed: last chunk of 1",
        row(&out, 1, v),
        &reference.prefill(1, &prompt(&spec, 1, 20..37)),
    );
    check(
        "mixed: prefill 2",
        row(&out, 2, v),
        &reference.prefill(2, &prompt(&spec, 2, 0..7)),
    );

    // Then 8 decode steps of all three. Request 0's input is the token step 2 sampled for it.
    let mut seqs = vec![(0, 10), (1, 37), (2, 7)];
    decode_and_check(&mut engine, &mut reference, &mut seqs, &out, 8);
    engine.sequences().check_blocks().unwrap();
}

/// A static batch: prompts padded to the longest. Padding is computed, not cached, not sampled; each decode carries
/// its own real context; a finished sequence keeps decoding (emits = false).
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn static_batch_with_padding_matches_the_reference() {
    let spec = odd_qwen();
    let (mut engine, mut reference) = pair(&spec, 13, 16, GemmBackend::Cublas);
    let v = spec.vocab;
    let lens = [11u32, 4, 17];
    let padded = 17;
    for (id, &len) in lens.iter().enumerate() {
        engine.register(id as ReqId, len).unwrap();
    }
    let p = plan(
        lens.iter()
            .enumerate()
            .map(|(id, &len)| chunk(id as ReqId, 0, padded, padded - len, true))
            .collect(),
        vec![],
    );
    let out = engine.step_with_logits(&p).unwrap();
    let mut inputs = Vec::new();
    for (id, &len) in lens.iter().enumerate() {
        let id = id as ReqId;
        let want = reference.prefill(id, &prompt(&spec, id, 0..len));
        check(
            &format!("padded prefill of {id} ({len} tokens)"),
            row(&out, id, v),
            &want,
        );
        inputs.push(token(&out, id));
    }
    for step in 0..9u32 {
        let mut p = plan(
            vec![],
            (0..3).map(|id| decode(id, lens[id as usize] + step + 1)).collect(),
        );
        p.decodes[1].emits = step < 3; // request 1 "finished": still computed
        let out = engine.step_with_logits(&p).unwrap();
        for id in 0..3u32 {
            let want = reference.decode(id, inputs[id as usize]);
            check(&format!("static decode {step} of {id}"), row(&out, id, v), &want);
            inputs[id as usize] = token(&out, id);
        }
    }
}

/// Preemption by recompute: the recomputed prefill (prompt + the tokens sampled so far) gives the logits the
/// uninterrupted sequence would have given, and the freed blocks are reused.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn recompute_after_preemption_matches_the_reference() {
    let spec = llama_128();
    let (mut engine, mut reference) = pair(&spec, 14, 4, GemmBackend::Cublas);
    let v = spec.vocab;
    engine.register(0, 6).unwrap();
    let out = engine
        .step_with_logits(&plan(vec![chunk(0, 0, 6, 0, true)], vec![]))
        .unwrap();
    let mut input = token(&out, 0);
    reference.prefill(0, &prompt(&spec, 0, 0..6));
    for step in 0..3 {
        let out = engine
            .step_with_logits(&plan(vec![], vec![decode(0, 7 + step)]))
            .unwrap();
        reference.decode(0, input);
        input = token(&out, 0);
    }
    // The scheduler re-queues it with its prompt and its 4 sampled tokens (the last not yet fed back).
    let free_before = engine.sequences().free_blocks();
    let mut p = plan(vec![chunk(0, 0, 10, 0, true)], vec![]);
    p.preempted.push(0);
    let out = engine.step_with_logits(&p).unwrap();
    check("recomputed prefill", row(&out, 0, v), &reference.decode(0, input));
    assert_eq!(
        engine.sequences().free_blocks(),
        free_before,
        "10 tokens in 3 blocks of 4, as 9 were"
    );
    let mut seqs = vec![(0, 10)];
    decode_and_check(&mut engine, &mut reference, &mut seqs, &out, 4);
}

/// Weights generated on the GPU: they follow the CPU mirror of the generator, and the engine running them matches
/// the reference running their download.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn gpu_generated_weights_are_seeded_and_run_like_the_reference() {
    let spec = odd_qwen();
    let mut engine = Engine::random(gpu(), spec.clone(), 99, config(16, GemmBackend::Cublas)).unwrap();
    let host = engine.weights().download(engine.gpu(), &spec).unwrap();
    // The embedding is the generator's first tensor: index 1, uniform in ±sqrt(3/hidden).
    let half = (3.0f32 / spec.hidden as f32).sqrt();
    let seed = mix64(99 ^ mix64(1));
    let emb = host.get("model.embed_tokens.weight");
    for (i, &got) in emb.iter().enumerate().take(4096) {
        let want = half::f16::from_f32(init_uniform_value(seed, i as u64, 0.0, half)).to_f32();
        assert!(
            (got - want).abs() <= 1e-6 + 1e-3 * want.abs(),
            "element {i}: {got} vs {want}"
        );
    }
    assert!(emb.iter().all(|x| x.abs() <= half * 1.001));
    assert!(
        host.get("model.norm.weight")
            .iter()
            .all(|x| (0.899..=1.101).contains(x))
    );
    let again = Engine::random(gpu(), spec.clone(), 99, config(16, GemmBackend::Cublas)).unwrap();
    assert_eq!(
        again.weights().download(again.gpu(), &spec).unwrap(),
        host,
        "same seed, same weights"
    );

    let mut reference = ReferenceModel::new(spec.clone(), host);
    engine.register(0, 21).unwrap();
    let out = engine
        .step_with_logits(&plan(vec![chunk(0, 0, 21, 0, true)], vec![]))
        .unwrap();
    check(
        "prefill",
        row(&out, 0, spec.vocab),
        &reference.prefill(0, &prompt(&spec, 0, 0..21)),
    );
    let mut seqs = vec![(0, 21)];
    decode_and_check(&mut engine, &mut reference, &mut seqs, &out, 8);
}

/// A KV capacity beyond the GPU's memory is refused before anything is allocated, with a message saying so.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn kv_capacity_beyond_memory_is_refused() {
    let spec = batchlab::model::by_name("qwen2.5-0.5b").unwrap();
    let g = gpu();
    let (_, total) = g.memory().unwrap();
    let slots = 2 * total as u64 / spec.kv_bytes_per_token();
    let cfg = EngineConfig {
        kv: KvCapacity::Slots(slots),
        ..EngineConfig::default()
    };
    let err = Engine::random(g, spec.clone(), 1, cfg).unwrap_err();
    assert!(matches!(err, EngineError::OutOfMemory { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{slots} token slots")) && msg.contains("MiB"),
        "{msg}"
    );

    // From free memory instead: the cache fills most of what is left, and the memory report adds up.
    let cfg = EngineConfig {
        kv: KvCapacity::FreeMemory { fraction: 0.5 },
        ..EngineConfig::default()
    };
    let engine = Engine::random(gpu(), spec, 1, cfg).unwrap();
    let m = engine.memory();
    eprintln!("{m:?}, {} slots", engine.kv_capacity_slots());
    assert!(m.kv_cache > 0 && m.used_after_setup >= m.used_before + m.weights + m.kv_cache);
    assert!(m.peak_used >= m.used_after_setup && m.used_after_setup <= m.total);
}

/// The engine's workspace as `validate` and `calibrate` measure it (against the memory in use once the engine is
/// gone) holds at least what the model computes for its sizing, and less than an allocator chunk beyond that in
/// whole chunks: a second engine of the same configuration, after the first paid every first-use cost, measures the
/// same. Decode attention's partitioning,
/// which the computed workspace mirrors, is the GPU's own.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn the_measured_workspace_is_the_computed_one_and_repeats() {
    use batchlab::gpu::{AttentionKernel, DecodeShape};
    let g = gpu();
    let sm = g.info().sm_count;
    for (kv_heads, q_heads) in [(1usize, 7usize), (2, 14), (4, 28), (8, 64)] {
        for seqs in [1usize, 2, 3, 8, 32, 128, 256] {
            for ctx in [1usize, 100, 1024, 1025, 4096, 4097, 32768] {
                let shape = DecodeShape {
                    num_seqs: seqs,
                    q_heads,
                    max_context_len: ctx,
                    partition_size: None,
                };
                assert_eq!(
                    g.decode_partition(AttentionKernel::TensorCore, &shape, kv_heads) as u64,
                    batchlab::model::decode_partition(sm, kv_heads as u64, seqs as u64, ctx as u64),
                    "{kv_heads} kv heads, {seqs} sequences, context {ctx}"
                );
            }
        }
    }
    let spec = batchlab::model::by_name("qwen2.5-0.5b").unwrap();
    let mut g = Some(g);
    // A small engine, and one whose decode graphs need 32 MiB of decode attention workspace (256 rows over 32768
    // tokens): a mistake in the partitions the model computes would show as whole chunks.
    for (rows, seqs, context) in [(2048, 8, 600), (256, 256, 32768)] {
        let mut measured = Vec::new();
        for _ in 0..2 {
            let cfg = EngineConfig {
                kv: KvCapacity::Slots(20_000),
                max_step_tokens: rows,
                max_seqs: seqs,
                max_context: Some(context),
                ..EngineConfig::default()
            };
            let mut engine = Engine::random(g.take().unwrap(), spec.clone(), 1, cfg).unwrap();
            engine.register(0, 200).unwrap();
            engine.step(&plan(vec![chunk(0, 0, 200, 0, true)], vec![])).unwrap();
            engine.record_memory().unwrap();
            for c in 0..4 {
                engine
                    .step(&plan(vec![], vec![DecodeSeq::emitting(0, 201 + c)]))
                    .unwrap();
                engine.record_memory().unwrap();
            }
            let (gpu, m) = engine.close();
            let m = m.unwrap();
            eprintln!(
                "{rows} rows, {seqs} sequences, context {context}: measured {} MiB, computed {} MiB ({} in chunks), \
                 overhead {:.1} MiB, kept by the process {:.1} MiB; {:?}",
                m.measured >> 20,
                m.computed >> 20,
                m.computed_mapped() >> 20,
                m.runtime_overhead() as f64 / (1 << 20) as f64,
                m.kept_by_process() as f64 / (1 << 20) as f64,
                m.memory
            );
            // In whole allocator chunks beside the weights, and at most a chunk more (graphs, the driver's own).
            assert!(
                m.measured >= m.computed && m.runtime_overhead() < batchlab::model::ALLOCATION_GRANULE_BYTES,
                "{m:?}"
            );
            measured.push(m.measured);
            g = Some(gpu);
        }
        assert!(measured[0].abs_diff(measured[1]) <= 2 << 20, "{measured:?}");
    }
}

/// The serving loop on the real engine, driven by the wall clock: every request gets every token, all KV is freed
/// at the end (also after preemptions), each step has a measured duration.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_engine -- --ignored"]
fn serving_loop_runs_on_the_engine() {
    let spec = odd_qwen();
    let requests: Vec<Request> = (0..12)
        .map(|id| Request {
            id,
            arrival: Nanos::from_ms(2.0 * f64::from(id)),
            prompt_len: 5 + 7 * id,
            output_len: 3 + (id % 4) * 5,
        })
        .collect();
    let workload = Workload {
        requests,
        closed_loop: None,
    };
    let limits = |capacity: u64| SchedulerLimits {
        max_batch_size: 6,
        max_batch_tokens: 64,
        chunked_prefill: true,
        mix_prefill_decode: true,
        preemption: true,
        max_wait: Nanos::ZERO,
        block_size: 16,
        kv_capacity_slots: capacity,
    };
    for policy in ["continuous", "static", "continuous-preempting"] {
        let mut cfg = config(16, GemmBackend::Cublas);
        // A cache small enough that the preempting run must evict.
        cfg.kv = KvCapacity::Slots(if policy == "continuous-preempting" { 160 } else { 4096 });
        let engine = Engine::random(gpu(), spec.clone(), 5, cfg).unwrap();
        let capacity = engine.kv_capacity_slots();
        let mut scheduler: Box<dyn Scheduler> = match policy {
            "static" => Box::new(StaticScheduler::new(limits(capacity))),
            _ => Box::new(ContinuousScheduler::new(limits(capacity))),
        };
        let mut executor = GpuExecutor::new(engine, &workload);
        let mut recorder = Recorder::new(workload.requests.len(), true, false);
        serve(
            scheduler.as_mut(),
            &mut executor,
            &mut WallClock::new(),
            &workload,
            &mut recorder,
            &mut (),
        )
        .unwrap_or_else(|e| panic!("{policy}: {e}"));
        for (r, w) in recorder.requests().iter().zip(&workload.requests) {
            assert_eq!(r.tokens, w.output_len, "{policy}: request {}", w.id);
        }
        let engine = executor.engine();
        assert!(engine.sequences().is_empty(), "{policy}: every request left the engine");
        assert_eq!(
            engine.sequences().free_blocks(),
            engine.sequences().total_blocks(),
            "{policy}: every block freed"
        );
        assert!(executor.steps() > 0 && executor.busy() > Nanos::ZERO);
        let m = engine.memory();
        assert!(m.peak_used >= m.used_after_setup, "{m:?}");
        eprintln!(
            "{policy}: {} steps, busy {}, peak {} MiB",
            executor.steps(),
            executor.busy(),
            m.peak_used >> 20
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Against transformers

/// The checkpoints and logits `scripts/hf_reference.py` wrote into the folders of `$BATCHLAB_HF_REF`: the engine
/// loads each checkpoint; every prompt position is checked (request k prefills the first k prompt tokens, all in one
/// step), then each recorded decode step, fed transformers' own greedy tokens.
#[test]
#[ignore = "needs a CUDA GPU and BATCHLAB_HF_REF=<folder(s) written by scripts/hf_reference.py>"]
fn engine_matches_transformers() {
    let dirs = std::env::var("BATCHLAB_HF_REF")
        .or_else(|_| std::env::var("BATCHLAB_HF_REFERENCE"))
        .expect("set BATCHLAB_HF_REF to hf_reference.py's output folder (several: separated by ':')");
    let dirs: Vec<&str> = dirs.split(':').filter(|d| !d.is_empty()).collect();
    assert!(!dirs.is_empty(), "BATCHLAB_HF_REF names no folder");
    for dir in dirs {
        eprintln!("{dir}:");
        matches_transformers(Path::new(dir));
    }
}

fn matches_transformers(dir: &Path) {
    let record = HfLogits::load(dir).unwrap_or_else(|e| panic!("{e}"));
    let prompt_len = record.prompt.len();
    let cfg = EngineConfig {
        kv: KvCapacity::Slots(64 * 1024),
        max_step_tokens: prompt_len * (prompt_len + 1) / 2 + 64,
        max_seqs: prompt_len + 1,
        max_context: Some(4096),
        ..EngineConfig::default()
    };
    let mut engine = Engine::from_checkpoint(gpu(), dir, cfg).unwrap_or_else(|e| panic!("{e}"));
    let vocab = engine.spec().vocab;
    assert_eq!(
        record.vocab, vocab as usize,
        "the record's vocabulary is the checkpoint's"
    );
    eprintln!(
        "{}: prompt {prompt_len}, {} decode steps",
        engine.spec().name,
        record.decode.len() / record.vocab
    );

    for k in 1..=prompt_len {
        engine.register_prompt(k as ReqId, record.prompt[..k].to_vec()).unwrap();
    }
    let p = plan(
        (1..=prompt_len)
            .map(|k| chunk(k as ReqId, 0, k as u32, 0, true))
            .collect(),
        vec![],
    );
    let out = engine.step_with_logits(&p).unwrap();
    let mut worst: f64 = 0.0;
    for k in 1..=prompt_len {
        let want = &record.prefill[(k - 1) * record.vocab..][..record.vocab];
        worst = worst.max(check(
            &format!("prefill position {}", k - 1),
            row(&out, k as ReqId, vocab),
            want,
        ));
    }
    let id = prompt_len as ReqId;
    let steps = record.decode.len() / record.vocab;
    assert!(
        steps >= 8,
        "the record has {steps} decode steps; issue 4 asks for at least 8"
    );
    let mut agree = 0;
    for (i, want) in record.decode.chunks_exact(record.vocab).enumerate() {
        // Teacher forcing: the input is transformers' greedy token, whatever the engine sampled.
        assert!(engine.sequences_mut().set_last_sampled(id, record.generated[i]));
        let ctx = (prompt_len + i + 1) as u32;
        let out = engine.step_with_logits(&plan(vec![], vec![decode(id, ctx)])).unwrap();
        worst = worst.max(check(&format!("decode {i}"), row(&out, id, vocab), want));
        agree += usize::from(token(&out, id) == record.generated[i + 1]);
    }
    eprintln!("worst rel L2 {worst:.2e}; greedy tokens agree on {agree} of {steps} decode steps");
}
