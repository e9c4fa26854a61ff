#!/usr/bin/env bash
# Every GPU check of the GPU-speed issue in one call on a lent GPU machine (NVIDIA, Ubuntu, driver
# and PyTorch only: no Node, no Rust, no registry), so that a short device budget runs it twice.
#
# Prepare here, once (the paths are git-ignored and travel as `carry`):
#   npm run build && scripts/device-check.sh --pack
# which writes .nodebin/node.xz (this machine's Node), .gl/*.deb (the Vulkan loader) and
# .gpurt/ (the addon, dist/, the runtime npm packages and the PyTorch anchor). Then on the device,
# from the repository root, carrying .nodebin .gl .gpurt:
#   bash scripts/device-check.sh            # writes $OUT/info.txt, kernels.txt, bench-gpu.txt, bench-gpu.json
# kernels.txt: every GPU kernel test (tests/gpu_kernels.rs, built here) on the device's adapter,
# the tensor-core GEMMs against the tiled f16 loop among them.
# Timed on lavapipe here with `scripts/device-check.sh --smoke` (tiny networks, no PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--pack" ]; then
  mkdir -p .nodebin .gl .gpurt/node_modules .gpurt/scripts/anchors
  [ -f .nodebin/node.xz ] || xz -T0 -c "$(command -v node)" > .nodebin/node.xz
  if ! ls .gl/*.deb > /dev/null 2>&1; then
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial
    # shellcheck disable=SC2086
    apt-get $o update -qq && (cd .gl && apt-get $o download libvulkan1)
  fi
  rm -rf .gpurt/dist .gpurt/native
  cp -r dist .gpurt/dist
  mkdir -p .gpurt/native && cp native/*.node native/index.cjs native/index.d.ts .gpurt/native/
  # What dist/ imports at run time: package.json's "dependencies" and theirs, as npm resolved them.
  rm -rf .gpurt/node_modules
  npm ls --omit=dev --all --parseable | sed "s|^$PWD/||" | grep '^node_modules/' | while read -r p; do
    mkdir -p ".gpurt/$(dirname "$p")" && cp -r "$p" ".gpurt/$(dirname "$p")/"
  done
  cp package.json .gpurt/
  # The GPU kernel tests, as one binary: no Rust on the device.
  bin=$(cargo test --release -p resnet-core --test gpu_kernels --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
  cp "$bin" .gpurt/gpu_kernels
  cp scripts/torch_gpu_bench.py .gpurt/scripts/
  cp ../shared/anchors/torch_resnet.py .gpurt/scripts/anchors/
  du -sh .nodebin .gl .gpurt
  exit 0
fi

OUT="${OUT:-/tmp/device-check}"
mkdir -p "$OUT"
smoke=()
if [ "${1:-}" = "--smoke" ]; then
  smoke=(--smoke --no-torch)
  export RESNET_WGPU_ADAPTER="${RESNET_WGPU_ADAPTER:-llvmpipe}"
  NODE="$(command -v node)"
  # The packed tree when there is one: the smoke run then checks the pack too.
  ROOT="$PWD"
  [ -d .gpurt/dist ] && ROOT="$PWD/.gpurt"
else
  # The device: the Vulkan loader beside NVIDIA's driver, Node from this repository's carry.
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  xz -dc .nodebin/node.xz > /tmp/node && chmod +x /tmp/node
  NODE=/tmp/node
  ROOT="$PWD/.gpurt"
  export TORCH_PYTHON="${TORCH_PYTHON:-python3}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.txt" 2>&1 || true
fi
cd "$ROOT"
start=$(date +%s)
"$NODE" dist/cli.js info > "$OUT/info.txt" 2>&1 || true
if [ -x gpu_kernels ] && [ ${#smoke[@]} -eq 0 ]; then
  RESNET_WGPU_ADAPTER=nvidia RESNET_WGPU_REQUIRE_GPU=1 timeout 300 ./gpu_kernels --test-threads 1 --nocapture > "$OUT/kernels.txt" 2>&1 || true
  tail -3 "$OUT/kernels.txt"
fi
"$NODE" dist/bench-gpu.js "${smoke[@]}" --json "$OUT/bench-gpu.json" 2>&1 | tee "$OUT/bench-gpu.txt"
echo "device-check: $(( $(date +%s) - start )) s" | tee -a "$OUT/bench-gpu.txt"
