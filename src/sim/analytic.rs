//! The analytic cost model: a roofline per op from a GPU spec, for GPUs without a calibration profile.
//!
//! Each op of `ModelSpec::step_ops` takes max(bytes / effective bandwidth, FLOPs / effective tensor throughput)
//! plus its kernel launches; a step is the sum over its ops plus a fixed per-step overhead (scheduling, host-device
//! copies of the batch metadata, sampling readback).

use super::CostModel;
use super::hardware::GpuSpec;
use crate::model::{ModelSpec, OpCost, StepOps, StepShape};
use crate::units::Nanos;

/// Fraction of peak DRAM bandwidth that streaming kernels achieve (GEMV-like decode GEMMs reach 80–90 %).
pub const DEFAULT_BANDWIDTH_EFFICIENCY: f64 = 0.8;
/// Fraction of peak dense fp16 tensor throughput that large cuBLAS GEMMs and flash attention achieve.
pub const DEFAULT_COMPUTE_EFFICIENCY: f64 = 0.7;
/// Host work per step outside the kernels: building the batch, copying its metadata, reading the sampled ids back.
pub const DEFAULT_STEP_OVERHEAD_US: f64 = 20.0;

/// Which count of the step an op processes; an op with no rows is skipped.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rows {
    Tokens,
    Sampled,
}

/// FLOPs or bytes of one op as an affine function of the step: fixed + per_row·rows + per_pair·attn_pairs +
/// per_kv·kv_read_tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Affine {
    fixed: f64,
    per_row: f64,
    per_pair: f64,
    per_kv: f64,
}

impl Affine {
    fn at(&self, rows: f64, pairs: f64, kv: f64) -> f64 {
        self.fixed + self.per_row * rows + self.per_pair * pairs + self.per_kv * kv
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct OpTerms {
    rows: Option<Rows>,
    flops: Affine,
    bytes: Affine,
    launch_ns: f64,
}

/// Roofline step times for one model on one GPU. `step_time` does no allocation and a few dozen multiply-adds.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticCost {
    model: String,
    gpu: GpuSpec,
    bandwidth_efficiency: f64,
    compute_efficiency: f64,
    step_overhead_ns: f64,
    ns_per_byte: f64,
    ns_per_flop: f64,
    ops: [OpTerms; StepOps::COUNT],
}

impl AnalyticCost {
    /// # Panics
    /// If an efficiency is not in (0, 1] or the step overhead is negative or not finite: the scenario's validation
    /// rejects such values before a cost model is built.
    pub fn new(
        model: &ModelSpec,
        gpu: &GpuSpec,
        bandwidth_efficiency: f64,
        compute_efficiency: f64,
        step_overhead_us: f64,
    ) -> AnalyticCost {
        for (what, e) in [("bandwidth", bandwidth_efficiency), ("compute", compute_efficiency)] {
            assert!(e > 0.0 && e <= 1.0, "{what} efficiency must be in (0, 1], got {e}");
        }
        assert!(
            step_overhead_us >= 0.0 && step_overhead_us.is_finite(),
            "step overhead must be >= 0 µs, got {step_overhead_us}"
        );
        AnalyticCost {
            model: model.name.clone(),
            gpu: *gpu,
            bandwidth_efficiency,
            compute_efficiency,
            step_overhead_ns: step_overhead_us * 1e3,
            ns_per_byte: 1e9 / (gpu.mem_bandwidth_bytes_per_s() * bandwidth_efficiency),
            ns_per_flop: 1e9 / (gpu.fp16_flops_per_s() * compute_efficiency),
            ops: op_terms(model, gpu.launch_overhead_us * 1e3),
        }
    }

    pub fn gpu(&self) -> &GpuSpec {
        &self.gpu
    }

