#!/usr/bin/env python3
"""Writes tests/data/sd_img2img/: a 64x64 input PNG and what diffusers'
StableDiffusionImg2ImgPipeline (v0.27.2, torch CPU, float32) makes of it
with the fixtures' sd_tiny model: DDIM from sd_tiny_expected/schedulers/ddim,
10 steps, strength 0.6, guidance 7.5, generator seed 0, the prompt embeddings
recorded in sd_tiny_expected/pipeline_ddim.safetensors. The pipeline's
__call__ is unrolled (get_timesteps, prepare_latents, the denoising loop) so
that no text encoder is needed.

usage: PYTHONPATH=<diffusers/src>:... python3 tools/gen_sd_img2img_ref.py FIXTURES OUT_DIR
Needs torch, numpy, Pillow, safetensors and diffusers; dfx never runs it."""
import os
import sys

import numpy as np
import safetensors.torch
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image


def main():
    fixtures, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(fixtures, "sd_tiny/unet")).eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(fixtures, "sd_tiny/vae")).eval()
    sched = DDIMScheduler.from_pretrained(os.path.join(fixtures, "sd_tiny_expected/schedulers/ddim"))
    ref = safetensors.torch.load_file(os.path.join(fixtures, "sd_tiny_expected/pipeline_ddim.safetensors"))
    cond, uncond = ref["prompt_embeds"], ref["negative_prompt_embeds"]

    yy, xx = np.mgrid[0:64, 0:64]
    img = np.stack([np.sin(xx / 9.0) * 0.5 + 0.5, np.cos(yy / 7.0) * 0.5 + 0.5, (xx + yy) / 126.0], -1)
    png = os.path.join(out, "init.png")
    Image.fromarray((img * 255).round().astype(np.uint8)).save(png)

    proc = VaeImageProcessor(vae_scale_factor=8)
    steps, strength, scale = 10, 0.6, 7.5
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = proc.preprocess(Image.open(png))
        sched.set_timesteps(steps)
        t_start = max(steps - min(int(steps * strength), steps), 0)
        timesteps = sched.timesteps[t_start * sched.order:]
        lat = vae.encode(x).latent_dist.sample(g) * vae.config.scaling_factor
        noise = randn_tensor(lat.shape, generator=g, dtype=lat.dtype)
        lat = sched.add_noise(lat, noise, timesteps[:1])
        per = []
        for t in timesteps:
            inp = sched.scale_model_input(torch.cat([lat] * 2), t)
            u, c = unet(inp, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
            lat = sched.step(u + scale * (c - u), t, lat, generator=g).prev_sample
            per.append(lat)
        image = proc.postprocess(vae.decode(lat / vae.config.scaling_factor).sample, output_type="np")
    safetensors.torch.save_file({
        "timesteps": timesteps.to(torch.int64),
        "per_step_latents": torch.stack(per).contiguous(),
        "final_latents": lat.contiguous(),
        "image_np_nhwc": torch.from_numpy(image).contiguous(),
    }, os.path.join(out, "img2img_ddim.safetensors"))


if __name__ == "__main__":
    main()
