#!/usr/bin/env python3
"""Decode graphs with a cuBLAS kernel run serially: what that costs, read from profiles' engine steps.

    python3 scripts/graph_gaps.py calibration/h100-80gb-hbm3/qwen2.5-1.5b.json [more profiles ...]

For each decode graph bucket that `calibrate` timed (1 to 64 sequences, after contexts of 64, 128 and 1,024 tokens,
each context group on an engine of its own), prints the gap of its steps (GPU time beyond the kernels' time from
the op tables, in µs; one per context group) and which projections the profile's tables send to cuBLAS at that
many rows, with what cuBLAS saves over our kernel in the whole step (every layer's projections and lm_head, µs).
A decode graph holding any cuBLAS kernel launches its kernels serially (`gpu::timing::kernel_edges`), one of our
kernels alone programmatically: the buckets with cuBLAS show the larger gaps, in every engine of the process.
"""
import json
import sys


def at(curve, x):
    xs, ys = curve["x"], curve["y"]
    if x <= xs[0]:
        return ys[0]
    for i in range(len(xs) - 1):
        if xs[i] <= x <= xs[i + 1]:
            return ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i])
    return ys[-1]


def cublas_chosen(table, rows):
    """Whether the profile's rule for `rows` picks cuBLAS (as `GemmTable::ours_faster` decides, at our grid point
    at or above the rows), and what cuBLAS saves there per GEMM."""
    point = min((x for x in table["ours_us"]["x"] if x >= rows), default=table["ours_us"]["x"][-1])
    xs = table["cublas_us"]["x"]
    i = xs.index(point) if point in xs else min(range(len(xs)), key=lambda k: abs(xs[k] - point))
    cublas, spread = table["cublas_us"]["y"][i], table["cublas_spread"][i]
    chosen = at(table["ours_us"], point) > cublas * (1 + spread)
    return chosen, (at(table["ours_us"], rows) - at(table["cublas_us"], rows)) if chosen else 0.0


def main(paths):
    for path in paths:
        p = json.load(open(path))
        layers = p["fingerprint"]["model"]["layers"]
        print(f"{path} ({p['fingerprint'].get('gpu_uuid') or p['fingerprint']['gpu_name']})")
        gaps = {}
        for s in p.get("engine", {}).get("samples", []):
            if s["kind"] != "decode" or s.get("serving_us") is not None:
                continue
            gaps.setdefault(s["decode_seqs"], []).append(round(s["gpu_us"] - s["kernels_us"]))
        ours_rows = p.get("graph_ours_rows", 0)
        if ours_rows:
            print(f"  (graphs of up to {ours_rows} rows run our GEMM for every projection: graph_ours_rows)")
        for rows in sorted(gaps):
            names, saved = [], 0.0
            for g in p["gemm"]:
                chosen, each = cublas_chosen(g, rows)
                if chosen:
                    names.append(g["name"])
                    saved += each * (1 if g["name"] == "lm_head" else layers)
            cublas = f"cuBLAS for {', '.join(names)}, saving {saved:.0f} µs" if names else "our kernel only"
            if names and rows <= ours_rows:
                cublas = f"our kernel only in the graph (the tables: {cublas})"
            print(f"  {rows:>3} sequences: gaps {gaps[rows]} µs; {cublas}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
