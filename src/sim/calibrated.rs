//! The calibrated cost model: a step's time composed from the per-op tables `batchlab calibrate` measured.
//!
//! Per layer: two RMSNorms (residual fused), the QKV, O, gate/up and down GEMMs (the faster of our kernel and
//! cuBLAS at that token count, as the engine picks), KV append with RoPE, SiLU·mul (within the gate/up table in
//! profiles that measured it so, [`GemmTable::with_silu_mul`]), and attention — prefill chunks
//! in one launch, so the launch floor is paid once and each chunk adds what it costs beyond it; decode from the
//! batch × context table, the geometric mean of its readings at the batch's mean context and, for the batch that
//! launches as many partitions of work, at its longest, scaled by the measured cost of mixed lengths. Then the
//! embedding, the final norm, lm_head and argmax over the sampled rows, and the step's measured host overhead.

use super::CostModel;
use crate::calib::interp::{Curve, PrefillLaunch, PrefillSurface, Surface, decode_attention_at, prefill_pairs};
use crate::calib::profile::{EngineSteps, GemmTable, Profile, StepKind, StepParts, decode_splits, graph_rows};
use crate::model::{ModelSpec, StepShape};
use crate::sched::{DecodeSeq, StepPlan};
use crate::units::Nanos;

pub struct CalibratedCost {
    layers: f64,
    qkv: GemmTable,
    o: GemmTable,
    gate_up: GemmTable,
    down: GemmTable,
    lm_head: GemmTable,
    norm: Curve,
    silu_mul: Curve,
    kv_append: Curve,
    embedding: Curve,
    argmax: Curve,
    prefill: PrefillSurface,
    /// The most attention pairs per µs (beyond the launch floor) any measured prefill point reached: several
    /// chunks in one launch run side by side, so together they take no less than their pairs at this rate.
    prefill_pairs_per_us: f64,
    decode: Surface,
    /// SMs and kv heads: the partition size decode attention picks depends on them.
    sm_count: u32,
    kv_heads: u64,
    /// Context tokens a decode attention block takes per round ([`crate::gpu::ops::decode_round_tokens`]).
    decode_round: f64,
    /// How much slower than this model's own reading the profile's mixed-length decode batches ran, per unit of
    /// ln(longest / mean context): the reading is scaled by 1 + slope · ln(longest / mean) (see
    /// [`heterogeneity_slope`]).
    heterogeneity: Option<f64>,
    overhead_us: f64,
    /// The engine's whole-step model (host issue time and tail), when the profile measured it.
    engine: Option<EngineSteps>,
    /// Row counts of the engine's decode graphs (a decode-only step runs padded to the smallest that holds it).
    graph_buckets: Vec<u32>,
    /// The engine's batch limit: a decode step whose graph would have more rows is launched kernel by kernel.
    batch_limit: Option<u32>,
    /// Decode graphs of up to this many rows run our GEMM for every projection ([`Profile::graph_ours_rows`]).
    graph_ours_rows: u32,
    describe: String,
}

impl CalibratedCost {
    /// Fails when the profile lacks a table; mismatches with `model` are the caller's to report.
    pub fn new(profile: &Profile, model: &ModelSpec, source: &str) -> Result<CalibratedCost, String> {
        profile.check()?;
        let gemm = |name: &str| profile.gemm_table(name).cloned();
        let op = |name: &str| profile.op_table(name).map(|t| t.us.clone());
        let decode = profile.attention_decode.us.clone();
        let f = &profile.fingerprint;
        Ok(CalibratedCost {
            layers: f64::from(model.layers),
            qkv: gemm("qkv")?,
            o: gemm("o")?,
            gate_up: gemm("gate_up")?,
            down: gemm("down")?,
            lm_head: gemm("lm_head")?,
            norm: op("add_rmsnorm")?,
            silu_mul: op("silu_mul")?,
            kv_append: op("kv_append_rope")?,
            embedding: op("embedding")?,
            argmax: op("argmax")?,
            prefill: PrefillSurface::new(&profile.attention_prefill.us, PrefillLaunch::of(f)),
            prefill_pairs_per_us: peak_prefill_rate(&profile.attention_prefill.us),
            heterogeneity: None,
            decode,
            sm_count: f.sm_count,
            kv_heads: u64::from(model.kv_heads),
            decode_round: crate::gpu::ops::decode_round_tokens(model.head_dim as usize) as f64,
            overhead_us: profile.step_overhead_us,
            engine: profile.engine.clone(),
            graph_buckets: profile
                .engine
                .as_ref()
                .map_or_else(Vec::new, |e| e.graph_buckets.clone()),
            batch_limit: None,
            graph_ours_rows: profile.graph_ours_rows,
            describe: format!(
                "calibrated: {} ({} on {}, {})",
                source, f.model.name, f.gpu_name, f.date
            ),
        }
        .with_heterogeneity(profile))
    }

