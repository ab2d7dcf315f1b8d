# Sourced by the other scripts here, on the GPU machine, from the repository root: unpacks the binaries built on a
# development machine and put in the git-ignored .device/ (xz-compressed: batchlab.xz, gpu_engine.xz, ...) into
# .device/bin (those of .device/old/, another build to compare with, as old-<name>; those of .device/glu/, a build
# with one more change to try first, as glu-<name>), puts that on PATH and prints the card. Where an earlier call of
# this machine start chose the glu build (use_glu), its binaries take the plain names again.
set -u
D=$(pwd)/.device
mkdir -p "$D/bin"
for f in "$D"/*.xz "$D"/old/*.xz "$D"/glu/*.xz; do
  [ -e "$f" ] || continue
  b=$(basename "$f" .xz)
  case $f in "$D"/old/*) b=old-$b ;; "$D"/glu/*) b=glu-$b ;; esac
  if command -v xz >/dev/null; then xz -dc "$f" > "$D/bin/$b"; else python3 -c "import lzma,sys;open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$f" "$D/bin/$b"; fi
  chmod +x "$D/bin/$b"
done
export PATH="$D/bin:$PATH"

# The glu build's binaries under the plain names from now on, on this machine start (/tmp/build-choice) too.
use_glu() {
  local f
  for f in "$D"/bin/glu-*; do mv "$f" "$D/bin/${f##*/glu-}"; done
  cp "$D/glu/rev.txt" "$D/rev.txt" 2>/dev/null
  echo glu > /tmp/build-choice
}
[ "$(cat /tmp/build-choice 2>/dev/null)" = glu ] && [ -e "$D/bin/glu-batchlab" ] && use_glu

# Whether there is a glu build whose GPU tests pass (further arguments go to both test binaries, as gpu_tests's);
# if so, use_glu. Only with GLU=1 in the environment: .device/glu/ may hold an experiment meant for one script's A/B
# (trigger.sh), not for the profiles a calibrating script measures.
try_glu() {
  [ "${GLU:-0}" = 1 ] || { echo "glu build not tried (GLU=1 not set)" >> $OUT/logs/times; return 1; }
  [ -e "$D/bin/glu-gpu_kernels" ] && [ -e "$D/bin/glu-gpu_engine" ] || return 1
  if gpu_tests glu-gpu_kernels "$@" && gpu_tests glu-gpu_engine "$@"; then
    use_glu
    echo "glu build chosen: $(cat "$D/rev.txt")" >> $OUT/logs/times
  else
    echo "glu build failed its tests: the build without it" >> $OUT/logs/times
    return 1
  fi
}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
nvidia-smi --query-gpu=name,uuid,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv

# Starts the timed part of a script: the output folders, T0, LIMIT (default $1 seconds) and the times log.
begin() {
  mkdir -p $OUT/logs $OUT/bench $OUT/cal
  T0=$(date +%s); LIMIT=${LIMIT:-$1}
  echo "rev $(cat .device/rev.txt 2>/dev/null) start $(date -u +%T)" > $OUT/logs/times
}

# Runs a GPU test binary's ignored tests one at a time (further arguments go to it, e.g. --skip NAME), logging to
# $OUT/logs/<binary>.txt; prints the summary and any failure, returns the binary's status.
gpu_tests() {
  local bin=$1; shift
  $bin --ignored --test-threads=1 "$@" > $OUT/logs/$bin.txt 2>&1
  local rc=$?
  echo "$bin rc $rc $(date -u +%T)" >> $OUT/logs/times
  grep -a "test result\|FAILED\|panicked" $OUT/logs/$bin.txt | head -20
  return $rc
}

# Whether the card is an H200 (whose profiles are calibration/h200/'s, not the default H100's).
on_h200() { nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; }

# The calibration/ folder of this card's profiles.
card_dir() { if on_h200; then echo calibration/h200; else echo calibration/h100-80gb-hbm3; fi; }

