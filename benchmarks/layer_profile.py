"""Where a style evaluation's time goes: VGG-19 layer by layer at 512 px on this machine.

For each piece of the network a style evaluation runs (3x3 convolution + ReLU, 2x2 pooling,
the Gram matrix of a style layer) it times, each as its own jitted program on that piece's real
input shape, the forward pass and the input gradient (a ``jax.vjp`` pulled back from a random
cotangent: the weights are constants, so no weight gradient is computed, as in jaxdream).
Prints milliseconds, each row's share of the sum, and its rate as a fraction of a 2048x2048
matmul's FLOP/s measured in the same run; then the whole evaluation (content + style + TV loss
and gradient) for comparison with the sum of its pieces.

    python benchmarks/layer_profile.py [--size 512] [--repeats 3]
    python benchmarks/layer_profile.py --model googlenet   # DeepDream's network, stage by stage

For GoogLeNet it times DeepDream's gradient (of 0.5 * sum(a^2) at a layer, to the image)
ending at each stage from conv1 to inception_4c, and prints each stage's share as the
difference between consecutive ends (forward and backward together, as a dream step runs them).

Random weights of the real shapes (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream.objectives.losses import gram
from jaxdream.nets.common import pool2x2
from jaxdream.nets.vgg19 import BLOCKS, MEAN_BGR, WIDTHS
from jaxdream.style import STYLE_LAYERS


def timed(fn, *args, repeats: int) -> float:
    """Best of ``repeats`` seconds of a jitted call (compiled and warmed first)."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(n: int = 2048) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2 * n ** 3 / timed(f, a, repeats=5)


def conv_relu(x, k, b):
    y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + b)


def rows(size: int):
    """(name, fn(x), input shape, forward FLOPs) for every piece, in network order."""
    rng = np.random.default_rng(0)
    cin, hw = 3, size
    out = []
    for block, (n, width) in enumerate(zip(BLOCKS, WIDTHS), start=1):
        for i in range(1, n + 1):
            k = jnp.asarray(rng.standard_normal((3, 3, cin, width)) * np.sqrt(2 / (9 * cin)), jnp.float32)
            b = jnp.zeros((width,), jnp.float32)
            flops = 2 * 9 * cin * width * hw * hw
            out.append((f"conv{block}_{i}+relu", lambda x, k=k, b=b: conv_relu(x, k, b), (1, hw, hw, cin), flops))
            if f"relu{block}_{i}" in STYLE_LAYERS:
                out.append((f"gram relu{block}_{i}", gram, (1, hw, hw, width), 2 * hw * hw * width * width))
            cin = width
            if f"relu{block}_{i}" == STYLE_LAYERS[-1]:  # the deepest layer an evaluation runs
                return out
        if block < 5:
            out.append((f"pool{block} (max)", lambda x: pool2x2(x, "max"), (1, hw, hw, cin), 0))
            hw //= 2
    return out


GOOGLENET_STAGES = ("conv1/7x7_s2", "pool1/norm1", "conv2/3x3_reduce", "conv2/3x3", "pool2/3x3_s2",
                    "inception_3a/output", "inception_3b/output", "pool3/3x3_s2", "inception_4a/output",
                    "inception_4b/output", "inception_4c/output")


