#!/usr/bin/env python3
"""How well cuBLAS's GEMM tables of a profile predict the cuBLAS points of its offset grid, read two ways.

    python3 scripts/cublas_envelope.py calibration/h100-80gb-hbm3/qwen2.5-1.5b [more profile bases ...]

Each argument is a profile's path without `.json`; `<base>.offset.json` must sit beside it (`calibrate --check`).
"line" reads a row count between two grid points on the straight line through them (as `check-profile` does,
beyond the last point in proportion to the rows); "envelope" first lowers each grid point to the cheapest of the
points above it, i.e. assumes cuBLAS is never slower at fewer rows, and then reads the line. Prints the median, p95
(nearest rank) and largest |predicted - measured| / measured over every weight shape's offset points.
"""
import bisect
import json
import math
import statistics
import sys


def read(x, y, rows):
    if rows <= x[0]:
        return y[0]
    if rows >= x[-1]:
        return y[-1] * rows / x[-1]
    i = bisect.bisect_right(x, rows) - 1
    if x[i] == rows:
        return y[i]
    t = (rows - x[i]) / (x[i + 1] - x[i])
    return y[i] + t * (y[i + 1] - y[i])


def envelope(y):
    low = list(y)
    for i in range(len(low) - 2, -1, -1):
        low[i] = min(low[i], low[i + 1])
    return low


def nearest_rank(sorted_values, q):
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def main(bases):
    for base in bases:
        with open(base + ".json") as f:
            profile = json.load(f)
        with open(base + ".offset.json") as f:
            offset = json.load(f)
        errors = {"line": [], "envelope": []}
        for table, points in zip(profile["gemm"], offset["gemm"]):
            assert table["name"] == points["name"], (table["name"], points["name"])
            x, y = table["cublas_us"]["x"], table["cublas_us"]["y"]
            low = envelope(y)
            for rows, measured in zip(points["cublas_us"]["x"], points["cublas_us"]["y"]):
                errors["line"].append(abs(read(x, y, rows) / measured - 1))
                errors["envelope"].append(abs(read(x, low, rows) / measured - 1))
        for how, values in errors.items():
            values.sort()
            print(
                f"{base} {how}: {len(values)} points, median {100 * statistics.median(values):.2f}%, "
                f"p95 {100 * nearest_rank(values, 0.95):.2f}%, max {100 * values[-1]:.2f}%"
            )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
