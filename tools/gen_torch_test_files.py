#!/usr/bin/python3
"""Writes tests/data/torch/: small torch.save checkpoints in both of torch's
formats, a ZIP64 rewrite, damaged archives and a hostile one, for
tests/test_torch.c, and seeds for the pickle fuzzer (tests/fuzz/corpus/pickle).

Every tensor holds values the C test recomputes from the same formulas
(aranges), so nothing here comes from dfx. Run with Debian's python3, which
has torch 1.13:

    /usr/bin/python3 tools/gen_torch_test_files.py

The files are committed; rerunning rewrites them identically except for the
zip archives' timestamps and the legacy format's storage keys (addresses)."""

import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import types
import zipfile

import numpy
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "torch")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus", "pickle")


def fake_lightning():
    """pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint as
    Lightning checkpoints name it, without Lightning installed: pickle only
    needs the module importable by that name."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks",
             "pytorch_lightning.callbacks.model_checkpoint"]
    for n in names:
        sys.modules.setdefault(n, types.ModuleType(n))
    mod = sys.modules[names[-1]]

    class ModelCheckpoint:
        pass
    ModelCheckpoint.__module__ = mod.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mod.ModelCheckpoint = ModelCheckpoint
    return ModelCheckpoint


def state_dict():
    """The tensors test_torch.c checks, each value from a formula there."""
    sd = collections.OrderedDict()
    sd["f32"] = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) * 0.25 - 1
    sd["f16"] = (torch.arange(12, dtype=torch.float32) * 0.5 - 3).half().reshape(3, 4)
    sd["bf16"] = (torch.arange(16, dtype=torch.float32) - 8).bfloat16()
    sd["f64"] = torch.arange(5, dtype=torch.float64) / 8
    sd["i64"] = torch.arange(10, dtype=torch.int64) * 1000000007 - 3
    sd["i32"] = torch.arange(6, dtype=torch.int32) - 2
    sd["mask"] = torch.tensor([True, False, True])
    # non-contiguous: [4, 3] with strides (1, 4); element [i][j] is j * 4 + i
    sd["transposed"] = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    # stride 0: element [i][j] is j
    sd["expanded"] = torch.arange(3, dtype=torch.float32).expand(4, 3)
    sd["scalar"] = torch.tensor(3.25)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3) + 100)
    # two views of one storage: base[k] = 2k, at offsets 2 and 10
    base = torch.arange(20, dtype=torch.float32) * 2
    sd["shared_a"] = base[2:7]
    sd["shared_b"] = base[10:20].view(2, 5)
    # what nn.Module.state_dict() sets, written by BUILD after the items
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    return sd


def nested(ModelCheckpoint):
    """A Lightning / original Stable Diffusion layout: the weights under
    "state_dict" beside training state that is not tensors, or is tensors
    outside the state dict."""
    cb = ModelCheckpoint()
    cb.monitor = None
    cb.best_model_score = torch.tensor(0.5)
    return {
        "epoch": 7,
        "global_step": 1234,
        "pytorch-lightning_version": "1.4.2",
        "numpy_step": numpy.int64(42),
        "callbacks": {ModelCheckpoint: {"monitor": None, "best_k_models": {}}},
        "checkpoint_callback": cb,
        "tags": {"sd", "ema"},
        "outside": torch.ones(2),
        "state_dict": state_dict(),
    }


def plain():
    """A diffusers-style .bin: the state dict itself."""
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3, 3) / 10
    sd["conv.bias"] = torch.tensor([0.5, -0.5])
    sd["norm.weight"] = torch.arange(4, dtype=torch.float16)
    return sd


def check_same(path, want):
    """torch.load gives back what was saved: the files are valid checkpoints."""
    got = torch.load(path)
    if isinstance(want, dict) and "state_dict" in want:
        got, want = got["state_dict"], want["state_dict"]
    assert list(got.keys()) == list(want.keys()), path
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), (path, k)


def zip64_rewrite(src, dst):
    """Rewrites a zip archive with every size and offset in ZIP64 fields
    (APPNOTE.TXT 4.5.3) and a ZIP64 end record, as torch writes archives
    beyond 4 GiB, so that the small test file takes the large file's path."""
    zin = zipfile.ZipFile(src)
    out = io.BytesIO()
    central = []
    for info in zin.infolist():
        data = zin.read(info.filename)
        name = info.filename.encode()
        offset = out.tell()
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0x21,
                              info.CRC, 0xffffffff, 0xffffffff, len(name), len(extra)))
        out.write(name + extra + data)
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0x21,
                                   info.CRC, 0xffffffff, 0xffffffff, len(name), len(cextra),
                                   0, 0, 0, 0, 0xffffffff) + name + cextra)
    cd_off = out.tell()
    for c in central:
        out.write(c)
    cd_size = out.tell() - cd_off
    end64 = out.tell()
    out.write(struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0,
                          len(central), len(central), cd_size, cd_off))
    out.write(struct.pack("<IIQI", 0x07064b50, 0, end64, 1))
    out.write(struct.pack("<IHHHHIIH", 0x06054b50, 0xffff, 0xffff, 0xffff, 0xffff,
                          0xffffffff, 0xffffffff, 0))
    with open(dst, "wb") as f:
        f.write(out.getvalue())


def rezip(src, dst, change):
    """Copies a zip archive entry by entry through change(name, data) ->
    (data, compress_type), with Python's own zip writer."""
    zin = zipfile.ZipFile(src)
    with zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data, method = change(info.filename, zin.read(info.filename))
            zout.writestr(info.filename, data, compress_type=method)


