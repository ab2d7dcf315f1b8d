//! `batchlab bench-kernels`: each op of the model at shapes large enough to reach the hardware's limits, with the
//! achieved bandwidth or FLOP/s and its fraction of the ceilings measured on the same card in the same run.

use super::driver::{Bench, FUSED_SILU_MUL, GemmOperands, copy_bandwidth_gbps, cublas_tflops, gemm_shapes};
use crate::gpu::{
    AttentionKernel, DecodeShape, DecodeWorkspace, Gpu, GpuError, KvAppendShape, KvCacheMut, PagedKv, PagedKvLayout,
    PrefillShape,
};
use crate::model::ModelSpec;

/// One measured kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelResult {
    pub op: String,
    pub shape: String,
    pub us: f64,
    pub spread: f64,
    /// Bytes the op must move (reads + writes).
    pub bytes: f64,
    pub flops: f64,
    /// For our GEMM: cuBLAS's time at the same shape.
    pub cublas_us: Option<f64>,
}

impl KernelResult {
    pub fn gbps(&self) -> f64 {
        self.bytes / (self.us * 1e-6) / 1e9
    }

    pub fn tflops(&self) -> f64 {
        self.flops / (self.us * 1e-6) / 1e12
    }
}

pub struct KernelBench {
    pub gpu_name: String,
    pub copy_gbps: f64,
    pub gemm_tflops: f64,
    pub results: Vec<KernelResult>,
    /// Every launch plan tried at one shape (GEMM tile × split-K, decode partition size).
    pub sweeps: Vec<PlanSweep>,
}

/// One shape timed under every plan its kernel offers: what the default plan leaves on the table.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanSweep {
    pub op: String,
    pub shape: String,
    /// The default plan's label and time.
    pub default_plan: String,
    pub default_us: f64,
    /// The fastest plan's label and time.
    pub best_plan: String,
    pub best_us: f64,
    /// cuBLAS at the same shape (GEMMs).
    pub cublas_us: Option<f64>,
    /// Every plan timed, in the order swept.
    pub timed: Vec<(String, f64)>,
}

fn best_of(timed: &[(String, f64)]) -> (String, f64) {
    timed
        .iter()
        .cloned()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_else(|| ("-".into(), f64::NAN))
}

/// Rows that make a per-row op of `bytes_per_row` move at least 64 MiB (and at least 8192 rows).
fn rows_for_64mib(bytes_per_row: usize) -> usize {
    (64usize << 20).div_ceil(bytes_per_row).next_multiple_of(1024).max(8192)
}

/// The decode attention points `bench-kernels` times unless told others: (batch, context).
pub const DECODE_POINTS: [(usize, usize); 5] = [(1, 4096), (8, 8192), (32, 4096), (64, 2048), (256, 1024)];

/// How a decode batch is named in the report: `batch B × context C` when uniform, else its mean and longest.
pub fn decode_label(contexts: &[usize]) -> String {
    let (n, longest) = (contexts.len(), contexts.iter().copied().max().unwrap_or(0));
    if contexts.iter().all(|&c| c == longest) {
        format!("batch {n} × context {longest}")
    } else {
        let mean = contexts.iter().sum::<usize>() as f64 / n.max(1) as f64;
        format!("batch {n} of mixed contexts (mean {mean:.0}, longest {longest})")
    }
}

