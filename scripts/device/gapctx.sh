# How a decode graph's step grows with the context, beside what the op tables say: qwen2.5-1.5b's engine steps
# (calibrate's three context groups) run 540-610 us beyond their kernels at 16 sequences after 1,024 tokens, 50-110 us
# after 64 and 128 (calibration/h100-80gb-hbm3/, `python3 scripts/graph_gaps.py`), and validate's Poisson steps of
# 9-16 sequences (mean context ~600, longest up to 4,096) ran 8-10% faster than the profile priced them with the
# 1,024-token gap. bench-engine at 4, 16 and 64 sequences over 128 to 4,096 tokens, our GEMM and cuBLAS, programmatic
# and serial graphs, against this card's profile's plans, while LIMIT (default 260) seconds last: compare each
# step's growth with the attention table's (28 layers × decode attention at that batch and context). Then the same
# points with our GEMM and programmatic graphs on an engine whose KV cache spans most of the card (1.5 M token slots,
# ~43 GB, as calibrate's and validate's engines do) rather than what the points need: whether the pages' spread over
# the card (TLB reach) is what grows with the context.
set -u
source scripts/device/prep.sh
begin 260
use_kept_profiles
P=$(card_dir)/qwen2.5-1.5b.json
pts=$(for b in 4 16 64; do for c in 128 384 640 1024 2048 4096; do printf "%sx%s," $b $c; done; done)
timeout 140 batchlab bench-engine --model qwen2.5-1.5b --plans $P --decode ${pts%,} --prefill 1x64 \
  > $OUT/bench/gapctx.md 2>&1
echo "bench rc $? $(date -u +%T)" >> $OUT/logs/times
timeout $(( $(left) - 5 )) batchlab bench-engine --model qwen2.5-1.5b --plans $P --gemm ours --launch pdl \
  --kv-tokens 1500000 --decode ${pts%,} --prefill 1x64 > $OUT/bench/gapctx-widekv.md 2>&1
echo "bench wide KV rc $? $(date -u +%T)" >> $OUT/logs/times
grep -a "^| " $OUT/bench/gapctx.md | head -80
grep -a "^| " $OUT/bench/gapctx-widekv.md | head -30
cat $OUT/logs/times
