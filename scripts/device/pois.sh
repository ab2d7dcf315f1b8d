# Validate scenarios/poisson.toml at RATES (default '[16,32]') with --repeats REPEATS (default 1) against this card's
# profiles (those an earlier call of this machine start calibrated, where one did: keep_profiles), while LIMIT seconds
# (default 570) last; the output folder (less its runs/) comes back in results.tar.xz.
set -u
source scripts/device/prep.sh
begin 570
use_kept_profiles
validate_poisson "${RATES:-[16,32]}" "${REPEATS:-1}"
cat $OUT/logs/times
