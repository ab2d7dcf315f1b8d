use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, tensor::TensorView};

use super::reference::rope_heads;
use super::weights::{SAVED_FILE, layer_tensor};
use super::*;
use crate::gpu::reference as kernel;
use crate::gpu::reference::rel_l2;
use crate::model::ModelSpec;

/// Qwen2-like: GQA 4 over 2, q/k/v bias, tied embeddings.
fn tiny() -> ModelSpec {
    ModelSpec {
        name: "tiny".into(),
        hidden: 64,
        intermediate: 128,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        vocab: 97,
        tied_embeddings: true,
        rope_theta: 10000.0,
        rms_eps: 1e-6,
        qkv_bias: true,
        max_context: 256,
    }
}

/// Llama-like and odd: 3 heads over 1 kv head, q_dim (24) ≠ hidden (40), no bias, separate lm_head.
fn odd() -> ModelSpec {
    ModelSpec {
        name: "odd".into(),
        hidden: 40,
        intermediate: 72,
        layers: 3,
        heads: 3,
        kv_heads: 1,
        head_dim: 8,
        vocab: 53,
        tied_embeddings: false,
        rope_theta: 1_000_000.0,
        rms_eps: 1e-5,
        qkv_bias: false,
        max_context: 256,
    }
}

fn tokens(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % vocab).collect()
}

fn rows(logits: &[f32], vocab: u32) -> Vec<Vec<f32>> {
    logits.chunks_exact(vocab as usize).map(<[f32]>::to_vec).collect()
}

// ---------------------------------------------------------------- forward pass

#[test]
fn incremental_decode_matches_full_prefill() {
    for spec in [tiny(), odd()] {
        let ids = tokens(13, spec.vocab);
        let mut model = ReferenceModel::new(spec.clone(), HostWeights::random(&spec, 7));
        let full = rows(&model.forward(0, &ids), spec.vocab);
        assert_eq!(model.context_len(0), ids.len());
        for k in [1, 5] {
            let seq = k as SeqId;
            let last = model.prefill(seq, &ids[..k]);
            assert!(rel_l2(&last, &full[k - 1]) <= 1e-5, "{}: prefill of {k}", spec.name);
            for (i, &t) in ids.iter().enumerate().skip(k) {
                let step = model.decode(seq, t);
                let err = rel_l2(&step, &full[i]);
                assert!(
                    err <= 1e-5,
                    "{}: prefill {k}, decode of position {i}: rel err {err}",
                    spec.name
                );
            }
        }
    }
}

#[test]
fn chunked_prefill_matches_and_sequences_do_not_interfere() {
    let spec = tiny();
    let ids = tokens(10, spec.vocab);
    let mut model = ReferenceModel::new(spec.clone(), HostWeights::random(&spec, 3));
    let full = model.forward(0, &ids);
    // Interleave another sequence between the chunks: its cache must not leak into seq 1.
    let mut chunked = model.forward(1, &ids[..4]);
    model.forward(2, &tokens(6, 50));
    chunked.extend(model.forward(1, &ids[4..]));
    assert!(rel_l2(&chunked, &full) <= 1e-5);
    model.release(1);
    assert_eq!(model.context_len(1), 0);
    assert!(
        rel_l2(&model.forward(1, &ids), &full) <= 1e-5,
        "a released sequence starts afresh"
    );
}

#[test]
fn position_zero_is_unrotated_and_later_positions_are() {
    let spec = tiny();
    let weights = HostWeights::random(&spec, 5);
    let other_theta = ModelSpec {
        rope_theta: 3.0,
        ..spec.clone()
    };
    let mut a = ReferenceModel::new(spec.clone(), weights.clone());
    let mut b = ReferenceModel::new(other_theta, weights);
    let ids = tokens(3, spec.vocab);
    let (la, lb) = (
        rows(&a.forward(0, &ids), spec.vocab),
        rows(&b.forward(0, &ids), spec.vocab),
    );
    assert_eq!(la[0], lb[0], "at position 0 RoPE is the identity, whatever theta");
    assert!(rel_l2(&la[2], &lb[2]) > 1e-3, "theta must matter at position 2");
}

