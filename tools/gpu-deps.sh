#!/usr/bin/env bash
# Companion of tools/gpu-check.sh, run on a Debian 12 machine with network access (not on the GPU
# machine): downloads the .deb files of every library the build needs that the GPU machine's image lacks
# (GoogleTest, Google Benchmark, nlohmann-json, OpenBLAS, sentencepiece, PCRE2, stb, pkgconf) into the
# git-ignored folder .debs/ (about 16 MB). gpu-check.sh unpacks them with `dpkg -x` into /tmp and
# points CMake and pkg-config there. Carry .debs to the GPU machine with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian nlohmann-json3-dev
          libopenblas-dev libopenblas-pthread-dev libopenblas0 libopenblas0-pthread libgfortran5 libquadmath0
          libsentencepiece-dev libsentencepiece0 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0
          libpcre2-posix3 libstb-dev libstb0 pkgconf pkgconf-bin libpkgconf3)
mkdir -p .debs
cd .debs
rm -f ./*.deb
apt-get download "${PACKAGES[@]}"
ls -1 ./*.deb | wc -l | xargs echo "debs:"
du -sh .
