#!/usr/bin/env bash
# C++ ITK module SAMConvex (itk-module.cmake), built stand-alone with SAMCONVEX_BUILD_CXX=ON
# against Debian's ITK and the torch wheel's libtorch, then ctest. Called by .ci/run after the
# Python tests (expects .venv with itk-samconvex installed). The configure goes through
# ITKModuleExternal when the ITK found has it (an ITK build tree: set ITK_DIR), else through
# cmake/SAMConvexCxx.cmake from the same descriptor (Debian's install tree ships no
# ITKModuleExternal.cmake); the log says which. The build folder is kept between runs (the
# solver-export fixture is reused while up to date); SAMCONVEX_CXX_CLEAN=1 starts afresh.
# SAMCONVEX_PYTHON (default: .venv/bin/python) and ITK_DIR may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
start=$(date +%s)
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cmake g++ libinsighttoolkit5-dev >/dev/null
echo "apt-get (cmake g++ libinsighttoolkit5-dev): $(( $(date +%s) - start )) s"

cxx_build=build/cxx
if [ "${SAMCONVEX_CXX_CLEAN:-0}" = 1 ]; then rm -rf "${cxx_build}"; fi
extra=()
if [ -n "${ITK_DIR:-}" ]; then extra+=("-DITK_DIR=${ITK_DIR}"); fi

start=$(date +%s)
cmake -S . -B "${cxx_build}" -DSAMCONVEX_BUILD_CXX=ON -DCMAKE_BUILD_TYPE=Release \
  -DSAMCONVEX_PYTHON="${SAMCONVEX_PYTHON:-$PWD/.venv/bin/python}" "${extra[@]}"
configured=$(date +%s)
cmake --build "${cxx_build}" --parallel 2
built=$(date +%s)
mode=$(sed -n 's/^SAMCONVEX_MODULE_BUILD:INTERNAL=//p' "${cxx_build}/CMakeCache.txt")
echo "C++ module configured through: ${mode}"
echo "C++ configure: $(( configured - start )) s, build: $(( built - configured )) s"

(cd "${cxx_build}" && ctest --output-on-failure --timeout 3600)
echo "ctest: $(( $(date +%s) - built )) s"
