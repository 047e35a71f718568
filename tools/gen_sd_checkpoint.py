#!/usr/bin/env python3
"""Writes a Stable Diffusion 1.5-size checkpoint with seeded random weights in
the original single-file layout (CompVis/ldm names, as runwayml's
v1-5-pruned-emaonly.safetensors has them): model.diffusion_model.* (the
UNet), first_stage_model.* (the VAE) and cond_stage_model.transformer.
text_model.* (the CLIP text encoder), 1130 tensors, F16 or F32.

The weights are random (norm scales 1, biases 0, the others N(0, 1/fan_in)),
so images made with it are noise; it exists for loaders and benchmarks
(tools/bench_sd) when no real checkpoint is at hand. The names and shapes are
generated from the architecture below (ldm's UNetModel, AutoencoderKL's
Encoder/Decoder, transformers' CLIPTextModel with the SD 1.5 configs).

Needs only python3 and numpy; the safetensors file is written by hand (an
8-byte little-endian header length, the JSON header padded with spaces to a
multiple of 8, then the tensors' bytes in header order).

usage: gen_sd_checkpoint.py [--dtype f16|f32] [--seed N] [--extras] [--list] OUT.safetensors
  --extras  also writes the buffers real 2022 files carry besides the weights
            (text position_ids [1,77] I64, the ldm schedule buffers [1000])
  --list    prints "name<TAB>[shape]" for every tensor instead of writing"""
import argparse
import json
import struct
import sys

# SD 1.5 (runwayml/stable-diffusion-v1-5): ldm v1-inference.yaml values
MODEL_CH, CH_MULT, RES_BLOCKS, ATTN_LEVELS = 320, (1, 2, 4, 4), 2, (0, 1, 2)
CONTEXT, TIME_EMB = 768, 4 * 320
VAE_CH, VAE_MULT, VAE_BLOCKS, Z_CH = 128, (1, 2, 4, 4), 2, 4
TEXT_HIDDEN, TEXT_LAYERS, TEXT_INTER, VOCAB, POSITIONS = 768, 12, 3072, 49408, 77


def norm(out, p, c):
    out.append((p + ".weight", [c]))
    out.append((p + ".bias", [c]))


def conv(out, p, cin, cout, k):
    out.append((p + ".weight", [cout, cin, k, k]))
    out.append((p + ".bias", [cout]))


def linear(out, p, cin, cout, bias=True):
    out.append((p + ".weight", [cout, cin]))
    if bias:
        out.append((p + ".bias", [cout]))


# ---- UNet (ldm.modules.diffusionmodules.openaimodel.UNetModel) -------------

def unet_resblock(out, p, cin, cout):
    norm(out, p + ".in_layers.0", cin)
    conv(out, p + ".in_layers.2", cin, cout, 3)
    linear(out, p + ".emb_layers.1", TIME_EMB, cout)
    norm(out, p + ".out_layers.0", cout)
    conv(out, p + ".out_layers.3", cout, cout, 3)
    if cin != cout:
        conv(out, p + ".skip_connection", cin, cout, 1)


def spatial_transformer(out, p, c):
    norm(out, p + ".norm", c)
    conv(out, p + ".proj_in", c, c, 1)
    b = p + ".transformer_blocks.0"
    norm(out, b + ".norm1", c)
    for q in ("to_q", "to_k", "to_v"):
        linear(out, b + ".attn1." + q, c, c, bias=False)
    linear(out, b + ".attn1.to_out.0", c, c)
    norm(out, b + ".norm2", c)
    linear(out, b + ".attn2.to_q", c, c, bias=False)
    linear(out, b + ".attn2.to_k", CONTEXT, c, bias=False)
    linear(out, b + ".attn2.to_v", CONTEXT, c, bias=False)
    linear(out, b + ".attn2.to_out.0", c, c)
    norm(out, b + ".norm3", c)
    linear(out, b + ".ff.net.0.proj", c, 8 * c)   # GEGLU: value and gate
    linear(out, b + ".ff.net.2", 4 * c, c)
    conv(out, p + ".proj_out", c, c, 1)


