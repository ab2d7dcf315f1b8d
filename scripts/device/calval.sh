# Calibrate both models with --check (no benchmark, no GPU tests but, with GLU=1, a glu build's (.device/glu/) GPU
# tests whose names hold one of GLU_TESTS (default: attention_decode decode reference — each kernel's test against its
# CPU reference, the engine's decode and against-reference tests), which choose it if they pass: for a second card, the kernels having passed all
# their tests on the first), put the profiles in this card's calibration/ and validate the seed matrix against
# them, calibrating qwen2.5-0.5b a second time between the two where time allows (calibrate_again: issue 3's
# calibrate-twice agreement), all in one call while LIMIT seconds (default 590) last.
set -u
source scripts/device/prep.sh
begin 590
try_glu ${GLU_TESTS:-attention_decode decode reference}
calibrate_models 100 qwen2.5-1.5b qwen2.5-0.5b
keep_profiles
calibrate_again 300 qwen2.5-0.5b
validate_seed
cat $OUT/logs/times
