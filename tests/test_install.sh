#!/bin/sh
# `meson install --destdir`: libdfx, the public headers (each compiling on its
# own), dfx.pc, the dfx executable and the built-in plugins land where they
# belong; the installed dfx, run with LD_LIBRARY_PATH, finds the installed
# plugins (next to the installed libdfx, not at the configured prefix); and
# the example plugin builds against the installed dfx.pc and runs.
#
# usage: test_install.sh MESON BUILD_ROOT SOURCE_ROOT LIBDIR BINDIR INCLUDEDIR PLUGINS PYTHON
#   LIBDIR, BINDIR, INCLUDEDIR: absolute, as configured (prefix included);
#   PLUGINS: the built-in plugin names, comma-separated   (from meson)
set -eu

MESON=$1
BUILD=$2
SRC=$3
LIBDIR=$4
BINDIR=$5
INCLUDEDIR=$6
PLUGINS=$7
PYTHON=$8

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# the README's tools; without them this test did NOT run (77 = skipped)
for tool in cc make pkg-config; do
    command -v $tool > /dev/null || { echo "*** SKIP: no $tool on PATH: this test did NOT run ***" >&2; exit 77; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dfx_install_XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
ROOT=$WORK/root

"$MESON" install -C "$BUILD" --no-rebuild --destdir "$ROOT" > "$WORK/install.txt" 2>&1 ||
    fail "meson install: $(cat "$WORK/install.txt")"

LIB=$ROOT$LIBDIR
INC=$ROOT$INCLUDEDIR
DFX=$ROOT$BINDIR/dfx

# ---- what lands where ---------------------------------------------------------
[ -x "$DFX" ] || fail "no executable $DFX"
[ -e "$LIB/libdfx.so" ] || fail "no $LIB/libdfx.so (the link -ldfx finds)"
ls "$LIB"/libdfx.so.* > /dev/null 2>&1 || fail "no versioned libdfx.so.* in $LIB"
[ -f "$LIB/pkgconfig/dfx.pc" ] || fail "no $LIB/pkgconfig/dfx.pc"
for h in "$SRC"/include/dfx/*.h; do
    name=$(basename "$h")
    [ -f "$INC/dfx/$name" ] || fail "public header dfx/$name is not installed in $INC/dfx"
    # self-contained: compiles alone with only the installed headers
    printf '#include "dfx/%s"\n' "$name" |
        cc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$INC" -x c - ||
        fail "installed dfx/$name does not compile on its own"
done
OLDIFS=$IFS
IFS=,
for p in $PLUGINS; do
    [ -f "$LIB/dfx/plugins/$p.so" ] || fail "plugin $p.so is not installed in $LIB/dfx/plugins"
done
IFS=$OLDIFS

# ---- the installed dfx finds the installed plugins ------------------------------
mkdir "$WORK/cwd"
cd "$WORK/cwd"
LD_LIBRARY_PATH=$LIB
DFX_PLUGIN_PATH=
export LD_LIBRARY_PATH DFX_PLUGIN_PATH
if command -v ldd > /dev/null; then
    ldd "$DFX" | grep -F "$LIB/libdfx.so" > /dev/null || fail "installed dfx does not use $LIB: $(ldd "$DFX")"
fi
"$DFX" list > "$WORK/list.txt" 2> "$WORK/err.txt" || fail "installed dfx list: $(cat "$WORK/err.txt")"
[ ! -s "$WORK/err.txt" ] || fail "installed dfx list warns: $(cat "$WORK/err.txt")"
# every installed plugin provides a listed component (column 2 names the plugin)
listed=$(awk '/^  / { print $2 }' "$WORK/list.txt" | sort -u | tr '\n' ',')
want=$(echo "$PLUGINS" | tr ',' '\n' | sort -u | tr '\n' ',')
[ "$listed" = "$want" ] || fail "installed dfx lists plugins '$listed', installed are '$want'"
"$DFX" describe sampler ddim > "$WORK/describe.txt" || fail "installed dfx describe sampler ddim"
grep -qF "$LIB/dfx/plugins/ddim.so" "$WORK/describe.txt" ||
    fail "installed ddim comes from elsewhere: $(tail -1 "$WORK/describe.txt")"

# ---- the example, built against the installed dfx.pc ------------------------------
# The .pc file names the configured prefix; PKG_CONFIG_SYSROOT_DIR maps it into
# the destdir, as for any staged install.
cp -R "$SRC/examples/sampler_plugin" "$WORK/example"
cd "$WORK/example"
rm -f my_sampler.so samples.safetensors
flags=$(PKG_CONFIG_SYSROOT_DIR=$ROOT PKG_CONFIG_LIBDIR=$LIB/pkgconfig pkg-config --cflags --libs dfx) ||
    fail "pkg-config finds no installed dfx.pc"
echo " $flags " | grep -qF -- " -I$INC " || fail "installed dfx.pc: no -I$INC in '$flags'"
echo " $flags " | grep -qF -- " -L$LIB " || fail "installed dfx.pc: no -L$LIB in '$flags'"
PKG_CONFIG_SYSROOT_DIR=$ROOT PKG_CONFIG_LIBDIR=$LIB/pkgconfig make > "$WORK/make.txt" 2>&1 ||
    fail "make against the installed dfx: $(cat "$WORK/make.txt")"
mkdir plugins
cp my_sampler.so plugins/
"$DFX" run example.yaml --quiet 2> "$WORK/err.txt" || fail "installed dfx run example.yaml: $(cat "$WORK/err.txt")"
[ ! -s "$WORK/err.txt" ] || fail "installed dfx run warns: $(cat "$WORK/err.txt")"
"$DFX" inspect samples.safetensors > "$WORK/inspect.txt" || fail "installed dfx inspect"
[ "$(awk '$1 == "samples" { print $2, $3 }' "$WORK/inspect.txt")" = "F32 [256,2]" ] ||
    fail "samples: $(cat "$WORK/inspect.txt")"
"$PYTHON" - samples.safetensors <<'EOF' || fail "samples are not finite"
import json, math, struct, sys
with open(sys.argv[1], 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    t = json.loads(f.read(n))['samples']
    data = f.read()
a, b = t['data_offsets']
x = struct.unpack('<%df' % ((b - a) // 4), data[a:b])
sys.exit(not (x and all(math.isfinite(v) for v in x)))
EOF
echo "ok"
