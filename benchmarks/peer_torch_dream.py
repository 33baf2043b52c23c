"""A PyTorch reference of jaxdream's DeepDream step, for side-by-side speed numbers.

BVLC GoogLeNet as Caffe defines it (7x7/2 stem, ceil-mode 3x3/2 max pools, cross-channel LRN,
nine inception modules, global average pool and classifier), written here from the published
architecture, with random weights of the real shapes (the speed does not depend on the values).
One step is what neural-dream does per iteration: a random roll, the forward pass, the L2
objective ``0.5 * sum(a^2)`` at inception_4c/output, the gradient for the image only, the
gradient divided by its mean absolute value, the update and the roll back.

``--whole`` runs the forward pass through the classifier, as neural-dream does (its network is
the whole model; the objective only reads inception_4c). Without it the network stops at
inception_4c, as jaxdream's does.

Run it with a Python that has torch (it is not a jaxdream dependency)::

    /tmp/torchenv/bin/python benchmarks/peer_torch_dream.py --sizes 307,512 --steps 5

It prints one JSON line: the median seconds per step at each size.
``benchmarks/peer_compare.py --dream`` starts it between its own jaxdream measurements.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj); a "P" before a name is a 3x3/2 pool
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}
POOL_BEFORE = {"4a", "5a"}


class Inception(nn.Module):
    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        c1, r3, c3, r5, c5, pp = widths
        self.b1 = nn.Conv2d(cin, c1, 1)
        self.r3, self.b3 = nn.Conv2d(cin, r3, 1), nn.Conv2d(r3, c3, 3, padding=1)
        self.r5, self.b5 = nn.Conv2d(cin, r5, 1), nn.Conv2d(r5, c5, 5, padding=2)
        self.pp = nn.Conv2d(cin, pp, 1)
        self.out = c1 + c3 + c5 + pp

    def forward(self, x):
        return torch.cat([F.relu(self.b1(x)), F.relu(self.b3(F.relu(self.r3(x)))),
                          F.relu(self.b5(F.relu(self.r5(x)))),
                          F.relu(self.pp(F.max_pool2d(x, 3, 1, 1, ceil_mode=True)))], 1)


class GoogLeNet(nn.Module):
    def __init__(self, until: str | None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
        self.reduce2, self.conv2 = nn.Conv2d(64, 64, 1), nn.Conv2d(64, 192, 3, padding=1)
        self.lrn = nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
        self.blocks, cin = nn.ModuleDict(), 192
        for name, widths in INCEPTION.items():
            self.blocks[name] = Inception(cin, widths)
            cin = self.blocks[name].out
        self.classifier = nn.Linear(cin, 1000)
        self.until = until

    def forward(self, x):
        x = self.lrn(F.max_pool2d(F.relu(self.conv1(x)), 3, 2, ceil_mode=True))
        x = F.relu(self.conv2(F.relu(self.reduce2(x))))
        x = F.max_pool2d(self.lrn(x), 3, 2, ceil_mode=True)
        target = None
        for name, block in self.blocks.items():
            if name in POOL_BEFORE:
                x = F.max_pool2d(x, 3, 2, ceil_mode=True)
            x = block(x)
            if name == "4c":
                target = x
                if self.until == "4c":
                    return target, None
        logits = self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return target, logits


def step(net, img: torch.Tensor, gen: torch.Generator, jitter: int = 32, lr: float = 1.5) -> torch.Tensor:
    ox, oy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
    x = torch.roll(img, (ox, oy), (2, 3)).detach().requires_grad_(True)
    act, _ = net(x)  # with --whole the classifier runs too, but the gradient starts at 4c
    (0.5 * (act * act).sum()).backward()
    g = x.grad
    x = x.detach() + lr * g / (g.abs().mean() + 1e-8)
    return torch.roll(x, (-ox, -oy), (2, 3)).clamp_(-120, 140)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="307,512")
    p.add_argument("--steps", type=int, default=5, help="timed steps per size")
    p.add_argument("--whole", action="store_true", help="run the whole network, as neural-dream does")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = GoogLeNet(None if a.whole else "4c").eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    result = {}
    for size in (int(s) for s in a.sizes.split(",")):
        img = torch.rand(1, 3, size, size) * 255 - 120
        img = step(net, img, gen)  # warm up
        times = []
        for _ in range(a.steps):
            t = time.perf_counter()
            img = step(net, img, gen)
            times.append(time.perf_counter() - t)
        result[str(size)] = sorted(times)[len(times) // 2]
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "whole": a.whole,
                      "step_s": result}))


if __name__ == "__main__":
    main()
