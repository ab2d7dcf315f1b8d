//! `batchlab bench-engine`: whole engine steps against the physical floor. A decode step cannot beat (weight bytes +
//! KV bytes read) / copy bandwidth, a prefill step its FLOPs / GEMM FLOP/s; both ceilings are measured on the same
//! card in the same run.

use super::driver::{Bench, copy_bandwidth_gbps, cublas_tflops};
use super::engine_steps::{REPEATS, StepBench};
use super::profile::EngineStepSample;
use crate::engine::{Engine, EngineConfig, EngineError, GemmBackend, GemmPolicy, HostCalls, KvCapacity};
use crate::gpu::{Gpu, Succession};
use crate::model::{ModelSpec, StepShape};

/// Decode points (batch, context) the issue asks about: batch 1–8 at contexts up to 1024, and 64 and 256 at 1–4k.
pub const DECODE_POINTS: [(u32, u32); 9] = [
    (1, 128),
    (1, 1024),
    (4, 1024),
    (8, 1024),
    (64, 1024),
    (64, 4096),
    (256, 1024),
    (256, 4096),
    (8, 512),
];
/// Prefill points (sequences, tokens each): 8 × 512 and single prompts of 4096 tokens and more.
pub const PREFILL_POINTS: [(u32, u32); 3] = [(8, 512), (1, 4096), (2, 4096)];
/// The context of the one sequence that decodes between the prefills of `--prefill-after-decodes` when it starts.
const RUNNING_CONTEXT: u32 = 128;

/// How the engine under test is built: which GEMM runs every GEMM, and how a decode graph's kernels follow each
/// other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineVariant {
    pub gemm: GemmBackend,
    pub succession: Succession,
}

impl EngineVariant {
    /// Every combination, ours and programmatic first.
    pub const ALL: [EngineVariant; 4] = [
        EngineVariant::new(GemmBackend::Ours, Succession::Programmatic),
        EngineVariant::new(GemmBackend::Ours, Succession::Serial),
        EngineVariant::new(GemmBackend::Cublas, Succession::Programmatic),
        EngineVariant::new(GemmBackend::Cublas, Succession::Serial),
    ];

    pub const fn new(gemm: GemmBackend, succession: Succession) -> Self {
        Self { gemm, succession }
    }

    pub fn label(&self) -> String {
        let gemm = match self.gemm {
            GemmBackend::Ours => "our GEMM",
            GemmBackend::Cublas => "cuBLAS",
        };
        let launch = match self.succession {
            Succession::Programmatic => "PDL",
            Succession::Serial => "serial",
        };
        format!("{gemm}, {launch}")
    }
}

/// One measured point.
#[derive(Clone, Debug, PartialEq)]
pub struct EnginePoint {
    pub variant: EngineVariant,
    /// Which of the engines built for the variant one after another timed it (`--engines`), from 1; `None` with one.
    pub engine: Option<u32>,
    /// Which of the engine's sets of decode graphs replayed it (`--recapture`), from 1; `None` where the graphs were
    /// never captured again (and for prefills).
    pub graphs: Option<u32>,
    pub what: String,
    /// Tokens the step produces (decode) or computes (prefill).
    pub tokens: u64,
    pub step_us: f64,
    /// The host's time to issue the step (plan handed over to its last launch).
    pub issue_us: f64,
    /// What the step must read and write (weights, KV, activations) and the FLOPs it does.
    pub bytes: f64,
    pub flops: f64,
    /// The physical floor: bytes at copy bandwidth (decode) or FLOPs at GEMM FLOP/s (prefill).
    pub floor_us: f64,
    /// The host's time by kind of call over the point's timed steps ([`Engine::time_host_calls`]); empty where they
    /// were not timed (prefills timed between decode steps).
    pub host_calls: Vec<HostCalls>,
}

impl EnginePoint {
    fn new(
        variant: EngineVariant,
        what: String,
        tokens: u64,
        (step_us, issue_us): (f64, f64),
        ops: (f64, f64),
        floor_us: f64,
    ) -> EnginePoint {
        EnginePoint {
            variant,
            engine: None,
            graphs: None,
            what,
            tokens,
            step_us,
            issue_us,
            bytes: ops.0,
            flops: ops.1,
            floor_us,
            host_calls: Vec::new(),
        }
    }

    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / (self.step_us * 1e-6)
    }

    pub fn gbps(&self) -> f64 {
        self.bytes / (self.step_us * 1e-6) / 1e9
    }

    /// The variant, and which engine and graph set timed it where there were several.
    pub fn label(&self) -> String {
        let mut s = self.variant.label();
        if let Some(e) = self.engine {
            s.push_str(&format!(", engine {e}"));
        }
        if let Some(g) = self.graphs {
            s.push_str(&format!(", graphs {g}"));
        }
        s
    }

    /// The floor as a share of the measured step (1 = at the floor).
    pub fn of_floor(&self) -> f64 {
        self.floor_us / self.step_us
    }
}

