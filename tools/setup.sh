#!/usr/bin/env bash
# Sets up and builds vlpeft: installs the Debian packages it needs when they are missing (as root;
# otherwise prints the exact apt-get line and stops), then configures and builds in Release into build/.
# Extra CMake arguments: VLP_CMAKE_ARGS="-DVLP_CUDA=OFF" tools/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build g++ pkg-config ccache libstb-dev nlohmann-json3-dev libgtest-dev libbenchmark-dev
          libopenblas-openmp-dev libsentencepiece-dev libpcre2-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing packages; run as root:"
    echo "  apt-get install -y ${missing[*]}"
    exit 1
  fi
fi

jobs=$(nproc 2>/dev/null || echo 2)
# shellcheck disable=SC2086
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${VLP_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$jobs"
