#!/bin/sh
# The README's first command: install what is missing, build, and run the
# default pipeline (out/fashion_ddim.png: clothes from the model dfx trained).
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh build
[ -f build/build.ninja ] || meson setup build
ninja -C build
./build/tools/dfx run pipelines/fashion_ddim.yaml
