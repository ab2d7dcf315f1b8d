//! GPU kernels against their float32 CPU references (`batchlab::gpu::reference`).
//!
//! Every test that needs a GPU is `#[ignore]`d with the reason, so CI (no GPU) lists them as skipped. On a machine
//! with an NVIDIA GPU (sm_80+), its driver and NVRTC 13:
//!
//!     cargo test --release --test gpu_kernels -- --ignored --test-threads=1
//!
//! Inputs are fresh random values each run (set BATCHLAB_TEST_SEED to replay one; the seed is printed), outputs are
//! NaN-poisoned before each launch, and results must be within a relative L2 error of 1e-2 of the reference.

use batchlab::gpu::reference as r;
use batchlab::gpu::{
    self, AttentionKernel, CompileTarget, DecodePlan, DecodeShape, DecodeWorkspace, GemmPlan, GemmTile, Gpu,
    KvAppendShape, KvCacheMut, PagedKv, PagedKvLayout, PrefillShape,
};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOL: f64 = 1e-2;

fn rng(test: &str) -> (ChaCha8Rng, u64) {
    let seed = std::env::var("BATCHLAB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: BATCHLAB_TEST_SEED={seed}");
    (ChaCha8Rng::seed_from_u64(seed), seed)
}

/// Uniform values in [lo, hi), rounded to fp16 (so the reference sees exactly what the GPU sees).
fn rand_f16(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| r::round_f16(rng.random_range(lo..hi))).collect()
}

fn gpu() -> Gpu {
    Gpu::new(0).unwrap_or_else(|e| panic!("these tests need a CUDA GPU: {e}"))
}

fn check(what: &str, got: &[f32], want: &[f32], seed: u64) -> f64 {
    let err = r::rel_l2(got, want);
    eprintln!("  {what}: rel L2 {err:.2e}");
    assert!(err <= TOL, "{what}: relative L2 error {err:.3e} > {TOL} (seed {seed})");
    err
}

// ---------------------------------------------------------------------------------------------------------------
// Without a GPU

/// Runs everywhere: on a machine without a driver `probe` must fail with a message about the driver, not panic;
/// on a GPU machine it must describe the GPU sanely.
#[test]
fn probe_reports_missing_driver_instead_of_panicking() {
    match gpu::probe() {
        Ok(devices) => {
            assert!(!devices.is_empty());
            for d in devices {
                assert!(!d.name.is_empty());
                assert!(d.compute_capability.0 >= 5, "{d:?}");
                assert!(d.sm_count > 0 && d.total_memory_bytes > 0, "{d:?}");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("driver"), "probe's error should mention the driver: {msg}");
        }
    }
    // Opening a GPU obeys the same rule.
    if let Err(e) = Gpu::new(0) {
        let msg = e.to_string();
        assert!(msg.contains("driver") || msg.contains("NVRTC"), "{msg}");
    }
}

#[test]
fn kernel_source_hash_is_stable_hex() {
    let h = gpu::kernel_source_hash();
    assert_eq!(h.len(), 64);
    assert_eq!(h, gpu::kernel_source_hash());
    assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
}

