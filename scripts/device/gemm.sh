# Kernel tests (a failure stops the script), bench-kernels for both models, then calibrate both (with --check) while
# LIMIT seconds (default 560) last.
set -u
source scripts/device/prep.sh
mkdir -p $OUT/logs $OUT/bench $OUT/cal
T0=$(date +%s); LIMIT=${LIMIT:-560}
echo "rev $(cat .device/rev.txt) start $(date -u +%T)" > $OUT/logs/times
gpu_kernels --ignored --test-threads=1 --skip kernel_timings_report > $OUT/logs/gpu-kernels.txt 2>&1
rc=$?; echo "kernel tests rc $rc $(date -u +%T)" >> $OUT/logs/times
grep -a "test result\|FAILED\|panicked" $OUT/logs/gpu-kernels.txt | head -20
if [ $rc -ne 0 ]; then exit 1; fi
bench_models 25 qwen2.5-1.5b qwen2.5-0.5b
for m in qwen2.5-1.5b qwen2.5-0.5b; do
  grep -a "gemm.*| \(32\|64\)×\|s[36][24]s" $OUT/bench/kernels-$m.md | head -30
done
calibrate_models 150 qwen2.5-1.5b qwen2.5-0.5b
cat $OUT/logs/times