def central_offsets(path):
    """Offsets of the central directory headers, by entry name."""
    data = open(path, "rb").read()
    end = data.rindex(b"PK\x05\x06")
    count, size, off = struct.unpack("<HII", data[end + 10:end + 20])
    heads = {}
    pos = off
    for _ in range(count):
        nlen, xlen, clen = struct.unpack("<HHH", data[pos + 28:pos + 34])
        heads[data[pos + 46:pos + 46 + nlen].decode()] = pos
        pos += 46 + nlen + xlen + clen
    return bytearray(data), heads


def damaged(src):
    """Archives damaged one way each; test_torch.c pins their messages."""
    data = open(src, "rb").read()
    with open(os.path.join(OUT, "bad_truncated.ckpt"), "wb") as f:
        f.write(data[:len(data) // 2])

    img, heads = central_offsets(src)
    first = min(heads.values())
    img[first:first + 4] = b"PK\x01\x09"
    with open(os.path.join(OUT, "bad_central.ckpt"), "wb") as f:
        f.write(img)

    img, heads = central_offsets(src)
    name = [n for n in heads if n.endswith("/data/0")][0]
    img[heads[name] + 42:heads[name] + 46] = struct.pack("<I", len(img) + 1000)
    with open(os.path.join(OUT, "bad_outside.ckpt"), "wb") as f:
        f.write(img)

    rezip(src, os.path.join(OUT, "bad_compressed.ckpt"),
          lambda n, d: (d, zipfile.ZIP_DEFLATED if n.endswith("/data/0") else zipfile.ZIP_STORED))
    rezip(src, os.path.join(OUT, "bad_short_storage.ckpt"),
          lambda n, d: (d[:4] if n.endswith("/data/0") else d, zipfile.ZIP_STORED))


def hostile_pickle(command):
    """A protocol 2 pickle that runs os.system(command) when unpickled:
    GLOBAL 'os system', the command, TUPLE1, REDUCE, written as opcodes."""
    cmd = command.encode()
    return (b"\x80\x02" + b"cos\nsystem\n" + b"X" + struct.pack("<I", len(cmd)) + cmd +
            b"\x85R.")


def hostile(plain_zip):
    """A torch zip archive whose data.pkl would create the file dfx_pwned in
    the working folder; checked here to do so under Python's own pickle,
    which makes its absence after dfx reads the file a real result."""
    payload = hostile_pickle("touch dfx_pwned")
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-c", "import pickle,sys; "
                        "pickle.loads(sys.stdin.buffer.read())"], input=payload, cwd=d,
                       check=False, stderr=subprocess.DEVNULL)
        assert os.path.exists(os.path.join(d, "dfx_pwned")), "the payload does not work"
    rezip(plain_zip, os.path.join(OUT, "hostile_os_system.ckpt"),
          lambda n, d: (payload if n.endswith("/data.pkl") else d, zipfile.ZIP_STORED))


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(CORPUS, exist_ok=True)
    ModelCheckpoint = fake_lightning()
    torch.manual_seed(0)

    files = {
        "nested_zip.ckpt": (nested(ModelCheckpoint), {}),
        "nested_legacy.ckpt": (nested(ModelCheckpoint), {"_use_new_zipfile_serialization": False}),
        "plain_zip_p4.bin": (plain(), {"pickle_protocol": 4}),
        "plain_legacy_p1.pt": (plain(), {"_use_new_zipfile_serialization": False,
                                         "pickle_protocol": 1}),
        "plain_legacy_p5.pth": (plain(), {"_use_new_zipfile_serialization": False,
                                          "pickle_protocol": 5}),
    }
    for name, (obj, kwargs) in files.items():
        path = os.path.join(OUT, name)
        torch.save(obj, path, **kwargs)
        check_same(path, obj)

    zip64_rewrite(os.path.join(OUT, "nested_zip.ckpt"), os.path.join(OUT, "zip64.ckpt"))
    check_same(os.path.join(OUT, "zip64.ckpt"), files["nested_zip.ckpt"][0])
    damaged(os.path.join(OUT, "plain_zip_p4.bin"))
    hostile(os.path.join(OUT, "plain_zip_p4.bin"))

    # the fuzzer's seeds: each archive's data.pkl, the archives and the
    # legacy files whole
    for name in ["plain_zip_p4.bin", "zip64.ckpt", "nested_legacy.ckpt", "plain_legacy_p1.pt",
                 "plain_legacy_p5.pth"]:
        with open(os.path.join(OUT, name), "rb") as f, \
                open(os.path.join(CORPUS, name.replace(".", "_")), "wb") as g:
            g.write(f.read())
    for name in ["nested_zip.ckpt", "plain_zip_p4.bin"]:
        z = zipfile.ZipFile(os.path.join(OUT, name))
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        with open(os.path.join(CORPUS, name.split(".")[0] + ".pkl"), "wb") as f:
            f.write(z.read(pkl))
    with open(os.path.join(CORPUS, "protocol0_containers.pkl"), "wb") as f:
        f.write(pickle.dumps({"a": [1, 2.5, "x", None, True], "b": (b"\x00\xff", -7)}, 0))
    with open(os.path.join(CORPUS, "hostile_os_system.pkl"), "wb") as f:
        f.write(hostile_pickle("touch dfx_pwned"))


if __name__ == "__main__":
    main()
