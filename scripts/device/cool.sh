# calibrate --check with cuBLAS timed where the engine runs it padded (--pad-cublas) and the GPU left idle after each
# heavy point as long as it kept it busy (--cool-down): does the offset grid then read the large GEMMs as the profile
# does?
# (Without the cool-down, reports/padded-cublas-h100/: the profile's large GEMMs 10-20% slower than the same shapes
# timed in the offset grid.) qwen2.5-1.5b, then qwen2.5-0.5b where 110 s are left, while LIMIT (default 450) s last.
set -u
source scripts/device/prep.sh
begin 450
CAL_FLAGS="--pad-cublas --cool-down" calibrate_models 110 qwen2.5-1.5b qwen2.5-0.5b
cat $OUT/logs/times
