# Decode attention letting the next kernel of a decode graph launch after its main loop (the glu build in .device/glu/,
# branch exp/decode-late-trigger) against at its start (this build: the kernels 11a4231825ad of the committed
# profiles). reports/pad-cool-h100/ saw qwen2.5-1.5b's 16-row graph (our GEMM, programmatic launch; the O projection
# on the tiled kernel with split-K 8 at those rows) grow with the context 170-420 us beyond the attention table, more
# than launched serially, and come out 5-10% faster or slower than its profile from one validate engine to the next.
# First the glu build's decode attention test and its engine GPU tests (but the transformers one); then bench-engine
# of qwen2.5-1.5b at 4, 8 and 16 sequences over 134 to 4,102 tokens, our GEMM with the committed profile's plans,
# programmatic graphs, three engines a pass (is a step's pace an engine's?), the builds alternating (this, glu, glu,
# this), while LIMIT (default 320) seconds last. If the glu build is faster and one-moded, calibrate and validate
# with it next (`GLU=1 bash scripts/device/calval.sh` chooses it once its tests pass: `try_glu`).
set -u
source scripts/device/prep.sh
begin 320
gpu_tests glu-gpu_kernels decode || exit 1
gpu_tests glu-gpu_engine --skip transformers || exit 1
P=$(card_dir)/qwen2.5-1.5b.json
pts=4x1030,4x4102,8x1030,16x134,16x646,16x1030,16x2054,16x4102
n=0
for b in batchlab glu-batchlab glu-batchlab batchlab; do
  n=$((n + 1))
  l=$(left)
  if [ "$l" -lt 45 ]; then echo "no time for pass $n ($l s)" >> $OUT/logs/times; break; fi
  timeout $((l - 5)) $b bench-engine --model qwen2.5-1.5b --plans $P --gemm ours --launch pdl --engines 3 \
    --decode $pts --prefill 1x64 > $OUT/bench/pass$n-$b.md 2>&1
  echo "pass $n $b rc $? $(date -u +%T)" >> $OUT/logs/times
done
grep -a "decode batch 16" $OUT/bench/pass*.md | head -60
cat $OUT/logs/times
