"""DeepDream speed: seconds per ascent step at 512 and 1024 px, compile time, achieved FLOP/s.

Runs on synthetic weights of the real GoogLeNet shapes (speed does not depend on the values)
unless ``--weights`` names a file. Every ratio printed is measured in this one run.

    python benchmarks/dream_bench.py [--sizes 512,1024] [--steps 5] [--weights FILE]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream.dream import Objective, Schedule, ascend
from jaxdream.network import param_shapes, unflatten


def random_params(model: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in param_shapes(model).items():
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        flat[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return unflatten(model, flat)


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed call")
    parser.add_argument("--layer", default="inception_4c/output")
    parser.add_argument("--weights", help="real weights file (default: random weights)")
    args = parser.parse_args()

    if args.weights:
        from jaxdream import load_network
        params = load_network("googlenet", args.weights).params
    else:
        params = random_params("googlenet")
    obj = Objective(layers=(args.layer,))
    peak = matmul_flops_per_s()
    print(f"device: {jax.devices()[0].device_kind}; large matmul: {peak / 1e9:.1f} GFLOP/s")
    print(f"{'size':>9s} {'compile s':>10s} {'s/step':>8s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} {'of matmul':>10s}")
    for size in (int(s) for s in args.sizes.split(",")):
        sched = Schedule(steps=args.steps)
        image = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (size, size, 3)), jnp.float32)
        key = jax.random.key(0)
        w, step = jnp.ones((1,), jnp.float32), jnp.float32(1.5)
        start = time.perf_counter()
        lowered = ascend.lower(params, image, key, w, step, None, obj=obj, sched=sched)
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", float("nan"))) / args.steps
        compiled(params, image, key, w, step, None).block_until_ready()  # warm
        start = time.perf_counter()
        compiled(params, image, key, w, step, None).block_until_ready()
        per_step = (time.perf_counter() - start) / args.steps
        rate = flops / per_step
        print(f"{size:>4d}x{size:<4d} {compile_s:>10.2f} {per_step:>8.3f} {flops / 1e9:>11.1f} "
              f"{rate / 1e9:>8.1f} {rate / peak:>10.2f}")
    print("reference: a PyTorch DeepDream step running the whole network takes about 0.55 s at 512 px "
          "on the 2-core CPU these numbers were first measured on (see ../shared/NOTES.md)")


if __name__ == "__main__":
    main()