/// With no layers the model is embedding → final RMSNorm → tied lm_head, all checkable by hand.
#[test]
fn zero_layer_model_by_hand() {
    let spec = ModelSpec {
        layers: 0,
        hidden: 2,
        vocab: 3,
        rms_eps: 0.0,
        ..tiny()
    };
    let mut weights = HostWeights::random(&spec, 1);
    weights
        .get_mut("model.embed_tokens.weight")
        .copy_from_slice(&[3.0, 4.0, 1.0, 0.0, 0.0, 1.0]);
    weights.get_mut("model.norm.weight").copy_from_slice(&[1.0, 2.0]);
    let mut model = ReferenceModel::new(spec, weights);
    // rms([3, 4]) = sqrt(12.5); h = [3, 8] / sqrt(12.5); logits = h · each embedding row.
    let r = 12.5f32.sqrt();
    let expected = [(9.0 + 32.0) / r, 3.0 / r, 8.0 / r];
    let got = model.prefill(0, &[0]);
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() <= 1e-5 * e.abs(), "{got:?} vs {expected:?}");
    }
    assert_eq!(argmax(&got), 0);
}

#[test]
fn greedy_generation_feeds_back_the_argmax() {
    let spec = odd();
    let weights = HostWeights::random(&spec, 11);
    let prompt = tokens(4, spec.vocab);
    let mut model = ReferenceModel::new(spec.clone(), weights.clone());
    let out = model.generate_greedy(0, &prompt, 8);
    assert_eq!(out.len(), 9);
    assert_eq!(model.context_len(0), prompt.len() + 8);
    // The same ids again by one full forward over prompt + generated (but the last, never fed back).
    let mut all = prompt.clone();
    all.extend(&out[..8]);
    let mut fresh = ReferenceModel::new(spec.clone(), weights);
    let logits = rows(&fresh.forward(0, &all), spec.vocab);
    let again: Vec<u32> = logits[prompt.len() - 1..].iter().map(|r| argmax(r)).collect();
    assert_eq!(again, out);
}

// ---------------------------------------------------------------- pieces by hand

#[test]
fn rope_by_hand() {
    // Position 0: identity over several heads.
    let mut row = vec![0.5, -1.0, 2.0, 0.25, 1.5, -3.0, 0.0, 7.0];
    let before = row.clone();
    rope_heads(&mut row, 4, 0, 10000.0);
    assert_eq!(row, before);

    // d = 2: one pair (0, 1) with inverse frequency 1, so the angle is the position.
    let mut h = vec![1.0, 0.0, 0.0, 1.0];
    rope_heads(&mut h, 2, 1, 10000.0);
    let (s, c) = 1.0f32.sin_cos();
    let expect = [c, s, -s, c];
    assert!(h.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-6), "{h:?}");

    // d = 4, theta 100, position 2: pairs (0, 2) at angle 2 and (1, 3) at angle 2 / 100^(2/4) = 0.2.
    let mut h = vec![1.0f32, 2.0, 3.0, 4.0];
    rope_heads(&mut h, 4, 2, 100.0);
    let (s0, c0) = 2.0f32.sin_cos();
    let (s1, c1) = 0.2f32.sin_cos();
    let expect = [
        1.0 * c0 - 3.0 * s0,
        2.0 * c1 - 4.0 * s1,
        3.0 * c0 + 1.0 * s0,
        4.0 * c1 + 2.0 * s1,
    ];
    assert!(
        h.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-5),
        "{h:?} vs {expect:?}"
    );
}

#[test]
fn rmsnorm_by_hand() {
    let r = 12.5f32.sqrt();
    let got = kernel::rmsnorm(&[3.0, 4.0, 0.0, 2.0], &[1.0, 2.0], 2, 0.0);
    // Second row: rms([0, 2]) = sqrt(2), so [0, 2 / sqrt(2) · 2].
    let expect = [3.0 / r, 8.0 / r, 0.0, 2.0 * 2.0f32.sqrt()];
    assert!(got.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?}");
}

