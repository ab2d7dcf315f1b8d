#!/usr/bin/env python3
"""Times Hugging Face transformers on batchlab's seed-matrix burst workloads: the baseline batchlab's GPU engine is
held against (`batchlab baseline-report` puts both side by side).

Runs on the GPU machine (torch + transformers 5.x, CUDA), not in CI. For each model it builds Qwen2ForCausalLM from
the same configuration as batchlab's built-in model (scripts/hf_reference.py's BUILT_IN), fp16, random weights drawn
on the GPU (matrices normal with std 0.02, biases 0, norm weights 1: the values do not change the speed, but must
not overflow to inf/NaN), eval mode, no grad. Then for every configuration of the seed matrix
(scenarios/seed-matrix.toml) it serves one burst of requests and times it.

The workload is batchlab's (src/workload/generate.rs): `requests` requests all arrive at t = 0; request i has
`prompt_len` prompt tokens and an output target of [16, 32][i % 2] (a length list is cycled by request index);
targets are honoured exactly, EOS never stops a request early. Prompt token ids are synthetic, drawn from a seeded
random stream (the warm-up burst gets its own ids, so no cache of an earlier burst can help).

Modes:

- `generate`: static batching, as batchlab's `static` policy. Requests in arrival order form batches of up to
  `max_batch`; each batch is left-padded to its longest prompt (all prompts have the same length here) and runs
  `model.generate(do_sample=False, max_new_tokens=L, min_new_tokens=L)` with L the batch's longest target, so
  finished sequences keep running (the waste static batching has). A request's useful output is its own target.
- `generate_batch`: transformers' own continuous batching (paged KV cache, its FIFO scheduler, CUDA graphs as it
  decides) with each request's own target. `model.generate_batch` takes one `max_new_tokens` for all its inputs,
  so this mode drives the `ContinuousBatchingManager` that `generate_batch` wraps (`model.init_continuous_batching`,
  `warmup`, `start`, then `add_request(max_new_tokens=target)` per request and `get_result` until every request has
  finished), which is the same engine and loop with per-request lengths.
- `generate_batch_call`: the literal `model.generate_batch(inputs, ...)` call. Every request generates the longest
  target of the burst (32 tokens); only each request's own target is counted as output.

In both continuous batching modes the requests of a burst are queued one after another in a tight loop (as
`generate_batch` itself does), while the manager's thread already runs: its first step may hold fewer than all of
them, where batchlab's first step sees the whole burst.

Both continuous batching modes use `ContinuousBatchingConfig(max_requests_per_batch=max_batch,
allow_block_sharing=False)`: at most `max_batch` sequences per step, as batchlab's `max_batch_size`, and no prefix
sharing (batchlab has none). Everything else (KV blocks, tokens per step, CUDA graphs) is left to transformers; what
it resolved is written in the `settings` column. One manager is built and warmed up per (model, max_batch) and
serves every burst of that batch limit.

Per (model, prompt_len, max_batch, requests, mode): one untimed warm-up burst, then `--repeats` timed bursts, each
timed from just before the first request is submitted to the last token of the last request, with
torch.cuda.synchronize() on both sides (batchlab's makespan: first arrival to last completion).
output_tokens = sum of the targets; output_tok_per_s = output_tokens / wall_s, wall_s the median of the repeats.

Output: one CSV row per (model, prompt_len, max_batch, requests, mode), written as soon as it is measured. Columns:
model, prompt_len, max_batch, requests, mode, output_tokens, wall_s, output_tok_per_s (median of the repeats),
repeats, wall_s_min, wall_s_max, gpu (torch.cuda.get_device_name), torch, transformers (versions), settings (what
the mode ran with), error (empty when the measurement succeeded; otherwise the numeric columns are empty). A mode
that fails for one configuration is recorded with its error and the run goes on.

Usage (the full matrix is a few minutes per model; split it to fit a time limit):
  python3 scripts/hf_baseline.py --models qwen2.5-0.5b --out out/baseline-0.5b.csv
  python3 scripts/hf_baseline.py --models qwen2.5-1.5b --out out/baseline-1.5b.csv
Then, beside a `batchlab validate scenarios/seed-matrix.toml` of the same card:
  batchlab baseline-report --validated out/seed-matrix-validate \\
      --baseline out/baseline-0.5b.csv --baseline out/baseline-1.5b.csv --out out/baseline.md
"""

