#!/usr/bin/env bash
# Everything a fresh Debian machine (root, Rust and Node 20 present) needs before training or
# testing: system packages, npm dependencies, the native addon and the compiled TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Fashion-MNIST, the default dataset, from Debian.
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
# lavapipe, a software Vulkan driver: the GPU backend's tests run on it where no GPU is.
[ -n "$(ls /usr/share/vulkan/icd.d/lvp_icd*.json 2>/dev/null)" ] || need_apt+=(mesa-vulkan-drivers)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

npm install --no-audit --no-fund
npm run build
