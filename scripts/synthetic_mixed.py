#!/usr/bin/env python3
"""Synthetic profiles for judging a decode partition rule offline, as the cost model would read it.

Takes a calibration profile and its offset grid (<model>.json and <model>.offset.json from `calibrate --check`) and
one or more `bench-kernels --mixed` sweeps of the same kernels and model (each of the 42 mixed-length batches timed
at every partition size), and writes, for each rule of `partition_rules.py`, the two files with every mixed-length
point's time replaced by the sweeps' mean time at the partition that rule picks (the engine revision set to RULE's:
1 for at-longest, 2 for with-work, as the cost model reads them). `batchlab check-profile OUT/RULE.json
OUT/RULE.offset.json` then reports how well the cost model predicts such batches. It also prints how the profile's
own mixed points compare with the sweeps at the engine's rule (how well the sweeps stand in for calibration). Usage:

    python3 scripts/synthetic_mixed.py PROFILE_PREFIX OUT_DIR SWEEP.md [SWEEP.md ...]

e.g. PROFILE_PREFIX reports/empty-partitions-h100/profile/qwen2.5-0.5b.
"""
import copy
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import partition_rules  # noqa: E402

REVISION = {"at-longest": 1, "with-work": 2}


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    prefix, out = sys.argv[1], sys.argv[2]
    sweeps = [partition_rules.sweep(p) for p in sys.argv[3:]]
    os.makedirs(out, exist_ok=True)
    profiles = {s: json.load(open(f"{prefix}.{s}", encoding="utf-8")) for s in ("json", "offset.json")}
    f = profiles["json"]["fingerprint"]
    rules = partition_rules.rules(f["sm_count"], f["model"]["kv_heads"])
    for rule, revision in REVISION.items():
        for suffix, profile in profiles.items():
            q = copy.deepcopy(profile)
            ratios = []
            for m in q["decode_mixed"]:
                c = m["contexts"]
                key = (len(c), round(sum(c) / len(c)), max(c))
                t = statistics.mean(s[key][rules[rule](c)] for s in sweeps)
                if rule == "at-longest":
                    ratios.append(m["us"] / t)
                m["us"] = t
            q["fingerprint"]["engine_revision"] = revision
            with open(os.path.join(out, f"{rule}.{suffix}"), "w", encoding="utf-8") as w:
                json.dump(q, w)
            if ratios:
                print(f"{suffix}: the profile's mixed points / the sweeps' at the engine's rule: median "
                      f"{statistics.median(ratios):.3f}x, {min(ratios):.3f}x to {max(ratios):.3f}x")
    print(f"wrote {out}/{{at-longest,with-work}}.{{json,offset.json}}")


if __name__ == "__main__":
    main()
