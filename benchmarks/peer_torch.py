"""A PyTorch reference of jaxdream's style objective, for side-by-side speed numbers.

The same objective as jcjohnson/neural-style and neural-style-pt (VGG-19 truncated after
relu5_1, content loss at relu4_2, Gram-matrix MSE style losses at relu1_1..relu5_1, total
variation, the gradient for the image only) and the same optimiser (``torch.optim.LBFGS``
with 100 corrections and no line search, as neural-style-pt calls it). Written here from the
published description, not copied; random weights of the real shapes (the speed does not
depend on the values).

Run it with a Python that has torch (it is not a jaxdream dependency)::

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
    /tmp/torchenv/bin/python benchmarks/peer_torch.py --size 512 --evals 4

It prints one JSON line: seconds per evaluation (forward + input gradient) and per L-BFGS
evaluation. ``benchmarks/peer_compare.py`` starts it between its own jaxdream measurements.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn as nn

# VGG-19 convolution widths up to conv5_1; "P" is a 2x2 max pool
CFG = [64, 64, "P", 128, 128, "P", 256, 256, 256, 256, "P", 512, 512, 512, 512, "P", 512]
NAMES = ["relu1_1", "relu1_2", "pool1", "relu2_1", "relu2_2", "pool2", "relu3_1", "relu3_2", "relu3_3",
         "relu3_4", "pool3", "relu4_1", "relu4_2", "relu4_3", "relu4_4", "pool4", "relu5_1"]
STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT = ("relu4_2",)


def vgg() -> nn.ModuleList:
    layers, c = [], 3
    for v in CFG:
        if v == "P":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers.append(nn.Sequential(nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)))
            c = v
    return nn.ModuleList(layers).eval()


def gram(f: torch.Tensor) -> torch.Tensor:
    _, c, h, w = f.shape
    f = f.reshape(c, h * w)
    return (f @ f.t()) / (c * h * w)


def features(net, x):
    out = {}
    for name, layer in zip(NAMES, net):
        x = layer(x)
        out[name] = x
    return out


def objective(net, x, content_t, grams_t):
    out = features(net, x)
    loss = sum(5.0 * torch.mean((out[k] - content_t[k]) ** 2) for k in CONTENT)
    loss = loss + sum(100.0 * torch.mean((gram(out[k]) - grams_t[k]) ** 2) for k in STYLE)
    tv = ((x[..., :-1, :-1] - x[..., :-1, 1:]) ** 2 + (x[..., :-1, :-1] - x[..., 1:, :-1]) ** 2).sum()
    return loss + 1e-3 * 0.5 * tv


def problem(net, h: int, w: int, device: str = "cpu"):
    """A random style problem at h x w: (x, content targets, Gram targets, ``eval_once()``, which
    computes the loss and x's gradient), starting from the content image."""
    content = torch.rand(1, 3, h, w, device=device) * 255 - 120
    style = torch.rand(1, 3, h, w, device=device) * 255 - 120
    with torch.no_grad():
        content_t = {k: v for k, v in features(net, content).items() if k in CONTENT}
        grams_t = {k: gram(v) for k, v in features(net, style).items() if k in STYLE}
    x = content.clone().requires_grad_(True)

    def eval_once():
        x.grad = None
        loss = objective(net, x, content_t, grams_t)
        loss.backward()
        return loss
    return x, content_t, grams_t, eval_once


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--height", type=int, help="default: --size (square)")
    p.add_argument("--evals", type=int, default=4, help="timed evaluations of each kind")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = vgg()
    for prm in net.parameters():
        prm.requires_grad_(False)
    h, w = a.height or a.size, a.size
    x, content_t, grams_t, eval_once = problem(net, h, w)
    eval_once()  # warm up
    times = []
    for _ in range(a.evals):
        t = time.perf_counter()
        eval_once()
        times.append(time.perf_counter() - t)
    calls = [0]

    def closure():
        calls[0] += 1
        opt.zero_grad()
        loss = objective(net, x, content_t, grams_t)
        loss.backward()
        return loss

    opt = torch.optim.LBFGS([x], max_iter=1, history_size=100, tolerance_grad=-1, tolerance_change=-1)
    opt.step(closure)  # warm up (first iteration)
    opt = torch.optim.LBFGS([x], max_iter=a.evals, history_size=100, tolerance_grad=-1, tolerance_change=-1)
    calls[0] = 0
    t = time.perf_counter()
    opt.step(closure)
    lbfgs = (time.perf_counter() - t) / max(calls[0], 1)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "shape": [h, w],
                      "eval_s": sorted(times)[len(times) // 2], "eval_all": times, "lbfgs_eval_s": lbfgs,
                      "lbfgs_evals": calls[0]}))


if __name__ == "__main__":
    main()
