"""Speed and memory of Gatys style transfer (VGG-19 to relu5_1, neural-style's objective).

Prints, all measured in this run:

* seconds per loss-and-gradient evaluation at 256, 512 and 1024 px (median of a few calls),
  compile time, L-BFGS iterations per second (our L-BFGS: one evaluation per iteration), the
  peak resident memory of a process doing that (one subprocess per size, ``ru_maxrss``), and
  achieved FLOP/s (XLA's cost analysis of the compiled evaluation / its time) as a fraction of
  a 2048x2048 float32 matmul's FLOP/s measured in the same subprocess;
* peak memory at 2048 px (rematerialised gradient, a few L-BFGS iterations: enough to reach
  the steady-state peak, not a full run);
* coarse-to-fine vs single scale at 512 px: single scale runs N iterations from the random
  init (N = 500, or 100 with ``--quick``) and its final loss is the target; coarse-to-fine runs
  N iterations at 256 px, upsamples, and iterates at 512 px until it reaches the target.
  Times exclude compilation (both are compiled first). The ratio is coarse-to-fine / single.

Usage::

    python benchmarks/style_bench.py [--quick] [--sizes 256,512,1024] [--skip-2048] [--skip-c2f]

Needs the VGG-19 weights (``$JAXDREAM_WEIGHTS_DIR`` or the shared weights folder).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = Path(os.environ.get("JAXDREAM_WEIGHTS_DIR", SHARED / "weights")) / \
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
CONTENT = SHARED / "media" / "astronaut.png"
STYLE = SHARED / "media" / "hubble_deep_field.png"


def _setup(size: int, remat: bool | None = None):
    import jax.numpy as jnp
    import numpy as np

    import jaxdream
    from jaxdream import media
    from jaxdream.objectives import gatys
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = jaxdream.load_network("vgg19", WEIGHTS)
    content = media.load_image(CONTENT, size)
    style_img = media.load_image(STYLE, size)
    hw = content.shape[:2]
    obj = gatys.Objective(remat=(hw[0] * hw[1] > gatys.REMAT_PIXELS) if remat is None else remat)
    to = lambda im: jnp.asarray(im[..., ::-1] - np.array(net.spec.mean_bgr, np.float32))
    targets = gatys.prepare_targets(net.params, to(content), [to(style_img)], [1.0], obj)
    weights = {"content": jnp.float32(5), "style": jnp.float32(100), "tv": jnp.float32(1e-3)}
    return net, obj, targets, weights, to(content)


def _matmul_flops() -> float:
    import jax
    import jax.numpy as jnp
    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def child_eval(size: int, iters: int) -> dict:
    """One size: compile, time evaluations and L-BFGS iterations, report peak RSS."""
    import jax
    import jax.numpy as jnp
    import numpy as np


    from jaxdream.objectives import gatys

    from jaxdream import optim

    from jaxdream.style import programs
    net, obj, targets, weights, x = _setup(size)
    vg = jax.jit(jax.value_and_grad(lambda x, p, t, w: gatys.objective(x, p, t, w, obj), has_aux=True))
    t = time.perf_counter()
    compiled = vg.lower(x, net.params, targets, weights).compile()
    compile_s = time.perf_counter() - t
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    jax.block_until_ready(compiled(x, net.params, targets, weights))
    times = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(compiled(x, net.params, targets, weights))
        times.append(time.perf_counter() - t)
    eval_s = float(np.median(times))
    wb = {k: v[None] for k, v in weights.items()}
    state = optim.lbfgs_init(x[None], 100)
    lr = jnp.float32(1)
    state = programs.lbfgs_step(state, net.params, targets, wb, lr, spec=obj)  # compile
    jax.block_until_ready(state)
    t = time.perf_counter()
    for _ in range(iters):
        state = programs.lbfgs_step(state, net.params, targets, wb, lr, spec=obj)
    jax.block_until_ready(state)
    its = iters / (time.perf_counter() - t)
    matmul = _matmul_flops()
    return {"size": size, "shape": list(x.shape[:2]), "remat": obj.remat, "compile_s": compile_s,
            "eval_s": eval_s, "eval_all": times, "lbfgs_it_per_s": its, "flops": flops,
            "flops_per_s": flops / eval_s, "matmul_flops_per_s": matmul,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def child_memory(size: int, iters: int) -> dict:
    """A few L-BFGS iterations at ``size`` (as stylize runs them) and the peak RSS."""
    import jax
    import jax.numpy as jnp



    from jaxdream import optim

    from jaxdream.style import programs
    net, obj, targets, weights, x = _setup(size)
    m = min(100, max(1, int(optim.LBFGS_HISTORY_BUDGET // (2 * x.size * 4))))
    wb = {k: v[None] for k, v in weights.items()}
    state = optim.lbfgs_init(x[None], m)
    lr = jnp.float32(1)
    t = time.perf_counter()
    times = []
    for _ in range(iters):
        s = time.perf_counter()
        state = programs.lbfgs_step(state, net.params, targets, wb, lr, spec=obj)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - s)
    return {"size": size, "shape": list(x.shape[:2]), "remat": obj.remat, "corrections": m,
            "iterations": iters, "first_call_s": times[0], "iter_s": times[1:],
            "total_s": time.perf_counter() - t, "loss": float(state.losses[0, 0]),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def child_c2f(n: int, max_fine: int) -> dict:
    """Time to reach single-scale's N-iteration loss at 512 px, single vs coarse-to-fine."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdream import media


    from jaxdream import optim

    from jaxdream.style import programs
    out = {}
    lr = jnp.float32(1)

    def run(size, x0, iterations, target=None):
        net, obj, targets, weights, _ = _setup(size)
        wb = {k: v[None] for k, v in weights.items()}
        init = lambda: optim.lbfgs_init(jnp.asarray(x0)[None], 100)
        jax.block_until_ready(programs.lbfgs_step(init(), net.params, targets, wb, lr, spec=obj))
        state = init()
        t = time.perf_counter()
        done = 0
        while done < iterations:
            state = programs.lbfgs_step(state, net.params, targets, wb, lr, spec=obj)
            done += 1
            if target is not None and done % 5 == 0 and float(state.losses[0, 0]) <= target:
                break
        jax.block_until_ready(state)
        return np.asarray(state.x[0]), float(state.losses[0, 0]), done, time.perf_counter() - t

    hw512 = media.load_image(CONTENT, 512).shape[:2]
    hw256 = media.load_image(CONTENT, 256).shape[:2]
    x512 = 0.001 * np.asarray(jax.random.normal(jax.random.key(0), (*hw512, 3)))
    _, loss_single, _, t_single = run(512, x512, n)
    x256 = 0.001 * np.asarray(jax.random.normal(jax.random.key(0), (*hw256, 3)))
    x_coarse, _, _, t_coarse = run(256, x256, n)
    x_up = media.resize(x_coarse, hw512)
    _, loss_fine, fine_its, t_fine = run(512, x_up, max_fine, target=loss_single)
    out.update(n=n, single_loss=loss_single, single_s=t_single, coarse_its=n, coarse_s=t_coarse,
               fine_its=fine_its, fine_loss=loss_fine, reached=loss_fine <= loss_single,
               c2f_s=t_coarse + t_fine, ratio=(t_coarse + t_fine) / t_single)
    return out


