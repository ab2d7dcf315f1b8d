# Calibrate both models (with --check), then bench-kernels both, while LIMIT seconds (default 300) last.
set -u
source scripts/device/prep.sh
begin 300
calibrate_models 100 qwen2.5-1.5b qwen2.5-0.5b
bench_models 25 qwen2.5-1.5b qwen2.5-0.5b
cat $OUT/logs/times
