# Decode graphs running our GEMM for every projection up to the profile's graph_ours_rows (programmatic launch kept,
# which a graph holding a cuBLAS kernel loses; calibration/README.md): the engine's GPU tests against the reference
# (a policy with such graphs among them), both models calibrated with --check (each profile records its
# graph_ours_rows and measures its engine steps so: `python3 scripts/graph_gaps.py` on them should show the small
# gaps of programmatic graphs up to that many rows), kept for the calls after it, then the seed matrix validated
# against them, while LIMIT seconds (default 590) last. On an H200 the same, against its own new profiles.
set -u
source scripts/device/prep.sh
begin 590
gpu_tests gpu_engine the_reference the_measured_workspace
calibrate_models 100 qwen2.5-1.5b qwen2.5-0.5b
keep_profiles
validate_seed
cat $OUT/logs/times