    /// The heterogeneity slope from the profile's mixed-length points, against this model's own reading of them.
    fn with_heterogeneity(mut self, profile: &Profile) -> Self {
        self.heterogeneity = heterogeneity_slope(profile, |contexts| self.decode_attention_us(contexts));
        self
    }

    /// Decode graphs of these row counts, on an engine that batches at most `limit` sequences (what calibration
    /// measures the engine with, before the profile records it).
    pub fn with_graphs(mut self, buckets: Vec<u32>, limit: Option<u32>) -> Self {
        self.graph_buckets = buckets;
        self.batch_limit = limit;
        self
    }

    /// The engine's batch limit (the scenario's `max_batch_size`): decode steps beyond its largest graph are
    /// priced as launched kernel by kernel.
    pub fn with_batch_limit(mut self, limit: u32) -> Self {
        self.batch_limit = Some(limit);
        self
    }

    /// The rows of the decode graph `s` replays on the engine: a decode-only step, padded to its bucket.
    fn graph_rows(&self, s: &StepShape) -> Option<u32> {
        if s.prefill_seqs > 0 || s.decode_seqs == 0 {
            return None;
        }
        let decodes = u32::try_from(s.decode_seqs).ok()?;
        graph_rows(&self.graph_buckets, decodes, self.batch_limit)
    }

    /// The whole step from its kernels' time: the engine's step model where the profile has one, else the kernels
    /// plus the fixed overhead.
    fn whole_step_us(&self, s: &StepShape, kernels_us: f64) -> f64 {
        match self.parts(s, kernels_us) {
            Some(p) => p.total_us(),
            None => kernels_us + self.overhead_us,
        }
    }

    /// The engine step model's parts of a step whose kernels take `kernels_us`: `None` without a step model (or
    /// for a kind it measured no step of, or an empty step).
    fn parts(&self, s: &StepShape, kernels_us: f64) -> Option<StepParts> {
        let e = self.engine.as_ref().filter(|_| s.tokens > 0)?;
        e.parts(
            StepKind::of(s.decode_seqs, s.prefill_seqs),
            s.tokens as f64,
            kernels_us,
            self.graph_rows(s),
            decode_splits(s.decode_max_context),
        )
    }

    /// Every kernel but attention of the step as the engine runs it: a graphed decode step's dense layers, lm_head
    /// and sampling over all the graph's rows (the padding rows compute and sample too; their attention is empty),
    /// with our GEMM for every projection where the graph has at most [`Profile::graph_ours_rows`] rows.
    fn dense_as_run_us(&self, s: &StepShape) -> f64 {
        match self.graph_rows(s) {
            Some(rows) => {
                let pad = u64::from(rows) - s.decode_seqs;
                let padded = StepShape {
                    tokens: s.tokens + pad,
                    sampled_seqs: s.sampled_seqs + pad,
                    ..*s
                };
                self.dense_with(&padded, rows <= self.graph_ours_rows)
            }
            None => self.dense_us(s),
        }
    }

    /// Every kernel of the step but attention, in µs, each projection by the kernel the tables pick.
    pub fn dense_us(&self, s: &StepShape) -> f64 {
        self.dense_with(s, false)
    }

    /// [`Self::dense_us`], or with our GEMM for every projection (`ours`).
    fn dense_with(&self, s: &StepShape, ours: bool) -> f64 {
        let t = s.tokens as f64;
        if s.tokens == 0 {
            return 0.0;
        }
        let gemm = |g: &GemmTable, rows: f64| if ours { g.ours_us.at(rows) } else { g.best_us(rows) };
        let per_layer = 2.0 * self.norm.at(t)
            + gemm(&self.qkv, t)
            + self.kv_append.at(t)
            + gemm(&self.o, t)
            + gemm(&self.gate_up, t)
            + self.silu_mul_us(t)
            + gemm(&self.down, t);
        let mut us = self.layers * per_layer + self.embedding.at(t);
        if s.sampled_seqs > 0 {
            let rows = s.sampled_seqs as f64;
            us += self.norm.at(rows) + gemm(&self.lm_head, rows) + self.argmax.at(rows);
        }
        us
    }

