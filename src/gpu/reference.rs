//! Float32 CPU references of every kernel, written for clarity, not speed. The GPU tests compare against these;
//! they take the same fp16 inputs (as f32) so only the kernels' arithmetic differs.

/// RMSNorm of each `hidden`-long row.
pub fn rmsnorm(x: &[f32], weight: &[f32], hidden: usize, eps: f32) -> Vec<f32> {
    x.chunks_exact(hidden)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / hidden as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            row.iter().zip(weight).map(move |(v, w)| v * inv * w)
        })
        .collect()
}

/// Rounds through fp16, as the kernels store intermediate results.
pub fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Returns (out, new residual): residual' = fp16(x + residual), out = rmsnorm(residual') * weight.
pub fn add_rmsnorm(x: &[f32], residual: &[f32], weight: &[f32], hidden: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let sum: Vec<f32> = x.iter().zip(residual).map(|(a, b)| round_f16(a + b)).collect();
    (rmsnorm(&sum, weight, hidden, eps), sum)
}

/// silu(gate) * up of each (gate, up) pair: `gate_up` holds every value's gate and up side by side, as the engine's
/// interleaved gate/up weights produce them (rows of `[g0, u0, g1, u1, …]`).
pub fn silu_mul(gate_up: &[f32]) -> Vec<f32> {
    gate_up
        .chunks_exact(2)
        .map(|p| p[0] / (1.0 + (-p[0]).exp()) * p[1])
        .collect()
}

/// Rows of `table` (`[vocab, hidden]`) by id.
pub fn embedding(ids: &[i32], table: &[f32], hidden: usize) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| table[id as usize * hidden..(id as usize + 1) * hidden].iter().copied())
        .collect()
}

/// Index of each row's largest value (the first one among equals).
pub fn argmax(logits: &[f32], vocab: usize) -> Vec<i32> {
    logits
        .chunks_exact(vocab)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as i32
        })
        .collect()
}

/// Qwen2 (rotate-half) RoPE of one head vector at `pos`, in place; angles computed as Hugging Face does (f32
/// inverse frequencies, f32 product), cos/sin in f64.
pub fn rope_in_place(head: &mut [f32], pos: i32, theta: f32) {
    let d = head.len();
    let half = d / 2;
    for i in 0..half {
        let inv_freq = 1.0f32 / theta.powf((2 * i) as f32 / d as f32);
        let angle = (pos as f32 * inv_freq) as f64;
        let (s, c) = (angle.sin() as f32, angle.cos() as f32);
        let (x1, x2) = (head[i], head[i + half]);
        head[i] = x1 * c - x2 * s;
        head[i + half] = x2 * c + x1 * s;
    }
}

/// Splits fused QKV rows into (q with RoPE `[t, q_heads, d]`, k with RoPE `[t, kv_heads, d]`, v `[t, kv_heads, d]`).
pub fn qkv_rope(
    qkv: &[f32],
    positions: &[i32],
    (q_heads, kv_heads, d): (usize, usize, usize),
    theta: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let row_len = (q_heads + 2 * kv_heads) * d;
    let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for (row, &pos) in qkv.chunks_exact(row_len).zip(positions) {
        let (qs, rest) = row.split_at(q_heads * d);
        let (ks, vs) = rest.split_at(kv_heads * d);
        for h in qs.chunks_exact(d) {
            let mut h = h.to_vec();
            rope_in_place(&mut h, pos, theta);
            q.extend(h);
        }
        for h in ks.chunks_exact(d) {
            let mut h = h.to_vec();
            rope_in_place(&mut h, pos, theta);
            k.extend(h);
        }
        v.extend_from_slice(vs);
    }
    (q, k, v)
}

/// Causal GQA attention of one sequence. `q` is `[rows, q_heads, d]` for query positions `first_pos..`; `k`, `v`
/// are the sequence's contiguous context `[ctx, kv_heads, d]`; query at position p sees context tokens 0..=p.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    first_pos: usize,
    (q_heads, kv_heads, d): (usize, usize, usize),
) -> Vec<f32> {
    let rows = q.len() / (q_heads * d);
    let ctx = k.len() / (kv_heads * d);
    let group = q_heads / kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; q.len()];
    for r in 0..rows {
        let seen = (first_pos + r + 1).min(ctx);
        for h in 0..q_heads {
            let kvh = h / group;
            let qv = &q[(r * q_heads + h) * d..][..d];
            let scores: Vec<f32> = (0..seen)
                .map(|t| {
                    let kv = &k[(t * kv_heads + kvh) * d..][..d];
                    qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * scale
                })
                .collect();
            let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let p: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f32 = p.iter().sum();
            let o = &mut out[(r * q_heads + h) * d..][..d];
            for (t, &pt) in p.iter().enumerate() {
                let vv = &v[(t * kv_heads + kvh) * d..][..d];
                for (oi, vi) in o.iter_mut().zip(vv) {
                    *oi += pt / l * vi;
                }
            }
        }
    }
    out
}

/// `y = x . w^T (+ bias)`: x `[m, k]`, w `[n, k]`.
pub fn gemm(x: &[f32], w: &[f32], bias: Option<&[f32]>, (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    let mut y = vec![0.0f32; m * n];
    for i in 0..m {
        let xr = &x[i * k..][..k];
        for j in 0..n {
            let wr = &w[j * k..][..k];
            let dot: f64 = xr.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64).sum();
            y[i * n + j] = dot as f32 + bias.map_or(0.0, |b| b[j]);
        }
    }
    y
}

/// ‖a − b‖ / ‖b‖, or infinity when `a` holds a non-finite value (a NaN never passes).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared vectors differ in length");
    if a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_at_position_zero_is_identity() {
        let mut h = vec![0.5, -1.0, 2.0, 0.25];
        rope_in_place(&mut h, 0, 10000.0);
        assert_eq!(h, vec![0.5, -1.0, 2.0, 0.25]);
    }

    #[test]
    fn attention_over_one_token_returns_its_value() {
        let q = [1.0, 2.0];
        let k = [0.3, -0.7];
        let v = [4.0, -5.0];
        assert_eq!(attention(&q, &k, &v, 0, (1, 1, 2)), vec![4.0, -5.0]);
    }

    #[test]
    fn argmax_takes_first_of_equals() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0], 4), vec![1]);
    }

    #[test]
    fn gemm_small() {
        // [1 2; 3 4] . [[1 0]; [0 1]; [1 1]]^T + [0, 1, 2]
        let y = gemm(
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            Some(&[0.0, 1.0, 2.0]),
            (2, 3, 2),
        );
        assert_eq!(y, vec![1.0, 3.0, 5.0, 3.0, 5.0, 9.0]);
    }

    #[test]
    fn rel_l2_rejects_nan() {
        assert!(rel_l2(&[f32::NAN], &[1.0]).is_infinite());
    }
}