/// Times every kernel; decode attention over each batch of `decode` (one context per sequence: a uniform batch or
/// one of mixed lengths). `(warmup, repeats)` per point.
pub fn bench_kernels(
    gpu: &Gpu,
    m: &ModelSpec,
    (warmup, repeats): (usize, usize),
    decode: &[Vec<usize>],
    on_point: &mut dyn FnMut(&str),
) -> Result<KernelBench, GpuError> {
    let mut b = Bench::new(gpu, warmup, repeats, on_point);
    let copy_gbps = copy_bandwidth_gbps(&mut b, 1 << 30)?;
    let gemm_tflops = cublas_tflops(&mut b, 8192)?;
    let mut results = Vec::new();
    let mut sweeps = Vec::new();
    let (h, i, v) = (m.hidden as usize, m.intermediate as usize, m.vocab as usize);
    let (qh, kvh, d) = (m.heads as usize, m.kv_heads as usize, m.head_dim as usize);
    let mut push = |op: &str, shape: String, (us, spread): (f64, f64), bytes: f64, flops: f64, cublas: Option<f64>| {
        results.push(KernelResult {
            op: op.into(),
            shape,
            us,
            spread,
            bytes,
            flops,
            cublas_us: cublas,
        });
    };

    // Elementwise ops at ≥ 64 MiB.
    let t = rows_for_64mib(h * 2 * 4);
    let x = b.random_f16(t * h)?;
    let mut residual = b.random_f16(t * h)?;
    let weight = b.random_f16(h)?;
    let mut y = gpu.zeros::<u16>(t * h)?;
    let r = b.time("add_rmsnorm", |_| {
        gpu.add_rmsnorm(&x, &mut residual, &weight, &mut y, t, h)
    })?;
    push(
        "add_rmsnorm",
        format!("{t}×{h}"),
        r,
        (t * h * 2 * 4 + h * 2) as f64,
        0.0,
        None,
    );
    drop((x, residual, y));

    let t = rows_for_64mib(i * 2 * 3);
    let gate_up = b.random_f16(t * 2 * i)?;
    let mut act = gpu.zeros::<u16>(t * i)?;
    let r = b.time("silu_mul", |_| gpu.silu_mul(&gate_up, &mut act, t, i))?;
    push(
        "silu_mul",
        format!("{t}×{i}"),
        r,
        (t * i * 2 * 3) as f64,
        (4 * t * i) as f64,
        None,
    );
    drop((gate_up, act));

    let t = rows_for_64mib(h * 2 * 2);
    let ids: Vec<i32> = (0..t).map(|j| ((j * 7919) % v) as i32).collect();
    let ids = b.ints(&ids)?;
    let table = b.random_f16(v * h)?;
    let mut out = gpu.zeros::<u16>(t * h)?;
    let r = b.time("embedding", |_| gpu.embedding(&ids, &table, &mut out, t, (v, h)))?;
    push(
        "embedding",
        format!("{t} ids × {h}"),
        r,
        (t * h * 2 * 2 + t * 4) as f64,
        0.0,
        None,
    );
    drop((ids, table, out));

    let rows = 256;
    let logits = b.random_f16(rows * v)?;
    let mut tokens = gpu.zeros::<i32>(rows)?;
    let r = b.time("argmax", |_| gpu.argmax(&logits, &mut tokens, rows, v))?;
    push(
        "argmax",
        format!("{rows}×{v}"),
        r,
        (rows * v * 2 + rows * 4) as f64,
        0.0,
        None,
    );
    drop((logits, tokens));

    let row = (qh + 2 * kvh) * d;
    let t = rows_for_64mib(row * 2 * 2);
    let block_size = 16;
    let layout = PagedKvLayout {
        num_blocks: t.div_ceil(block_size),
        block_size,
        kv_heads: kvh,
        head_dim: d,
    };
    let mut k_cache = gpu.zeros::<u16>(layout.elements())?;
    let mut v_cache = gpu.zeros::<u16>(layout.elements())?;
    let qkv = b.random_f16(t * row)?;
    let positions = b.ints(&(0..t as i32).collect::<Vec<_>>())?;
    let mut q_out = gpu.zeros::<u16>(t * qh * d)?;
    let shape = KvAppendShape {
        tokens: t,
        q_heads: qh,
        rope_theta: m.rope_theta as f32,
    };
    let r = b.time("kv_append_rope", |_| {
        let cache = KvCacheMut {
            layout,
            k: &mut k_cache,
            v: &mut v_cache,
        };
        gpu.kv_append_rope(&shape, &qkv, &positions, &positions, &mut q_out, cache)
    })?;
    // Reads the fused QKV rows and positions/slots; writes rotated q and the k, v rows into the cache.
    push(
        "kv_append_rope",
        format!("{t} tokens"),
        r,
        (t * row * 2 * 2 + t * 8) as f64,
        0.0,
        None,
    );
    drop((k_cache, v_cache, qkv, positions, q_out));

    // Decode attention: K and V of every context token are read once.
    for contexts in decode {
        let (batch, ctx) = (contexts.len(), contexts.iter().copied().max().unwrap_or(1));
        let per_seq = ctx.div_ceil(block_size);
        let layout = PagedKvLayout {
            num_blocks: batch * per_seq,
            block_size,
            kv_heads: kvh,
            head_dim: d,
        };
        let k = gpu.zeros::<u16>(layout.elements())?;
        let vv = gpu.zeros::<u16>(layout.elements())?;
        let tables = b.ints(&(0..(batch * per_seq) as i32).collect::<Vec<_>>())?;
        let lens = b.ints(&contexts.iter().map(|&c| c as i32).collect::<Vec<_>>())?;
        let label = decode_label(contexts);
        let q = b.random_f16(batch * qh * d)?;
        let mut out = gpu.zeros::<u16>(batch * qh * d)?;
        let mut ws = DecodeWorkspace::new();
        let kv = PagedKv {
            layout,
            k: &k,
            v: &vv,
            block_tables: &tables,
            max_blocks_per_seq: per_seq,
        };
        let shape = DecodeShape {
            num_seqs: batch,
            q_heads: qh,
            max_context_len: ctx,
            partition_size: None,
        };
        let r = b.time("attention decode", |_| {
            gpu.attention_decode(&shape, &q, &kv, &lens, &mut out, &mut ws)
        })?;
        let mut timed = Vec::new();
        for part in [64usize, 128, 256, 512, 1024] {
            let shape = DecodeShape {
                partition_size: Some(part),
                ..shape
            };
            let (us, _) = b.time("attention decode sweep", |_| {
                gpu.attention_decode(&shape, &q, &kv, &lens, &mut out, &mut ws)
            })?;
            timed.push((format!("partition {part}"), us));
        }
        let (best_plan, best_us) = best_of(&timed);
        sweeps.push(PlanSweep {
            op: "attention decode".into(),
            shape: label.clone(),
            default_plan: format!(
                "partition {}",
                gpu.decode_partition(AttentionKernel::default(), &shape, kvh)
            ),
            default_us: r.0,
            best_plan,
            best_us,
            cublas_us: None,
            timed,
        });
        let tokens: usize = contexts.iter().sum();
        let bytes = (tokens * kvh * d * 2 * 2 + 2 * batch * qh * d * 2) as f64;
        let flops = (4 * tokens * qh * d) as f64;
        push("attention decode", label, r, bytes, flops, None);
    }

    // Prefill attention of one long prompt (causal): FLOP-bound.
    for chunk in [512usize, 4096] {
        let per_seq = chunk.div_ceil(block_size);
        let layout = PagedKvLayout {
            num_blocks: per_seq,
            block_size,
            kv_heads: kvh,
            head_dim: d,
        };
        let k = gpu.zeros::<u16>(layout.elements())?;
        let vv = gpu.zeros::<u16>(layout.elements())?;
        let tables = b.ints(&(0..per_seq as i32).collect::<Vec<_>>())?;
        let lens = b.ints(&[chunk as i32])?;
        let cu = b.ints(&[0, chunk as i32])?;
        let q = b.random_f16(chunk * qh * d)?;
        let mut out = gpu.zeros::<u16>(chunk * qh * d)?;
        let kv = PagedKv {
            layout,
            k: &k,
            v: &vv,
            block_tables: &tables,
            max_blocks_per_seq: per_seq,
        };
        let shape = PrefillShape {
            num_seqs: 1,
            total_tokens: chunk,
            q_heads: qh,
            max_chunk_len: chunk,
        };
        let r = b.time("attention prefill", |_| {
            gpu.attention_prefill(&shape, &q, &kv, &cu, &lens, &mut out)
        })?;
        let pairs = chunk * (chunk + 1) / 2;
        let flops = (4 * pairs * qh * d) as f64;
        let bytes = (chunk * (qh + 2 * kvh) * d * 2 + chunk * qh * d * 2) as f64;
        push(
            "attention prefill",
            format!("1 × {chunk} tokens"),
            r,
            bytes,
            flops,
            None,
        );
    }

    // GEMMs, ours against cuBLAS: decode sizes (weight-read bound) and large ones (FLOP-bound).
    for (name, n, k) in gemm_shapes(m) {
        let sizes: &[usize] = if name == "lm_head" {
            &[1, 8, 32, 64, 256]
        } else {
            &[1, 8, 16, 32, 64, 512, 2048, 8192]
        };
        let max_m = *sizes.last().expect("sizes");
        let mut ops = GemmOperands::new(&mut b, n, k, max_m, false)?;
        for &t in sizes {
            let dims = (t, n, k);
            let ours = ops.time_ours(&mut b, dims, gpu.gemm_plan(t, n, k))?;
            let (cublas, _) = ops.time_cublas(&mut b, dims)?;
            if t <= 64 {
                // The candidates calibrate tunes among (the engine runs the fastest, as the profile records it).
                let timed: Vec<(String, f64)> = (ops.time_candidates(&mut b, dims)?.into_iter())
                    .map(|(plan, us)| (format!("{} split {}", plan.tile.label(), plan.split_k), us))
                    .collect();
                let (best_plan, best_us) = best_of(&timed);
                let plan = gpu.gemm_plan(t, n, k);
                sweeps.push(PlanSweep {
                    op: format!("gemm {name}"),
                    shape: format!("{t}×{n}×{k}"),
                    default_plan: format!("{} split {}", plan.tile.label(), plan.split_k),
                    default_us: ours.0,
                    best_plan,
                    best_us,
                    cublas_us: Some(cublas),
                    timed,
                });
            }
            let bytes = ((n * k + t * k + t * n) * 2) as f64;
            let flops = (2 * t * n * k) as f64;
            push(
                &format!("gemm {name}"),
                format!("{t}×{n}×{k}"),
                ours,
                bytes,
                flops,
                Some(cublas),
            );
        }
    }
    // The gate/up projection through SiLU·mul as the engine runs it: ours with SiLU·mul in its epilogue (the plan
    // calibration would pick), cuBLAS's product then the SiLU·mul kernel.
    if let Some(&(name, n, k)) = gemm_shapes(m).iter().find(|s| s.0 == FUSED_SILU_MUL) {
        let sizes = [1, 8, 32, 64, 512];
        let mut ops = GemmOperands::new(&mut b, n, k, sizes[sizes.len() - 1], true)?;
        for t in sizes {
            let dims = (t, n, k);
            let best = ops
                .fastest_plan(&mut b, dims)?
                .unwrap_or_else(|| gpu.gemm_plan(t, n, k));
            let ours = ops.time_ours(&mut b, dims, best)?;
            let (cublas, _) = ops.time_cublas(&mut b, dims)?;
            push(
                &format!("gemm {name} + silu_mul"),
                format!("{t}×{n}×{k}"),
                ours,
                ((n * k + t * k + t * n / 2) * 2) as f64,
                (2 * t * n * k) as f64,
                Some(cublas),
            );
        }
    }
    Ok(KernelBench {
        gpu_name: gpu.info().name.clone(),
        copy_gbps,
        gemm_tflops,
        results,
        sweeps,
    })
}