    /// One layer's decode attention over decodes at `contexts`, as a step's decodes are priced.
    pub(crate) fn decode_attention_us(&self, contexts: &[u32]) -> f64 {
        let decodes = (contexts.iter().zip(0..))
            .map(|(&context, id)| DecodeSeq {
                id,
                context,
                emits: true,
            })
            .collect();
        let plan = StepPlan::new(Vec::new(), decodes);
        self.decode_of(&plan.shape(), Some(&plan))
    }

    /// SiLU·mul over `t` rows, where the gate/up table does not already include it (profiles measured before our
    /// GEMM fused it, [`GemmTable::with_silu_mul`]).
    fn silu_mul_us(&self, t: f64) -> f64 {
        if self.gate_up.with_silu_mul {
            0.0
        } else {
            self.silu_mul.at(t)
        }
    }

    /// Decode attention of a step's decodes, one layer, from its shape alone ([`Self::decode_of`]).
    fn decode_us(&self, s: &StepShape) -> f64 {
        self.decode_of(s, None)
    }

    /// Decode attention of a step's decodes, one layer. Two readings of the uniform table bracket a batch of mixed
    /// lengths: at its mean context (as if the work spread evenly) and the equivalent batch at its longest context
    /// ([`Self::decode_equivalent_us`]: as if only the partitions counted, or the tokens where no context is split);
    /// the model takes their geometric mean, scaled by the heterogeneity the profile measured against that same
    /// reading (1 + slope · ln(longest / mean): a uniform batch reads the table as it is). From the decodes' contexts
    /// where `plan` lists them, else from the shape's mean and longest context (as if every other decode were at the
    /// mean). (Out of sample, qwen2.5-0.5b's 18 mixed-length points on an H100 with 4-warp decode blocks, median /
    /// p90 error: the mean reading alone 25% / 51%, the partitions alone 8% / 64%, their geometric mean 14% / 27%,
    /// scaled by the fitted line 6% / 15%; the partitions reading times a curve through every measured ratio, this
    /// model's for a while, 10% / 41%. With 8-warp blocks, on three profiles (two H100s, an H200), median / p95:
    /// partitions counted in unsplit launches too 4.3-4.7% / 50-61%, tokens counted there 3.7-4.6% / 15-19%.)
    fn decode_of(&self, s: &StepShape, plan: Option<&StepPlan>) -> f64 {
        if s.decode_seqs == 0 {
            return 0.0;
        }
        let batch = s.decode_seqs as f64;
        let mean = s.decode_context_sum as f64 / batch;
        let longest = s.decode_max_context.max(1);
        let equivalent = match plan.filter(|p| p.decodes.len() as u64 == s.decode_seqs) {
            Some(p) => {
                let contexts: Vec<u64> = p.decodes.iter().map(|d| u64::from(d.context)).collect();
                self.decode_equivalent_us(&contexts)
            }
            None => {
                let part = self.partition(s.decode_seqs, longest);
                let sequences = if longest <= part {
                    batch * mean / longest as f64
                } else {
                    batch * (mean / part as f64).ceil().max(1.0) / longest.div_ceil(part) as f64
                };
                self.decode_at_longest(sequences, longest)
            }
        };
        let base = (self.decode_table_at(batch, mean) * equivalent).sqrt();
        match self.heterogeneity {
            Some(slope) if mean > 0.0 => base * heterogeneity_factor(slope, longest as f64 / mean),
            _ => base,
        }
    }

    /// Decode attention over decodes at `contexts` as the kernel splits them: its partitions each take at most `p`
    /// tokens (the size it picks for this batch and its longest context), so the launch does what a uniform batch
    /// at the longest context does with as many partitions in all, Σ ⌈context / p⌉ / ⌈longest / p⌉ sequences; the
    /// uniform table is read there. Where no context is split (the longest fits one partition), each block walks
    /// one whole context and its time follows its tokens, not a partition's: Σ context / longest sequences. (A
    /// uniform batch is read as it is.)
    fn decode_equivalent_us(&self, contexts: &[u64]) -> f64 {
        let longest = contexts.iter().copied().max().unwrap_or(0).max(1);
        let part = self.partition(contexts.len() as u64, longest);
        let sequences = if longest <= part {
            contexts.iter().sum::<u64>() as f64 / longest as f64
        } else {
            let blocks: u64 = contexts.iter().map(|&c| c.div_ceil(part).max(1)).sum();
            blocks as f64 / longest.div_ceil(part) as f64
        };
        self.decode_at_longest(sequences, longest)
    }

    fn decode_at_longest(&self, sequences: f64, longest: u64) -> f64 {
        self.decode_table_at(sequences.max(1.0), longest as f64)
    }