#[test]
fn causal_attention_by_hand() {
    // d = 1, scale 1: scores q·k = [0, ln 3] → weights [1/4, 3/4] for the second row; the first sees token 0 only.
    let k = [0.0, 3.0f32.ln()];
    let v = [4.0, 8.0];
    let out = kernel::attention(&[1.0, 1.0], &k, &v, 0, (1, 1, 1));
    assert!((out[0] - 4.0).abs() < 1e-6 && (out[1] - 7.0).abs() < 1e-5, "{out:?}");
    // Two query heads share the one kv head: both see the same keys.
    let out = kernel::attention(&[1.0, 1.0], &k, &v, 1, (2, 1, 1));
    assert!(out.iter().all(|o| (o - 7.0).abs() < 1e-5), "{out:?}");
}

// ---------------------------------------------------------------- GQA against plain MHA

/// The same model with each kv head's K/V projections copied to the query heads that share it: plain MHA.
fn expand_to_mha(spec: &ModelSpec, weights: &HostWeights) -> (ModelSpec, HostWeights) {
    let mha = ModelSpec {
        kv_heads: spec.heads,
        ..spec.clone()
    };
    let mut out = HostWeights::random(&mha, 0);
    let group = (spec.heads / spec.kv_heads) as usize;
    let d = spec.head_dim as usize;
    for (name, t) in weights.iter() {
        let is_kv = name.contains("k_proj") || name.contains("v_proj");
        if !is_kv {
            out.get_mut(name).copy_from_slice(&t.values);
            continue;
        }
        let row = t.values.len() / (spec.kv_dim() as usize); // hidden for a weight, 1 for a bias
        let expanded: Vec<f32> = (0..spec.heads as usize)
            .flat_map(|h| t.values[(h / group) * d * row..][..d * row].iter().copied())
            .collect();
        out.get_mut(name).copy_from_slice(&expanded);
    }
    (mha, out)
}

