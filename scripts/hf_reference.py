#!/usr/bin/env python3
"""Records transformers' logits for a random-weight Qwen2 checkpoint, the ground truth the engine is checked against.

Runs on the GPU machine (torch + transformers), not in CI. It builds Qwen2ForCausalLM from a config with seeded
random fp32 weights, saves it as a Hugging Face checkpoint (config.json + *.safetensors), then runs a prefill of
fixed token ids and greedy decode steps with the KV cache, and writes into the same folder:

- logits.safetensors: "prefill" [prompt_len, vocab] (every prompt position) and "decode" [steps, vocab] (the
  logits after feeding each decode input), f32;
- logits.json: the token ids, and per step the input ids, the argmax, the top-k and a digest (sum, L2 norm) of
  the row, so a mismatch is readable without loading the full rows.

Weights are drawn like HostWeights::random's scheme (not its values): matrices uniform in +-sqrt(3/fan_in), norms
1 +- 0.1, biases +-0.1, so logits are O(1) and a forgotten bias or norm weight is visible. The HF default init
(std 0.02, zero biases, unit norms) would hide both.

Usage:
  python3 scripts/hf_reference.py qwen2.5-0.5b OUT_DIR
  python3 scripts/hf_reference.py path/to/config.json OUT_DIR [--prompt-len 16] [--steps 8] [--seed 0]

Then check the GPU engine against it (tests/gpu_engine.rs; several folders: separate them with ':'):
  BATCHLAB_HF_REF=OUT_DIR cargo test --release --test gpu_engine -- --ignored --test-threads=1 transformers
and the Rust f32 CPU reference (src/engine/reference.rs reads both files as HfLogits):
  BATCHLAB_HF_REFERENCE=OUT_DIR cargo test --release --lib engine::tests::reference_matches_transformers -- --ignored
"""

import argparse
import inspect
import json
import os

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

# Shapes of the Qwen2.5 configs on the Hub (what src/model/catalog.rs lists), and an odd one: 5 heads over 1 kv
# head, an untied lm_head and a small vocabulary.
BUILT_IN = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "odd": dict(hidden_size=320, intermediate_size=864, num_hidden_layers=3, num_attention_heads=5,
                num_key_value_heads=1, vocab_size=1000, tie_word_embeddings=False),
}
ROPE_THETA = 1_000_000.0
RMS_EPS = 1e-6


def build_config(name_or_path):
    if os.path.exists(name_or_path):
        return Qwen2Config.from_json_file(name_or_path)
    kw = dict(BUILT_IN[name_or_path], rms_norm_eps=RMS_EPS, max_position_embeddings=32768, use_sliding_window=False)
    # transformers 5 keeps rope_theta inside rope_parameters; 4.x takes it as a keyword.
    if "rope_parameters" in inspect.signature(Qwen2Config.__init__).parameters:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": ROPE_THETA}
    else:
        kw["rope_theta"] = ROPE_THETA
    return Qwen2Config(**kw)


def rope_theta_of(config):
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(config.rope_theta)


@torch.no_grad()
def randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    # named_parameters lists a tied embedding/lm_head once, so it is drawn once.
    for name, p in model.named_parameters():
        if p.dim() == 2:
            half = (3.0 / p.shape[1]) ** 0.5
            center = 0.0
        elif name.endswith(".bias"):
            half, center = 0.1, 0.0
        else:
            half, center = 0.1, 1.0
        p.copy_(center + (torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2 - 1) * half)


def row_summary(row, k):
    top = torch.topk(row, k)
    return {
        "argmax": int(torch.argmax(row)),
        "top_k": [[int(i), float(v)] for v, i in zip(top.values.tolist(), top.indices.tolist())],
        "sum": float(row.double().sum()),
        "l2": float(row.double().norm()),
    }


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a config.json, or one of: " + ", ".join(BUILT_IN))
    ap.add_argument("out", help="checkpoint folder to write (created)")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="greedy decode steps after the prefill")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=10)
    args = ap.parse_args()

    # The reference must be true fp32: no TF32 matmuls.
    torch.set_float32_matmul_precision("highest")
    torch.manual_seed(args.seed)
    config = build_config(args.config)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    randomize(model, args.seed)
    model.eval()

    os.makedirs(args.out, exist_ok=True)
    save_kw = {"safe_serialization": True} if "safe_serialization" in inspect.signature(
        model.save_pretrained).parameters else {}
    model.save_pretrained(args.out, **save_kw)
    # batchlab's config reader takes rope_theta at the top level; transformers 5 may write it only inside
    # rope_parameters, so add it (same value) rather than let the engine fall back to the default of 10000.
    theta = rope_theta_of(config)
    if args.config in BUILT_IN:
        assert theta == ROPE_THETA, f"config took rope_theta {theta}, asked for {ROPE_THETA}"
    cfg_path = os.path.join(args.out, "config.json")
    with open(cfg_path) as f:
        cfg_json = json.load(f)
    cfg_json.setdefault("rope_theta", theta)
    with open(cfg_path, "w") as f:
        json.dump(cfg_json, f, indent=2, sort_keys=True)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    vocab = config.vocab_size
    prompt = [(i * 7919 + 13) % vocab for i in range(args.prompt_len)]

    out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
    prefill = out.logits[0].float().cpu()
    past = out.past_key_values
    steps = [dict(kind="prefill", input=prompt, position=0, **row_summary(prefill[-1], args.top_k))]
    decode_rows = []
    token = steps[0]["argmax"]
    for i in range(args.steps):
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=past, use_cache=True)
        past = out.past_key_values
        row = out.logits[0, -1].float().cpu()
        decode_rows.append(row)
        steps.append(dict(kind="decode", input=[token], position=args.prompt_len + i, **row_summary(row, args.top_k)))
        token = steps[-1]["argmax"]

    save_file({"prefill": prefill.contiguous(), "decode": torch.stack(decode_rows).contiguous()},
              os.path.join(args.out, "logits.safetensors"))
    record = {
        "model": args.config,
        "seed": args.seed,
        "torch": torch.__version__,
        "device": device,
        "rope_theta": theta,
        "vocab": vocab,
        "prompt": prompt,
        "generated": [s["argmax"] for s in steps],
        "steps": steps,
        "full_rows": "logits.safetensors",
    }
    with open(os.path.join(args.out, "logits.json"), "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
