# Calibrate qwen2.5-1.5b (the Poisson scenario's model) with --check, keep the profile for the later calls of this
# machine start and validate scenarios/poisson.toml at RATES (default '[8,16,32]') against it, in one call while
# LIMIT seconds (default 590) last: the first call of a Poisson sweep on a card whose profile is not committed.
set -u
source scripts/device/prep.sh
begin 590
calibrate_models 100 qwen2.5-1.5b
keep_profiles
validate_poisson "${RATES:-[8,16,32]}" "${REPEATS:-1}"
cat $OUT/logs/times
