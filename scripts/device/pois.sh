# Validate scenarios/poisson.toml at RATES (default '[16,32]') with --repeats REPEATS (default 1) against this card's
# profiles (those an earlier call of this machine start calibrated, where one did: keep_profiles), while LIMIT seconds
# (default 570) last; the output folder (less its runs/) comes back in results.tar.xz.
set -u
source scripts/device/prep.sh
begin 570
use_kept_profiles
# Each engine's set-up (its buffers' addresses, and, once its decode graphs are captured, the GEMM split-K scratch's
# and decode attention's workspace's) and every decode graph captured again in mid-serving (after a workspace moved) in the log
# (logs/poisson.txt), in the order the runs build their engines: whether a run whose graph bucket ran off its
# profile (reports/pad-cool-h100/) had one.
export BATCHLAB_LOG=${BATCHLAB_LOG:-warn,batchlab::engine::forward=info}
validate_poisson "${RATES:-[16,32]}" "${REPEATS:-1}"
cat $OUT/logs/times
