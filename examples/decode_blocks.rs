//! An experiment, not the cost model: decode attention priced by playing its launch's blocks through the GPU's
//! block slots, fitted to a profile's tables and scored on its offset grid.
//!
//! The cost model reads a batch of mixed context lengths from the uniform batch × context table
//! (`CalibratedCost::decode_of`: the geometric mean of two readings, scaled by a line fitted to the profile's mixed
//! points). This example asks whether a model of what the kernel does reads them better. A launch has a block for
//! every (kv head, sequence, partition) up to the longest context's partitions, dispatched in that order (kv head
//! fastest) to `SMs × RESIDENT` slots as slots free up. A block with work waits `alpha`, then streams its K and V
//! (its tokens rounded up to whole rounds of its warps' 16-token chunks, as the kernel walks them) at
//! `1 / (1 / r + k / bw)` bytes per µs while `k` blocks stream at once (a block's own pace `r`, slowed as the
//! blocks share the card's bandwidth `bw`), then `eps`; the last block of a sequence's partitions also merges them
//! (`mu + mu_p` per partition). A block past its sequence's partitions takes `alpha_e` and its epilogue (it runs
//! the kernel on no tokens). The launch takes `launch` plus the last block's end. The eight parameters are fitted
//! (Nelder–Mead on squared log errors) to the uniform table (contexts of 64 tokens and more) and the profile's
//! mixed points (weighted five to one), then the offset grid (`<model>.offset.json` beside the profile, measured
//! by `calibrate --check`) is predicted: median, p95 and largest relative error.
//!
//! Usage (a few minutes a profile, release build):
//!
//!     cargo run --release --example decode_blocks -- calibration/h100-80gb-hbm3/qwen2.5-1.5b.json
//!
//! Results of 2026-12-07 are in `docs/decode-blocks.md`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::path::Path;

use batchlab::calib::Profile;
use batchlab::metrics::percentile_sorted;

/// Blocks of the decode kernel an SM holds at once (registers and shared memory allow two on an H100 or H200, for
/// heads of 64 and of 128 values).
const RESIDENT: u32 = 2;
/// Weight of a mixed point against a uniform one in the fit.
const MIXED_WEIGHT: f64 = 5.0;

/// One decode launch's geometry, from a profile.
struct Launch {
    sms: u32,
    kv_heads: u64,
    /// K and V bytes of one token for one kv head.
    token_bytes: f64,
    /// Tokens a block's warps take a round between them.
    round: u32,
}

