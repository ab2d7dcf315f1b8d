# Kernel tests (a failure stops the script), bench-kernels for both models, then calibrate both (with --check) while
# LIMIT seconds (default 560) last.
set -u
source scripts/device/prep.sh
begin 560
gpu_tests gpu_kernels --skip kernel_timings_report || exit 1
bench_models 25 qwen2.5-1.5b qwen2.5-0.5b
for m in qwen2.5-1.5b qwen2.5-0.5b; do
  grep -a "gemm.*| \(32\|64\)×\|s[36][24]s" $OUT/bench/kernels-$m.md | head -30
done
calibrate_models 150 qwen2.5-1.5b qwen2.5-0.5b
cat $OUT/logs/times