def googlenet_stages(size: int, repeats: int, peak: float) -> None:
    """DeepDream's gradient ending at each stage; a stage's cost is the difference."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from dream_bench import random_params

    from jaxdream.nets import preprocess
    from jaxdream.nets import get_spec
    spec = get_spec("googlenet")
    params = random_params("googlenet")
    image = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)), jnp.float32)
    print(f"GoogLeNet at {size}x{size}: gradient of 0.5*sum(a^2) at each layer, to the image")
    print(f"{'ending at':24s} {'s':>7s} {'stage s':>8s} {'GFLOP':>7s} {'stage of mm':>12s}")
    prev_t, prev_flops = 0.0, 0.0
    for layer in GOOGLENET_STAGES:
        module = spec.make((layer,), "max")
        grad = jax.jit(jax.grad(lambda x, m=module, n=layer: 0.5 * jnp.sum(
            m.apply(params, preprocess.to_model(x, spec.mean_bgr))[n] ** 2)))
        cost = grad.lower(image).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", float("nan")))
        t = timed(grad, image, repeats=repeats)
        stage_t, stage_flops = t - prev_t, flops - prev_flops
        rate = stage_flops / stage_t / peak if stage_t > 0 else float("nan")
        print(f"{layer:24s} {t:7.3f} {stage_t:8.3f} {flops / 1e9:7.1f} {rate:12.2f}", flush=True)
        prev_t, prev_flops = t, flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", choices=("vgg19", "googlenet"), default="vgg19")
    args = ap.parse_args()
    peak = matmul_rate()
    if args.model == "googlenet":
        print(f"{jax.devices()[0].device_kind}; 2048x2048 matmul {peak / 1e9:.1f} GFLOP/s")
        googlenet_stages(args.size, args.repeats, peak)
        return
    print(f"{jax.devices()[0].device_kind}; 2048x2048 matmul {peak / 1e9:.1f} GFLOP/s; VGG-19 at "
          f"{args.size}x{args.size}, best of {args.repeats}")
    results = []
    for name, fn, shape, flops in rows(args.size):
        x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
        fwd = jax.jit(fn)
        y = fwd(x)
        ct = jnp.ones_like(y)
        bwd = jax.jit(lambda x, ct, fn=fn: jax.vjp(fn, x)[1](ct)[0])
        f = timed(fwd, x, repeats=args.repeats)
        both = timed(bwd, x, ct, repeats=args.repeats)  # the pullback runs the forward pass too
        results.append((name, flops, f, max(both - f, 1e-6)))
    total = sum(f + b for _, _, f, b in results)
    print("bwd: the input gradient's own time (forward and gradient together, less the forward)")
    print(f"{'piece':22s} {'fwd ms':>8s} {'bwd ms':>8s} {'share':>6s} {'fwd of mm':>10s} {'bwd of mm':>10s}")
    for name, flops, f, b in results:
        rate = lambda s: f"{flops / s / peak:10.2f}" if flops else f"{'':10s}"
        print(f"{name:22s} {f * 1e3:8.1f} {b * 1e3:8.1f} {(f + b) / total:6.1%} {rate(f)} {rate(b)}")
    share = {kind: sum(f + b for n, _, f, b in results if n.startswith(kind)) / total
             for kind in ("conv", "pool", "gram")}
    conv_f = sum(f for n, _, f, _ in results if n.startswith("conv"))
    conv_b = sum(b for n, _, _, b in results if n.startswith("conv"))
    print(f"sum {total:.2f} s: convolutions {share['conv']:.0%}, pooling {share['pool']:.0%}, "
          f"Gram {share['gram']:.0%}; backward / forward of the convolutions {conv_b / conv_f:.2f}")
    whole = whole_evaluation(args.size, args.repeats)
    print(f"one whole style evaluation (loss and gradient, relu1_1..relu5_1 + relu4_2): {whole:.2f} s "
          f"= {whole / total:.2f} x the sum of its pieces")


def whole_evaluation(size: int, repeats: int) -> float:
    from jaxdream.objectives import gatys
    from jaxdream.nets.network import param_shapes, unflatten
    rng = np.random.default_rng(0)
    flat = {n: (rng.standard_normal(s) * 0.05).astype(np.float32) for n, s in param_shapes("vgg19").items()}
    params = unflatten("vgg19", flat)
    image = rng.uniform(0, 255, (size, size, 3)).astype(np.float32)
    obj = gatys.Objective()  # neural-style's layers; what stylize's L-BFGS evaluates
    x = jnp.asarray(image[..., ::-1] - np.array(MEAN_BGR, np.float32))
    targets = gatys.prepare_targets(params, x, [x], [1.0], obj)
    weights = {"content": jnp.float32(5), "style": jnp.float32(100), "tv": jnp.float32(1e-3)}
    f = jax.jit(jax.value_and_grad(lambda x: gatys.objective(x, params, targets, weights, obj), has_aux=True))
    return timed(lambda x: f(x)[1], x, repeats=repeats)


if __name__ == "__main__":
    main()