/// Needs only NVRTC (no GPU): every kernel file compiles for Ampere and Hopper; prints ptxas's resource report.
#[test]
#[ignore = "needs NVRTC (libnvrtc.so.13): cargo test --release --test gpu_kernels -- --ignored"]
fn every_kernel_compiles_with_nvrtc() {
    for arch in [80, 90] {
        let logs = gpu::compile::compile_all(CompileTarget::Cubin(arch), true).unwrap_or_else(|e| panic!("{e}"));
        for (file, log) in logs {
            let interesting: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("Compiling") || l.contains("Used") || l.contains("spill") || l.contains("arning")
                })
                .collect();
            eprintln!("sm_{arch} {file}:\n  {}", interesting.join("\n  "));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// On a GPU

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn device_info_is_sane() {
    let g = gpu();
    let i = g.info();
    eprintln!("{i:?}, target {:?}", g.target());
    assert!(i.compute_capability.0 >= 8);
    assert!(i.sm_count > 0 && i.total_memory_bytes > (1 << 30));
    assert!(i.driver_cuda_version.starts_with("13") || i.driver_cuda_version.starts_with("14"));
    let (free, total) = g.memory().unwrap();
    assert!(free > 0 && free <= total);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn rmsnorm_matches_reference() {
    let g = gpu();
    let (mut rng, seed) = rng("rmsnorm");
    for (tokens, hidden) in [(1, 896), (7, 1536), (33, 3584), (5, 14), (3, 8960)] {
        let x = rand_f16(&mut rng, tokens * hidden, -2.0, 2.0);
        let res = rand_f16(&mut rng, tokens * hidden, -2.0, 2.0);
        let w = rand_f16(&mut rng, hidden, 0.5, 1.5);
        let (dx, dw) = (g.upload_f32_as_f16(&x).unwrap(), g.upload_f32_as_f16(&w).unwrap());
        let mut out = g.nan_f16(tokens * hidden).unwrap();
        g.rmsnorm(&dx, &dw, &mut out, tokens, hidden, 1e-6).unwrap();
        let want = r::rmsnorm(&x, &w, hidden, 1e-6);
        check(
            &format!("rmsnorm {tokens}x{hidden}"),
            &g.download_f16_as_f32(&out).unwrap(),
            &want,
            seed,
        );

        let mut dres = g.upload_f32_as_f16(&res).unwrap();
        let mut out = g.nan_f16(tokens * hidden).unwrap();
        g.add_rmsnorm(&dx, &mut dres, &dw, &mut out, tokens, hidden).unwrap();
        let (want, want_res) = r::add_rmsnorm(&x, &res, &w, hidden, 1e-6);
        let tag = format!("add_rmsnorm {tokens}x{hidden}");
        check(
            &format!("{tag} out"),
            &g.download_f16_as_f32(&out).unwrap(),
            &want,
            seed,
        );
        check(
            &format!("{tag} residual"),
            &g.download_f16_as_f32(&dres).unwrap(),
            &want_res,
            seed,
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn silu_mul_matches_reference() {
    let g = gpu();
    let (mut rng, seed) = rng("silu_mul");
    // (3, 14) and (5, 6): 42 and 30 values, taken a pair at a time; (4, 14): 56 values, 8 at a time across rows.
    for (tokens, inter) in [(1, 4864), (17, 8960), (3, 14), (5, 6), (4, 14), (100, 18944)] {
        let gu = rand_f16(&mut rng, tokens * 2 * inter, -4.0, 4.0);
        let dgu = g.upload_f32_as_f16(&gu).unwrap();
        let mut out = g.nan_f16(tokens * inter).unwrap();
        g.silu_mul(&dgu, &mut out, tokens, inter).unwrap();
        let got = g.download_f16_as_f32(&out).unwrap();
        check(&format!("silu_mul {tokens}x{inter}"), &got, &r::silu_mul(&gu), seed);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn embedding_matches_reference() {
    let g = gpu();
    let (mut rng, seed) = rng("embedding");
    for (tokens, vocab, hidden) in [(1, 1000, 896), (37, 5003, 1536), (9, 50, 14)] {
        let table = rand_f16(&mut rng, vocab * hidden, -1.0, 1.0);
        let ids: Vec<i32> = (0..tokens).map(|_| rng.random_range(0..vocab as i32)).collect();
        let (dt, di) = (g.upload_f32_as_f16(&table).unwrap(), g.upload(&ids).unwrap());
        let mut out = g.nan_f16(tokens * hidden).unwrap();
        g.embedding(&di, &dt, &mut out, tokens, (vocab, hidden)).unwrap();
        let got = g.download_f16_as_f32(&out).unwrap();
        assert_eq!(
            got,
            r::embedding(&ids, &table, hidden),
            "embedding {tokens}x{hidden} (seed {seed})"
        );
    }
    // An id outside the vocabulary gives a NaN row, not a stray read.
    let table = rand_f16(&mut rng, 10 * 16, -1.0, 1.0);
    let (dt, di) = (g.upload_f32_as_f16(&table).unwrap(), g.upload(&[3, 10, -1]).unwrap());
    let mut out = g.nan_f16(3 * 16).unwrap();
    g.embedding(&di, &dt, &mut out, 3, (10, 16)).unwrap();
    let got = g.download_f16_as_f32(&out).unwrap();
    assert_eq!(&got[..16], &table[48..64]);
    assert!(got[16..].iter().all(|v| v.is_nan()));
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn argmax_matches_reference() {
    let g = gpu();
    let (mut rng, seed) = rng("argmax");
    for (rows, vocab) in [(1, 151_936), (5, 151_936), (3, 1000), (4, 37)] {
        let mut logits = rand_f16(&mut rng, rows * vocab, -10.0, 10.0);
        // Plant a tie for the maximum in row 0: the smaller index must win.
        let (a, b) = (vocab / 3, vocab - 1);
        logits[a] = 11.0;
        logits[b] = 11.0;
        let dl = g.upload_f32_as_f16(&logits).unwrap();
        let mut out = g.upload(&vec![-7i32; rows]).unwrap();
        g.argmax(&dl, &mut out, rows, vocab).unwrap();
        let got = g.download(&out).unwrap();
        assert_eq!(got, r::argmax(&logits, vocab), "argmax {rows}x{vocab} (seed {seed})");
        assert_eq!(got[0], a as i32);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn staged_copies_land_whole_while_the_ring_wraps() {
    let g = gpu();
    let (mut rng, seed) = rng("staged copies");
    // A ring of 100 values: the copies below wrap it many times, each queued without waiting, so a region written
    // again before its earlier copy ran would show up as a wrong prefix.
    let mut staging = g.staging(100).unwrap();
    let mut devs: Vec<_> = (0..4).map(|_| g.upload(&vec![-1i32; 64]).unwrap()).collect();
    let mut want = vec![vec![-1i32; 64]; 4];
    for round in 0..50 {
        for (d, (dev, want)) in devs.iter_mut().zip(&mut want).enumerate() {
            let n = rng.random_range(0..=64usize);
            let host: Vec<i32> = (0..n).map(|i| (round * 1000 + d * 100 + i) as i32).collect();
            g.write_prefix_staged(&mut staging, &host, dev).unwrap();
            want[..n].copy_from_slice(&host);
        }
    }
    for (d, (dev, want)) in devs.iter().zip(&want).enumerate() {
        assert_eq!(&g.download(dev).unwrap(), want, "buffer {d} (seed {seed})");
    }
    // More than the ring holds, or than the buffer holds, is refused.
    assert!(g.write_prefix_staged(&mut staging, &[0; 101], &mut devs[0]).is_err());
    assert!(g.write_prefix_staged(&mut staging, &[0; 65], &mut devs[0]).is_err());
}

/// A paged cache full of random values, each sequence owning a random set of distinct blocks.
struct RandomCache {
    layout: PagedKvLayout,
    k: Vec<f32>,
    v: Vec<f32>,
    /// `[num_seqs, max_blocks_per_seq]`, unused entries -1.
    tables: Vec<i32>,
    max_blocks_per_seq: usize,
}

impl RandomCache {
    fn new(rng: &mut ChaCha8Rng, ctx_lens: &[usize], block_size: usize, kv_heads: usize, head_dim: usize) -> Self {
        let max_blocks_per_seq = ctx_lens
            .iter()
            .map(|c| c.div_ceil(block_size))
            .max()
            .unwrap_or(1)
            .max(1);
        let used: usize = ctx_lens.iter().map(|c| c.div_ceil(block_size)).sum();
        let num_blocks = used + 3; // a few blocks nobody owns
        let layout = PagedKvLayout {
            num_blocks,
            block_size,
            kv_heads,
            head_dim,
        };
        let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
        ids.shuffle(rng);
        let mut tables = vec![-1; ctx_lens.len() * max_blocks_per_seq];
        let mut next = ids.into_iter();
        for (s, c) in ctx_lens.iter().enumerate() {
            for b in 0..c.div_ceil(block_size) {
                tables[s * max_blocks_per_seq + b] = next.next().unwrap();
            }
        }
        let k = rand_f16(rng, layout.elements(), -1.0, 1.0);
        let v = rand_f16(rng, layout.elements(), -1.0, 1.0);
        Self {
            layout,
            k,
            v,
            tables,
            max_blocks_per_seq,
        }
    }

    /// Sequence s's first `len` tokens, contiguous: (k, v) each `[len, kv_heads, head_dim]`.
    fn gather(&self, s: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
        let row = self.layout.kv_heads * self.layout.head_dim;
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for t in 0..len {
            let blk = self.tables[s * self.max_blocks_per_seq + t / self.layout.block_size] as usize;
            let slot = blk * self.layout.block_size + t % self.layout.block_size;
            k.extend_from_slice(&self.k[slot * row..][..row]);
            v.extend_from_slice(&self.v[slot * row..][..row]);
        }
        (k, v)
    }
}

/// The cache on the device, borrowed as a kernel argument by `kv()`.
struct DeviceCache {
    layout: PagedKvLayout,
    k: cudarc::driver::CudaSlice<u16>,
    v: cudarc::driver::CudaSlice<u16>,
    tables: cudarc::driver::CudaSlice<i32>,
    max_blocks_per_seq: usize,
}

impl DeviceCache {
    fn upload(g: &Gpu, c: &RandomCache) -> Self {
        Self {
            layout: c.layout,
            k: g.upload_f32_as_f16(&c.k).unwrap(),
            v: g.upload_f32_as_f16(&c.v).unwrap(),
            tables: g.upload(&c.tables).unwrap(),
            max_blocks_per_seq: c.max_blocks_per_seq,
        }
    }

    fn kv(&self) -> PagedKv<'_> {
        PagedKv {
            layout: self.layout,
            k: &self.k,
            v: &self.v,
            block_tables: &self.tables,
            max_blocks_per_seq: self.max_blocks_per_seq,
        }
    }
}

/// (q heads, kv heads, head dim): Qwen2.5-0.5B, -1.5B, -7B, a group of 8 (-3B), and one of 16.
const HEAD_CONFIGS: [(usize, usize, usize); 5] = [(14, 2, 64), (12, 2, 128), (28, 4, 128), (16, 2, 128), (32, 2, 64)];

/// The attention implementations that support a GQA group of `group` query heads per kv head.
fn attention_kernels(group: usize) -> Vec<AttentionKernel> {
    let mut k = vec![AttentionKernel::TensorCore];
    if group <= 8 {
        k.push(AttentionKernel::Simt);
    }
    k
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn kv_append_rope_matches_reference() {
    let g = gpu();
    let (mut rng, seed) = rng("kv_append_rope");
    for (qh, kvh, d) in HEAD_CONFIGS {
        for tokens in [1usize, 19] {
            let theta = if d == 64 { 1_000_000.0 } else { 10_000.0 };
            let layout = PagedKvLayout {
                num_blocks: 7,
                block_size: 16,
                kv_heads: kvh,
                head_dim: d,
            };
            let qkv = rand_f16(&mut rng, tokens * (qh + 2 * kvh) * d, -2.0, 2.0);
            let positions: Vec<i32> = (0..tokens).map(|_| rng.random_range(0..5000)).collect();
            let mut slots: Vec<i32> = (0..layout.num_slots() as i32).collect();
            slots.shuffle(&mut rng);
            slots.truncate(tokens);
            if tokens > 1 {
                slots[tokens / 2] = -1; // a padding token: its k/v must not be written
            }
            let k0 = rand_f16(&mut rng, layout.elements(), -1.0, 1.0);
            let v0 = rand_f16(&mut rng, layout.elements(), -1.0, 1.0);
            let (mut dk, mut dv) = (g.upload_f32_as_f16(&k0).unwrap(), g.upload_f32_as_f16(&v0).unwrap());
            let mut q_out = g.nan_f16(tokens * qh * d).unwrap();
            let shape = KvAppendShape {
                tokens,
                q_heads: qh,
                rope_theta: theta,
            };
            g.kv_append_rope(
                &shape,
                &g.upload_f32_as_f16(&qkv).unwrap(),
                &g.upload(&positions).unwrap(),
                &g.upload(&slots).unwrap(),
                &mut q_out,
                KvCacheMut {
                    layout,
                    k: &mut dk,
                    v: &mut dv,
                },
            )
            .unwrap();
            let (wq, wk, wv) = r::qkv_rope(&qkv, &positions, (qh, kvh, d), theta);
            let tag = format!("kv_append_rope h{qh}/{kvh} d{d} t{tokens}");
            check(&format!("{tag} q"), &g.download_f16_as_f32(&q_out).unwrap(), &wq, seed);
            let (gk, gv) = (g.download_f16_as_f32(&dk).unwrap(), g.download_f16_as_f32(&dv).unwrap());
            let (mut ek, mut ev) = (k0.clone(), v0.clone());
            let row = kvh * d;
            for (t, &s) in slots.iter().enumerate() {
                if s >= 0 {
                    let s = s as usize;
                    ek[s * row..][..row].copy_from_slice(&wk[t * row..][..row]);
                    ev[s * row..][..row].copy_from_slice(&wv[t * row..][..row]);
                }
            }
            check(&format!("{tag} k cache"), &gk, &ek, seed);
            assert_eq!(gv, ev, "{tag}: v cache (seed {seed})");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn attention_decode_matches_reference() {
    let g = gpu();
    let (mut rng, seed) = rng("attention_decode");
    let mut ws = DecodeWorkspace::new();
    let batches: [&[usize]; 3] = [&[1], &[17, 256, 257, 5], &[1000, 3001, 33, 512]];
    for (qh, kvh, d) in HEAD_CONFIGS {
        for (bi, ctx) in batches.iter().enumerate() {
            let block_size = if bi == 1 { 32 } else { 16 };
            let cache = RandomCache::new(&mut rng, ctx, block_size, kvh, d);
            let dc = DeviceCache::upload(&g, &cache);
            let s = ctx.len();
            let q = rand_f16(&mut rng, s * qh * d, -3.0, 3.0);
            let lens: Vec<i32> = ctx.iter().map(|&c| c as i32).collect();
            let (dq, dl) = (g.upload_f32_as_f16(&q).unwrap(), g.upload(&lens).unwrap());
            let mut want = Vec::new();
            for (i, &c) in ctx.iter().enumerate() {
                let (k, v) = cache.gather(i, c);
                want.extend(r::attention(&q[i * qh * d..][..qh * d], &k, &v, c - 1, (qh, kvh, d)));
            }
            // Automatic partitioning, the kernel's largest partition, and an odd one (many partitions, ragged ends).
            for kernel in attention_kernels(qh / kvh) {
                for partition_size in [None, Some(kernel.max_decode_partition()), Some(33)] {
                    let mut out = g.nan_f16(s * qh * d).unwrap();
                    let max_context_len = *ctx.iter().max().unwrap();
                    let shape = DecodeShape {
                        num_seqs: s,
                        q_heads: qh,
                        max_context_len,
                        partition_size,
                    };
                    g.attention_decode_with(kernel, &shape, &dq, &dc.kv(), &dl, &mut out, &mut ws)
                        .unwrap();
                    let got = g.download_f16_as_f32(&out).unwrap();
                    let tag = format!(
                        "decode {kernel:?} h{qh}/{kvh} d{d} ctx {ctx:?} bs{block_size} part {partition_size:?}"
                    );
                    check(&tag, &got, &want, seed);
                }
            }
            // As a decode graph launches it: a grid for more partitions than the step uses, the split read from
            // the device (a few partitions of 128 and one of the kernel's largest).
            let max_context_len = *ctx.iter().max().unwrap();
            let shape = DecodeShape {
                num_seqs: s,
                q_heads: qh,
                max_context_len,
                partition_size: None,
            };
            for size in [128usize, AttentionKernel::TensorCore.max_decode_partition()] {
                let parts = max_context_len.div_ceil(size);
                let split = g.upload(&[parts as i32, size as i32]).unwrap();
                let plan = DecodePlan {
                    split: &split,
                    max_parts: parts + 5,
                };
                let mut out = g.nan_f16(s * qh * d).unwrap();
                g.attention_decode_planned(&shape, plan, &dq, &dc.kv(), &dl, &mut out, &mut ws)
                    .unwrap();
                let got = g.download_f16_as_f32(&out).unwrap();
                let tag = format!(
                    "planned decode h{qh}/{kvh} d{d} ctx {ctx:?} {parts} x {size} of {}",
                    parts + 5
                );
                check(&tag, &got, &want, seed);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn attention_prefill_matches_reference() {
    let g = gpu();
    let (mut rng, seed) = rng("attention_prefill");
    // (existing context, new chunk) per sequence
    let batches: [&[(usize, usize)]; 3] = [
        &[(0, 1)],
        &[(0, 37), (100, 45), (5, 200)],
        &[(513, 64), (0, 129), (31, 1)],
    ];
    for (qh, kvh, d) in HEAD_CONFIGS {
        for seqs in batches {
            let ctx: Vec<usize> = seqs.iter().map(|(p, c)| p + c).collect();
            let cache = RandomCache::new(&mut rng, &ctx, 16, kvh, d);
            let dc = DeviceCache::upload(&g, &cache);
            let total: usize = seqs.iter().map(|(_, c)| c).sum();
            let q = rand_f16(&mut rng, total * qh * d, -3.0, 3.0);
            let mut cu = vec![0i32];
            for (_, c) in seqs.iter() {
                cu.push(cu.last().unwrap() + *c as i32);
            }
            let lens: Vec<i32> = ctx.iter().map(|&c| c as i32).collect();
            let shape = PrefillShape {
                num_seqs: seqs.len(),
                total_tokens: total,
                q_heads: qh,
                max_chunk_len: seqs.iter().map(|(_, c)| *c).max().unwrap(),
            };
            let (dq, dcu, dl) = (
                g.upload_f32_as_f16(&q).unwrap(),
                g.upload(&cu).unwrap(),
                g.upload(&lens).unwrap(),
            );
            let mut want = Vec::new();
            for (i, &(prefix, chunk)) in seqs.iter().enumerate() {
                let (k, v) = cache.gather(i, prefix + chunk);
                let qs = &q[cu[i] as usize * qh * d..][..chunk * qh * d];
                want.extend(r::attention(qs, &k, &v, prefix, (qh, kvh, d)));
            }
            for kernel in attention_kernels(qh / kvh) {
                let mut out = g.nan_f16(total * qh * d).unwrap();
                g.attention_prefill_with(kernel, &shape, &dq, &dc.kv(), &dcu, &dl, &mut out)
                    .unwrap();
                let got = g.download_f16_as_f32(&out).unwrap();
                check(
                    &format!("prefill {kernel:?} h{qh}/{kvh} d{d} {seqs:?}"),
                    &got,
                    &want,
                    seed,
                );
            }
        }
    }
}

/// The automatic plan of (m, n, k), then every tile with and without split-K.
fn every_plan(g: &Gpu, (m, n, k): (usize, usize, usize)) -> Vec<GemmPlan> {
    let mut plans = vec![g.gemm_plan(m, n, k)];
    for tile in GemmTile::ALL {
        for split_k in [1, 3] {
            plans.push(GemmPlan { tile, split_k });
        }
    }
    plans
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn gemm_silu_mul_matches_reference() {
    let g = gpu();
    let (mut rng, seed) = rng("gemm_silu_mul");
    // (rows, weight rows = 2 · intermediate, k): qwen2.5-0.5b's gate/up at one token, odd sizes, skinny and tiled.
    let shapes = [
        (1, 9728, 896),
        (7, 1000, 72),
        (33, 264, 1032),
        (64, 3000, 1536),
        (130, 136, 1000),
        (300, 1030, 264),
    ];
    for (m, n, k) in shapes {
        let x = rand_f16(&mut rng, m * k, -1.0, 1.0);
        let w = rand_f16(&mut rng, n * k, -1.0, 1.0);
        let want = r::silu_mul(&r::gemm(&x, &w, None, (m, n, k)));
        let (dx, dw) = (g.upload_f32_as_f16(&x).unwrap(), g.upload_f32_as_f16(&w).unwrap());
        for plan in every_plan(&g, (m, n, k)) {
            let mut y = g.nan_f16(m * n / 2).unwrap();
            g.gemm_silu_mul_with(&dx, &dw, &mut y, (m, n, k), plan).unwrap();
            let tag = format!("gemm_silu_mul {m}x{n}x{k} {plan:?}");
            check(&tag, &g.download_f16_as_f32(&y).unwrap(), &want, seed);
        }
    }
    let mut y = g.nan_f16(8).unwrap();
    let err = g
        .gemm_silu_mul_with(
            &g.nan_f16(8).unwrap(),
            &g.nan_f16(24).unwrap(),
            &mut y,
            (1, 3, 8),
            g.gemm_plan(1, 3, 8),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be even"), "{err}");
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn gemm_matches_reference() {
    let g = gpu();
    let (mut rng, seed) = rng("gemm");
    let shapes = [
        (1, 896, 896),
        (7, 4864, 896),
        (16, 1000, 72),
        (33, 1000, 72),
        (3, 151, 4864),
        (50, 264, 1032),
        (130, 136, 1000),
        (257, 1536, 1536),
        (768, 2816, 264),
    ];
    for (i, (m, n, k)) in shapes.into_iter().enumerate() {
        let x = rand_f16(&mut rng, m * k, -1.0, 1.0);
        let w = rand_f16(&mut rng, n * k, -1.0, 1.0);
        let bias = (i % 2 == 0).then(|| rand_f16(&mut rng, n, -1.0, 1.0));
        let want = r::gemm(&x, &w, bias.as_deref(), (m, n, k));
        let (dx, dw) = (g.upload_f32_as_f16(&x).unwrap(), g.upload_f32_as_f16(&w).unwrap());
        let db = bias.as_ref().map(|b| g.upload_f32_as_f16(b).unwrap());
        for plan in every_plan(&g, (m, n, k)) {
            let mut y = g.nan_f16(m * n).unwrap();
            g.gemm_with(&dx, &dw, db.as_ref(), &mut y, (m, n, k), plan).unwrap();
            let tag = format!("gemm {m}x{n}x{k} {plan:?} bias={}", bias.is_some());
            check(&tag, &g.download_f16_as_f32(&y).unwrap(), &want, seed);
        }
        if bias.is_none() {
            let mut y = g.nan_f16(m * n).unwrap();
            g.gemm_cublas(&dx, &dw, &mut y, (m, n, k)).unwrap();
            check(
                &format!("cublas {m}x{n}x{k}"),
                &g.download_f16_as_f32(&y).unwrap(),
                &want,
                seed,
            );
        }
    }
    let mut y = g.nan_f16(4).unwrap();
    let err = g
        .gemm(
            &g.nan_f16(12).unwrap(),
            &g.nan_f16(12).unwrap(),
            None,
            &mut y,
            (2, 2, 6),
        )
        .unwrap_err();
    assert!(err.to_string().contains("multiple of 8"), "{err}");
}

/// Not a pass/fail test: times each kernel at a few serving shapes (median of 20 after 5 warm-ups) and prints
/// achieved bandwidth or FLOP/s, to see where the kernels stand.
#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu_kernels -- --ignored"]
fn kernel_timings_report() {
    let g = gpu();
    let (mut rng, _) = rng("timings");
    eprintln!("device: {} ({} SMs)", g.info().name, g.info().sm_count);
    let report = |name: String, t: gpu::Timing, bytes: f64, flops: f64| {
        let s = t.median_ms * 1e-3;
        eprintln!(
            "  {name:<44} {:>9.1} us {:>7.0} GB/s {:>7.1} TFLOP/s (min {:.1}, max {:.1})",
            t.median_ms * 1e3,
            bytes / s * 1e-9,
            flops / s * 1e-12,
            t.min_ms * 1e3,
            t.max_ms * 1e3
        );
    };
    // Copy ceiling: a device-to-device copy of 512 MiB (bytes read + written).
    {
        let n = 256 << 20;
        let a = g.zeros::<u16>(n).unwrap();
        let mut b = g.zeros::<u16>(n).unwrap();
        let t = g.time(3, 10, |_| Ok(g.stream().memcpy_dtod(&a, &mut b)?)).unwrap();
        report("memcpy dtod 512 MiB".into(), t, 2.0 * 2.0 * n as f64, 0.0);
    }
    // GEMMs rotate among 4 input sets so the weights are not all sitting in L2. Ours (automatic plan) vs cuBLAS.
    let gemm_shapes = [
        (1, 4864, 896),
        (1, 1536, 8960),
        (8, 2048, 1536),
        (16, 1536, 1536),
        (32, 4864, 896),
        (64, 8960, 1536),
        (64, 1536, 8960),
        (256, 1536, 8960),
        (1024, 4608, 3584),
        (2048, 4096, 4096),
    ];
    for (m, n, k) in gemm_shapes {
        let xs: Vec<_> = (0..4)
            .map(|_| g.upload_f32_as_f16(&rand_f16(&mut rng, m * k, -1.0, 1.0)).unwrap())
            .collect();
        let ws: Vec<_> = (0..4)
            .map(|_| g.upload_f32_as_f16(&rand_f16(&mut rng, n * k, -1.0, 1.0)).unwrap())
            .collect();
        let mut y = g.nan_f16(m * n).unwrap();
        let bytes = 2.0 * (m * k + n * k + m * n) as f64;
        let flops = 2.0 * (m * n * k) as f64;
        let plan = g.gemm_plan(m, n, k);
        let ours = g
            .time(5, 20, |i| {
                g.gemm_with(&xs[i % 4], &ws[i % 4], None, &mut y, (m, n, k), plan)
            })
            .unwrap();
        let theirs = g
            .time(5, 20, |i| g.gemm_cublas(&xs[i % 4], &ws[i % 4], &mut y, (m, n, k)))
            .unwrap();
        let ratio = ours.median_ms / theirs.median_ms;
        report(
            format!("gemm {m}x{n}x{k} {:?}/{} ({ratio:.2}x cuBLAS)", plan.tile, plan.split_k),
            ours,
            bytes,
            flops,
        );
        report(format!("cublas {m}x{n}x{k}"), theirs, bytes, flops);
        if m <= 64 {
            // Every plan, to see how far the automatic one is from the best.
            let mut best = (f64::INFINITY, plan);
            for tile in GemmTile::ALL {
                for split_k in [1, 2, 4, 8] {
                    let p = GemmPlan { tile, split_k };
                    let t = g
                        .time(3, 10, |i| {
                            g.gemm_with(&xs[i % 4], &ws[i % 4], None, &mut y, (m, n, k), p)
                        })
                        .unwrap();
                    if t.median_ms < best.0 {
                        best = (t.median_ms, p);
                    }
                }
            }
            eprintln!(
                "    best plan {:?}/{}: {:.1} us",
                best.1.tile,
                best.1.split_k,
                best.0 * 1e3
            );
        }
    }
    let mut ws = DecodeWorkspace::new();
    for (qh, kvh, d, batch, ctx) in [
        (12, 2, 128, 1, 4096),
        (12, 2, 128, 64, 1024),
        (14, 2, 64, 256, 512),
        (28, 4, 128, 32, 4096),
    ] {
        let lens = vec![ctx; batch];
        let dc = DeviceCache::upload(&g, &RandomCache::new(&mut rng, &lens, 16, kvh, d));
        let q = g
            .upload_f32_as_f16(&rand_f16(&mut rng, batch * qh * d, -1.0, 1.0))
            .unwrap();
        let dl = g.upload(&lens.iter().map(|&c| c as i32).collect::<Vec<_>>()).unwrap();
        let mut out = g.nan_f16(batch * qh * d).unwrap();
        let shape = DecodeShape {
            num_seqs: batch,
            q_heads: qh,
            max_context_len: ctx,
            partition_size: None,
        };
        let kv = dc.kv();
        let bytes = 2.0 * 2.0 * (batch * ctx * kvh * d) as f64;
        let flops = 4.0 * (batch * ctx * qh * d) as f64;
        for kernel in attention_kernels(qh / kvh) {
            let t = g
                .time(5, 20, |_| {
                    g.attention_decode_with(kernel, &shape, &q, &kv, &dl, &mut out, &mut ws)
                })
                .unwrap();
            report(
                format!("decode {kernel:?} h{qh}/{kvh} d{d} batch {batch} ctx {ctx}"),
                t,
                bytes,
                flops,
            );
        }
    }
    for (qh, kvh, d, chunk, prefix) in [
        (12, 2, 128, 512, 0),
        (12, 2, 128, 2048, 0),
        (28, 4, 128, 4096, 0),
        (14, 2, 64, 256, 1024),
    ] {
        let ctx = [prefix + chunk];
        let dc = DeviceCache::upload(&g, &RandomCache::new(&mut rng, &ctx, 16, kvh, d));
        let q = g
            .upload_f32_as_f16(&rand_f16(&mut rng, chunk * qh * d, -1.0, 1.0))
            .unwrap();
        let (cu, dl) = (
            g.upload(&[0, chunk as i32]).unwrap(),
            g.upload(&[ctx[0] as i32]).unwrap(),
        );
        let mut out = g.nan_f16(chunk * qh * d).unwrap();
        let shape = PrefillShape {
            num_seqs: 1,
            total_tokens: chunk,
            q_heads: qh,
            max_chunk_len: chunk,
        };
        let kv = dc.kv();
        let pairs = (chunk * prefix + chunk * (chunk + 1) / 2) as f64;
        for kernel in attention_kernels(qh / kvh) {
            let t = g
                .time(3, 10, |_| {
                    g.attention_prefill_with(kernel, &shape, &q, &kv, &cu, &dl, &mut out)
                })
                .unwrap();
            let name = format!("prefill {kernel:?} h{qh}/{kvh} d{d} chunk {chunk} prefix {prefix}");
            report(name, t, 0.0, 4.0 * pairs * (qh * d) as f64);
        }
    }
    for (tokens, hidden, inter) in [(1, 1536, 8960), (256, 1536, 8960), (4096, 3584, 18944)] {
        let x = g
            .upload_f32_as_f16(&rand_f16(&mut rng, tokens * hidden, -1.0, 1.0))
            .unwrap();
        let mut res = g
            .upload_f32_as_f16(&rand_f16(&mut rng, tokens * hidden, -1.0, 1.0))
            .unwrap();
        let w = g.upload_f32_as_f16(&rand_f16(&mut rng, hidden, 0.5, 1.5)).unwrap();
        let mut out = g.nan_f16(tokens * hidden).unwrap();
        let t = g
            .time(5, 20, |_| g.add_rmsnorm(&x, &mut res, &w, &mut out, tokens, hidden))
            .unwrap();
        report(
            format!("add_rmsnorm {tokens}x{hidden}"),
            t,
            2.0 * 4.0 * (tokens * hidden) as f64,
            0.0,
        );
        let gu = g
            .upload_f32_as_f16(&rand_f16(&mut rng, tokens * 2 * inter, -1.0, 1.0))
            .unwrap();
        let mut o = g.nan_f16(tokens * inter).unwrap();
        let t = g.time(5, 20, |_| g.silu_mul(&gu, &mut o, tokens, inter)).unwrap();
        report(
            format!("silu_mul {tokens}x{inter}"),
            t,
            2.0 * 3.0 * (tokens * inter) as f64,
            0.0,
        );
    }
    for rows in [1, 64, 256] {
        let vocab = 151_936;
        let l = g
            .upload_f32_as_f16(&rand_f16(&mut rng, rows * vocab, -1.0, 1.0))
            .unwrap();
        let mut o = g.zeros::<i32>(rows).unwrap();
        let t = g.time(5, 20, |_| g.argmax(&l, &mut o, rows, vocab)).unwrap();
        report(format!("argmax {rows}x{vocab}"), t, 2.0 * (rows * vocab) as f64, 0.0);
    }
}
