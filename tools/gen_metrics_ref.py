#!/usr/bin/env python3
"""Writes tests/data/metrics/fid_ref.safetensors: reference values for
tests/test_metrics.c computed the way pytorch-fid does (scipy.linalg.sqrtm
of the non-symmetric product S1 S2), independently of dfx's eigenvalue
route.

Two cases, prefix "a." (d 12, eigenvalues in [0.1, ~3]) and "b." (d 16,
eigenvalues log-spaced over [1e-3, 1e2]), each with F64 tensors:
  mu1 [d], mu2 [d], s1 [d,d], s2 [d,d]  random SPD covariances that do not
                                        commute (S1 S2 != S2 S1), seeded
  sqrt_s1 [d,d]  scipy.linalg.sqrtm(s1), real part (symmetric)
  fid [1]        |mu1-mu2|^2 + Tr s1 + Tr s2 - 2 Tr sqrtm(s1 @ s2).real,
                 pytorch-fid's calculate_frechet_distance without its
                 eps offset (which never triggers here)
The file's metadata says how it was made.

Produced with: /usr/bin/python3 tools/gen_metrics_ref.py tests/data/metrics/fid_ref.safetensors
(Debian python3 3.11, numpy 1.24.2, scipy 1.10.1). Needs only numpy and
scipy; the safetensors file is written by hand (8-byte little-endian header
length, JSON header padded with spaces to a multiple of 8, data in header
order). dfx never runs it."""
import json
import struct
import sys

import numpy as np
import scipy
import scipy.linalg


def random_spd(rng, d, eigs):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = (q * eigs) @ q.T
    return 0.5 * (s + s.T)


def case(rng, d, eigs1, eigs2):
    mu1 = rng.standard_normal(d)
    mu2 = mu1 + 0.5 * rng.standard_normal(d)
    s1 = random_spd(rng, d, eigs1)
    s2 = random_spd(rng, d, eigs2)
    assert np.abs(s1 @ s2 - s2 @ s1).max() > 1e-2, "covariances commute"
    sqrt_s1 = scipy.linalg.sqrtm(s1).real
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    assert np.abs(covmean.imag).max() < 1e-10, np.abs(covmean.imag).max()
    diff = mu1 - mu2
    fid = diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)
    return {"mu1": mu1, "mu2": mu2, "s1": s1, "s2": s2, "sqrt_s1": sqrt_s1,
            "fid": np.array([fid])}


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_metrics_ref.py OUT.safetensors")
    rng = np.random.default_rng(20240607)
    tensors = {}
    for prefix, d, e1, e2 in (
            ("a.", 12, rng.uniform(0.1, 3.0, 12), rng.uniform(0.1, 3.0, 12)),
            ("b.", 16, np.logspace(-3, 2, 16), rng.permutation(np.logspace(-3, 2, 16)))):
        for name, arr in case(rng, d, e1, e2).items():
            tensors[prefix + name] = arr
    write_safetensors(sys.argv[1], tensors, {
        "generator": "tools/gen_metrics_ref.py",
        "reference": "scipy.linalg.sqrtm %s, numpy %s" % (scipy.__version__, np.__version__),
    })


if __name__ == "__main__":
    main()
