#!/usr/bin/env python3
"""PyTorch reference timing for tools/bench_unet: the same UNet2DModel
architecture (DDPM's CIFAR-10 network: channels 128,256,256,256, two resnets
per level, attention at 16x16) built from torch.nn layers, random weights,
timed on the CPU with the thread count given. Optional: bench_unet runs it
when python3 with torch is installed, to print dfx's speed ratio; dfx itself
never needs Python.

usage: bench_unet_torch.py BATCH THREADS SECONDS -> prints seconds per forward
"""
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Res(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.n1 = nn.GroupNorm(32, cin, eps=1e-6)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout)
        self.n2 = nn.GroupNorm(32, cout, eps=1e-6)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.sc = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x))) + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return (self.sc(x) if self.sc is not None else x) + h


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n = nn.GroupNorm(32, c, eps=1e-6)
        self.q, self.k, self.v, self.o = (nn.Linear(c, c) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.n(x).view(b, c, h * w).transpose(1, 2)
        q, k, v = self.q(t), self.k(t), self.v(t)
        a = torch.softmax(torch.baddbmm(torch.empty(b, h * w, h * w), q, k.transpose(1, 2), beta=0,
                                        alpha=1 / math.sqrt(c)), dim=-1)
        return x + self.o(torch.bmm(a, v)).transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    def __init__(self, ch=(128, 256, 256, 256), attn=(False, True, False, False), layers=2):
        super().__init__()
        temb = 4 * ch[0]
        self.ch0 = ch[0]
        self.t1, self.t2 = nn.Linear(ch[0], temb), nn.Linear(temb, temb)
        self.cin = nn.Conv2d(3, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips = [ch[0]]
        prev = ch[0]
        for i, c in enumerate(ch):
            for _ in range(layers):
                self.down.append(nn.ModuleList([Res(prev, c, temb), Attn(c) if attn[i] else nn.Identity()]))
                prev = c
                skips.append(c)
            if i < len(ch) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([Res(prev, prev, temb), Attn(prev), Res(prev, prev, temb)])
        self.up = nn.ModuleList()
        for i, c in reversed(list(enumerate(ch))):
            for _ in range(layers + 1):
                self.up.append(nn.ModuleList([Res(prev + skips.pop(), c, temb), Attn(c) if attn[i] else nn.Identity()]))
                prev = c
            if i > 0:
                self.up.append(nn.Conv2d(c, c, 3, padding=1))
        self.nout = nn.GroupNorm(32, ch[0], eps=1e-6)
        self.cout = nn.Conv2d(ch[0], 3, 3, padding=1)

    def forward(self, x, t):
        half = self.ch0 // 2
        f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / (half - 1))
        a = t[:, None].float() * f[None]
        temb = F.silu(self.t2(F.silu(self.t1(torch.cat([torch.sin(a), torch.cos(a)], 1)))))
        h = self.cin(x)
        hs = [h]
        for m in self.down:
            if isinstance(m, nn.Conv2d):
                h = m(h)
            else:
                h = m[1](m[0](h, temb))
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)
        for m in self.up:
            if isinstance(m, nn.Conv2d):
                h = m(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            else:
                h = m[1](m[0](torch.cat([h, hs.pop()], 1), temb))
        return self.cout(F.silu(self.nout(h)))


def main():
    batch, threads, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = UNet().eval()
    x = torch.randn(batch, 3, 32, 32)
    t = torch.full((batch,), 500)
    best = math.inf
    with torch.no_grad():
        net(x, t)
        start = time.perf_counter()
        reps = 0
        while time.perf_counter() - start < seconds or reps < 3:
            t0 = time.perf_counter()
            net(x, t)
            best = min(best, time.perf_counter() - t0)
            reps += 1
    print(f"{best:.6f}")


if __name__ == "__main__":
    main()