/// An independent, cache-less MHA forward written from the Qwen2 definition, sharing nothing with the reference.
fn naive_mha_forward(spec: &ModelSpec, w: &HostWeights, ids: &[u32]) -> Vec<Vec<f32>> {
    assert_eq!(spec.heads, spec.kv_heads);
    let (hd, heads, d) = (spec.hidden as usize, spec.heads as usize, spec.head_dim as usize);
    let matvec = |m: &[f32], x: &[f32]| -> Vec<f32> {
        m.chunks_exact(x.len())
            .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    };
    let norm = |x: &[f32], g: &[f32]| -> Vec<f32> {
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32 + spec.rms_eps as f32).sqrt();
        x.iter().zip(g).map(|(v, g)| v / rms * g).collect()
    };
    let rope = |v: &mut [f32], pos: usize| {
        for head in v.chunks_exact_mut(d) {
            for i in 0..d / 2 {
                let a = pos as f64 / spec.rope_theta.powf(2.0 * i as f64 / d as f64);
                let (s, c) = (a.sin() as f32, a.cos() as f32);
                let (x, y) = (head[i], head[i + d / 2]);
                head[i] = x * c - y * s;
                head[i + d / 2] = y * c + x * s;
            }
        }
    };
    let mut xs: Vec<Vec<f32>> = ids
        .iter()
        .map(|&t| w.get("model.embed_tokens.weight")[t as usize * hd..][..hd].to_vec())
        .collect();
    for l in 0..spec.layers as usize {
        let g = |s: &str| w.get(&layer_tensor(l, s));
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (pos, x) in xs.iter().enumerate() {
            let h = norm(x, g("input_layernorm.weight"));
            let p = |name: &str| {
                let mut y = matvec(g(&format!("self_attn.{name}.weight")), &h);
                if spec.qkv_bias {
                    y.iter_mut()
                        .zip(g(&format!("self_attn.{name}.bias")))
                        .for_each(|(y, b)| *y += b);
                }
                y
            };
            let (mut q, mut k, v) = (p("q_proj"), p("k_proj"), p("v_proj"));
            rope(&mut q, pos);
            rope(&mut k, pos);
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        for (i, x) in xs.iter_mut().enumerate() {
            let mut attn = vec![0.0f32; heads * d];
            for h in 0..heads {
                let sl = |v: &[f32]| v[h * d..(h + 1) * d].to_vec();
                let scores: Vec<f32> = (0..=i)
                    .map(|j| sl(&qs[i]).iter().zip(sl(&ks[j])).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f32 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for (o, vv) in attn[h * d..(h + 1) * d].iter_mut().zip(sl(&vs[j])) {
                        *o += ej / z * vv;
                    }
                }
            }
            let o = matvec(g("self_attn.o_proj.weight"), &attn);
            x.iter_mut().zip(o).for_each(|(x, o)| *x += o);
            let h = norm(x, g("post_attention_layernorm.weight"));
            let gate = matvec(g("mlp.gate_proj.weight"), &h);
            let up = matvec(g("mlp.up_proj.weight"), &h);
            let act: Vec<f32> = gate.iter().zip(&up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            let down = matvec(g("mlp.down_proj.weight"), &act);
            x.iter_mut().zip(down).for_each(|(x, o)| *x += o);
        }
    }
    let head = if spec.tied_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    xs.iter()
        .map(|x| matvec(w.get(head), &norm(x, w.get("model.norm.weight"))))
        .collect()
}

#[test]
fn gqa_equals_mha_with_replicated_kv_heads_and_mha_equals_naive() {
    for spec in [tiny(), odd()] {
        let weights = HostWeights::random(&spec, 21);
        let (mha_spec, mha_weights) = expand_to_mha(&spec, &weights);
        let ids = tokens(9, spec.vocab);
        let gqa = ReferenceModel::new(spec.clone(), weights).forward(0, &ids);
        let mha = ReferenceModel::new(mha_spec.clone(), mha_weights.clone()).forward(0, &ids);
        let err = rel_l2(&gqa, &mha);
        assert!(err <= 1e-6, "{}: GQA vs expanded MHA rel err {err}", spec.name);
        let naive: Vec<f32> = naive_mha_forward(&mha_spec, &mha_weights, &ids).concat();
        let err = rel_l2(&mha, &naive);
        assert!(err <= 1e-4, "{}: reference vs naive MHA rel err {err}", spec.name);
    }
}

// ---------------------------------------------------------------- weights

#[test]
fn random_weights_are_seeded_and_shaped() {
    for spec in [tiny(), odd()] {
        let a = HostWeights::random(&spec, 1);
        assert_eq!(a, HostWeights::random(&spec, 1));
        assert_ne!(a, HostWeights::random(&spec, 2));
        let expected = expected_tensors(&spec);
        assert_eq!(a.iter().count(), expected.len());
        for t in &expected {
            assert_eq!(a.get(&t.name).len(), t.numel(), "{}", t.name);
        }
        let names: Vec<&str> = a.iter().map(|(n, _)| n).collect();
        assert_eq!(names.contains(&"lm_head.weight"), !spec.tied_embeddings);
        assert_eq!(names.iter().any(|n| n.ends_with("q_proj.bias")), spec.qkv_bias);
    }
    // 2 + 2 layers × (1 + 3×2 + 1 + 1 + 3) + 1, tied.
    assert_eq!(expected_tensors(&tiny()).len(), 1 + 2 * 12 + 1);
}

/// Writes `tensors` (name, shape, f32 values) as one safetensors file in `dtype`.
fn write_file(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: Dtype) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
            Dtype::BF16 => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
            Dtype::I32 => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
            other => panic!("test writer has no {other:?}"),
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn as_list(w: &HostWeights) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    w.iter()
        .map(|(n, t)| (n.to_string(), t.shape.clone(), t.values.clone()))
        .collect()
}