    fn step_ns(&self, shape: &StepShape) -> f64 {
        let tokens = shape.tokens as f64;
        let sampled = shape.sampled_seqs as f64;
        let pairs = shape.attn_pairs as f64;
        let kv = shape.kv_read_tokens as f64;
        let mut ns = self.step_overhead_ns;
        for op in &self.ops {
            let rows = match op.rows {
                Some(Rows::Tokens) => tokens,
                Some(Rows::Sampled) => sampled,
                None => continue,
            };
            if rows == 0.0 {
                continue;
            }
            let memory = op.bytes.at(rows, pairs, kv) * self.ns_per_byte;
            let compute = op.flops.at(rows, pairs, kv) * self.ns_per_flop;
            ns += memory.max(compute) + op.launch_ns;
        }
        ns
    }
}

/// Every op of `step_ops` is affine in its rows, `attn_pairs` and `kv_read_tokens` and costs nothing without rows
/// (see `model::accounting`), so sampling it at a few shapes recovers its coefficients exactly: the formulas live in
/// one place, and `step_time` does not rebuild them per call.
fn op_terms(model: &ModelSpec, launch_ns: f64) -> [OpTerms; StepOps::COUNT] {
    let at = |tokens, sampled_seqs, attn_pairs, kv_read_tokens| {
        model.step_ops(&StepShape {
            tokens,
            sampled_seqs,
            attn_pairs,
            kv_read_tokens,
            ..StepShape::default()
        })
    };
    let base = at(1, 1, 0, 0);
    let more_tokens = at(2, 1, 0, 0);
    let more_sampled = at(1, 2, 0, 0);
    let one_pair = at(1, 1, 1, 0);
    let one_kv = at(1, 1, 0, 1);
    let none_sampled = at(1, 0, 0, 0);

    let mut terms = [OpTerms::default(); StepOps::COUNT];
    for (i, term) in terms.iter_mut().enumerate() {
        let b = &base.ops[i];
        let (rows, grown) = if none_sampled.ops[i].launches == 0 {
            (Rows::Sampled, &more_sampled.ops[i])
        } else {
            (Rows::Tokens, &more_tokens.ops[i])
        };
        let affine = |value: fn(&OpCost) -> f64| {
            let per_row = value(grown) - value(b);
            Affine {
                fixed: value(b) - per_row,
                per_row,
                per_pair: value(&one_pair.ops[i]) - value(b),
                per_kv: value(&one_kv.ops[i]) - value(b),
            }
        };
        *term = OpTerms {
            // An op that is never launched (none today) costs nothing at any shape.
            rows: (b.launches > 0).then_some(rows),
            flops: affine(|o| o.flops),
            bytes: affine(|o| o.bytes),
            launch_ns: f64::from(b.launches) * launch_ns,
        };
    }
    terms
}

impl CostModel for AnalyticCost {
    fn step_time(&self, shape: &StepShape) -> Nanos {
        Nanos(self.step_ns(shape).round() as u64)
    }

