#!/bin/sh
# Installs the Debian packages dfx needs (only the missing ones), with sudo
# when not root. Usage: tools/deps.sh [build|test]
#   build: compiler, Meson/ninja, libyaml, OpenBLAS (its OpenMP build), libpng, zlib, Check
#   test:  that plus clang and its runtime (libFuzzer, sanitizers) and Debian's
#          Fashion-MNIST (the data tests read the real files; training uses them)
set -eu
need="gcc meson ninja-build pkg-config libyaml-dev libopenblas-dev libopenblas-openmp-dev libpng-dev zlib1g-dev check"
if [ "${1:-build}" = test ]; then
    need="$need clang libclang-rt-14-dev dataset-fashion-mnist"
fi
missing=
for p in $need; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
