# cuBLAS run only on the row counts a profile timed it at (the engine pads its rows: 1, 2, 4, 8, multiples of 16 to
# 1024, of 64 to 8192). The engine's GPU tests against the reference (cuBLAS padded among them) and its measured
# workspace (buffers sized for the padded rows), then, on an H100, the graph-set experiment of graphs.sh (60 s),
# and both models calibrated with --check --pad-cublas (the default of c86f99c, which ran it for
# reports/padded-cublas-h100/; its check.md reads cuBLAS where the engine runs it), kept for val.sh
# on the same machine start; on an H200 no graph experiment, the seed matrix validated against its new profiles
# instead, as calval.sh does. While LIMIT seconds (default 590) last.
set -u
source scripts/device/prep.sh
begin 590
gpu_tests gpu_engine the_reference the_measured_workspace
if ! on_h200; then
  graph_set_bench 100 engines4-recapture2 --engines 4 --recapture 2
  graph_set_bench 100 engines6 --engines 6
fi
CAL_FLAGS=--pad-cublas calibrate_models 100 qwen2.5-1.5b qwen2.5-0.5b
keep_profiles
on_h200 && validate_seed
cat $OUT/logs/times