def unet(out):
    p = "model.diffusion_model."
    conv(out, p + "input_blocks.0.0", 4, MODEL_CH, 3)
    linear(out, p + "time_embed.0", MODEL_CH, TIME_EMB)
    linear(out, p + "time_embed.2", TIME_EMB, TIME_EMB)
    chans, skips, ch, n = [MODEL_CH * m for m in CH_MULT], [MODEL_CH], MODEL_CH, 1
    for level, c in enumerate(chans):
        for _ in range(RES_BLOCKS):
            unet_resblock(out, "%sinput_blocks.%d.0" % (p, n), ch, c)
            ch = c
            if level in ATTN_LEVELS:
                spatial_transformer(out, "%sinput_blocks.%d.1" % (p, n), c)
            skips.append(ch)
            n += 1
        if level < len(chans) - 1:
            conv(out, "%sinput_blocks.%d.0.op" % (p, n), ch, ch, 3)
            skips.append(ch)
            n += 1
    unet_resblock(out, p + "middle_block.0", ch, ch)
    spatial_transformer(out, p + "middle_block.1", ch)
    unet_resblock(out, p + "middle_block.2", ch, ch)
    n = 0
    for level in reversed(range(len(chans))):
        c = chans[level]
        for j in range(RES_BLOCKS + 1):
            unet_resblock(out, "%soutput_blocks.%d.0" % (p, n), ch + skips.pop(), c)
            ch = c
            sub = 1
            if level in ATTN_LEVELS:
                spatial_transformer(out, "%soutput_blocks.%d.1" % (p, n), c)
                sub = 2
            if level > 0 and j == RES_BLOCKS:
                conv(out, "%soutput_blocks.%d.%d.conv" % (p, n, sub), ch, ch, 3)
            n += 1
    norm(out, p + "out.0", ch)
    conv(out, p + "out.2", ch, 4, 3)


# ---- VAE (ldm.modules.diffusionmodules.model Encoder / Decoder) ------------

def vae_resblock(out, p, cin, cout):
    norm(out, p + ".norm1", cin)
    conv(out, p + ".conv1", cin, cout, 3)
    norm(out, p + ".norm2", cout)
    conv(out, p + ".conv2", cout, cout, 3)
    if cin != cout:
        conv(out, p + ".nin_shortcut", cin, cout, 1)


def vae_mid(out, p, c):
    vae_resblock(out, p + ".block_1", c, c)
    norm(out, p + ".attn_1.norm", c)
    for q in ("q", "k", "v", "proj_out"):
        conv(out, p + ".attn_1." + q, c, c, 1)
    vae_resblock(out, p + ".block_2", c, c)


def vae(out):
    p = "first_stage_model."
    chans = [VAE_CH * m for m in VAE_MULT]
    conv(out, p + "encoder.conv_in", 3, VAE_CH, 3)
    ch = VAE_CH
    for i, c in enumerate(chans):
        for j in range(VAE_BLOCKS):
            vae_resblock(out, "%sencoder.down.%d.block.%d" % (p, i, j), ch, c)
            ch = c
        if i < len(chans) - 1:
            conv(out, "%sencoder.down.%d.downsample.conv" % (p, i), ch, ch, 3)
    vae_mid(out, p + "encoder.mid", ch)
    norm(out, p + "encoder.norm_out", ch)
    conv(out, p + "encoder.conv_out", ch, 2 * Z_CH, 3)
    conv(out, p + "quant_conv", 2 * Z_CH, 2 * Z_CH, 1)
    conv(out, p + "post_quant_conv", Z_CH, Z_CH, 1)
    ch = chans[-1]
    conv(out, p + "decoder.conv_in", Z_CH, ch, 3)
    vae_mid(out, p + "decoder.mid", ch)
    for i in reversed(range(len(chans))):
        for j in range(VAE_BLOCKS + 1):
            vae_resblock(out, "%sdecoder.up.%d.block.%d" % (p, i, j), ch, chans[i])
            ch = chans[i]
        if i > 0:
            conv(out, "%sdecoder.up.%d.upsample.conv" % (p, i), ch, ch, 3)
    norm(out, p + "decoder.norm_out", ch)
    conv(out, p + "decoder.conv_out", ch, 3, 3)