pub struct EngineBench {
    pub gpu_name: String,
    pub model: String,
    /// What every engine was sized for: the rows of its largest step and the longest context its decode graphs
    /// cover.
    pub step_tokens: u32,
    pub context: u32,
    /// Its KV cache's token slots.
    pub kv_tokens: u64,
    pub copy_gbps: f64,
    pub gemm_tflops: f64,
    pub points: Vec<EnginePoint>,
}

/// Decode floor: every byte the step moves at copy bandwidth (GB/s) — µs.
pub fn decode_floor_us(bytes: f64, copy_gbps: f64) -> f64 {
    bytes / (copy_gbps * 1e9) * 1e6
}

/// Prefill floor: every FLOP at GEMM throughput (TFLOP/s) — µs.
pub fn prefill_floor_us(flops: f64, gemm_tflops: f64) -> f64 {
    flops / (gemm_tflops * 1e12) * 1e6
}

fn ops_of(model: &ModelSpec, sample: &EngineStepSample) -> (f64, f64) {
    let mut shape = StepShape::default();
    for _ in 0..sample.decode_seqs {
        shape.add_decode(u64::from(sample.decode_context), false);
    }
    if let Some(each) = sample.prefill_tokens.checked_div(sample.prefill_seqs) {
        for _ in 0..sample.prefill_seqs {
            shape.add_prefill(0, u64::from(each), 0, true);
        }
    }
    let ops = model.step_ops(&shape);
    (ops.bytes(), ops.flops())
}

/// What `bench-engine` times.
#[derive(Clone, Copy, Debug)]
pub struct BenchPoints<'a> {
    /// (batch, context) of decode steps.
    pub decode: &'a [(u32, u32)],
    /// (sequences, tokens each) of prefill-only steps, timed back to back.
    pub prefill: &'a [(u32, u32)],
    /// Each prefill point timed a second time with this many decode steps of one other sequence before each of its
    /// steps, as serving issues a new prompt between decode steps.
    pub prefill_after_decodes: Option<u32>,
    /// Size every engine's activation buffers for steps of this many tokens, at least the largest prefill point's
    /// (`None`: 8,192), as `validate` sizes a run's engine for what its policy can plan.
    pub step_tokens: Option<u32>,
    /// The longest context the engines' decode graphs cover, which sizes their attention grids; at least the longest
    /// point's (`None`: that).
    pub context: Option<u32>,
    /// Engines built one after another for each variant, every point timed on each.
    pub engines: u32,
    /// A KV cache of this many token slots, at least what the points need (`None`: that), as `validate` gives a
    /// run's engine what 95% of the free memory holds.
    pub kv_tokens: Option<u64>,
    /// After every decode point was timed, each engine drops its decode graphs, captures them anew and times every
    /// decode point again, this many times.
    pub recaptures: u32,
}

