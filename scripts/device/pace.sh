# Which engines of a process run at the profile's pace (reports/poisson-h100-sweep/: in eleven validate processes
# the third engine built was the fastest, most others 2-5% slower than the profile), and does it follow the memory
# an engine is mapped to? Eight engines one after another in one bench-engine process, each timing the same decode
# points (and the default prefill points), with a KV cache of what the points need: once as CUDA's pool does by
# default (each engine's memory back to the driver at the next synchronisation), once with the pool keeping it for
# the next engine (--keep-freed-memory). Then the continuous run of Poisson at 32 req/s validated four times
# (--repeats 4, one priming engine: engines #2 to #5, named in validation.md's pass-by-pass table) both ways, with a
# KV cache of 400,000 tokens (11 GiB for qwen2.5-1.5b: two fit, so the kept pool can serve the next engine).
set -u
source scripts/device/prep.sh
mkdir -p $OUT/logs $OUT/bench
PLANS=$(card_dir)/qwen2.5-1.5b.json
export BATCHLAB_LOG=batchlab::engine::forward=info
for v in default keep; do
  extra=""; [ $v = keep ] && extra="--keep-freed-memory"
  timeout 130 batchlab bench-engine --model qwen2.5-1.5b --gemm ours --launch pdl --plans $PLANS \
    --decode 1x400,4x500,24x1500 --engines 8 $extra --out $OUT/bench/engines-$v.md > $OUT/logs/bench-$v.txt 2>&1
  echo "bench $v rc $? $(date -u +%T)" >> $OUT/logs/times
done
card_profile_args
for v in default keep; do
  extra=""; [ $v = keep ] && extra="--keep-freed-memory"
  rm -rf /tmp/val32
  timeout 140 batchlab validate scenarios/poisson.toml --set 'sweep.workload.rate=[32]' \
    --set 'sweep.scheduler.policy=["continuous"]' --set memory.kv_capacity_tokens=400000 --repeats 4 $extra \
    --no-report --out /tmp/val32 "${PROF[@]}" > $OUT/logs/validate-$v.txt 2>&1
  echo "validate 32 $v rc $? $(date -u +%T)" >> $OUT/logs/times
  cp /tmp/val32/validation.md $OUT/bench/validate-32-$v.md 2>/dev/null
done
cat $OUT/logs/times
