# The glu build's (.device/glu/) GPU tests (each kernel's against its CPU reference, the engine's decode and
# against-reference tests), then, with it where they pass (else with the plain build), calibrate --check of
# qwen2.5-0.5b and qwen2.5-1.5b into $OUT/cal while LIMIT seconds (default 300) last: a short call's worth (no
# validation) for a kernel change whose profiles show what it changed (the mixed-length decode points) and how the cost
# model reads it (the .check.md files).
set -u
source scripts/device/prep.sh
begin 300
GLU=1 try_glu attention_decode decode reference
calibrate_models 60 qwen2.5-0.5b qwen2.5-1.5b
keep_profiles
cat $OUT/logs/times
