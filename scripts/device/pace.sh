# Do fresh engines of one build draw one of two paces (reports/pace-h100/)? Eight engines one after another, each
# timing the same decode points, sized as validate sizes Poisson's continuous run (a KV cache of 95% of the free
# memory), then eight with a KV cache of only what the points need: whether the draw follows the big allocation.
set -u
source scripts/device/prep.sh
mkdir -p $OUT/logs $OUT/bench
PROF=$(card_dir)/qwen2.5-1.5b.json
export BATCHLAB_LOG=batchlab::engine::forward=info
for kv in 2566432 default; do
  extra=""; [ $kv = default ] || extra="--kv-tokens $kv"
  timeout 200 batchlab bench-engine --model qwen2.5-1.5b --gemm ours --launch pdl --plans $PROF \
    --decode 1x400,4x500,24x1500 --engines 8 $extra --out $OUT/bench/engines-kv-$kv.md > $OUT/logs/kv-$kv.txt 2>&1
  echo "kv $kv rc $? $(date -u +%T)" >> $OUT/logs/times
done
cat $OUT/logs/times