impl Launch {
    fn of(p: &Profile) -> Launch {
        let m = &p.fingerprint.model;
        Launch {
            sms: p.fingerprint.sm_count,
            kv_heads: m.kv_heads as u64,
            token_bytes: (m.head_dim * 2 * 2) as f64,
            round: batchlab::gpu::ops::decode_round_tokens(m.head_dim as usize) as u32,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Params {
    launch: f64,
    alpha: f64,
    /// Bytes per µs.
    r: f64,
    /// Bytes per µs.
    bw: f64,
    eps: f64,
    mu: f64,
    mu_p: f64,
    alpha_e: f64,
}

impl Params {
    /// From the fit's coordinates: the logarithms of the parameters (r and bw in GB/s).
    fn from_logs(x: &[f64]) -> Params {
        let v: Vec<f64> = x.iter().map(|v| v.exp()).collect();
        Params {
            launch: v[0],
            alpha: v[1],
            r: v[2] * 1e3,
            bw: v[3] * 1e3,
            eps: v[4],
            mu: v[5],
            mu_p: v[6],
            alpha_e: v[7],
        }
    }
}

/// An event at time (or service) `.0` for block `.1`, the earliest first out of a `BinaryHeap`.
#[derive(PartialEq)]
struct Due(f64, usize);
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.total_cmp(&self.0)
    }
}

/// A block of the launch: its (sequence, kv head) group, the bytes it streams (0: past its sequence's context).
struct Block {
    group: usize,
    bytes: f64,
}

/// The launch's time in µs for decodes at `contexts`.
fn launch_us(l: &Launch, p: &Params, contexts: &[u32]) -> f64 {
    let seqs = contexts.len() as u64;
    let longest = contexts.iter().copied().max().unwrap_or(1).max(1);
    let part = batchlab::model::decode_partition(l.sms, l.kv_heads, seqs, u64::from(longest)) as u32;
    let parts = longest.div_ceil(part).max(1);
    let mut blocks = Vec::new();
    for z in 0..parts {
        for (s, &c) in contexts.iter().enumerate() {
            for h in 0..l.kv_heads as usize {
                let tokens = c.saturating_sub(z * part).min(part);
                let walked = tokens.div_ceil(l.round) * l.round;
                blocks.push(Block {
                    group: s * l.kv_heads as usize + h,
                    bytes: f64::from(walked) * l.token_bytes,
                });
            }
        }
    }
    let mut unmerged = vec![parts; contexts.len() * l.kv_heads as usize];
    // Processor sharing: every streaming block gets the same rate, so a block ends when the service each has had
    // since the launch reaches what it had when it began streaming plus its bytes.
    let (mut t, mut service, mut streaming_now) = (0.0f64, 0.0f64, 0usize);
    let mut timed: BinaryHeap<Due> = BinaryHeap::new();
    let mut streaming: BinaryHeap<Due> = BinaryHeap::new();
    let mut streamed = vec![false; blocks.len()];
    // Block i taking a slot at t: its prologue's end.
    let start = |i: usize, t: f64| Due(t + if blocks[i].bytes > 0.0 { p.alpha } else { p.alpha_e }, i);
    let slots = (l.sms * RESIDENT) as usize;
    let mut next = blocks.len().min(slots);
    timed.extend((0..next).map(|i| start(i, 0.0)));
    // The epilogue of block i, which has just finished its work at t.
    let epilogue = |i: usize, unmerged: &mut Vec<u32>| {
        let g = blocks[i].group;
        unmerged[g] -= 1;
        p.eps
            + if parts > 1 && unmerged[g] == 0 {
                p.mu + p.mu_p * f64::from(parts)
            } else {
                0.0
            }
    };
    let mut done = 0;
    while done < blocks.len() {
        let rate = 1.0 / (1.0 / p.r + streaming_now as f64 / p.bw);
        let stream_end = streaming.peek().map(|d| t + (d.0 - service) / rate);
        let timed_end = timed.peek().map(|d| d.0);
        if stream_end.is_some_and(|s| timed_end.is_none_or(|e| s < e)) {
            let d = streaming.pop().expect("peeked");
            t = stream_end.expect("peeked");
            service = d.0;
            streaming_now -= 1;
            timed.push(Due(t + epilogue(d.1, &mut unmerged), d.1));
            continue;
        }
        let d = timed.pop().expect("a block is always due while some are not done");
        if streaming_now > 0 {
            service += rate * (d.0 - t);
        }
        t = d.0;
        let i = d.1;
        if blocks[i].bytes > 0.0 && !streamed[i] {
            streamed[i] = true;
            streaming_now += 1;
            streaming.push(Due(service + blocks[i].bytes, i));
        } else if blocks[i].bytes == 0.0 && !streamed[i] {
            streamed[i] = true;
            timed.push(Due(t + epilogue(i, &mut unmerged), i));
        } else {
            done += 1;
            if next < blocks.len() {
                timed.push(start(next, t));
                next += 1;
            }
        }
    }
    p.launch + t
}

/// Median, p95 and largest of |e|, in percent (the percentiles as `check-profile` takes them).
fn summary(errors: &[f64]) -> String {
    let mut e: Vec<f64> = errors.iter().map(|x| x.abs() * 100.0).collect();
    e.sort_by(f64::total_cmp);
    let q = |f: f64| percentile_sorted(&e, f);
    format!("{:.2}% / {:.2}% / {:.2}%", q(50.0), q(95.0), e[e.len() - 1])
}

/// Nelder–Mead from x0 (steps of 0.3 in each coordinate), `iters` iterations.
fn minimise(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], iters: usize) -> Vec<f64> {
    let n = x0.len();
    let mut pts: Vec<Vec<f64>> = (0..=n)
        .map(|i| {
            let mut x = x0.to_vec();
            if i > 0 {
                x[i - 1] += 0.3;
            }
            x
        })
        .collect();
    let mut vals: Vec<f64> = pts.iter().map(|x| f(x)).collect();
    for _ in 0..iters {
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|&a, &b| vals[a].total_cmp(&vals[b]));
        pts = order.iter().map(|&i| pts[i].clone()).collect();
        vals = order.iter().map(|&i| vals[i]).collect();
        let centre: Vec<f64> = (0..n)
            .map(|j| pts[..n].iter().map(|x| x[j]).sum::<f64>() / n as f64)
            .collect();
        let along = |a: f64| -> Vec<f64> { (0..n).map(|j| centre[j] + a * (pts[n][j] - centre[j])).collect() };
        let reflected = along(-1.0);
        let fr = f(&reflected);
        let (x, fx) = if fr < vals[0] {
            let expanded = along(-2.0);
            let fe = f(&expanded);
            if fe < fr { (expanded, fe) } else { (reflected, fr) }
        } else if fr < vals[n - 1] {
            (reflected, fr)
        } else {
            let contracted = along(0.5);
            let fc = f(&contracted);
            if fc < vals[n] {
                (contracted, fc)
            } else {
                for i in 1..=n {
                    pts[i] = (0..n).map(|j| pts[0][j] + 0.5 * (pts[i][j] - pts[0][j])).collect();
                    vals[i] = f(&pts[i]);
                }
                continue;
            }
        };
        pts[n] = x;
        vals[n] = fx;
    }
    let best = (0..=n).min_by(|&a, &b| vals[a].total_cmp(&vals[b])).expect("a simplex");
    pts[best].clone()
}