#[test]
fn save_then_load_is_exact() {
    for spec in [tiny(), odd()] {
        let dir = tempfile::tempdir().unwrap();
        let w = HostWeights::random(&spec, 9);
        w.save(dir.path()).unwrap();
        assert!(dir.path().join(SAVED_FILE).is_file());
        assert_eq!(HostWeights::load(dir.path(), &spec).unwrap(), w);
    }
}

#[test]
fn sharded_checkpoint_with_extra_tensors_loads() {
    let spec = odd();
    let w = HostWeights::random(&spec, 4);
    let mut list = as_list(&w);
    let second = list.split_off(list.len() / 2);
    list.push((
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        vec![4],
        vec![1.0; 4],
    ));
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("model-00001-of-00002.safetensors"), &list, Dtype::F32);
    write_file(
        &dir.path().join("model-00002-of-00002.safetensors"),
        &second,
        Dtype::F32,
    );
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    assert_eq!(HostWeights::load(dir.path(), &spec).unwrap(), w);
}

#[test]
fn half_precision_checkpoints_load() {
    let spec = tiny();
    let w = HostWeights::random(&spec, 8);
    for (dtype, round) in [
        (Dtype::F16, (|x: f32| f16::from_f32(x).to_f32()) as fn(f32) -> f32),
        (Dtype::BF16, |x: f32| bf16::from_f32(x).to_f32()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("model.safetensors"), &as_list(&w), dtype);
        let loaded = HostWeights::load(dir.path(), &spec).unwrap();
        for (name, t) in w.iter() {
            let expect: Vec<f32> = t.values.iter().map(|&x| round(x)).collect();
            assert_eq!(loaded.get(name), expect.as_slice(), "{dtype:?} {name}");
        }
    }
}

#[test]
fn missing_tensor_is_named() {
    let spec = tiny();
    let mut list = as_list(&HostWeights::random(&spec, 2));
    let gone = layer_tensor(1, "self_attn.v_proj.bias");
    list.retain(|(n, _, _)| *n != gone);
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("model.safetensors"), &list, Dtype::F32);
    let msg = HostWeights::load(dir.path(), &spec).unwrap_err().to_string();
    assert!(msg.contains(&gone) && msg.contains("[32]"), "{msg}");
}

#[test]
fn wrong_shape_names_tensor_file_and_both_shapes() {
    let spec = tiny();
    let mut list = as_list(&HostWeights::random(&spec, 2));
    let bad = layer_tensor(0, "self_attn.k_proj.weight");
    list.iter_mut().find(|(n, _, _)| *n == bad).unwrap().1 = vec![64, 32];
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("model.safetensors"), &list, Dtype::F32);
    let msg = HostWeights::load(dir.path(), &spec).unwrap_err().to_string();
    assert!(
        msg.contains(&bad) && msg.contains("model.safetensors") && msg.contains("[64, 32]") && msg.contains("[32, 64]"),
        "{msg}"
    );
}

#[test]
fn other_checkpoint_errors_are_clear() {
    let spec = odd();
    let dir = tempfile::tempdir().unwrap();
    let msg = HostWeights::load(dir.path(), &spec).unwrap_err().to_string();
    assert!(msg.contains("no *.safetensors"), "{msg}");

    // The same tensor in two shards.
    let list = as_list(&HostWeights::random(&spec, 2));
    write_file(&dir.path().join("a.safetensors"), &list, Dtype::F32);
    write_file(&dir.path().join("b.safetensors"), &list[..1], Dtype::F32);
    let msg = HostWeights::load(dir.path(), &spec).unwrap_err().to_string();
    assert!(msg.contains("appears in both") && msg.contains(&list[0].0), "{msg}");

    // An integer tensor where a float one belongs.
    let dir = tempfile::tempdir().unwrap();
    let mut list = list;
    list.truncate(1);
    write_file(&dir.path().join("a.safetensors"), &list, Dtype::I32);
    let msg = HostWeights::load(dir.path(), &spec).unwrap_err().to_string();
    assert!(msg.contains("I32") && msg.contains(&list[0].0), "{msg}");

    std::fs::write(dir.path().join("a.safetensors"), b"not a safetensors file").unwrap();
    let msg = HostWeights::load(dir.path(), &spec).unwrap_err().to_string();
    assert!(msg.contains("a.safetensors") && msg.contains("not a readable"), "{msg}");
}

