# Calibrate both models with --check (no GPU tests, no benchmark: for a second card, the kernels having passed their
# tests on the first), put the profiles in this card's calibration/ and validate the seed matrix against them, all
# in one call while LIMIT seconds (default 590) last.
set -u
source scripts/device/prep.sh
begin 590
calibrate_models 100 qwen2.5-1.5b qwen2.5-0.5b
keep_profiles
validate_seed
cat $OUT/logs/times