import argparse
import csv
import gc
import inspect
import os
import random
import statistics
import sys
import time
import traceback

import torch
import transformers
from transformers import GenerationConfig, Qwen2ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_reference import BUILT_IN, build_config  # noqa: E402  (same folder)

# The seed matrix (scenarios/seed-matrix.toml).
MODELS = ["qwen2.5-0.5b", "qwen2.5-1.5b"]
PROMPT_LENS = [64, 256, 512]
MAX_BATCHES = [1, 4, 8]
REQUESTS = [4, 8, 16]
# workload.output_len = [16, 32]: a list is cycled by request index (LengthSpec::Cycle in generate.rs).
OUTPUT_LENS = [16, 32]
SEED = 7
MODES = ["generate", "generate_batch", "generate_batch_call"]

COLUMNS = ["model", "prompt_len", "max_batch", "requests", "mode", "output_tokens", "wall_s", "output_tok_per_s",
           "repeats", "wall_s_min", "wall_s_max", "gpu", "torch", "transformers", "settings", "error"]
PAD_ID = 0
# EOS is disabled (transformers' continuous batching reads a negative id as "no EOS").
NO_EOS = -1


def log(message):
    print(message, file=sys.stderr, flush=True)


def burst(requests, prompt_len, vocab, seed, phase):
    """The requests of one burst in arrival order: (prompt token ids, output target)."""
    rng = random.Random(f"batchlab-baseline/{seed}/{phase}/{prompt_len}/{requests}")
    return [([rng.randrange(vocab) for _ in range(prompt_len)], OUTPUT_LENS[i % len(OUTPUT_LENS)])
            for i in range(requests)]


def supported(fn, kwargs):
    """The keyword arguments `fn` names in its signature, and the names it does not take (dropped, and said so)."""
    params = inspect.signature(fn).parameters
    kept = {k: v for k, v in kwargs.items() if k in params}
    return kept, sorted(set(kwargs) - set(kept))