# ---- CLIP text encoder (transformers CLIPTextModel) ------------------------

def text(out):
    p = "cond_stage_model.transformer.text_model."
    out.append((p + "embeddings.token_embedding.weight", [VOCAB, TEXT_HIDDEN]))
    out.append((p + "embeddings.position_embedding.weight", [POSITIONS, TEXT_HIDDEN]))
    for i in range(TEXT_LAYERS):
        l = "%sencoder.layers.%d." % (p, i)
        for q in ("k_proj", "v_proj", "q_proj", "out_proj"):
            linear(out, l + "self_attn." + q, TEXT_HIDDEN, TEXT_HIDDEN)
        norm(out, l + "layer_norm1", TEXT_HIDDEN)
        linear(out, l + "mlp.fc1", TEXT_HIDDEN, TEXT_INTER)
        linear(out, l + "mlp.fc2", TEXT_INTER, TEXT_HIDDEN)
        norm(out, l + "layer_norm2", TEXT_HIDDEN)
    norm(out, p + "final_layer_norm", TEXT_HIDDEN)


SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")


def tensors():
    out = []
    unet(out)
    vae(out)
    text(out)
    return out


def schedule(np):
    """ldm's DDPM buffers for the SD schedule (scaled_linear, 0.00085 to 0.012, 1000 steps)"""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1.0 - betas)
    prev = np.append(1.0, ac[:-1])
    var = betas * (1.0 - prev) / (1.0 - ac)
    return {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": prev, "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac), "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac), "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": var, "posterior_log_variance_clipped": np.log(np.maximum(var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
    }


def is_norm(name, shape):
    return len(shape) == 1 and name.endswith(".weight")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?")
    ap.add_argument("--dtype", choices=("f16", "f32"), default="f16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extras", action="store_true")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    table = tensors()
    if a.list:
        for name, shape in table:
            print("%s\t[%s]" % (name, ",".join(str(d) for d in shape)))
        return 0
    if not a.out:
        ap.error("the output file is required")
    try:
        import numpy as np
    except ImportError:
        sys.exit("gen_sd_checkpoint.py: needs numpy (this python3 has none; Debian's /usr/bin/python3 with "
                 "python3-numpy does)")

    dt, code = (np.float16, "F16") if a.dtype == "f16" else (np.float32, "F32")
    entries = [(name, shape, code) for name, shape in table]
    if a.extras:
        entries.append(("cond_stage_model.transformer.text_model.embeddings.position_ids", [1, POSITIONS], "I64"))
        entries += [(b, [1000], "F32") for b in SCHEDULE_BUFFERS]
    size = {"F16": 2, "F32": 4, "I64": 8}
    header, off = {}, 0
    for name, shape, c in entries:
        n = size[c]
        for d in shape:
            n *= d
        header[name] = {"dtype": c, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt", "generator": "dfx tools/gen_sd_checkpoint.py (random weights)",
                              "seed": str(a.seed)}
    text_header = json.dumps(header, separators=(",", ":")).encode()
    text_header += b" " * (-len(text_header) % 8)
    rng = np.random.default_rng(a.seed)
    buffers = schedule(np) if a.extras else {}
    with open(a.out, "wb") as f:
        f.write(struct.pack("<Q", len(text_header)))
        f.write(text_header)
        for name, shape, c in entries:
            if c == "I64":
                data = np.arange(POSITIONS, dtype="<i8").reshape(shape)
            elif name in buffers:
                data = buffers[name].astype("<f4")
            elif is_norm(name, shape):
                data = np.ones(shape, dtype=dt)
            elif len(shape) == 1:
                data = np.zeros(shape, dtype=dt)
            else:
                fan_in = 1
                for d in shape[1:]:
                    fan_in *= d
                data = (rng.standard_normal(shape, dtype=np.float32) * (1.0 / fan_in ** 0.5)).astype(dt)
            f.write(data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes())
    print("%s: %d tensors, %.2f GB (%s)" % (a.out, len(entries), (8 + len(text_header) + off) / 1e9, code))
    return 0


if __name__ == "__main__":
    sys.exit(main())
