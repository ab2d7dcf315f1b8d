# Sourced by the other scripts here, on the GPU machine, from the repository root: unpacks the binaries built on a
# development machine and put in the git-ignored .device/ (xz-compressed: batchlab.xz, gpu_engine.xz, ...) into
# .device/bin, puts that on PATH and prints the card.
set -u
D=$(pwd)/.device
mkdir -p "$D/bin"
for f in "$D"/*.xz; do
  [ -e "$f" ] || continue
  b=$(basename "$f" .xz)
  if command -v xz >/dev/null; then xz -dc "$f" > "$D/bin/$b"; else python3 -c "import lzma,sys;open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$f" "$D/bin/$b"; fi
  chmod +x "$D/bin/$b"
done
export PATH="$D/bin:$PATH"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
nvidia-smi --query-gpu=name,uuid,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