def one_line(text, limit=400):
    """Text for a CSV cell: one line, bounded."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@torch.no_grad()
def build_model(name, seed, device):
    config = build_config(name)
    # Outputs are honoured exactly: no EOS anywhere.
    config.eos_token_id = None
    config.pad_token_id = PAD_ID
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(device=device, dtype=torch.float16)
    # Drawn here rather than trusting the constructor's init (which may leave memory uninitialised for speed).
    gen = torch.Generator(device=device).manual_seed(seed)
    for pname, p in model.named_parameters():  # a tied embedding/lm_head is listed once
        if p.dim() >= 2:
            p.normal_(0.0, 0.02, generator=gen)
        elif pname.endswith(".bias"):
            p.zero_()
        else:
            p.fill_(1.0)
    model.eval()
    model.requires_grad_(False)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_ID
    logits = model(input_ids=torch.arange(1, 9, device=device).unsqueeze(0)).logits
    if not torch.isfinite(logits).all():
        raise RuntimeError(f"{name}: random weights give non-finite logits")
    return model


def attn_of(model):
    return getattr(model.config, "_attn_implementation", None) or "default"


# --- model.generate: static batches ---------------------------------------------------------------------------------

def prepare_generate(reqs, max_batch, device):
    """The static batches of a burst, built on the GPU before the clock starts: (input_ids, attention_mask, L)."""
    batches = []
    for start in range(0, len(reqs), max_batch):
        group = reqs[start:start + max_batch]
        longest = max(len(p) for p, _ in group)
        ids = torch.full((len(group), longest), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(group), longest), dtype=torch.long)
        for row, (prompt, _) in enumerate(group):
            ids[row, longest - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, longest - len(prompt):] = 1
        batches.append((ids.to(device), mask.to(device), max(t for _, t in group)))
    return batches


@torch.no_grad()
def run_generate(model, batches):
    for ids, mask, new_tokens in batches:
        config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  pad_token_id=PAD_ID, eos_token_id=None, use_cache=True)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        if out.shape[1] != ids.shape[1] + new_tokens:
            raise RuntimeError(f"generate returned {out.shape[1] - ids.shape[1]} new tokens, asked {new_tokens}")


class GenerateMode:
    name = "generate"

    def __init__(self, model, max_batch, device):
        self.model, self.max_batch, self.device = model, max_batch, device

    def settings(self, reqs):
        return (f"model.generate on static batches of up to {self.max_batch} requests in arrival order, left-padded "
                f"to the longest prompt; greedy; max_new_tokens = min_new_tokens = the batch's longest target; "
                f"attn={attn_of(self.model)}")

    def run(self, reqs):
        batches = prepare_generate(reqs, self.max_batch, self.device)
        torch.cuda.synchronize()
        start = time.perf_counter()
        run_generate(self.model, batches)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    def close(self):
        pass


# --- transformers' continuous batching ------------------------------------------------------------------------------

def cb_config(max_batch):
    try:
        from transformers.generation import ContinuousBatchingConfig
    except ImportError:
        from transformers import ContinuousBatchingConfig
    wanted = dict(max_requests_per_batch=max_batch, allow_block_sharing=False)
    kept, dropped = supported(ContinuousBatchingConfig, wanted)
    if "max_requests_per_batch" in dropped:
        raise RuntimeError("this transformers' ContinuousBatchingConfig has no max_requests_per_batch: the batch "
                           "limit cannot be set")
    return ContinuousBatchingConfig(**kept), dropped


def workload_hints(max_prompt, max_new):
    try:
        from transformers.generation.continuous_batching.utils import WorkloadHints
    except ImportError:
        return None
    kept, _ = supported(WorkloadHints, dict(max_prompt_length=max_prompt, max_generated_length=max_new))
    try:
        return WorkloadHints(**kept)
    except TypeError as e:  # a version whose hints need more than these: let transformers size without them
        log(f"warning: no workload hints for continuous batching ({e})")
        return None


def resolved_settings(manager, asked_batch, dropped):
    """What transformers resolved for the manager (read back from it), for the settings column."""
    cfg = getattr(manager, "continuous_batching_config", None)
    parts = [f"max_requests_per_batch asked {asked_batch}"]
    for key in ["max_requests_per_batch", "max_batch_tokens", "num_blocks", "block_size", "allow_block_sharing",
                "use_cuda_graph", "use_async_batching", "scheduler_type"]:
        if cfg is not None and hasattr(cfg, key):
            parts.append(f"{key}={getattr(cfg, key)}")
    parts.append(f"attn={attn_of(manager.model) if hasattr(manager, 'model') else 'unknown'}")
    if dropped:
        parts.append("not supported here: " + ",".join(dropped))
    return "; ".join(parts)


def finished_outputs(results, expected):
    """Checks every request came back finished with the number of tokens it was asked for."""
    for rid, want in expected.items():
        out = results.get(rid)
        if out is None:
            raise RuntimeError(f"no result for request {rid}")
        error = getattr(out, "error", None)
        if error:
            raise RuntimeError(f"request {rid} failed: {error}")
        got = len(out.generated_tokens)
        if got != want:
            raise RuntimeError(f"request {rid} generated {got} tokens, asked {want}")


class GenerateBatchMode:
    """Continuous batching with per-request targets, through the manager `generate_batch` wraps."""

    name = "generate_batch"

    def __init__(self, model, max_batch, device, max_prompt, max_new, timeout_s):
        self.model, self.max_batch, self.timeout_s = model, max_batch, timeout_s
        self.counter = 0
        self.config, self.dropped = cb_config(max_batch)
        generation_config = GenerationConfig(do_sample=False, max_new_tokens=max_new, pad_token_id=PAD_ID,
                                             eos_token_id=None)
        kwargs, dropped = supported(model.init_continuous_batching, dict(
            generation_config=generation_config, continuous_batching_config=self.config,
            workload_hints=workload_hints(max_prompt, max_new)))
        self.dropped += dropped
        self.add_kwargs = set()
        self.manager = model.init_continuous_batching(**kwargs)
        try:
            self.add_kwargs = set(inspect.signature(self.manager.add_request).parameters)
            if "max_new_tokens" not in self.add_kwargs:
                raise RuntimeError("ContinuousBatchingManager.add_request takes no max_new_tokens here")
            if hasattr(self.manager, "warmup"):
                self.manager.warmup()
            self.manager.start()
        except BaseException:
            # Its generation thread is not a daemon: a manager left running would keep the script from exiting.
            self.manager.stop(block=True)
            raise

    def settings(self, reqs):
        return ("ContinuousBatchingManager (what generate_batch wraps): add_request(max_new_tokens=target) per "
                "request; " + resolved_settings(self.manager, self.max_batch, self.dropped))

    def run(self, reqs):
        expected = {}
        torch.cuda.synchronize()
        start = time.perf_counter()
        for prompt, target in reqs:
            rid = f"burst{self.counter}"
            self.counter += 1
            kwargs = dict(request_id=rid, max_new_tokens=target, eos_token_id=NO_EOS)
            self.manager.add_request(prompt, **{k: v for k, v in kwargs.items() if k in self.add_kwargs})
            expected[rid] = target
        results = {}
        deadline = time.perf_counter() + self.timeout_s
        while len(results) < len(expected):
            out = self.manager.get_result(timeout=0.05)
            if out is None:
                if not self.manager.is_running():
                    raise RuntimeError("the continuous batching thread stopped")
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{len(results)} of {len(expected)} requests done after {self.timeout_s} s")
                continue
            if out.is_finished() or getattr(out, "error", None):
                results[out.request_id] = out
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
        finished_outputs(results, expected)
        return wall

    def close(self):
        # Kept on the model so that `generate_batch_call` reuses this warmed-up manager (and its settings).
        kwargs, _ = supported(self.manager.stop, dict(block=True, keep_for_next_session=True))
        self.manager.stop(**kwargs)


class GenerateBatchCallMode:
    """The literal `model.generate_batch` call: one max_new_tokens (the longest target) for every request."""

    name = "generate_batch_call"

    def __init__(self, model, max_batch, device, max_prompt, max_new, timeout_s):
        self.model, self.max_batch = model, max_batch
        self.config, self.dropped = cb_config(max_batch)

    def manager(self):
        return getattr(self.model, "_cached_continuous_batching_manager", None)

    def settings(self, reqs):
        longest = max(t for _, t in reqs)
        text = (f"model.generate_batch(max_new_tokens={longest}) for every request, persistent manager; only each "
                "request's target is counted as output")
        manager = self.manager()
        return text + ("; " + resolved_settings(manager, self.max_batch, self.dropped) if manager else "")

    def run(self, reqs):
        longest = max(t for _, t in reqs)
        config = GenerationConfig(do_sample=False, max_new_tokens=longest, pad_token_id=PAD_ID, eos_token_id=None)
        kwargs, _ = supported(self.model.generate_batch, dict(
            inputs=[p for p, _ in reqs], generation_config=config, continuous_batching_config=self.config,
            progress_bar=False, persistent_manager=True, warmup=True))
        manager = self.manager()
        if manager is not None and hasattr(manager, "_request_counter"):
            # generate_batch maps its results back by the ids req_0 … req_{n-1}; a persistent manager keeps counting
            # from its last call, so start it again at 0.
            manager._request_counter = 0
        torch.cuda.synchronize()
        start = time.perf_counter()
        results = self.model.generate_batch(**kwargs)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
        finished_outputs(results, {f"req_{i}": longest for i in range(len(reqs))})
        return wall

    def close(self):
        pass


def release(model, attn):
    """Drops the cached continuous batching manager (and its KV cache) and restores the attention implementation."""
    destroy = getattr(model, "destroy_cached_continuous_batching_manager", None)
    if destroy is not None:
        try:
            destroy()
        except Exception as e:  # noqa: BLE001 — cleanup must not end the run
            log(f"warning: could not destroy the cached continuous batching manager: {e}")
    if attn_of(model) != attn and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attn)
    gc.collect()
    torch.cuda.empty_cache()


# --- driver ---------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    names = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--models", type=names, default=MODELS, help="comma-separated; default: " + ",".join(MODELS))
    ap.add_argument("--prompt-lens", type=ints, default=PROMPT_LENS)
    ap.add_argument("--max-batches", type=ints, default=MAX_BATCHES)
    ap.add_argument("--requests", type=ints, default=REQUESTS)
    ap.add_argument("--modes", type=names, default=MODES, help="comma-separated; default: " + ",".join(MODES))
    ap.add_argument("--repeats", type=int, default=1, help="timed bursts per configuration (median reported)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--gpu", type=int, default=0, help="CUDA device index")
    ap.add_argument("--burst-timeout", type=float, default=600.0, help="seconds before a burst counts as failed")
    ap.add_argument("--out", required=True, help="the CSV to write (replaced)")
    args = ap.parse_args()

    for m in args.models:
        if m not in BUILT_IN:
            ap.error(f"unknown model {m!r}; known: {', '.join(BUILT_IN)}")
    for m in args.modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}; known: {', '.join(MODES)}")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device: this script times transformers on the GPU")

    torch.cuda.set_device(args.gpu)
    device = torch.device("cuda", args.gpu)
    gpu = torch.cuda.get_device_name(device)
    versions = dict(gpu=gpu, torch=torch.__version__, transformers=transformers.__version__)
    log(f"{gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); transformers {transformers.__version__}")
    modes = [m for m in MODES if m in args.modes]  # fixed order: the managers are shared in this order
    total = len(args.models) * len(args.prompt_lens) * len(args.max_batches) * len(args.requests) * len(modes)
    done = 0

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=COLUMNS)
        out.writeheader()

        def record(model_name, prompt_len, max_batch, requests, mode, walls=None, output_tokens=None, settings="",
                   error=None):
            nonlocal done
            done += 1
            row = dict(model=model_name, prompt_len=prompt_len, max_batch=max_batch, requests=requests, mode=mode,
                       settings=one_line(settings), error=one_line(error) if error else "", **versions)
            where = f"[{done}/{total}] {model_name} prompt {prompt_len} max batch {max_batch} {requests} req {mode}"
            if error:
                log(f"{where}: FAILED: {one_line(error, 200)}")
            else:
                wall = statistics.median(walls)
                row.update(output_tokens=output_tokens, wall_s=f"{wall:.9f}",
                           output_tok_per_s=f"{output_tokens / wall:.3f}", repeats=len(walls),
                           wall_s_min=f"{min(walls):.9f}", wall_s_max=f"{max(walls):.9f}")
                log(f"{where}: {output_tokens / wall:.1f} tok/s ({wall:.3f} s)")
            out.writerow(row)
            f.flush()

        for model_name in args.models:
            try:
                log(f"building {model_name} (fp16, random weights on the GPU)")
                model = build_model(model_name, args.seed, device)
            except Exception as e:  # noqa: BLE001 — every configuration of this model records the error
                traceback.print_exc()
                for p in args.prompt_lens:
                    for b in args.max_batches:
                        for r in args.requests:
                            for mode in modes:
                                record(model_name, p, b, r, mode, error=f"building the model: {e!r}")
                continue
            vocab = model.config.vocab_size
            attn = attn_of(model)

            def measure(runner, mode, max_batch):
                for prompt_len in args.prompt_lens:
                    for requests in args.requests:
                        warm = burst(requests, prompt_len, vocab, args.seed, "warmup")
                        timed = burst(requests, prompt_len, vocab, args.seed, "timed")
                        try:
                            runner.run(warm)
                            walls = [runner.run(timed) for _ in range(args.repeats)]
                            record(model_name, prompt_len, max_batch, requests, mode, walls=walls,
                                   output_tokens=sum(t for _, t in timed), settings=runner.settings(timed))
                        except Exception as e:  # noqa: BLE001 — recorded, the run goes on
                            traceback.print_exc()
                            record(model_name, prompt_len, max_batch, requests, mode, error=repr(e))
                            torch.cuda.empty_cache()

            # model.generate first, for every batch limit: continuous batching switches the model to its paged
            # attention (switched back in `release`, but nothing then depends on that).
            if "generate" in modes:
                for max_batch in args.max_batches:
                    measure(GenerateMode(model, max_batch, device), "generate", max_batch)
            cb_modes = [m for m in modes if m != "generate"]
            # Continuous batching sizes its KV cache from the free memory: give back what generate's runs cached.
            torch.cuda.empty_cache()
            for max_batch in args.max_batches if cb_modes else []:
                # generate_batch builds and warms up the manager of this batch limit; generate_batch_call reuses it.
                for mode in cb_modes:
                    cls = GenerateBatchMode if mode == "generate_batch" else GenerateBatchCallMode
                    try:
                        runner = cls(model, max_batch, device, max(args.prompt_lens), max(OUTPUT_LENS),
                                     args.burst_timeout)
                    except Exception as e:  # noqa: BLE001
                        traceback.print_exc()
                        for p in args.prompt_lens:
                            for r in args.requests:
                                record(model_name, p, max_batch, r, mode, error=f"setting up {mode}: {e!r}")
                        continue
                    measure(runner, mode, max_batch)
                    try:
                        runner.close()
                    except Exception as e:  # noqa: BLE001
                        log(f"warning: closing {mode}: {e!r}")
                # The next batch limit gets a manager of its own; this one's KV cache holds most of the free memory.
                release(model, attn)
            del model
            gc.collect()
            torch.cuda.empty_cache()
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
