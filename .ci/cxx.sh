#!/usr/bin/env bash
# C++ filter: Debian ITK + the torch wheel's libtorch, built with SAMCONVEX_BUILD_CXX=ON, ctest.
# Called by .ci/run after the Python tests (expects .venv with itk-samconvex installed).
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cmake g++ libinsighttoolkit5-dev
cxx_build=build/cxx
rm -rf "${cxx_build}"
start=$(date +%s)
cmake -S . -B "${cxx_build}" -DSAMCONVEX_BUILD_CXX=ON -DCMAKE_BUILD_TYPE=Release \
  -DSAMCONVEX_PYTHON="$PWD/.venv/bin/python"
cmake --build "${cxx_build}" --parallel 2
echo "C++ configure + build: $(( $(date +%s) - start )) s"
(cd "${cxx_build}" && ctest --output-on-failure --timeout 3600)