/// Measures the ceilings, then each point on an engine with seeded random weights, once per variant; `ours` is how
/// the variants of our GEMM launch it (every GEMM ours, with a profile's tuned plans or the default one). Gives the
/// GPU back.
pub fn bench_engine(
    mut gpu: Gpu,
    model: &ModelSpec,
    at: BenchPoints,
    variants: &[EngineVariant],
    ours: &GemmPolicy,
    on_point: &mut dyn FnMut(&str),
) -> Result<(EngineBench, Gpu), EngineError> {
    let (copy_gbps, gemm_tflops) = {
        let mut b = Bench::new(&gpu, 3, 15, on_point);
        (copy_bandwidth_gbps(&mut b, 1 << 30)?, cublas_tflops(&mut b, 8192)?)
    };
    let gpu_name = gpu.info().name.clone();
    let BenchPoints {
        decode,
        prefill,
        prefill_after_decodes: after,
        step_tokens,
        context,
        engines,
        kv_tokens,
        recaptures,
    } = at;
    // The sequence decoding between prefills grows by `after` tokens per step timed.
    let running_longest = after.map_or(0, |n| RUNNING_CONTEXT + n * (REPEATS as u32 + 1) * prefill.len() as u32);
    let longest = decode
        .iter()
        .map(|p| p.1)
        .chain(prefill.iter().map(|p| p.1))
        .chain([running_longest])
        .max()
        .unwrap_or(1);
    let most_seqs = decode
        .iter()
        .map(|p| p.0)
        .chain(prefill.iter().map(|p| p.0 + u32::from(after.is_some())))
        .max()
        .unwrap_or(1);
    let slots = decode
        .iter()
        .map(|&(b, c)| u64::from(b) * u64::from(c + 2 * REPEATS as u32 + 2))
        .chain(prefill.iter().map(|&(s, l)| u64::from(s) * u64::from(l)))
        .max()
        .unwrap_or(1)
        + u64::from(running_longest)
        + 4096;
    let slots = kv_tokens.unwrap_or(0).max(slots);
    let largest = prefill.iter().map(|&(s, l)| s * l).max().unwrap_or(0);
    let step_tokens = step_tokens.unwrap_or(8192).max(largest).max(1);
    let longest = context.unwrap_or(0).max(longest);
    let mut points = Vec::new();
    for (&variant, engine) in variants.iter().flat_map(|v| (1..=engines.max(1)).map(move |e| (v, e))) {
        let config = EngineConfig {
            kv: KvCapacity::Slots(slots),
            max_step_tokens: step_tokens as usize,
            max_seqs: most_seqs as usize,
            max_context: Some(longest + 2 * REPEATS as u32 + 2),
            time_gpu: true,
            gemm: match variant.gemm {
                GemmBackend::Ours => ours.clone(),
                GemmBackend::Cublas => GemmPolicy::always(GemmBackend::Cublas),
            },
            succession: variant.succession,
            ..EngineConfig::default()
        };
        let mut samples = Vec::new();
        // For each sample, the decode steps before each of its steps (prefills timed between decodes) and the host's
        // calls over its timed steps (where they were timed): after each point, every sample it added gets the
        // point's, however many it added.
        let mut labels: Vec<(Option<u32>, Vec<HostCalls>)> = Vec::new();
        let mut bench = StepBench {
            engine: Engine::random(gpu, model.clone(), 0x5eed, config)?,
            cost: None,
            next_id: 0,
            samples: &mut samples,
        };
        // The graph set (from 1) that replayed each sample, where the graphs were captured again.
        let mut graph_sets: Vec<Option<u32>> = Vec::new();
        for set in 1..=recaptures + 1 {
            if set > 1 {
                bench.engine.recapture_decode_graphs()?;
            }
            // Every set decodes sequences prefilled anew at the same contexts.
            for &(b, c) in decode {
                let ids = bench.prefilled(b, c)?;
                let calls = host_calls_of(&mut bench, |b| b.decode_steps(&ids, c, None))?;
                bench.release(&ids);
                labels.resize(bench.samples.len(), (None, calls));
                graph_sets.resize(bench.samples.len(), (recaptures > 0).then_some(set));
                on_point("engine decode");
            }
        }
        let running = match after {
            Some(_) => bench.prefilled(1, RUNNING_CONTEXT)?,
            None => Vec::new(),
        };
        let mut context = RUNNING_CONTEXT;
        for &(s, l) in prefill {
            let calls = host_calls_of(&mut bench, |b| b.prefill_batch_steps(s, l))?;
            labels.resize(bench.samples.len(), (None, calls));
            on_point("engine prefill");
            if let Some(n) = after {
                context = bench.prefill_batch_steps_after_decodes((s, l), &running, context, n)?;
                labels.resize(bench.samples.len(), (Some(n), Vec::new()));
                on_point("engine prefill after decodes");
            }
        }
        bench.release(&running);
        gpu = bench.engine.into_gpu();
        let ceilings = (copy_gbps, gemm_tflops);
        let engine = (engines > 1).then_some(engine);
        graph_sets.resize(samples.len(), None);
        points.extend(
            (samples.iter().zip(labels).zip(graph_sets)).map(|((x, (n, host_calls)), graphs)| EnginePoint {
                engine,
                graphs,
                host_calls,
                ..point(model, variant, x, n, ceilings)
            }),
        );
    }
    Ok((
        EngineBench {
            gpu_name,
            model: model.name.clone(),
            step_tokens,
            context: longest + 2 * REPEATS as u32 + 2,
            kv_tokens: slots,
            copy_gbps,
            gemm_tflops,
            points,
        },
        gpu,
    ))
}

