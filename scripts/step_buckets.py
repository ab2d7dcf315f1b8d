#!/usr/bin/env python3
"""Decode-only steps of a `validate` output folder, grouped by run, decode-graph bucket and longest context: how far
each group's GPU time is from the cost model's, in microseconds (measured - predicted; positive: the step ran
slower than predicted).

Reads runs/<run>/step_errors.csv (written by `validate` beside step_errors.parquet; the device scripts bring them
back in steps-*.tar.xz), so it needs nothing but Python. Usage:

    python3 scripts/step_buckets.py DIR [--min-steps N]

One row per (run, bucket, longest-context class) with at least N steps (default 20): the steps, the median and the
10th/90th percentiles of measured - predicted GPU time, the median mean context and the median measured GPU time.
"""
import csv
import glob
import os
import statistics
import sys

# The engine's decode graph buckets (crate::model::GRAPH_BUCKETS up to 64 rows): a step of n sequences replays the
# smallest that holds it.
BUCKETS = [1, 2, 4, 8, 16, 24, 32, 48, 64]
CONTEXT_CLASSES = [(512, "<=512"), (1024, "<=1024"), (2048, "<=2048")]


def bucket(n):
    return next((b for b in BUCKETS if b >= n), None)


def context_class(longest):
    return next((name for limit, name in CONTEXT_CLASSES if longest <= limit), ">2048")


def groups(folder):
    out = {}
    files = sorted(glob.glob(os.path.join(folder, "runs", "*", "step_errors.csv")))
    if not files:
        sys.exit(f"{folder}: no runs/*/step_errors.csv (a validate output folder, or steps-*.tar.xz unpacked)")
    for path in files:
        run = os.path.basename(os.path.dirname(path))
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if r["kind"] != "decode" or not r["measured_gpu_ms"] or not r["predicted_gpu_ms"]:
                    continue
                n = int(r["decode_seqs"])
                measured = float(r["measured_gpu_ms"]) * 1000.0
                diff = measured - float(r["predicted_gpu_ms"]) * 1000.0
                key = (run, bucket(n), context_class(int(r["max_context"])))
                out.setdefault(key, []).append((diff, int(r["kv_read_tokens"]) / n, measured))
    return out


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        sys.exit(__doc__)
    least = int(args[args.index("--min-steps") + 1]) if "--min-steps" in args else 20
    rows = groups(args[0])
    print("| run | bucket | longest context | steps | measured − predicted GPU, median µs | p10 | p90 "
          "| mean context | measured GPU, median µs |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    order = [name for _, name in CONTEXT_CLASSES] + [">2048"]
    for key in sorted(rows, key=lambda k: (k[0], k[1], order.index(k[2]))):
        v = rows[key]
        if len(v) < least:
            continue
        d = sorted(x[0] for x in v)
        p10, p90 = d[len(d) // 10], d[(9 * len(d)) // 10]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {len(v)} | {statistics.median(d):+.0f} | {p10:+.0f} | {p90:+.0f} "
              f"| {statistics.median(x[1] for x in v):.0f} | {statistics.median(x[2] for x in v):.0f} |")


if __name__ == "__main__":
    main()