// ---------------------------------------------------------------- transformers' record

/// Writes what `scripts/hf_reference.py` writes, from `model` itself: the contract between script and reader.
fn write_record(dir: &Path, model: &mut ReferenceModel, prompt: &[u32], steps: usize) {
    let vocab = model.spec().vocab as usize;
    let prefill = model.forward(0, prompt);
    let mut generated = vec![argmax(&prefill[prefill.len() - vocab..])];
    let mut decode = Vec::new();
    for _ in 0..steps {
        let row = model.decode(0, generated[generated.len() - 1]);
        generated.push(argmax(&row));
        decode.extend(row);
    }
    let json = serde_json::json!({ "prompt": prompt, "generated": generated, "steps": [] });
    std::fs::write(dir.join(HfLogits::JSON), json.to_string()).unwrap();
    let tensors = [
        ("prefill".to_string(), vec![prompt.len(), vocab], prefill),
        ("decode".to_string(), vec![steps, vocab], decode),
    ];
    write_file(&dir.join(HfLogits::ROWS), &tensors, Dtype::F32);
}

#[test]
fn hf_record_round_trips_and_compares() {
    let spec = odd();
    let weights = HostWeights::random(&spec, 13);
    let dir = tempfile::tempdir().unwrap();
    write_record(
        dir.path(),
        &mut ReferenceModel::new(spec.clone(), weights.clone()),
        &tokens(6, spec.vocab),
        8,
    );
    let record = HfLogits::load(dir.path()).unwrap();
    assert_eq!(
        (record.prompt.len(), record.generated.len(), record.vocab),
        (6, 9, spec.vocab as usize)
    );
    let errors = record.compare(&mut ReferenceModel::new(spec.clone(), weights), 0);
    assert_eq!(
        errors,
        StepErrors {
            prefill: 0.0,
            decode: vec![0.0; 8]
        }
    );

    // Other weights: every step is far off, so the comparison does bite.
    let errors = record.compare(
        &mut ReferenceModel::new(spec.clone(), HostWeights::random(&spec, 14)),
        0,
    );
    assert!(
        errors.prefill > 0.1 && errors.decode.iter().all(|&e| e > 0.1),
        "{errors:?}"
    );

    std::fs::remove_file(dir.path().join(HfLogits::ROWS)).unwrap();
    let msg = HfLogits::load(dir.path()).unwrap_err().to_string();
    assert!(msg.contains(HfLogits::ROWS), "{msg}");
}

/// On a machine with torch: `python3 scripts/hf_reference.py odd /tmp/hf-odd` (or qwen2.5-0.5b), then
/// `BATCHLAB_HF_REFERENCE=/tmp/hf-odd cargo test --release --lib engine::tests::reference_matches_transformers
/// -- --ignored`.
#[test]
#[ignore = "needs a checkpoint and logits written by scripts/hf_reference.py (torch + transformers)"]
fn reference_matches_transformers() {
    let dir =
        std::env::var_os("BATCHLAB_HF_REFERENCE").expect("set BATCHLAB_HF_REFERENCE to the script's output folder");
    let dir = Path::new(&dir);
    let spec = crate::model::from_hf_config(dir).unwrap();
    let weights = HostWeights::load(dir, &spec).unwrap();
    let record = HfLogits::load(dir).unwrap();
    let errors = record.compare(&mut ReferenceModel::new(spec, weights), 0);
    // Both sides are f32; only the order of accumulation differs.
    assert!(
        errors.prefill <= 1e-4 && errors.decode.iter().all(|&e| e <= 1e-4),
        "{errors:?}"
    );
    assert!(
        errors.decode.len() >= 8,
        "the record has {} decode steps",
        errors.decode.len()
    );
}