# The profiles calibrated into $OUT/cal, kept in /tmp/profiles for a later call on the same machine start (the
# repository's copy there is replaced by the development machine's at every call) and put in calibration/ now.
keep_profiles() {
  ls $OUT/cal/*.json > /dev/null 2>&1 || return 0
  mkdir -p /tmp/profiles && cp $OUT/cal/* /tmp/profiles/ && use_kept_profiles
}

# Profiles kept by an earlier call of this machine start (keep_profiles), copied into this card's calibration/.
use_kept_profiles() {
  ls /tmp/profiles/*.json > /dev/null 2>&1 || return 0
  cp /tmp/profiles/* "$(card_dir)/"
  echo "profiles of this start in $(card_dir): $(cd /tmp/profiles && echo *)" >> $OUT/logs/times
}

# The --set arguments that point a scenario at this card's profiles (none on an H100: its are the scenarios' default).
card_profile_args() {
  if on_h200; then
    PROF=(--set hardware.gpu=h200 --set 'cost.profile=../calibration/h200/{model}.json')
  else
    PROF=()
  fi
}

# validate scenarios/seed-matrix.toml --repeats 3 against this card's profiles in calibration/ while the script's
# LIMIT lasts; the output folder, less its runs/, into $OUT/seed. With fewer than 260 seconds left (three passes
# over the matrix took 204-212 s on H100s, one should take about a third), --repeats 1, so that a short call still
# completes it.
validate_seed() {
  card_profile_args
  local repeats=3
  [ "$(left)" -lt 260 ] && repeats=1
  rm -rf /tmp/seed
  timeout $(( $(left) - 25 )) batchlab validate scenarios/seed-matrix.toml --repeats $repeats --out /tmp/seed \
    "${PROF[@]}" > $OUT/logs/seed.txt 2>&1
  echo "seed repeats $repeats rc $? $(date -u +%T)" >> $OUT/logs/times
  sed -n '/## Verdict/,/## Sensitivity/p' /tmp/seed/validation.md | head -40
  keep_steps /tmp/seed seed
  rm -rf /tmp/seed/runs /tmp/seed/simulated/runs && mv /tmp/seed $OUT/seed
}

# validate scenarios/poisson.toml at the rates $1 (as '[16,32]') with --repeats ${2:-1} against this card's profiles,
# while the script's LIMIT lasts; the output folder, less its runs/, into $OUT/poisson. Arrivals come in real time:
# on an H100, 16 and 32 req/s took 134 s measured once each; 4 and 8 req/s more than 300 s.
validate_poisson() {
  card_profile_args
  rm -rf /tmp/poisson
  timeout $(( $(left) - 15 )) batchlab validate scenarios/poisson.toml --set "sweep.workload.rate=$1" \
    --repeats "${2:-1}" --out /tmp/poisson "${PROF[@]}" > $OUT/logs/poisson.txt 2>&1
  echo "poisson $1 repeats ${2:-1} rc $? $(date -u +%T)" >> $OUT/logs/times
  sed -n '/## Verdict/,/## Summary/p' /tmp/poisson/validation.md | head -12
  keep_steps /tmp/poisson poisson
  rm -rf /tmp/poisson/runs /tmp/poisson/simulated/runs && mv /tmp/poisson $OUT/poisson
}

# Seconds left of the script's LIMIT (T0 and LIMIT set by the caller).
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }

# calibrate --check (and $CAL_FLAGS, e.g. --pad-cublas) each model into $OUT/cal while at least $1 seconds are left,
# logging to $OUT/logs.
calibrate_models() {
  local need=$1; shift
  for m in "$@"; do
    local l; l=$(left)
    if [ "$l" -lt "$need" ]; then echo "no time for calibrate $m ($l s)" >> $OUT/logs/times; return; fi
    timeout $((l - 5)) batchlab calibrate --model $m --check ${CAL_FLAGS:-} --out $OUT/cal > $OUT/logs/cal-$m.txt 2>&1
    echo "calibrate $m rc $? $(date -u +%T)" >> $OUT/logs/times
    tail -2 $OUT/logs/cal-$m.txt
  done
}

# calibrate model $2 once more (without --check) into $OUT/cal2 while at least $1 seconds are left, and compare
# it with the profile calibrate_models wrote into $OUT/cal (issue 3's calibrate-twice agreement).
calibrate_again() {
  local l; l=$(left)
  if [ "$l" -lt "$1" ]; then echo "no time to calibrate $2 again ($l s)" >> $OUT/logs/times; return; fi
  mkdir -p $OUT/cal2
  timeout $((l - 5)) batchlab calibrate --model $2 --out $OUT/cal2 > $OUT/logs/cal2-$2.txt 2>&1
  echo "calibrate $2 again rc $? $(date -u +%T)" >> $OUT/logs/times
  batchlab compare-profiles $OUT/cal/$2.json $OUT/cal2/$2.json > $OUT/cal2/agreement.txt 2>&1
  grep -a "all\*\*\|run times" $OUT/cal2/agreement.txt
}

# bench-kernels each model into $OUT/bench while at least $1 seconds are left.
bench_models() {
  local need=$1; shift
  for m in "$@"; do
    local l; l=$(left)
    if [ "$l" -lt "$need" ]; then echo "no time for bench $m ($l s)" >> $OUT/logs/times; return; fi
    timeout $((l - 2)) batchlab bench-kernels --model $m --out $OUT/bench/kernels-$m.md > $OUT/logs/bench-$m.txt 2>&1
    echo "bench $m rc $? $(date -u +%T)" >> $OUT/logs/times
  done
}

# bench-engine of qwen2.5-1.5b at pace-keep-h100's decode points (our GEMM, programmatic graphs, the plans of this
# card's profile) and one small prefill, with the engine's graph captures logged, for at most $1 seconds, into
# $OUT/bench/$2.md; further arguments go to bench-engine (--engines N, --recapture N).
graph_set_bench() {
  local limit=$1 name=$2; shift 2
  BATCHLAB_LOG=batchlab::engine::forward=info timeout $limit batchlab bench-engine --model qwen2.5-1.5b --gemm ours \
    --launch pdl --plans "$(card_dir)/qwen2.5-1.5b.json" --decode 1x400,4x500,24x1500 --prefill 1x64 "$@" \
    --out $OUT/bench/$name.md > $OUT/logs/$name.txt 2>&1
  echo "$name rc $? $(date -u +%T)" >> $OUT/logs/times
}

# At most 8 files come back from $OUT, each of at most 16 MiB: when the calling script exits, whatever it wrote there
# goes into one results.tar.xz, but for the per-step tables keep_steps put beside it (steps-*.tar.xz).
pack() {
  (cd "$OUT" && find . -type f ! -name results.tar.xz ! -name 'steps-*.tar.xz' | sort |
    tar cJf results.tar.xz -T - --remove-files)
}

# Each run's per-step table (runs/<run>/step_errors.parquet and .csv: every measured step's plan, measured and
# predicted times) of the validate folder $1, as $OUT/steps-$2.tar.xz, where it stays under 15 MiB (so that it comes
# back); else nothing.
keep_steps() {
  local tarball=$OUT/steps-$2.tar.xz
  (cd "$1" && find runs -name 'step_errors.*' | sort | tar cJf "$tarball" -T -) 2>/dev/null
  if [ ! -s "$tarball" ] || [ "$(stat -c %s "$tarball")" -gt $((15 * 1024 * 1024)) ]; then
    echo "per-step tables of $2 not kept ($(du -h "$tarball" 2>/dev/null | cut -f1))" >> $OUT/logs/times
    rm -f "$tarball"
  fi
}
trap pack EXIT