type Points = Vec<(Vec<u32>, f64)>;

/// The uniform table's points (contexts of at least `min_context` tokens) and the mixed points of a profile.
fn points(p: &Profile, min_context: f64) -> (Points, Points) {
    let t = &p.attention_decode.us;
    let mut uniform = Vec::new();
    for (i, &batch) in t.x.iter().enumerate() {
        for (j, &context) in t.y.iter().enumerate() {
            if context >= min_context {
                uniform.push((vec![context as u32; batch as usize], t.z[i * t.y.len() + j]));
            }
        }
    }
    let mixed = p.decode_mixed.iter().map(|m| (m.contexts.clone(), m.us)).collect();
    (uniform, mixed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        return Err(
            "usage: decode_blocks PROFILE.json [PROFILE.json ...] (each with its .offset.json beside it)".into(),
        );
    }
    println!("| profile | fitted | uniform, profile | uniform, offset | mixed, profile | mixed, offset |");
    println!("|---|---|---|---|---|---|");
    for path in &paths {
        let profile = Profile::load(Path::new(path))?;
        let offset = Profile::load(&Path::new(path).with_extension("offset.json"))?;
        let launch = Launch::of(&profile);
        let (uniform, mixed) = points(&profile, 64.0);
        let (offset_uniform, offset_mixed) = points(&offset, 0.0);
        let loss = |x: &[f64]| {
            let p = Params::from_logs(x);
            let sq = |pts: &Points| -> f64 {
                pts.iter()
                    .map(|(c, us)| (launch_us(&launch, &p, c) / us).ln().powi(2))
                    .sum()
            };
            sq(&uniform) + MIXED_WEIGHT * sq(&mixed)
        };
        let start: Vec<f64> = [4.0f64, 2.0, 30.0, 2800.0, 1.0, 1.5, 0.05, 1.0]
            .iter()
            .map(|v| v.ln())
            .collect();
        let x = minimise(&loss, &minimise(&loss, &start, 1500), 1500);
        let p = Params::from_logs(&x);
        let errors =
            |pts: &Points| -> Vec<f64> { pts.iter().map(|(c, us)| launch_us(&launch, &p, c) / us - 1.0).collect() };
        println!(
            "| {path} | launch {:.2} µs, alpha {:.2} µs, r {:.1} GB/s, bw {:.0} GB/s, eps {:.2} µs, mu {:.2} + {:.3} µs a partition, alpha_e {:.2} µs | {} | {} | {} | {} |",
            p.launch,
            p.alpha,
            p.r / 1e3,
            p.bw / 1e3,
            p.eps,
            p.mu,
            p.mu_p,
            p.alpha_e,
            summary(&errors(&uniform)),
            summary(&errors(&offset_uniform)),
            summary(&errors(&mixed)),
            summary(&errors(&offset_mixed)),
        );
    }
    Ok(())
}
