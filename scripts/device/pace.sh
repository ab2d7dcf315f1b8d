# Which engines of a process run at the profile's pace (reports/poisson-h100-sweep/: in eleven validate processes
# the third engine built was the fastest, most others 2-5% slower than the profile)? Eight engines one after another
# in one bench-engine process, each timing the same decode points, sized as validate sizes Poisson's continuous run
# (a KV cache of 95% of the free memory), then with a KV cache of only what the points need: once as CUDA's pool
# does by default (each engine's memory back to the driver before the next), once with the pool keeping it for the
# next engine (--keep-freed-memory; not with the big cache, whose second copy would not fit beside the first if the
# pool could not reuse it). Then the continuous run of Poisson at 32 req/s validated four times (--repeats 4, one
# priming engine): the paces of a validate process's engines #2 to #5, named in its pass-by-pass table.
set -u
source scripts/device/prep.sh
mkdir -p $OUT/logs $OUT/bench
PROF=$(card_dir)/qwen2.5-1.5b.json
export BATCHLAB_LOG=batchlab::engine::forward=info
for v in kv95 small small-keep; do
  case $v in kv95) extra="--kv-tokens 2566432" ;; small-keep) extra="--keep-freed-memory" ;; *) extra="" ;; esac
  timeout 140 batchlab bench-engine --model qwen2.5-1.5b --gemm ours --launch pdl --plans $PROF \
    --decode 1x400,4x500,24x1500 --engines 8 $extra --out $OUT/bench/engines-$v.md > $OUT/logs/$v.txt 2>&1
  echo "$v rc $? $(date -u +%T)" >> $OUT/logs/times
done
card_profile_args
timeout 140 batchlab validate scenarios/poisson.toml --set 'sweep.workload.rate=[32]' \
  --set 'sweep.scheduler.policy=["continuous"]' --repeats 4 --no-report --out /tmp/val32 "${PROF[@]}" \
  > $OUT/logs/validate-32.txt 2>&1
echo "validate 32 rc $? $(date -u +%T)" >> $OUT/logs/times
cp /tmp/val32/validation.md $OUT/bench/validate-32.md 2>/dev/null
cat $OUT/logs/times
