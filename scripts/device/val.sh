# Validate the seed matrix (--repeats 3) against the profiles in calibration/ (the H200's on an H200) while LIMIT
# seconds (default 570) last; the output folder (less its runs/) comes back in results.tar.xz.
set -u
source scripts/device/prep.sh
begin 570
PROF=()
if on_h200; then
  PROF=(--set hardware.gpu=h200 --set 'cost.profile=../calibration/h200/{model}.json')
fi
timeout $(( $(left) - 25 )) batchlab validate scenarios/seed-matrix.toml --repeats 3 --out /tmp/seed "${PROF[@]}" \
  > $OUT/logs/seed.txt 2>&1
echo "seed rc $? $(date -u +%T)" >> $OUT/logs/times
sed -n '/## Verdict/,/## Sensitivity/p' /tmp/seed/validation.md | head -40
rm -rf /tmp/seed/runs /tmp/seed/simulated/runs && mv /tmp/seed $OUT/seed
cat $OUT/logs/times
