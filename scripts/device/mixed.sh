# bench-kernels --mixed of both models (decode attention over the 42 mixed-length batches calibration measures, each
# at every partition size), while LIMIT seconds (default 400) last: what `python3 scripts/partition_rules.py` scores
# partition rules against offline (with the profiles of the same models for the batches' contexts). No sweep of
# qwen2.5-1.5b's heads of 128 exists yet: the branch exp/partition-by-contexts (the blocks with work counted) waits on
# it (reports/pace-trigger-h100/).
set -u
source scripts/device/prep.sh
begin 400
for m in qwen2.5-1.5b qwen2.5-0.5b; do
  l=$(left)
  if [ "$l" -lt 60 ]; then echo "no time for bench $m ($l s)" >> $OUT/logs/times; break; fi
  timeout $((l - 5)) batchlab bench-kernels --model $m --mixed --out $OUT/bench/kernels-mixed-$m.md \
    > $OUT/logs/bench-$m.txt 2>&1
  echo "bench $m --mixed rc $? $(date -u +%T)" >> $OUT/logs/times
done
cat $OUT/logs/times
