"""DeepDream speed: seconds per ascent step at 512 and 1024 px, compile time, achieved FLOP/s.

Runs on synthetic weights of the real GoogLeNet shapes (speed does not depend on the values)
unless ``--weights`` names a file. Every ratio printed is measured in this one run.

Also prints the compile time of the four octave programs of a default 512 px dream, one after
another versus in parallel threads (no gain on 2 cores, so jaxdream compiles them as it goes),
and with ``--end-to-end`` the wall time
of ``jaxdream dream`` on a 512 px image in a fresh process with an empty cache (first run)
and again with the persistent compilation cache filled (warm run).

    python benchmarks/dream_bench.py [--sizes 512,1024] [--steps 5] [--weights FILE] [--end-to-end]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream.dream import Objective, Schedule, ascend, ascent_step, octave_shapes
from jaxdream.nets.network import param_shapes, unflatten

CHELSEA = Path(__file__).resolve().parents[2] / "shared" / "media" / "chelsea.png"


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
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time `jaxdream dream` at 512 px, first and warm run (needs the "
                             "real GoogLeNet weights in $JAXDREAM_WEIGHTS_DIR or the cache)")
    args = parser.parse_args()

    if args.weights:
        from jaxdream import load_network
        params = load_network("googlenet", args.weights).params
    else:
        params = random_params("googlenet")
    obj = Objective(layers=(args.layer,))
    peak = matmul_flops_per_s()
    print(f"device: {jax.devices()[0].device_kind}; large matmul: {peak / 1e9:.1f} GFLOP/s")
    print("s/step: the jitted one-step program called in a Python loop (jaxdream's CPU default); "
          "in-jit loop: the same steps as one lax.fori_loop inside jit (its default on GPU/TPU)")
    print(f"{'size':>9s} {'compile s':>10s} {'s/step':>8s} {'in-jit loop':>12s} {'GFLOP/step':>11s} "
          f"{'GFLOP/s':>8s} {'of matmul':>10s}")
    for size in (int(s) for s in args.sizes.split(",")):
        image = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (size, size, 3)), jnp.float32)
        key = jax.random.key(0)
        w, step = jnp.ones((1,), jnp.float32), jnp.float32(1.5)
        start = time.perf_counter()
        compiled = ascent_step.lower(params, image, key, np.int32(0), w, step, None, obj=obj,
                                     sched=Schedule(steps=1)).compile()
        compile_s = time.perf_counter() - start
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", float("nan")))
        timings = {}
        for in_jit in (False, True):
            run = lambda: ascend(params, image, key, w, step, None, obj=obj, sched=Schedule(steps=args.steps),
                                 in_jit_loop=in_jit)
            run().block_until_ready()  # compile and warm
            start = time.perf_counter()
            run().block_until_ready()
            timings[in_jit] = (time.perf_counter() - start) / args.steps
        per_step = timings[False]
        rate = flops / per_step
        print(f"{size:>4d}x{size:<4d} {compile_s:>10.2f} {per_step:>8.3f} {timings[True]:>12.3f} "
              f"{flops / 1e9:>11.1f} {rate / 1e9:>8.1f} {rate / peak:>10.2f}")

    # the four programs of a default 512x341 dream: serial vs side-by-side compilation
    shapes = octave_shapes(341, 512, 4, 1.4, 1)
    obj = Objective()

    def compile_shape(shape, jitter):
        return ascent_step.lower(params, jax.ShapeDtypeStruct((*shape, 3), jnp.float32), jax.random.key(0),
                                 np.int32(0), jnp.ones((1,), jnp.float32), jnp.float32(1.5), None, obj=obj,
                                 sched=Schedule(steps=1, jitter=jitter)).compile()

    start = time.perf_counter()
    for shape in shapes:
        compile_shape(shape, 32)
    serial = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(len(shapes)) as pool:  # another jitter: nothing cached in memory
        list(pool.map(lambda s: compile_shape(s, 31), shapes))
    parallel = time.perf_counter() - start
    print(f"compile the 4 octave programs of a 512x341 dream: one after another {serial:.1f} s, "
          f"in parallel threads {parallel:.1f} s (ratio {parallel / serial:.2f}, {os.cpu_count()} cores)")
    if args.end_to_end:
        end_to_end()
    print("reference: a PyTorch DeepDream step running the whole network takes about 0.55 s at 512 px "
          "on the 2-core CPU these numbers were first measured on (see ../shared/NOTES.md)")


def end_to_end() -> None:
    """`jaxdream dream IMAGE --size 512` twice in fresh processes sharing a new cache folder."""
    from PIL import Image
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = CHELSEA if CHELSEA.is_file() else tmp / "in.png"
        if not CHELSEA.is_file():
            rng = np.random.default_rng(0)
            Image.fromarray(rng.integers(0, 256, (341, 512, 3), dtype=np.uint8)).save(image)
        env = {**os.environ, "JAXDREAM_HOME": str(tmp / "home")}
        for run in ("first (empty cache: converts the weights, compiles)", "warm (cached weights and programs)"):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "jaxdream.cli.main", "dream", str(image), "--size", "512",
                                   "-o", str(tmp / "out.png"), "--quiet"], env=env, cwd=tmp,
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if proc.returncode:
                print(f"end to end: jaxdream dream failed: {proc.stderr.strip()}")
                return
            print(f"jaxdream dream {image.name} --size 512, {run}: {seconds:.1f} s wall")


if __name__ == "__main__":
    main()
