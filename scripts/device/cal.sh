# Calibrate both models (with --check), then bench-kernels both if time is left.
set -u
source scripts/device/prep.sh
mkdir -p $OUT/logs $OUT/bench $OUT/cal
T0=$(date +%s); LIMIT=${LIMIT:-300}
echo "rev $(cat .device/rev.txt) start $(date -u +%T)" > $OUT/logs/times
for m in qwen2.5-1.5b qwen2.5-0.5b; do
  left=$(( LIMIT - ($(date +%s) - T0) ))
  if [ $left -lt 100 ]; then echo "no time for $m ($left s)" >> $OUT/logs/times; break; fi
  timeout $((left - 5)) batchlab calibrate --model $m --check --out $OUT/cal > $OUT/logs/cal-$m.txt 2>&1
  echo "calibrate $m rc $? $(date -u +%T)" >> $OUT/logs/times
  tail -2 $OUT/logs/cal-$m.txt
done
for m in qwen2.5-1.5b qwen2.5-0.5b; do
  left=$(( LIMIT - ($(date +%s) - T0) ))
  if [ $left -lt 25 ]; then echo "no time for bench $m ($left s)" >> $OUT/logs/times; break; fi
  timeout $((left - 2)) batchlab bench-kernels --model $m --out $OUT/bench/kernels-$m.md > $OUT/logs/bench-$m.txt 2>&1
  echo "bench $m rc $? $(date -u +%T)" >> $OUT/logs/times
done
cat $OUT/logs/times