    /// The uniform table read for `batch` sequences of `context` tokens, at the partition the kernel picks for
    /// them ([`decode_attention_at`]).
    pub(crate) fn decode_table_at(&self, batch: f64, context: f64) -> f64 {
        let partition = self.partition(batch.round().max(1.0) as u64, context.ceil().max(1.0) as u64);
        decode_attention_at(&self.decode, batch, context, partition, self.decode_round)
    }

    fn partition(&self, seqs: u64, longest: u64) -> u64 {
        crate::model::decode_partition(self.sm_count, self.kv_heads, seqs, longest)
    }

    /// The step's kernels alone (the op tables, no host or tail), in µs. The prefill chunks share one attention
    /// launch: its floor, then the longer of the slowest chunk on its own and all chunks' pairs at the peak rate.
    pub fn kernels_us(&self, plan: &StepPlan, s: &StepShape) -> f64 {
        let mut attention = self.decode_of(s, Some(plan));
        if !plan.prefills.is_empty() {
            let floor = self.prefill_floor_us();
            let (mut slowest, mut pairs) = (0.0f64, 0.0);
            for c in &plan.prefills {
                let (len, offset) = (f64::from(c.len), f64::from(c.offset));
                slowest = slowest.max(self.prefill.at(len, offset) - floor);
                pairs += prefill_pairs(len, offset);
            }
            let together = if self.prefill_pairs_per_us > 0.0 {
                pairs / self.prefill_pairs_per_us
            } else {
                0.0
            };
            attention += floor + slowest.max(together).max(0.0);
        }
        self.dense_as_run_us(s) + self.layers * attention
    }

    /// The launch floor of a prefill attention launch: its smallest measured point.
    fn prefill_floor_us(&self) -> f64 {
        self.prefill.floor()
    }
}

/// Attention pairs per µs beyond the floor (the smallest time) at the measured prefill point that reached the
/// most.
fn peak_prefill_rate(t: &Surface) -> f64 {
    let floor = t.z.iter().copied().fold(f64::INFINITY, f64::min);
    let ny = t.y.len();
    let mut best = 0.0f64;
    for (i, &chunk) in t.x.iter().enumerate() {
        for (j, &offset) in t.y.iter().enumerate() {
            let beyond = t.z[i * ny + j] - floor;
            if beyond > 0.0 {
                best = best.max(prefill_pairs(chunk, offset) / beyond);
            }
        }
    }
    best
}

