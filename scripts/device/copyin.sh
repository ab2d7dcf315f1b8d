# On the development machine, right after a call of land.sh or cal.sh: unpacks the call's results.tar.xz (from the
# folder the device tool put it in, its files_at) into /tmp/device-results and copies the profiles it holds into the
# calibration/ folder of their card (the card named in each profile's fingerprint), to be committed (val.sh on the
# GPU machine uses the copies land.sh kept there).
# Usage: bash scripts/device/copyin.sh FILES_AT
set -eu
from=${1:?the folder that holds results.tar.xz}
dest=/tmp/device-results
rm -rf "$dest" && mkdir -p "$dest" && tar xJf "$from/results.tar.xz" -C "$dest"
for p in "$dest"/cal/*.json; do
  [ -e "$p" ] || continue
  case $p in *.offset.json) continue ;; esac
  m=$(basename "$p" .json)
  card=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['fingerprint']['gpu_name'])" "$p")
  case $card in
    *H100*) dir=calibration/h100-80gb-hbm3 ;;
    *H200*) dir=calibration/h200 ;;
    *) echo "$m: a profile of $card, not copied" >&2; continue ;;
  esac
  for f in "$dest/cal/$m.json" "$dest/cal/$m.offset.json" "$dest/cal/$m.check.md"; do
    [ -e "$f" ] && cp "$f" "$dir/"
  done
  echo "$m ($card) -> $dir"
done
cat "$dest/logs/times" 2>/dev/null || true
