# Kernel and engine GPU tests of the glu build where there is one and GLU=1 (.device/glu/; if they pass it is the build
# measured from then on, on this machine start too), else of this build (a failure stops the script); bench-kernels of
# qwen2.5-0.5b with the build before (.device/old/batchlab.xz) and this one, twice each, alternating (then
# qwen2.5-1.5b once each); then calibrate both with this build (with --check) while LIMIT seconds (default 440) last.
# AB_NEED: the seconds a bench round needs left (default 240, to leave the calibrations theirs); CAL=0: no
# calibration.
set -u
source scripts/device/prep.sh
begin 440
try_glu --skip kernel_timings_report --skip transformers ||
  { gpu_tests gpu_kernels --skip kernel_timings_report && gpu_tests gpu_engine --skip transformers; } || exit 1
# qwen2.5-0.5b alternating: the build before, this one, this one again, the build before again; then qwen2.5-1.5b.
for x in qwen2.5-0.5b:old-batchlab:a qwen2.5-0.5b:batchlab:a qwen2.5-0.5b:batchlab:b qwen2.5-0.5b:old-batchlab:b \
  qwen2.5-1.5b:old-batchlab:a qwen2.5-1.5b:batchlab:a; do
  IFS=: read m b r <<< "$x"
  [ "$(left)" -gt "${AB_NEED:-240}" ] || break
  timeout 60 $b bench-kernels --model $m --out $OUT/bench/kernels-$m-$b-$r.md > $OUT/logs/bench-$m-$b-$r.txt 2>&1
  echo "bench $m $b $r rc $? $(date -u +%T)" >> $OUT/logs/times
done
for f in $OUT/bench/*.md; do echo "== $f"; grep -a "attention decode | batch" $f | head -5; done
[ "${CAL:-1}" = 1 ] && calibrate_models 100 qwen2.5-1.5b qwen2.5-0.5b && keep_profiles
cat $OUT/logs/times