def child_sharded_memory(size: int, devices: int) -> dict:
    """XLA's memory analysis of the style loss-and-gradient program at ``size`` px (square,
    random weights of the real shapes): unsharded on one device, and with the image's height
    split over ``devices`` forced CPU devices (``jaxdream.objectives.bands.sharded_program``). Compiles only;
    nothing runs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdream.objectives import bands
    from jaxdream.runtime import parallel

    from jaxdream.objectives import gatys


    from jaxdream.nets.network import param_shapes, unflatten
    rng = np.random.default_rng(0)
    params = unflatten("vgg19", {k: rng.standard_normal(v, dtype=np.float32) * 0.01
                                 for k, v in param_shapes("vgg19").items()})
    obj = gatys.Objective()
    x = jax.ShapeDtypeStruct((size, size, 3), jnp.float32)  # shapes suffice: nothing runs
    small = np.zeros((64, 64, 3), np.float32)
    targets = jax.eval_shape(lambda: gatys.prepare_targets(params, np.zeros((size, size, 3), np.float32),
                                                           [small], [1.0], obj))
    weights = {k: jax.ShapeDtypeStruct((), jnp.float32) for k in ("content", "style", "tv")}
    vg = jax.jit(jax.value_and_grad(gatys.objective, has_aux=True), static_argnames=("spec",))
    t = time.perf_counter()
    one = vg.lower(x, params, targets, weights, spec=obj).compile().memory_analysis()
    t_one = time.perf_counter() - t
    mesh = parallel.mesh(devices)
    prog = bands.sharded_program(obj, mesh)
    t = time.perf_counter()
    many = prog.lower(x, params, targets, weights).compile().memory_analysis()
    t_many = time.perf_counter() - t
    return {"size": size, "devices": devices, "one_temp_gib": one.temp_size_in_bytes / 2**30,
            "sharded_temp_gib": many.temp_size_in_bytes / 2**30, "compile_one_s": t_one,
            "compile_sharded_s": t_many, "ratio": many.temp_size_in_bytes / one.temp_size_in_bytes}


def _spawn(kind: str, *args, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="coarse-to-fine with N=100, not 500")
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--iters", type=int, default=3, help="L-BFGS iterations timed per size")
    p.add_argument("--skip-2048", action="store_true")
    p.add_argument("--skip-c2f", action="store_true")
    p.add_argument("--sharded", type=int, default=4, metavar="N",
                   help="per-device memory of the 2048 px program height-sharded over N forced CPU "
                        "devices (0: skip)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = {"eval": child_eval, "memory": child_memory, "c2f": child_c2f,
              "sharded": child_sharded_memory}[kind]
        print(json.dumps(fn(*map(int, rest))))
        return 0
    if not WEIGHTS.is_file():
        print(f"VGG-19 weights not found at {WEIGHTS}", file=sys.stderr)
        return 1
    import jax
    print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'size':>6} {'HxW':>10} {'compile s':>10} {'s/eval':>8} {'L-BFGS it/s':>12} "
          f"{'GFLOP/eval':>11} {'GFLOP/s':>8} {'of matmul':>10} {'peak RSS':>9}")
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        r = _spawn("eval", size, args.iters)
        if "error" in r:
            print(f"{size:>6} error: {r['error']}")
            continue
        print(f"{size:>6} {r['shape'][0]:>4}x{r['shape'][1]:<5} {r['compile_s']:>10.1f} "
              f"{r['eval_s']:>8.2f} {r['lbfgs_it_per_s']:>12.3f} {r['flops'] / 1e9:>11.1f} "
              f"{r['flops_per_s'] / 1e9:>8.1f} {r['flops_per_s'] / r['matmul_flops_per_s']:>10.1%} "
              f"{r['peak_rss_gib']:>7.2f} G", flush=True)
        print(f"       (evaluations {', '.join(f'{t:.2f}' for t in r['eval_all'])} s; "
              f"matmul {r['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s; remat {r['remat']})", flush=True)
    if not args.skip_2048:
        r = _spawn("memory", 2048, 3)
        if "error" in r:
            print(f"  2048 error: {r['error']}")
        else:
            print(f"  2048 px ({r['shape'][0]}x{r['shape'][1]}, remat {r['remat']}, "
                  f"{r['corrections']} corrections): {r['iterations']} L-BFGS iterations, first call "
                  f"{r['first_call_s']:.1f} s (with compile), then "
                  f"{', '.join(f'{t:.1f}' for t in r['iter_s'])} s; peak RSS {r['peak_rss_gib']:.2f} GiB",
                  flush=True)
    if args.sharded:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={args.sharded}")
        r = _spawn("sharded", 2048, args.sharded, env=env)
        if "error" in r:
            print(f"  sharded 2048 error: {r['error']}")
        else:
            print(f"  2048x2048 loss+gradient, XLA temporary memory per device: one device "
                  f"{r['one_temp_gib']:.2f} GiB; height split over {r['devices']} devices "
                  f"{r['sharded_temp_gib']:.2f} GiB ({r['ratio']:.2f}x; 1/N = {1 / r['devices']:.2f})",
                  flush=True)
    if not args.skip_c2f:
        n = 100 if args.quick else 500
        r = _spawn("c2f", n, 2 * n)
        if "error" in r:
            print(f"  coarse-to-fine error: {r['error']}")
        else:
            print(f"  single scale 512 px: {r['n']} iterations, {r['single_s']:.1f} s, loss "
                  f"{r['single_loss']:.4g}")
            print(f"  coarse-to-fine: {r['coarse_its']} its at 256 px ({r['coarse_s']:.1f} s) + "
                  f"{r['fine_its']} its at 512 px ({r['c2f_s'] - r['coarse_s']:.1f} s) -> loss "
                  f"{r['fine_loss']:.4g} ({'reached' if r['reached'] else 'NOT reached'})")
            print(f"  time ratio coarse-to-fine / single scale: {r['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