/// Runs `steps` on `bench` with the engine's host calls timed ([`Engine::time_host_calls`]) and returns them.
fn host_calls_of<'a>(
    bench: &mut StepBench<'a>,
    steps: impl FnOnce(&mut StepBench<'a>) -> Result<(), EngineError>,
) -> Result<Vec<HostCalls>, EngineError> {
    bench.engine.time_host_calls(true);
    let done = steps(bench);
    let calls = bench.engine.take_host_calls();
    bench.engine.time_host_calls(false);
    done.map(|()| calls)
}

/// The point of sample `x`; `after`: the decode steps before each of its steps, if it was timed between decodes.
fn point(
    model: &ModelSpec,
    variant: EngineVariant,
    x: &EngineStepSample,
    after: Option<u32>,
    (copy_gbps, tflops): (f64, f64),
) -> EnginePoint {
    let ops = ops_of(model, x);
    let times = (x.wall_us, x.issue_us);
    match x.prefill_tokens.checked_div(x.prefill_seqs) {
        None => EnginePoint::new(
            variant,
            format!("decode batch {} × context {}", x.decode_seqs, x.decode_context),
            u64::from(x.decode_seqs),
            times,
            ops,
            decode_floor_us(ops.0, copy_gbps),
        ),
        Some(each) => {
            let what = match after {
                Some(n) => format!("prefill {} × {each} tokens, after {n} decode steps", x.prefill_seqs),
                None => format!("prefill {} × {each} tokens", x.prefill_seqs),
            };
            EnginePoint::new(
                variant,
                what,
                u64::from(x.prefill_tokens),
                times,
                ops,
                prefill_floor_us(ops.1, tflops),
            )
        }
    }
}

