# calibrate --check with cuBLAS timed where the engine runs it padded (--pad-cublas) and the GPU left idle after each
# heavy point as long as it kept it busy (--cool-down): does the offset grid then read the large GEMMs as the profile
# does?
# (Without the cool-down, reports/padded-cublas-h100/: the profile's large GEMMs 10-20% slower than the same shapes
# timed in the offset grid.) qwen2.5-1.5b, then qwen2.5-0.5b where 110 s are left, while LIMIT (default 450) s last.
set -u
source scripts/device/prep.sh
begin 450
for m in qwen2.5-1.5b qwen2.5-0.5b; do
  l=$(left)
  if [ "$l" -lt 110 ]; then echo "no time for calibrate $m ($l s)" >> $OUT/logs/times; break; fi
  timeout $((l - 5)) batchlab calibrate --model $m --check --pad-cublas --cool-down --out $OUT/cal \
    > $OUT/logs/cal-$m.txt 2>&1
  echo "calibrate $m rc $? $(date -u +%T)" >> $OUT/logs/times
  tail -2 $OUT/logs/cal-$m.txt
done
cat $OUT/logs/times
