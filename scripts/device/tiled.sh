# Our tiled GEMM kernel lets the next kernel launch after its main loop instead of at its start (as the skinny and
# staged kernels do): in qwen2.5-1.5b's 16-row decode graph of our GEMM (tiled 16x64/16x32 plans with split-K for
# qkv and o) steps ran 670-730 us above their kernels' time, against 40-60 us at 8 rows. The build before (in
# .device/) and the build with the change (.device/glu/) time 1.5b's decode graphs of our GEMM with the plans of
# .device/plans-1.5b.json; then the glu build's GEMM and engine tests, and if they pass, both models calibrated
# with it (--check) and kept for val.sh on the same machine start, while LIMIT (default 420) seconds last.
set -u
source scripts/device/prep.sh
begin 420
for b in batchlab glu-batchlab; do
  $b bench-engine --model qwen2.5-1.5b --gemm ours --launch pdl --plans .device/plans-1.5b.json \
    --decode 8x128,16x128,32x128,16x1024 --prefill 1x64 > $OUT/bench/$b.txt 2>&1
  echo "bench $b rc $? $(date -u +%T)" >> $OUT/logs/times
  grep -a "^ *[0-9]*x[0-9]\|decode" $OUT/bench/$b.txt | head -12
done
if gpu_tests glu-gpu_kernels gemm && gpu_tests glu-gpu_engine the_reference; then
  use_glu
  calibrate_models 100 qwen2.5-1.5b qwen2.5-0.5b
  keep_profiles
else
  echo "glu build failed its tests" >> $OUT/logs/times
fi
cat $OUT/logs/times