impl EngineBench {
    /// A markdown report: per point, the step time, the host's issue time, tokens/s, achieved bandwidth and the share
    /// of the floor.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Engine benchmark, {}, on {} — measured ceilings: device-to-device copy {:.0} GB/s, cuBLAS fp16 GEMM \
             {:.1} TFLOP/s (8192³). Decode floor: the step's bytes (weights, KV read, activations) at copy bandwidth; \
             prefill floor: its FLOPs at GEMM throughput. Each step is the median of {REPEATS} after one untimed, \
             from the plan handed over to the tokens on the host; decode steps replay CUDA graphs. Variants: which GEMM \
             runs every GEMM, and whether a decode graph's kernels launch programmatically (PDL: each launches while \
             the one before it finishes and starts streaming its weights) or serially. Host issue: the host's time \
             from the plan to the step's last launch (a step takes at least that long). Each engine was sized for \
             steps of up to {} tokens, its decode graphs for contexts of up to {}, and a KV cache of {} token \
             slots (`--step-tokens`, `--context`, `--kv-tokens`).\n\n",
            self.model, self.gpu_name, self.copy_gbps, self.gemm_tflops, self.step_tokens, self.context, self.kv_tokens
        );
        if self.points.iter().any(|p| p.graphs.is_some()) {
            s.push_str(
                "Graphs N: the decode points timed again on the same engine after it dropped its decode graphs and \
                 captured them anew N − 1 times (`--recapture`), on sequences prefilled anew at the same contexts.\n\n",
            );
        }
        s.push_str(
            "| variant | point | step ms | host issue ms | tokens/s | GB/s | TFLOP/s | floor ms | share of the floor |\n",
        );
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &self.points {
            s.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | {:.0} | {:.0} | {:.1} | {:.3} | {:.0}% |\n",
                p.label(),
                p.what,
                p.step_us / 1e3,
                p.issue_us / 1e3,
                p.tokens_per_s(),
                p.gbps(),
                p.flops / (p.step_us * 1e-6) / 1e12,
                p.floor_us / 1e3,
                100.0 * p.of_floor()
            ));
        }
        s.push_str(&self.host_calls_markdown());
        s
    }

    /// The host's time per step by kind of call, for each point of the first engine of each variant (its first graph
    /// set) whose calls were timed; empty without any.
    fn host_calls_markdown(&self) -> String {
        let timed: Vec<&EnginePoint> = (self.points.iter())
            .filter(|p| p.engine.unwrap_or(1) == 1 && p.graphs.unwrap_or(1) == 1 && !p.host_calls.is_empty())
            .collect();
        if timed.is_empty() {
            return String::new();
        }
        let mut s = format!(
            "\nHost issue by call: where the host's time to issue a step goes, per step over the {REPEATS} timed steps \
             of each point (first engine of each variant, its first decode graphs; the clock read once a call). \
             `prepare`: the step's inputs built on the host; `upload`: copied to the GPU; a graph's launch, or each \
             op's kernel launches over every layer.\n\n| variant | point | call | calls a step | µs a step | µs a call |\n|---|---|---|---:|---:|---:|\n"
        );
        for p in timed {
            // Every step marks `prepare` once.
            let steps = p.host_calls.iter().find(|c| c.what == "prepare").map_or(0, |c| c.calls);
            if steps == 0 {
                continue;
            }
            for c in &p.host_calls {
                let us = c.total.as_secs_f64() * 1e6;
                s.push_str(&format!(
                    "| {} | {} | {} | {:.1} | {:.1} | {:.2} |\n",
                    p.variant.label(),
                    p.what,
                    c.what,
                    c.calls as f64 / steps as f64,
                    us / steps as f64,
                    us / c.calls as f64
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::by_name;

    #[test]
    fn floors_and_shares() {
        // 1 GB at 2000 GB/s is 500 µs; 2 TFLOP at 500 TFLOP/s is 4000 µs.
        assert!((decode_floor_us(1e9, 2000.0) - 500.0).abs() < 1e-9);
        assert!((prefill_floor_us(2e12, 500.0) - 4000.0).abs() < 1e-9);
        let variant = EngineVariant::ALL[0];
        let p = EnginePoint::new(variant, "decode".into(), 8, (1000.0, 40.0), (1.5e9, 0.0), 500.0);
        assert!((p.of_floor() - 0.5).abs() < 1e-12);
        assert!((p.gbps() - 1500.0).abs() < 1e-9 && (p.tokens_per_s() - 8000.0).abs() < 1e-9);
    }

    fn sample(decodes: u32, context: u32) -> EngineStepSample {
        EngineStepSample {
            kind: crate::calib::profile::StepKind::Decode,
            decode_seqs: decodes,
            decode_context: context,
            prefill_seqs: 0,
            prefill_tokens: 0,
            issue_us: 0.0,
            gpu_us: 0.0,
            wall_us: 1.0,
            kernels_us: 0.0,
            graph_rows: 0,
            serving_us: None,
            plan: None,
        }
    }

    /// A prefill of `seqs` prompts, `tokens` in all, issued in `issue_us` and done in `wall_us`.
    fn prefill_sample(seqs: u32, tokens: u32, issue_us: f64, wall_us: f64) -> EngineStepSample {
        EngineStepSample {
            kind: crate::calib::profile::StepKind::Prefill,
            prefill_seqs: seqs,
            prefill_tokens: tokens,
            issue_us,
            wall_us,
            ..sample(0, 0)
        }
    }

    /// A bench of `points` of `model` on engines of 8192 rows, contexts of 1040 and 20000 KV slots.
    fn bench_of(model: &str, points: Vec<EnginePoint>) -> EngineBench {
        EngineBench {
            gpu_name: "test".into(),
            model: model.into(),
            step_tokens: 8192,
            context: 1040,
            kv_tokens: 20000,
            copy_gbps: 3000.0,
            gemm_tflops: 700.0,
            points,
        }
    }

    #[test]
    fn host_calls_are_given_per_step_for_the_first_engine_only() {
        let m = by_name("qwen2.5-0.5b").unwrap();
        let prefill = prefill_sample(1, 64, 1500.0, 1800.0);
        let variant = EngineVariant::ALL[0];
        let us = std::time::Duration::from_micros;
        let calls = vec![
            HostCalls {
                what: "prepare",
                calls: 5,
                total: us(100),
            },
            HostCalls {
                what: "qkv gemm",
                calls: 120,
                total: us(1200),
            },
        ];
        let first = EnginePoint {
            engine: Some(1),
            host_calls: calls.clone(),
            ..point(&m, variant, &prefill, None, (3000.0, 700.0))
        };
        let second = EnginePoint {
            engine: Some(2),
            host_calls: vec![HostCalls {
                what: "o gemm",
                ..calls[1].clone()
            }],
            ..first.clone()
        };
        let untimed = EnginePoint {
            host_calls: Vec::new(),
            ..point(&m, variant, &prefill, Some(8), (3000.0, 700.0))
        };
        let bench = bench_of(&m.name, vec![first, second, untimed.clone()]);
        let md = bench.markdown();
        assert!(md.contains("Host issue by call"), "{md}");
        // Per step over the 5 timed steps: 24 launches, 240 µs, 10 µs each.
        assert!(
            md.contains("| our GEMM, PDL | prefill 1 × 64 tokens | qkv gemm | 24.0 | 240.0 | 10.00 |"),
            "{md}"
        );
        assert!(md.contains("| prepare | 1.0 | 20.0 | 20.00 |"), "{md}");
        assert!(!md.contains("o gemm"), "only the first engine: {md}");
        // No point timed: no such table.
        let none = EngineBench {
            points: vec![untimed],
            ..bench
        };
        assert!(!none.markdown().contains("Host issue by call"));
    }

    #[test]
    fn a_prefill_timed_between_decodes_is_named_so_and_every_point_shows_its_host_issue() {
        let m = by_name("qwen2.5-0.5b").unwrap();
        let prefill = prefill_sample(4, 256, 2100.0, 2300.0);
        let variant = EngineVariant::ALL[0];
        let alone = point(&m, variant, &prefill, None, (3000.0, 700.0));
        let between = point(&m, variant, &prefill, Some(8), (3000.0, 700.0));
        assert_eq!(alone.what, "prefill 4 × 64 tokens");
        assert_eq!(between.what, "prefill 4 × 64 tokens, after 8 decode steps");
        assert_eq!((between.step_us, between.issue_us), (2300.0, 2100.0));
        let bench = bench_of(&m.name, vec![alone, between]);
        let md = bench.markdown();
        assert!(md.contains("| step ms | host issue ms |"), "{md}");
        assert!(
            md.contains(
                "steps of up to 8192 tokens, its decode graphs for contexts of up to 1040, and a KV cache of 20000 token"
            ),
            "{md}"
        );
        // One of several engines is named in its points' variant.
        let second = EngineBench {
            points: vec![EnginePoint {
                engine: Some(2),
                ..bench.points[0].clone()
            }],
            ..bench
        };
        assert!(
            second
                .markdown()
                .contains("| our GEMM, PDL, engine 2 | prefill 4 × 64 tokens |"),
            "{}",
            second.markdown()
        );
        assert!(
            md.contains("| prefill 4 × 64 tokens, after 8 decode steps | 2.300 | 2.100 |"),
            "{md}"
        );
    }

    #[test]
    fn a_point_replayed_from_a_recaptured_graph_set_is_named_so_and_gives_no_host_calls() {
        let m = by_name("qwen2.5-0.5b").unwrap();
        let variant = EngineVariant::ALL[0];
        let set = |engine, graphs, what: &'static str| EnginePoint {
            engine: Some(engine),
            graphs: Some(graphs),
            host_calls: vec![HostCalls {
                what,
                calls: 5,
                total: std::time::Duration::from_micros(50),
            }],
            ..point(&m, variant, &sample(4, 500), None, (3000.0, 700.0))
        };
        let bench = bench_of(
            &m.name,
            vec![set(1, 1, "prepare"), set(1, 2, "upload"), set(3, 2, "upload")],
        );
        let md = bench.markdown();
        assert!(md.contains("Graphs N: the decode points timed again"), "{md}");
        assert!(
            md.contains("| our GEMM, PDL, engine 3, graphs 2 | decode batch 4 × context 500 |"),
            "{md}"
        );
        assert!(md.contains("| our GEMM, PDL, engine 1, graphs 1 |"), "{md}");
        // Host calls of the first engine's first graph set only.
        assert!(md.contains("| decode batch 4 × context 500 | prepare |"), "{md}");
        assert!(!md.contains("| upload |"), "{md}");
        // Without recaptures, no note.
        let once = EngineBench {
            points: vec![EnginePoint {
                graphs: None,
                ..bench.points[0].clone()
            }],
            ..bench
        };
        assert!(!once.markdown().contains("Graphs N"));
    }

    #[test]
    fn a_decode_step_moves_at_least_the_weights_and_its_kv() {
        let m = by_name("qwen2.5-0.5b").unwrap();
        let (one, _) = ops_of(&m, &sample(1, 1024));
        let (many, _) = ops_of(&m, &sample(64, 1024));
        assert!(one >= m.weight_bytes() as f64);
        // 63 more sequences read 63 × 1024 more tokens of KV.
        let kv = 63.0 * 1024.0 * m.kv_bytes_per_token() as f64;
        assert!(many - one >= kv, "{many} - {one} < {kv}");
    }
}
