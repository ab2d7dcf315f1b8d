#!/usr/bin/env python3
"""Score rules for decode attention's partition size against a `bench-kernels --mixed` sweep, offline.

`batchlab bench-kernels --model M --mixed` times decode attention over the 42 batches of mixed context lengths
calibration measures, each at every partition size (its last table, "Decode attention at every partition size").
That table names each batch by its size, mean and longest context only; the contexts themselves are read from
calibration profiles of the same model (their `decode_mixed`, which hold the same batches: calibrate draws them
alike on every card). For each rule this prints how many batches it puts within 5% of their fastest partition, and
the mean, 90th percentile and worst of (time at the rule's partition) / (fastest time), then the batches each rule
misses most. Needs nothing but Python. Usage:

    python3 scripts/partition_rules.py SWEEP.md PROFILE.json [PROFILE.json ...] [--sms N] [--kv-heads N] [--largest N]

--sms and --kv-heads default to the first profile's card and model; --largest (default 1,024, the kernel's
DEC_PART_TC) is the partition the rules start from, for a sweep of a build whose blocks take more.

The rules (each halves the largest partition down to 256, or to 512 where the longest context fits in
one, while its count of blocks is below its threshold):
  at-longest      kv heads x sequences x ceil(longest / p) < SMs  (the engine's rule, model::decode_partition)
  at-longest/2    the same count < SMs / 2
  with-work       kv heads x sum of ceil(context / p) < SMs  (the blocks that have work)
  with-work/2     the same count < SMs / 2
and, with --largest above 1,024, one that takes the larger partitions only where no sequence is short:
  long-only       at-longest/2 from --largest where every context is at least 1,024 tokens, else at-longest from 1,024

The sweep's uniform batches (batch N x context C) are scored too, apart from the mixed ones.
"""
import argparse
import json
import math
import re
import statistics
import sys

PARTITION_MAX = 1024
PARTITION_MIN = 256
UNSPLIT_MAX = 512


def halved(longest, blocks, threshold, largest):
    floor = UNSPLIT_MAX if longest <= UNSPLIT_MAX else PARTITION_MIN
    p = largest
    while p > floor and blocks(p) < threshold:
        p //= 2
    return p


def rules(sms, kv, largest):
    def at_longest(c, threshold, start=largest):
        longest = max(c)
        return halved(longest, lambda p: kv * len(c) * max(1, math.ceil(longest / p)), threshold, start)

    def with_work(c, threshold):
        return halved(max(c), lambda p: kv * sum(max(1, math.ceil(x / p)) for x in c), threshold, largest)

    def long_only(c):
        if min(c) >= PARTITION_MAX:
            return at_longest(c, sms / 2)
        return at_longest(c, sms, PARTITION_MAX)

    out = {
        "at-longest": lambda c: at_longest(c, sms),
        "at-longest/2": lambda c: at_longest(c, sms / 2),
        "with-work": lambda c: with_work(c, sms),
        "with-work/2": lambda c: with_work(c, sms / 2),
    }
    if largest > PARTITION_MAX:
        out["long-only"] = long_only
    return out


def sweep(path):
    """The sweep's last table: {(batch, mean, longest): {partition: µs}} of its mixed batches and
    {(batch, context): {partition: µs}} of its uniform ones."""
    text = open(path, encoding="utf-8").read()
    marker = "Decode attention at every partition size"
    if marker not in text:
        sys.exit(f"{path}: no '{marker}' table (run bench-kernels with --mixed)")
    lines = text.split(marker, 1)[1].splitlines()
    header = next((l for l in lines if l.startswith("| shape")), None)
    if header is None:
        sys.exit(f"{path}: the partition table has no header")
    sizes = [int(h.split()[-1]) for h in header.strip("|").split("|")[1:]]
    mixed, uniform = {}, {}
    for line in lines:
        m = re.match(r"\| batch (\d+) of mixed contexts \(mean (\d+), longest (\d+)\) \|(.*)\|\s*$", line)
        if m:
            times = [float(x) for x in m.group(4).split("|")]
            mixed[(int(m.group(1)), int(m.group(2)), int(m.group(3)))] = dict(zip(sizes, times))
            continue
        m = re.match(r"\| batch (\d+) × context (\d+) \|(.*)\|\s*$", line)
        if m:
            times = [float(x) for x in m.group(3).split("|")]
            uniform[(int(m.group(1)), int(m.group(2)))] = dict(zip(sizes, times))
    return mixed, uniform


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep")
    ap.add_argument("profiles", nargs="+")
    ap.add_argument("--sms", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--largest", type=int, default=PARTITION_MAX)
    a = ap.parse_args()
    contexts = {}
    first = None
    for path in a.profiles:
        p = json.load(open(path, encoding="utf-8"))
        first = first or p
        for d in p.get("decode_mixed", []):
            c = d["contexts"]
            contexts[(len(c), round(sum(c) / len(c)), max(c))] = c
    sms = a.sms or first["fingerprint"]["sm_count"]
    kv = a.kv_heads or first["fingerprint"]["model"]["kv_heads"]
    timed, uniform = sweep(a.sweep)
    missing = [k for k in timed if k not in contexts]
    if missing:
        sys.exit(f"no profile holds the contexts of {len(missing)} batch(es), e.g. {missing[0]}: pass more profiles")
    print(f"{len(timed)} mixed batches, {sms} SMs, {kv} kv heads, partitions from {a.largest} tokens\n")
    print("| rule | within 5% of the fastest | mean | 90th percentile | worst |")
    print("|---|---:|---:|---:|---:|")
    worst = {}
    ruleset = rules(sms, kv, a.largest)
    for name, rule in ruleset.items():
        ratios = []
        for key, t in timed.items():
            p = rule(contexts[key])
            ratios.append((t[p] / min(t.values()), key, p))
        r = sorted(x[0] for x in ratios)
        p90 = r[min(len(r) - 1, math.ceil(0.9 * len(r)) - 1)]
        within = sum(x <= 1.05 for x in r)
        print(f"| {name} | {within} of {len(r)} | {statistics.mean(r):.3f}x | {p90:.3f}x | {r[-1]:.3f}x |")
        worst[name] = sorted(ratios, reverse=True)[:5]
    for name, rows in worst.items():
        print(f"\n{name}, the batches it misses most:")
        for ratio, (n, mean, longest), p in rows:
            print(f"  batch {n} (mean {mean}, longest {longest}): partition {p}, {ratio:.2f}x the fastest")
    if uniform:
        print(f"\n{len(uniform)} uniform batches: each rule's partition, µs (its time over the fastest)\n")
        print("| shape | fastest | " + " | ".join(ruleset) + " |")
        print("|---|---:|" + "---:|" * len(ruleset))
        for (n, ctx), t in uniform.items():
            best = min(t.values())
            cells = []
            for rule in ruleset.values():
                p = rule([ctx] * n)
                cells.append(f"{p}: {t[p]:.2f} ({t[p] / best:.2f}x)")
            print(f"| batch {n} × context {ctx} | {best:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