impl KernelBench {
    /// A markdown report: per op and shape, time, achieved rate and its fraction of the ceilings.
    pub fn markdown(&self, model: &str) -> String {
        let mut s = format!(
            "Kernel benchmark, {model}, on {} — measured ceilings: device-to-device copy {:.0} GB/s, cuBLAS fp16 \
             GEMM {:.1} TFLOP/s (8192³). GEMMs use our default launch plan; \"gemm gate_up + silu_mul\" is the \
             gate/up projection through SiLU·mul as the engine runs it: ours with SiLU·mul in its epilogue, at the \
             fastest plan, against cuBLAS's product followed by the SiLU·mul kernel.\n\n",
            self.gpu_name, self.copy_gbps, self.gemm_tflops
        );
        s.push_str(
            "| op | shape | time µs | spread | GB/s | % of copy BW | TFLOP/s | % of GEMM peak | ours / cuBLAS |\n",
        );
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.results {
            let ratio = r.cublas_us.map_or("".to_string(), |c| format!("{:.2}×", r.us / c));
            s.push_str(&format!(
                "| {} | {} | {:.2} | {:.1}% | {:.0} | {:.0}% | {:.2} | {:.1}% | {} |\n",
                r.op,
                r.shape,
                r.us,
                100.0 * r.spread,
                r.gbps(),
                100.0 * r.gbps() / self.copy_gbps,
                r.tflops(),
                100.0 * r.tflops() / self.gemm_tflops,
                ratio
            ));
        }
        if !self.sweeps.is_empty() {
            s.push_str(
                "\nLaunch plans swept (GEMM tile × split-K; decode attention partition size): the default plan \
                 against the fastest.\n\n| op | shape | default plan | µs | fastest plan | µs | default / fastest | \
                 fastest / cuBLAS |\n|---|---|---|---:|---|---:|---:|---:|\n",
            );
            for w in &self.sweeps {
                let vs_cublas = w.cublas_us.map_or("".to_string(), |c| format!("{:.2}×", w.best_us / c));
                s.push_str(&format!(
                    "| {} | {} | {} | {:.2} | {} | {:.2} | {:.2}× | {} |\n",
                    w.op,
                    w.shape,
                    w.default_plan,
                    w.default_us,
                    w.best_plan,
                    w.best_us,
                    w.default_us / w.best_us,
                    vs_cublas
                ));
            }
        }
        let decode: Vec<&PlanSweep> = self.sweeps.iter().filter(|w| w.op == "attention decode").collect();
        if let Some(first) = decode.first() {
            let sizes: Vec<&str> = first.timed.iter().map(|(plan, _)| plan.as_str()).collect();
            s.push_str(&format!(
                "\nDecode attention at every partition size (µs; the default split's partition in the table \
                 above).\n\n| shape | {} |\n|---|{}\n",
                sizes.join(" | "),
                "---:|".repeat(sizes.len())
            ));
            for w in decode {
                let times: Vec<String> = w.timed.iter().map(|(_, us)| format!("{us:.2}")).collect();
                s.push_str(&format!("| {} | {} |\n", w.shape, times.join(" | ")));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::decode_label;

    #[test]
    fn decode_batches_are_named_uniform_or_by_mean_and_longest() {
        assert_eq!(decode_label(&[4096; 8]), "batch 8 × context 4096");
        assert_eq!(
            decode_label(&[100, 300, 2000]),
            "batch 3 of mixed contexts (mean 800, longest 2000)"
        );
    }
}
