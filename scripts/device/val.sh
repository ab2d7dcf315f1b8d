# Validate the seed matrix (--repeats 3) against the profiles in calibration/ (the H200's on an H200; those an
# earlier call of this machine start calibrated, where one did: keep_profiles) while LIMIT seconds (default 570)
# last; the output folder (less its runs/) comes back in results.tar.xz.
set -u
source scripts/device/prep.sh
begin 570
use_kept_profiles
validate_seed
cat $OUT/logs/times