    fn describe(&self) -> String {
        format!(
            "analytic roofline: {} on {} ({:.0} GB/s × {:.2} bandwidth efficiency, {:.1} TFLOPS × {:.2} compute \
             efficiency, {:.1} µs/launch, {:.1} µs/step)",
            self.model,
            self.gpu.name,
            self.gpu.mem_bandwidth_gbps,
            self.bandwidth_efficiency,
            self.gpu.fp16_tflops,
            self.compute_efficiency,
            self.gpu.launch_overhead_us,
            self.step_overhead_ns / 1e3,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OpKind, by_name};

    fn cost(model: &ModelSpec, gpu: &str) -> AnalyticCost {
        AnalyticCost::new(
            model,
            &GpuSpec::preset(gpu).unwrap(),
            DEFAULT_BANDWIDTH_EFFICIENCY,
            DEFAULT_COMPUTE_EFFICIENCY,
            DEFAULT_STEP_OVERHEAD_US,
        )
    }

    /// The roofline straight from `step_ops`, in ns: what the precomputed coefficients must reproduce.
    fn slow_ns(model: &ModelSpec, gpu: &GpuSpec, shape: &StepShape) -> f64 {
        let bw = gpu.mem_bandwidth_gbps * 1e9 * DEFAULT_BANDWIDTH_EFFICIENCY;
        let fl = gpu.fp16_tflops * 1e12 * DEFAULT_COMPUTE_EFFICIENCY;
        let ops = model.step_ops(shape);
        let kernels: f64 = ops
            .ops
            .iter()
            .map(|o| (o.bytes / bw).max(o.flops / fl) * 1e9 + f64::from(o.launches) * gpu.launch_overhead_us * 1e3)
            .sum();
        kernels + DEFAULT_STEP_OVERHEAD_US * 1e3
    }

    fn shapes() -> Vec<StepShape> {
        let mut shapes = vec![StepShape::default()];
        let mut s = StepShape::default();
        s.add_decode(1, false);
        shapes.push(s);
        let mut s = StepShape::default();
        for ctx in [17, 300, 4096, 9000] {
            s.add_decode(ctx, ctx == 17);
        }
        shapes.push(s);
        // A chunked-prefill middle chunk: samples nothing.
        let mut s = StepShape::default();
        s.add_prefill(512, 512, 0, false);
        shapes.push(s);
        // Mixed: prefills (one padded) and decodes.
        let mut s = StepShape::default();
        s.add_prefill(0, 2048, 0, true);
        s.add_prefill(100, 37, 5, true);
        for ctx in 1..=64 {
            s.add_decode(ctx * 31, false);
        }
        shapes.push(s);
        let mut s = StepShape::default();
        s.add_prefill(0, 16_384, 0, true);
        shapes.push(s);
        shapes
    }

    #[test]
    fn matches_the_roofline_over_step_ops() {
        for name in ["qwen2.5-0.5b", "qwen2.5-7b"] {
            let model = by_name(name).unwrap();
            for gpu in ["h100-sxm", "rtx-pro-4000-blackwell"] {
                let c = cost(&model, gpu);
                for shape in shapes() {
                    let (fast, slow) = (c.step_ns(&shape), slow_ns(&model, c.gpu(), &shape));
                    assert!(
                        (fast - slow).abs() <= 1e-9 * slow,
                        "{name} {gpu} {shape:?}: {fast} vs {slow}"
                    );
                    assert!(c.step_time(&shape).0.abs_diff(slow.round() as u64) <= 1, "{shape:?}");
                }
            }
        }
    }

    #[test]
    fn decode_at_batch_one_is_memory_bound() {
        let model = by_name("qwen2.5-7b").unwrap();
        let c = cost(&model, "h100-sxm");
        let mut shape = StepShape::default();
        shape.add_decode(1, false);
        let bw = 3.35e12 * 0.8;
        let fl = 989e12 * 0.7;
        for op in model.step_ops(&shape).ops {
            assert!(op.bytes / bw > op.flops / fl, "{} is not memory-bound", op.name);
        }
        // Every weight but the (untied) embedding table is streamed once; 9 launches a layer + 4.
        let table = f64::from(model.vocab) * f64::from(model.hidden) * 2.0;
        let launches = (9 * 28 + 4) as f64;
        let expected = (model.weight_bytes() as f64 - table) / bw * 1e9 + launches * 4_000.0 + 20_000.0;
        let got = c.step_time(&shape).0 as f64;
        assert!((got - expected).abs() < 1e-3 * expected, "{got} vs {expected}");
        // ≈ 5.3 ms of weights + 1.0 ms of launches
        assert!((6.0e6..6.6e6).contains(&got), "{got}");
    }

    #[test]
    fn a_large_prefill_is_compute_bound() {
        let model = by_name("qwen2.5-7b").unwrap();
        let c = cost(&model, "h100-sxm");
        let mut shape = StepShape::default();
        shape.add_prefill(0, 8192, 0, true);
        let ops = model.step_ops(&shape);
        let bw = 3.35e12 * 0.8;
        let fl = 989e12 * 0.7;
        for op in ops
            .ops
            .iter()
            .filter(|o| o.kind != OpKind::Elementwise && o.name != "lm_head")
        {
            assert!(op.flops / fl > op.bytes / bw, "{} is not compute-bound", op.name);
        }
        let got = c.step_time(&shape).as_secs();
        let compute = ops.flops() / fl;
        let memory = ops.bytes() / bw;
        // The GEMMs and attention dominate; the memory-bound elementwise ops add about a tenth.
        assert!(compute > 3.0 * memory, "compute {compute} s, memory {memory} s");
        assert!(got >= compute && got < 1.15 * compute, "{got} s vs compute {compute} s");
    }

    #[test]
    fn time_grows_with_kv_read_tokens() {
        let model = by_name("qwen2.5-7b").unwrap();
        let c = cost(&model, "h100-sxm");
        let batch = |ctx: u64| {
            let mut s = StepShape::default();
            (0..32).for_each(|_| s.add_decode(ctx, false));
            s
        };
        let (short, long) = (c.step_ns(&batch(1024)), c.step_ns(&batch(8192)));
        // Decode attention stays memory-bound: the difference is exactly the extra K and V read.
        let extra_kv = 32.0 * (8192.0 - 1024.0) * model.kv_bytes_per_token() as f64;
        let expected = extra_kv / (3.35e12 * 0.8) * 1e9;
        assert!(
            ((long - short) - expected).abs() < 1e-6 * expected,
            "{} vs {expected}",
            long - short
        );
        assert!(c.step_time(&batch(8192)) > c.step_time(&batch(1024)));
    }

    #[test]
    fn steps_that_sample_nothing_skip_lm_head() {
        let model = by_name("qwen2.5-1.5b").unwrap();
        let c = cost(&model, "l40s");
        let mut chunk = StepShape::default();
        chunk.add_prefill(0, 256, 0, false);
        let last = StepShape {
            sampled_seqs: 1,
            ..chunk
        };
        let lm_head_read = f64::from(model.vocab) * f64::from(model.hidden) * 2.0 / (864e9 * 0.8) * 1e9;
        assert!(c.step_ns(&last) - c.step_ns(&chunk) > lm_head_read);
    }

    #[test]
    fn describe_names_the_gpu_and_efficiencies() {
        let d = cost(&by_name("qwen2.5-0.5b").unwrap(), "a100-80gb").describe();
        assert!(
            d.contains("a100-80gb") && d.contains("qwen2.5-0.5b") && d.contains("0.80") && d.contains("0.70"),
            "{d}"
        );
        assert!(!d.contains('\n'));
    }

    #[test]
    #[should_panic(expected = "compute efficiency must be in (0, 1]")]
    fn zero_efficiency_is_refused() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        AnalyticCost::new(&model, &GpuSpec::preset("h200").unwrap(), 0.8, 0.0, 20.0);
    }
}
