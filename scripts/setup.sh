#!/usr/bin/env bash
# Everything a fresh Debian machine (root, Rust and Node 20 present) needs before training or
# testing: system packages, npm dependencies, the native addon, the compiled TypeScript and the MPI
# plugin for data-parallel training.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Fashion-MNIST, the default dataset, from Debian.
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
# lavapipe, a software Vulkan driver: the GPU backend's tests run on it where no GPU is.
[ -n "$(ls /usr/share/vulkan/icd.d/lvp_icd*.json 2>/dev/null)" ] || need_apt+=(mesa-vulkan-drivers)
# MPI for data-parallel training (mpiexec), with the headers and libclang that building the plugin
# (rsmpi's bindgen) needs. The package itself never links MPI; only the plugin does.
for pkg in mpich libmpich-dev libclang-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# `npm ci` installs exactly the committed lock file and never rewrites it. onnxruntime-node (a dev
# dependency, for the ONNX export tests) ships its CPU binaries; its install script would only
# fetch CUDA ones: package.json's `allowScripts` denies it on npm >= 11.19, the variable on older npm.
ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
npm run build
# The MPI plugin, native/libresnet_mpi.so (git-ignored), loaded at run time when training runs under mpiexec.
npm run build:mpi
