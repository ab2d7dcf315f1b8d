# Staged GEMM branch: kernel tests (gate), bench-kernels for both models, then calibrate both (with --check).
set -u
source scripts/device/prep.sh
mkdir -p $OUT/logs $OUT/bench $OUT/cal
T0=$(date +%s); LIMIT=${LIMIT:-560}
echo "rev $(cat .device/rev.txt) start $(date -u +%T)" > $OUT/logs/times
gpu_kernels --ignored --test-threads=1 --skip kernel_timings_report > $OUT/logs/gpu-kernels.txt 2>&1
rc=$?; echo "kernel tests rc $rc $(date -u +%T)" >> $OUT/logs/times
grep -a "test result\|FAILED\|panicked" $OUT/logs/gpu-kernels.txt | head -20
if [ $rc -ne 0 ]; then exit 1; fi
for m in qwen2.5-1.5b qwen2.5-0.5b; do
  timeout 120 batchlab bench-kernels --model $m --out $OUT/bench/kernels-$m.md > $OUT/logs/bench-$m.txt 2>&1
  echo "bench $m rc $? $(date -u +%T)" >> $OUT/logs/times
  grep -a "gemm.*| \(32\|64\)×\|s[36][24]s" $OUT/bench/kernels-$m.md | head -30
done
for m in qwen2.5-1.5b qwen2.5-0.5b; do
  left=$(( LIMIT - ($(date +%s) - T0) ))
  if [ $left -lt 150 ]; then echo "no time for $m ($left s)" >> $OUT/logs/times; break; fi
  timeout $((left - 10)) batchlab calibrate --model $m --check --out $OUT/cal > $OUT/logs/cal-$m.txt 2>&1
  echo "calibrate $m rc $? $(date -u +%T)" >> $OUT/logs/times
  tail -4 $OUT/logs/cal-$m.txt
done
cat $OUT/logs/times
