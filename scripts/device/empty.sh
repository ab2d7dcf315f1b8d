# A/B of decode attention over mixed-length batches: the build in .device/glu/ (written for exp/empty-partitions:
# blocks past a sequence's own partitions leave at once, and its partitions merge among themselves) against the plain
# build, both under their own names even where an earlier call of this machine start chose the glu build (that choice
# is put back at the end, for the calls after). The
# glu build's decode attention kernel test and engine decode tests first; then bench-kernels --mixed (the 42 mixed
# batches calibration measures, each at its default split and every partition size) of qwen2.5-0.5b with the plain
# build, the glu build, then qwen2.5-1.5b with the glu build and the plain one, while LIMIT seconds (default 580) last.
set -u
choice=$(cat /tmp/build-choice 2>/dev/null)
rm -f /tmp/build-choice
source scripts/device/prep.sh
begin 580
gpu_tests glu-gpu_kernels attention_decode
gpu_tests glu-gpu_engine decode
bench() {
  local l; l=$(left)
  if [ "$l" -lt 70 ]; then echo "no time for $1 $2 ($l s)" >> $OUT/logs/times; return; fi
  timeout $((l - 5)) $1 bench-kernels --model $2 --mixed --out $OUT/bench/kernels-mixed-$2-$1.md \
    > $OUT/logs/bench-$2-$1.txt 2>&1
  echo "$1 bench $2 --mixed rc $? $(date -u +%T)" >> $OUT/logs/times
}
bench batchlab qwen2.5-0.5b
bench glu-batchlab qwen2.5-0.5b
bench glu-batchlab qwen2.5-1.5b
bench batchlab qwen2.5-1.5b
cat $OUT/logs/times
if [ -n "$choice" ]; then echo "$choice" > /tmp/build-choice; fi
