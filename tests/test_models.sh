#!/bin/sh
# The models dfx trained and ships (models/): the README's default pipeline
# draws clothes from models/fashion-ddpm that models/fashion-classifier
# recognises confidently, and the classifier itself still classifies the
# Fashion-MNIST test set (when Debian's dataset-fashion-mnist is there).
# The Inception Score of 40 samples: the shipped model (step 2500) scores
# 4.5, the same model at step 1250 3.3, 40 images of the noise baseline 1.9
# and 40 test images 8.3; the bound, 3.5, lies between the two checkpoints.
#
# usage: test_models.sh DFX SOURCE_ROOT   (from meson)
set -eu

DFX=$1
SRC=$2

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dfx_models_XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
cd "$SRC"   # eval's default classifier is models/fashion-classifier

# The number after "$2 " in file $1.
value() {
    sed -n "s/^$2 \([0-9.]*\).*/\1/p" "$1" | head -n 1
}

# 40 samples of the default pipeline (seed 0: the README's first images)
"$DFX" run pipelines/fashion_ddim.yaml --quiet --set batch=40 --set output.grid=0 \
    --set output.path="$WORK/samples.safetensors" || fail "dfx run pipelines/fashion_ddim.yaml"
"$DFX" eval is "$WORK/samples.safetensors" --splits 1 > "$WORK/is.txt" 2> "$WORK/err.txt" ||
    fail "eval is: $(cat "$WORK/err.txt")"
is=$(value "$WORK/is.txt" IS)
[ -n "$is" ] || fail "no IS in: $(cat "$WORK/is.txt")"
awk -v v="$is" 'BEGIN { exit !(v > 3.5) }' || fail "IS of 40 samples of models/fashion-ddpm is $is (expected > 3.5)"
echo "IS of 40 samples: $is"

data=/usr/share/datasets/fashion-mnist
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "*** SKIP: $data not found (Debian package dataset-fashion-mnist): the classifier's accuracy was NOT checked ***" >&2
    exit 0
fi
"$DFX" eval accuracy "$data/t10k-images-idx3-ubyte.gz" "$data/t10k-labels-idx1-ubyte.gz" --limit 2000 \
    > "$WORK/acc.txt" 2> "$WORK/err.txt" || fail "eval accuracy: $(cat "$WORK/err.txt")"
acc=$(value "$WORK/acc.txt" accuracy)
[ -n "$acc" ] || fail "no accuracy in: $(cat "$WORK/acc.txt")"
awk -v v="$acc" 'BEGIN { exit !(v > 0.85) }' ||
    fail "models/fashion-classifier: accuracy $acc on 2000 test images (expected > 0.85)"
echo "classifier accuracy on 2000 test images: $acc"