/// The slope b of `measured / predicted = 1 + b · ln(longest / mean context)` over the profile's mixed-length
/// decode points, by least squares through (1, 1) (a uniform batch is the table itself; `None` without mixed points).
/// A line rather than a curve through every point: neighbouring imbalances of different batch sizes and spreads
/// scatter by 10-20%, and a curve through them carries that scatter to every batch priced between them.
fn heterogeneity_slope(profile: &Profile, predicted: impl Fn(&[u32]) -> f64) -> Option<f64> {
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for m in &profile.decode_mixed {
        let Some(&max) = m.contexts.iter().max() else {
            continue;
        };
        let mean = m.contexts.iter().map(|&c| f64::from(c)).sum::<f64>() / m.contexts.len() as f64;
        let predicted = predicted(&m.contexts);
        if predicted > 0.0 && mean > 0.0 {
            let x = (f64::from(max) / mean).ln();
            sxy += x * (m.us / predicted - 1.0);
            sxx += x * x;
        }
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// 1 + slope · ln(imbalance), kept within [0.5, 2] far beyond the measured imbalances.
fn heterogeneity_factor(slope: f64, imbalance: f64) -> f64 {
    (1.0 + slope * imbalance.max(1.0).ln()).clamp(0.5, 2.0)
}

fn to_nanos(us: f64) -> Nanos {
    Nanos::from_us(us)
}

impl CostModel for CalibratedCost {
    /// Without the plan, the step's prefill chunks are taken as one chunk of all their tokens at the offset that
    /// gives the same attention work.
    fn step_time(&self, s: &StepShape) -> Nanos {
        let mut attention = self.decode_us(s);
        if s.prefill_seqs > 0 {
            let p = s.prefill_tokens as f64;
            let offset = ((s.prefill_attn_pairs as f64 - p * (p + 1.0) / 2.0) / p).max(0.0);
            attention += self.prefill.at(p, offset);
        }
        to_nanos(self.whole_step_us(s, self.dense_as_run_us(s) + self.layers * attention))
    }

    fn plan_time(&self, plan: &StepPlan, s: &StepShape) -> Nanos {
        to_nanos(self.whole_step_us(s, self.kernels_us(plan, s)))
    }

    fn plan_parts(&self, plan: &StepPlan, s: &StepShape) -> Option<StepParts> {
        self.parts(s, self.kernels_us(plan, s))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::calib::profile::{
        CalibrationRun, Fingerprint, GEMMS, MixedDecode, OPS, OpTable, PROFILE_FORMAT, SurfaceTable,
    };
    use crate::model::by_name;
    use crate::sched::PrefillChunk;

    fn line(x: &[f64], a: f64, b: f64) -> Curve {
        Curve {
            x: x.to_vec(),
            y: x.iter().map(|v| a + b * v).collect(),
        }
    }

    /// A profile whose tables are simple known functions: GEMMs 5 + 0.01·t µs (cuBLAS 10% slower), ops
    /// 2 + 0.001·t, prefill attention 3 + 0.002·chunk·(offset + chunk), decode 4 + 0.0005·batch·context.
    pub(crate) fn synthetic_profile(model: &ModelSpec) -> Profile {
        let tokens = [1.0, 16.0, 64.0, 256.0, 1024.0, 8192.0];
        let gemm = GEMMS
            .iter()
            .map(|name| GemmTable {
                name: name.to_string(),
                n: 1,
                k: 1,
                ours_us: line(&tokens, 5.0, 0.01),
                cublas_us: line(&tokens, 5.5, 0.011),
                ours_spread: vec![0.01; tokens.len()],
                cublas_spread: vec![0.01; tokens.len()],
                ours_plans: Vec::new(),
                with_silu_mul: false,
                cublas_padded: false,
            })
            .collect();
        let ops = OPS
            .iter()
            .map(|name| OpTable {
                name: name.to_string(),
                us: line(&tokens, 2.0, 0.001),
                spread: vec![0.01; 6],
            })
            .collect();
        let surface = |x: Vec<f64>, y: Vec<f64>, f: &dyn Fn(f64, f64) -> f64| {
            let z = x
                .iter()
                .flat_map(|&a| y.iter().map(move |&b| (a, b)))
                .map(|(a, b)| f(a, b))
                .collect();
            let n = x.len() * y.len();
            SurfaceTable {
                us: Surface { x, y, z },
                spread: vec![0.01; n],
            }
        };
        Profile {
            format: PROFILE_FORMAT,
            fingerprint: Fingerprint {
                gpu_name: "Synthetic GPU".into(),
                gpu_uuid: None,
                compute_capability: "9.0".into(),
                sm_count: 132,
                memory_bytes: 80 << 30,
                driver_version: "580".into(),
                cuda_version: "13.0".into(),
                copy_bandwidth_gbps: 3000.0,
                gemm_tflops: 700.0,
                kernel_source_hash: "0".into(),
                model: model.clone(),
                block_size: 16,
                batchlab_version: "test".into(),
                engine_revision: crate::engine::ENGINE_REVISION,
                date: "2026-11-27T00:00:00Z".into(),
            },
            gemm,
            ops,
            attention_prefill: surface(vec![1.0, 64.0, 512.0], vec![0.0, 512.0, 4096.0], &|c, o| {
                3.0 + 0.002 * c * (o + c)
            }),
            attention_decode: surface(vec![1.0, 8.0, 64.0], vec![16.0, 1024.0, 8192.0], &|b, ctx| {
                4.0 + 0.0005 * b * ctx
            }),
            decode_mixed: vec![],
            step_overhead_us: 30.0,
            engine: None,
            graph_ours_rows: 0,
            run: CalibrationRun {
                seconds: 1.0,
                warmup: 3,
                repeats: 10,
                passes: 1,
                timing: "cuda-graph".into(),
                clock_tables: None,
                clock_engine_steps: None,
                issue_cpu: None,
            },
        }
    }

    #[test]
    fn decode_step_composes_the_tables() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let c = CalibratedCost::new(&synthetic_profile(&model), &model, "synthetic").unwrap();
        let mut s = StepShape::default();
        for _ in 0..8 {
            s.add_decode(1024, false);
        }
        // Per layer: 2 norms + 4 GEMMs (ours, faster) + KV append + SiLU·mul at 8 rows, and decode attention at
        // batch 8, context 1024. Then embedding (8 rows), final norm + lm_head + argmax (8 rows), overhead.
        let op = 2.0 + 0.001 * 8.0;
        // GEMMs are read on the line between the measured row counts around 8 (1 and 16).
        let gemm = 5.0 + 0.01 * 8.0;
        let attention = 4.0 + 0.0005 * 8.0 * 1024.0;
        let layer = 2.0 * op + 4.0 * gemm + op + op + attention;
        let expected = 24.0 * layer + op + (op + gemm + op) + 30.0;
        assert_eq!(c.step_time(&s), Nanos::from_us(expected));
        assert_eq!(c.plan_time(&StepPlan::default(), &s), Nanos::from_us(expected));
        // A gate/up table measured through SiLU·mul carries its cost: no SiLU·mul of its own per layer.
        let mut fused = synthetic_profile(&model);
        fused
            .gemm
            .iter_mut()
            .find(|t| t.name == "gate_up")
            .unwrap()
            .with_silu_mul = true;
        let c = CalibratedCost::new(&fused, &model, "synthetic").unwrap();
        assert_eq!(c.step_time(&s), Nanos::from_us(expected - 24.0 * op));
    }

    fn chunks(chunks: &[(u32, u32)]) -> StepPlan {
        let mut plan = StepPlan::default();
        for (i, &(offset, len)) in chunks.iter().enumerate() {
            plan.prefills.push(PrefillChunk {
                id: i as u32,
                offset,
                len,
                padding: 0,
                samples: true,
            });
        }
        plan
    }

    /// A decode-only step runs as the graph of its bucket: its dense layers, lm_head and sampling over the
    /// bucket's rows, its attention over the real sequences only, and the bucket's own gap; beyond the engine's
    /// batch limit it is launched kernel by kernel and priced as it is.
    #[test]
    fn a_graphed_decode_step_is_priced_padded_to_its_bucket() {
        use crate::calib::profile::{EngineSteps, StepKindModel};
        let model = by_name("qwen2.5-0.5b").unwrap();
        let mut p = synthetic_profile(&model);
        p.engine = Some(EngineSteps {
            kinds: vec![StepKindModel {
                kind: StepKind::Decode,
                gap_us: 500.0,
                gap_per_kernel_us: 0.0,
                issue_base_us: 0.0,
                issue_per_token_us: 0.0,
                tail_us: 0.0,
                graph_gap_us: vec![(2, 100.0), (4, 200.0)],
                graph_gap_split_us: vec![(4, 260.0)],
                graph_gap_unsplit_us: vec![],
                loop_us: 0.0,
            }],
            samples: vec![],
            graph_buckets: vec![1, 2, 4, 8],
            runtime_overhead_bytes: None,
            memory_samples: vec![],
        });
        let c = CalibratedCost::new(&p, &model, "synthetic").unwrap();
        let mut three = StepShape::default();
        for _ in 0..3 {
            three.add_decode(512, true);
        }
        let mut four = three;
        four.add_decode(1, true);
        let plan = StepPlan::default();
        let attention = |s: &StepShape| c.layers * c.decode_us(s);
        // Three rows in the graph of four: the dense work of four, the attention of three, the gap of four.
        let k3 = c.kernels_us(&plan, &three);
        assert!((k3 - (c.dense_us(&four) + attention(&three))).abs() < 1e-9, "{k3}");
        let t3 = c.plan_time(&plan, &three).as_ms() * 1e3;
        assert!((t3 - (k3 + 200.0)).abs() < 1e-3, "{t3}");
        // A batch limit of 2: no graph of four rows, so the kernels as they are and the ungraphed gap.
        let c2 = CalibratedCost::new(&p, &model, "synthetic")
            .unwrap()
            .with_batch_limit(2);
        let k3 = c2.kernels_us(&plan, &three);
        assert!((k3 - (c2.dense_us(&three) + attention(&three))).abs() < 1e-9);
        assert!((c2.plan_time(&plan, &three).as_ms() * 1e3 - (k3 + 500.0)).abs() < 1e-3);
        // A longest decode over 512 tokens is split into partitions: the gap fitted to such replays (here only
        // its curve; the unsplit steps above, with no curve of their own, took the one fitted to all).
        let mut split = StepShape::default();
        for context in [600, 100, 100] {
            split.add_decode(context, true);
        }
        let ks = c.kernels_us(&plan, &split);
        assert!((c.plan_time(&plan, &split).as_ms() * 1e3 - (ks + 260.0)).abs() < 1e-3);
        // Graphs of up to four rows run our GEMM for every projection and are priced with its tables. The
        // synthetic profile's own kernel is the faster everywhere (5 + 0.01·t against cuBLAS's 5.5 + 0.011·t);
        // made twice as slow here, the tables pick cuBLAS, which a graph of up to four rows does not run.
        let mut slow_ours = p.clone();
        for g in &mut slow_ours.gemm {
            g.ours_us.y.iter_mut().for_each(|y| *y *= 2.0);
        }
        let picked = CalibratedCost::new(&slow_ours, &model, "synthetic").unwrap();
        slow_ours.graph_ours_rows = 4;
        let ours = CalibratedCost::new(&slow_ours, &model, "synthetic").unwrap();
        let gemm_us = |c: &CalibratedCost, rows: f64, ours: bool| {
            let g = |t: &GemmTable| if ours { t.ours_us.at(rows) } else { t.best_us(rows) };
            c.layers * (g(&c.qkv) + g(&c.o) + g(&c.gate_up) + g(&c.down)) + g(&c.lm_head)
        };
        let (kp, ko) = (picked.kernels_us(&plan, &three), ours.kernels_us(&plan, &three));
        let more = gemm_us(&ours, 4.0, true) - gemm_us(&ours, 4.0, false);
        assert!(more > 0.0 && (ko - kp - more).abs() < 1e-9, "{kp} {ko} {more}");
        // Eight rows: beyond it, as picked; a step launched kernel by kernel (a prefill) as picked too.
        let mut eight = four;
        for _ in 0..4 {
            eight.add_decode(512, true);
        }
        assert_eq!(ours.kernels_us(&plan, &eight), picked.kernels_us(&plan, &eight));
        assert_eq!(ours.dense_us(&four), picked.dense_us(&four));
        // Between measured buckets the gap is linear, beyond them the nearest.
        let e = p.engine.as_ref().unwrap();
        assert_eq!(e.step_us(StepKind::Decode, 1.0, 0.0, Some(3), false), 150.0);
        assert_eq!(e.step_us(StepKind::Decode, 1.0, 0.0, Some(1), false), 100.0);
        assert_eq!(e.step_us(StepKind::Decode, 1.0, 0.0, Some(8), false), 200.0);
    }

    #[test]
    fn prefill_chunks_share_one_launch_floor() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let p = synthetic_profile(&model);
        let c = CalibratedCost::new(&p, &model, "synthetic").unwrap();
        let plan = chunks(&[(0, 64), (512, 64)]);
        let shape = plan.shape();
        let floor = 3.0 + 0.002 * 1.0 * 1.0;
        let t = |chunk: f64, offset: f64| 3.0 + 0.002 * chunk * (offset + chunk);
        // The launch's floor once, then the longer of the slowest chunk and all pairs at the table's peak rate.
        let rate = peak_prefill_rate(&p.attention_prefill.us);
        let pairs = prefill_pairs(64.0, 0.0) + prefill_pairs(64.0, 512.0);
        let attention = floor + (t(64.0, 512.0) - floor).max(pairs / rate);
        let kernels = c.dense_us(&shape) + 24.0 * attention;
        assert_eq!(c.plan_time(&plan, &shape), Nanos::from_us(kernels + 30.0));
    }

    #[test]
    fn many_chunks_in_one_launch_cost_less_than_apart_but_no_less_than_the_slowest() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let c = CalibratedCost::new(&synthetic_profile(&model), &model, "synthetic").unwrap();
        let one = chunks(&[(0, 512)]);
        let eight = chunks(&[(0, 512); 8]);
        let (k1, k8) = (c.kernels_us(&one, &one.shape()), c.kernels_us(&eight, &eight.shape()));
        let attention = |plan: &StepPlan, k: f64| (k - c.dense_us(&plan.shape())) / 24.0;
        let (a1, a8) = (attention(&one, k1), attention(&eight, k8));
        let floor = c.prefill_floor_us();
        assert!(a8 >= a1, "eight chunks {a8} µs, one {a1} µs");
        assert!(a8 - floor < 8.0 * (a1 - floor), "eight chunks {a8} µs vs eight apart");
    }

    #[test]
    fn measured_heterogeneity_scales_mixed_decode_batches() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let p = synthetic_profile(&model);
        let plain = CalibratedCost::new(&p, &model, "synthetic").unwrap();
        // A uniform batch reads the table as it is.
        let uniform = plain.decode_attention_us(&[1024; 8]);
        assert!((uniform - plain.decode_table_at(8.0, 1024.0)).abs() < 1e-9);
        // A batch of 8 with contexts 16 … 1024 + a long one: mean 1024, max 4096 → imbalance 4. Its reading lies
        // between the table at its mean and at its longest context.
        let contexts = vec![16, 16, 16, 32, 2016, 16, 1984, 4096];
        let base = plain.decode_attention_us(&contexts);
        let (at_mean, at_longest) = (plain.decode_table_at(8.0, 1024.0), plain.decode_table_at(8.0, 4096.0));
        assert!(at_mean < base && base < at_longest, "{at_mean} {base} {at_longest}");
        // Measured 1.5× that reading: the only point, the model reproduces it (slope 0.5 / ln 4).
        let mut p1 = p.clone();
        p1.decode_mixed.push(MixedDecode {
            contexts: contexts.clone(),
            us: 1.5 * base,
        });
        let c = CalibratedCost::new(&p1, &model, "synthetic").unwrap();
        assert!((c.decode_attention_us(&contexts) - 1.5 * base).abs() < 1e-9);
        // At imbalance 2 (ln 2 = half of ln 4): a quarter slower than that batch's own reading.
        let half = [2048, 1024, 1024, 1024, 1024, 1024, 512, 512];
        let mean = half.iter().map(|&c| f64::from(c)).sum::<f64>() / 8.0;
        assert!((2048.0 / mean - 2.0).abs() < 1e-9, "{mean}");
        let got = c.decode_attention_us(&half);
        assert!((got - 1.25 * plain.decode_attention_us(&half)).abs() < 1e-6, "{got}");
        // Uniform batches stay the table.
        assert!((c.decode_attention_us(&[1024; 8]) - uniform).abs() < 1e-9);
        // Two points off the line: the least-squares slope through (1, 1) lies between theirs.
        let mut p2 = p1.clone();
        p2.decode_mixed.push(MixedDecode {
            contexts: half.to_vec(),
            us: 1.1 * plain.decode_attention_us(&half),
        });
        let two = CalibratedCost::new(&p2, &model, "synthetic").unwrap();
        let slope = two.heterogeneity.unwrap();
        assert!(0.1 / 2f64.ln() < slope && slope < 0.5 / 4f64.ln(), "{slope}");
    }

    /// Where no context is split, the equivalent batch at the longest context counts tokens (a block walks one whole
    /// context), not partitions, which would price every sequence as the longest; split contexts still count whole
    /// partitions. With the plan's contexts and from the shape alone alike.
    #[test]
    fn unsplit_mixed_batches_count_tokens_split_ones_partitions() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let c = CalibratedCost::new(&synthetic_profile(&model), &model, "synthetic").unwrap();
        let unsplit = [512, 64, 64, 64, 128, 64, 64, 64];
        assert!(c.partition(8, 512) >= 512, "one partition holds the longest");
        let tokens: u64 = unsplit.iter().sum();
        let equivalent = c.decode_equivalent_us(&unsplit);
        assert!((equivalent - c.decode_table_at(tokens as f64 / 512.0, 512.0)).abs() < 1e-9);
        assert!(
            equivalent < c.decode_table_at(8.0, 512.0),
            "not every sequence at the longest"
        );
        let decodes = |contexts: &[u64]| {
            let seqs = (contexts.iter().zip(0..))
                .map(|(&context, id)| DecodeSeq {
                    id,
                    context: context as u32,
                    emits: true,
                })
                .collect();
            StepPlan::new(Vec::new(), seqs)
        };
        // The shape alone (mean and longest) gives the same reading when the contexts are all that matters.
        let plan = decodes(&unsplit);
        let shape = plan.shape();
        assert!((c.decode_of(&shape, None) - c.decode_of(&shape, Some(&plan))).abs() < 1e-9);
        // Split: a sequence of 4,096 tokens in partitions of p, the others one partition each.
        let split = [4096, 64, 64, 64, 64, 64, 64, 64];
        let p = c.partition(8, 4096);
        assert!(p < 4096);
        let parts = 4096u64.div_ceil(p);
        let blocks = parts + 7;
        let expected = c.decode_table_at(blocks as f64 / parts as f64, 4096.0);
        assert!((c.decode_equivalent_us(&split) - expected).abs() < 1e-9);
    }

    #[test]
    fn profiles_round_trip_and_old_formats_are_refused() {
        let model = by_name("qwen2.5-1.5b").unwrap();
        let p = synthetic_profile(&model);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, p.to_json()).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), p);
        std::fs::write(&path, p.to_json().replacen("\"format\": 1", "\"format\": 99", 1)).unwrap();
        let err = Profile::load(&path).unwrap_err().to_string();
        assert!(err.contains("format 99") && err.contains("calibrate again"), "{err}");
        assert!(p.mismatches(&model).is_empty());
        let other = by_name("qwen2.5-0.5b").unwrap();
        assert!(p.mismatches(&other).iter().any(|m| m.contains("layers")));
    }
}
