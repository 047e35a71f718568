#!/bin/sh
# The README's second command, and what CI runs: every test suite (unit,
# CLI, parity with ../shared/fixtures), the unit tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer, and each fuzzer briefly.
#   DFX_FUZZ_SECONDS   seconds per fuzz target (default 30; 0 skips fuzzing)
set -eu
cd "$(dirname "$0")/.."
start=$(date +%s)
tools/deps.sh test

echo "== build and test (release)"
[ -f build/build.ninja ] || meson setup build
ninja -C build
meson test -C build --print-errorlogs --num-processes 2

echo "== unit tests under ASan + UBSan"
[ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined \
    -Db_lundef=false -Dbuildtype=debugoptimized
ninja -C build-asan
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --suite unit --print-errorlogs --num-processes 2

secs=${DFX_FUZZ_SECONDS:-30}
if [ "$secs" -gt 0 ]; then
    echo "== fuzzing, ${secs}s per target"
    tools/run_fuzz.sh "$secs"
fi
echo "== all tests passed in $(( $(date +%s) - start ))s"
