#!/bin/sh
# The example sampler plugin, built out of tree the way its README says
# (`make`, i.e. cc ... $(pkg-config --cflags --libs dfx)) against the
# uninstalled build tree, then found by the built dfx in ./plugins, through
# --plugin-dir and through DFX_PLUGIN_PATH; its samples are checked with
# `dfx inspect` and against the built-in samplers it reproduces.
#
# usage: test_example_plugin.sh DFX SOURCE_ROOT BUILD_ROOT PYTHON   (from meson)
set -eu

DFX=$1
SRC=$2
BUILD=$3
PYTHON=$4

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# the README's tools; without them this test did NOT run (77 = skipped)
for tool in cc make pkg-config; do
    command -v $tool > /dev/null || { echo "*** SKIP: no $tool on PATH: this test did NOT run ***" >&2; exit 77; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dfx_example_XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# Checks that FILE holds one F32 tensor 'samples' of shape SHAPE ("[256,2]")
# with finite values.
check_samples() {
    [ -s "$1" ] || fail "$1 was not written"
    "$DFX" inspect "$1" > "$WORK/inspect.txt" || fail "dfx inspect $1"
    if [ "$(sed -n 1p "$WORK/inspect.txt")" != "$1: 1 tensors" ] ||
        [ "$(awk '$1 == "samples" { print $2, $3 }' "$WORK/inspect.txt")" != "F32 $2" ]; then
        fail "$1: want one tensor 'samples', F32 $2: $(cat "$WORK/inspect.txt")"
    fi
    "$PYTHON" - "$1" <<'EOF' || fail "$1: values"
import json, math, struct, sys
with open(sys.argv[1], 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    t = json.loads(f.read(n))['samples']
    data = f.read()
a, b = t['data_offsets']
x = struct.unpack('<%df' % ((b - a) // 4), data[a:b])
bad = [v for v in x if not math.isfinite(v)]
if bad or not x or max(abs(v) for v in x) == 0:
    sys.exit('%d values, %d not finite, all zero: %s' % (len(x), len(bad), bool(x) and max(abs(v) for v in x) == 0))
EOF
}

# Largest |a - b| over the samples of two files.
max_diff() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import json, struct, sys
def load(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        t = json.loads(f.read(n))['samples']
        data = f.read()
    a, b = t['data_offsets']
    return struct.unpack('<%df' % ((b - a) // 4), data[a:b])
x, y = load(sys.argv[1]), load(sys.argv[2])
assert len(x) == len(y) and x, 'shapes differ'
print('%.9g' % max(abs(u - v) for u, v in zip(x, y)))
EOF
}

# ---- build, exactly as the README says ---------------------------------
cp -R "$SRC/examples/sampler_plugin" "$WORK/example"
cd "$WORK/example"
rm -f my_sampler.so samples.safetensors

PKG_CONFIG_PATH="$BUILD/meson-uninstalled"
export PKG_CONFIG_PATH
FLAGS=$(pkg-config --cflags --libs dfx) || fail "pkg-config finds no dfx in $PKG_CONFIG_PATH"
# usable flags: the public headers and libdfx are where they say
found_header=no
found_lib=no
for f in $FLAGS; do
    case $f in
    -I*) [ -f "${f#-I}/dfx/plugin.h" ] && found_header=yes ;;
    -L*) [ -e "${f#-L}/libdfx.so" ] && found_lib=yes ;;
    esac
done
[ $found_header = yes ] || fail "pkg-config --cflags dfx has no folder with dfx/plugin.h: $FLAGS"
[ $found_lib = yes ] || fail "pkg-config --libs dfx has no folder with libdfx.so: $FLAGS"
echo "$FLAGS" | grep -q -- '-ldfx' || fail "pkg-config --libs dfx lacks -ldfx: $FLAGS"

make > "$WORK/make.txt" 2>&1 || fail "make: $(cat "$WORK/make.txt")"
# shellcheck disable=SC2016 # the command as make echoes it, $(...) and all
grep -Fqx 'cc -shared -fPIC my_sampler.c -o my_sampler.so $(pkg-config --cflags --libs dfx)' "$WORK/make.txt" ||
    fail "make ran something else than the README's command: $(cat "$WORK/make.txt")"
[ -f my_sampler.so ] || fail "make built no my_sampler.so"
# the example is held to the project's warning flags too
# shellcheck disable=SC2046 # the flags are words
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only my_sampler.c $(pkg-config --cflags dfx) ||
    fail "my_sampler.c is not warning-clean"

# ---- ./plugins ------------------------------------------------------------
mkdir -p "$WORK/run/plugins"
cp my_sampler.so "$WORK/run/plugins/"
cp example.yaml "$WORK/run/"
cd "$WORK/run"
"$DFX" run example.yaml --quiet 2> "$WORK/err.txt" || fail "dfx run from ./plugins: $(cat "$WORK/err.txt")"
if grep -q 'refused' "$WORK/err.txt"; then fail "refusals: $(cat "$WORK/err.txt")"; fi
check_samples "$WORK/run/samples.safetensors" '[256,2]'
"$DFX" describe sampler my_sampler > "$WORK/describe.txt" || fail "dfx describe sampler my_sampler"
grep -q "from plugin 'my_sampler' 1.0 (MIT), plugins/my_sampler.so" "$WORK/describe.txt" ||
    fail "describe: $(cat "$WORK/describe.txt")"
grep -Eq '^  order +int +2 ' "$WORK/describe.txt" || fail "describe: no order option: $(cat "$WORK/describe.txt")"

# without the plugin the same pipeline fails: the runs above did use it
mkdir "$WORK/empty"
cp example.yaml "$WORK/empty/"
cd "$WORK/empty"
if "$DFX" run example.yaml --quiet 2> "$WORK/err.txt"; then fail "ran without the plugin"; fi
grep -q "unknown sampler 'my_sampler'" "$WORK/err.txt" || fail "without the plugin: $(cat "$WORK/err.txt")"

# ---- --plugin-dir and DFX_PLUGIN_PATH -------------------------------------
mkdir "$WORK/dir" "$WORK/flag" "$WORK/env"
cp "$WORK/example/my_sampler.so" "$WORK/dir/"
cp example.yaml "$WORK/flag/"
cp example.yaml "$WORK/env/"
cd "$WORK/flag"
"$DFX" --plugin-dir "$WORK/dir" run example.yaml --quiet 2> "$WORK/err.txt" ||
    fail "dfx --plugin-dir: $(cat "$WORK/err.txt")"
check_samples "$WORK/flag/samples.safetensors" '[256,2]'
cd "$WORK/env"
DFX_PLUGIN_PATH="$WORK/nowhere:$WORK/dir" "$DFX" run example.yaml --quiet 2> "$WORK/err.txt" ||
    fail "DFX_PLUGIN_PATH: $(cat "$WORK/err.txt")"
check_samples "$WORK/env/samples.safetensors" '[256,2]'
# the same plugin, seed and pipeline give the same samples whichever way it was found
[ "$(max_diff "$WORK/run/samples.safetensors" "$WORK/env/samples.safetensors")" = 0 ] ||
    fail "./plugins and DFX_PLUGIN_PATH runs differ"

# ---- numerics: order 1 is DDIM, order 2 is Heun -----------------------------
cd "$WORK/run"
for pair in 1:ddim 2:heun; do
    order=${pair%%:*}
    builtin=${pair#*:}
    sed "s/^sampler:.*/sampler: {type: my_sampler, order: $order}/" example.yaml > mine.yaml
    sed "s/^sampler:.*/sampler: {type: $builtin}/" example.yaml > theirs.yaml
    "$DFX" run mine.yaml --quiet --set init.scale=unit --set output.path="mine$order.safetensors" ||
        fail "my_sampler order $order"
    "$DFX" run theirs.yaml --quiet --set init.scale=unit --set output.path="$builtin.safetensors" ||
        fail "built-in $builtin"
    d=$(max_diff "mine$order.safetensors" "$builtin.safetensors")
    "$PYTHON" -c "import sys; sys.exit(not $d < 1e-4)" ||
        fail "my_sampler order $order differs from the built-in $builtin by $d"
    echo "my_sampler order $order vs built-in $builtin: max |diff| = $d"
done
# and the comparison can tell the two apart
d=$(max_diff mine1.safetensors mine2.safetensors)
"$PYTHON" -c "import sys; sys.exit(not $d > 1e-3)" || fail "orders 1 and 2 agree to $d: the comparison proves nothing"
echo "ok"
