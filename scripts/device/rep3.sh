# Which engines run slow: host-calls GPU test, then Poisson 8 req/s continuous, --repeats 3, priming 1 vs 2.
set -u
source scripts/device/prep.sh
mkdir -p $OUT/logs
date -u +%T > $OUT/logs/start
gpu_tests gpu_engine --skip transformers
PROF=""
if on_h200; then PROF="--set cost.profile=../calibration/h200/{model}.json"; fi
export BATCHLAB_LOG=batchlab::engine::forward=info,batchlab::validate=info
for p in 1 2; do
  date -u +%T >> $OUT/logs/start
  timeout 260 batchlab validate scenarios/poisson.toml --out $OUT/p$p --repeats 3 --prime-engines $p --no-report -q \
    --set 'sweep.workload.rate=[8]' --set 'sweep.scheduler.policy=["continuous"]' $PROF > $OUT/logs/p$p.txt 2>&1
  echo "rc $?" >> $OUT/logs/p$p.txt
  tail -3 $OUT/logs/p$p.txt
  grep -A12 "pass by pass" $OUT/p$p/validation.md
done
date -u +%T >> $OUT/logs/start
rm -rf $OUT/p*/runs $OUT/p*/simulated/runs
