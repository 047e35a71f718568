#!/bin/sh
# Builds the libFuzzer targets with clang and fuzzes each one for SECONDS
# (default 30) over a scratch copy of its corpus and regressions. Exits non-zero
# when a target crashes, leaks or hangs, naming the reproducer to add under
# tests/fuzz/regressions/<target>/ (where every unit test run replays it).
#
# Usage: tools/run_fuzz.sh [SECONDS] [TARGET...]
#   TARGET defaults to every tests/fuzz/fuzz_<target>.c.
#   DFX_FUZZ_BUILD  build folder (default build-fuzz)
#   DFX_FUZZ_JOBS   parallel fuzzing processes per target (default 1)
set -eu

secs=${1:-30}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DFX_FUZZ_BUILD:-$root/build-fuzz}
jobs=${DFX_FUZZ_JOBS:-1}

case $secs in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

if [ $# -gt 0 ]; then
    targets=$*
else
    targets=
    for f in "$root"/tests/fuzz/fuzz_*.c; do
        t=${f##*/fuzz_}
        targets="$targets ${t%.c}"
    done
fi

# The fuzz targets live under tests/, so the Check suites must be enabled.
if [ -f "$build/build.ninja" ]; then
    meson configure "$build" -Dfuzz=true >/dev/null
else
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Dtests=enabled \
        -Dbuildtype=debugoptimized -Db_ndebug=false
fi
ninja -C "$build" $(for t in $targets; do printf 'tests/fuzz/fuzz_%s ' "$t"; done)

failed=
for t in $targets; do
    work=$build/fuzz-work/$t
    mkdir -p "$work/corpus" "$work/artifacts"
    # seeds and reproducers join the scratch corpus, which keeps what earlier
    # runs found; the committed corpus is never written to
    for d in corpus regressions; do
        if [ -d "$root/tests/fuzz/$d/$t" ]; then
            find "$root/tests/fuzz/$d/$t" -maxdepth 1 -type f ! -name '.*' \
                -exec cp {} "$work/corpus/" \;
        fi
    done
    dict=
    [ -f "$root/tests/fuzz/$t.dict" ] && dict=-dict=$root/tests/fuzz/$t.dict
    fork=
    [ "$jobs" -gt 1 ] && fork=-fork=$jobs
    echo "fuzz_$t: fuzzing for ${secs}s (log: $work/log)"
    if "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/" $dict $fork \
        "$work/corpus" >"$work/log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$work/log" | tail -n 2 || true
    else
        failed="$failed $t"
        tail -n 40 "$work/log"
        echo
        echo "fuzz_$t FAILED. Reproducers:"
        ls -1 "$work/artifacts/"
        echo "Reproduce: $build/tests/fuzz/fuzz_$t <file>"
        echo "Then copy the file to tests/fuzz/regressions/$t/ (a name saying what"
        echo "it tests) and fix the bug: every unit test run replays that folder."
    fi
done

if [ -n "$failed" ]; then
    echo "crashes in:$failed" >&2
    exit 1
fi
echo "no crashes in:$targets"
