#!/bin/sh
# The figures of models/fashion-ddpm/README.md: FID and IS of 10,000
# DDIM-50 samples against Fashion-MNIST's 10,000 test images, the same for
# a Gaussian-noise baseline matched per pixel to the test set, the feature
# classifier's test accuracy, and samples/s of dfx run. Features come from
# models/fashion-classifier. About an hour on 2 cores.
#   tools/fashion_metrics.sh [OUT]     (default out/fashion-metrics; build first)
#   DFX_METRICS_COUNT=1000 tools/fashion_metrics.sh    # fewer samples, a quick look
set -eu
cd "$(dirname "$0")/.."
out=${1:-out/fashion-metrics}
count=${DFX_METRICS_COUNT:-10000}
part=500
dfx=./build/tools/dfx
data=/usr/share/datasets/fashion-mnist
test_images=$data/t10k-images-idx3-ubyte.gz

mkdir -p "$out/samples"
# the samples in parts of 500 (one seed each), so that a part in memory
# stays small; parts already written are kept, so a stopped run continues
start=$(date +%s)
made=0
k=0
while [ $((k * part)) -lt "$count" ]; do
    n=$((count - k * part < part ? count - k * part : part))
    f=$(printf '%s/samples/part-%03d.safetensors' "$out" "$k")
    if [ ! -f "$f" ]; then
        echo "== samples $((k * part + 1)) to $((k * part + n)) of $count"
        $dfx run pipelines/fashion_ddim.yaml --seed "$((1000 + k))" --set batch="$n" --set output.grid=0 \
            --set output.path="$f"
        made=$((made + n))
    fi
    k=$((k + 1))
done
secs=$(($(date +%s) - start))
[ "$made" -gt 0 ] && echo "sampling: $made samples in ${secs}s"

$dfx eval noise "$test_images" "$out/noise.safetensors" --seed 1
$dfx eval fid "$test_images" --save-stats "$out/test_stats.safetensors"
echo "== the model"
$dfx eval fid "$out/test_stats.safetensors" "$out/samples"
$dfx eval is "$out/samples"
echo "== the noise baseline"
$dfx eval fid "$out/test_stats.safetensors" "$out/noise.safetensors"
$dfx eval is "$out/noise.safetensors"
echo "== the test set"
$dfx eval is "$test_images"
$dfx eval accuracy "$test_images" "$data/t10k-labels-idx1-ubyte.gz"
