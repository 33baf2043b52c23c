"""jaxdream's style evaluation against a PyTorch reference of the same objective, in one run.

Interleaves, ``--reps`` times: a fresh jaxdream process that times one loss-and-gradient
evaluation of ``gatys.objective`` (``jit(value_and_grad)``) and one L-BFGS iteration as
``jaxdream style`` runs it (``programs.lbfgs_step``: one evaluation, the history update and the
step), then a fresh PyTorch process running ``benchmarks/peer_torch.py`` (the same objective,
``torch.optim.LBFGS`` as neural-style-pt calls it). Both use random weights of VGG-19's real
shapes on random images of the same size. Prints every measurement and the ratios
jaxdream / PyTorch (below 1: jaxdream is faster).

    /tmp/torchenv/bin/pip install torch numpy          # any Python with torch
    python benchmarks/peer_compare.py --torch-python /tmp/torchenv/bin/python --size 512 --reps 2

See ``benchmarks/peer_compare.md`` for what was measured and how to read it.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def style_problem(size: int):
    """neural-style's objective at ``size`` with random VGG-19 weights of the real shapes and
    random images: ``(vg, content, params, targets, weights, obj)``, ``vg`` the jitted
    loss-and-gradient of one image. Shared with ``xla_profile.py``."""
    import jax
    import jax.numpy as jnp
    import numpy as np


    from jaxdream.objectives import gatys


    from jaxdream.nets.network import param_shapes, unflatten

    rng = np.random.default_rng(0)
    flat = {n: (rng.standard_normal(s) * np.sqrt(2.0 / max(1, int(np.prod(s[:-1]))))).astype(np.float32)
            for n, s in param_shapes("vgg19").items()}
    params = unflatten("vgg19", flat)
    content = jnp.asarray(rng.uniform(-120, 135, (size, size, 3)), jnp.float32)
    style_x = jnp.asarray(rng.uniform(-120, 135, (size, size, 3)), jnp.float32)
    obj = gatys.Objective(remat=size * size > gatys.REMAT_PIXELS)
    targets = gatys.prepare_targets(params, content, [style_x], [1.0], obj)
    weights = {"content": jnp.float32(5), "style": jnp.float32(100), "tv": jnp.float32(1e-3)}
    vg = jax.jit(jax.value_and_grad(lambda x, p, t, w: gatys.objective(x, p, t, w, obj), has_aux=True))
    return vg, content, params, targets, weights, obj


@functools.cache
def _googlenet_params():
    from dream_bench import random_params
    return random_params("googlenet")


def dream_problem(size: int):
    """jaxdream's DeepDream step (``dream.ascent_step``, GoogLeNet to inception_4c, random
    weights) on a random square image: ``(image, step)`` with ``step(image, i)`` step ``i``.
    Shared with ``xla_profile.py``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdream.dream import Objective, Schedule, ascent_step

    params, obj = _googlenet_params(), Objective()
    key, w, lr = jax.random.key(0), jnp.ones((1,), jnp.float32), jnp.float32(1.5)
    image = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (size, size, 3)), jnp.float32)
    return image, lambda im, i: ascent_step(params, im, key, np.int32(i), w, lr, None, obj=obj,
                                            sched=Schedule(steps=1))


def child(size: int, evals: int) -> dict:
    """Time jaxdream's evaluation and L-BFGS iteration at ``size`` (random VGG-19 weights)."""
    import jax
    import jax.numpy as jnp



    from jaxdream import optim

    from jaxdream.style import programs

    vg, content, params, targets, weights, obj = style_problem(size)
    t0 = time.perf_counter()
    jax.block_until_ready(vg(content, params, targets, weights))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(evals):
        t0 = time.perf_counter()
        jax.block_until_ready(vg(content, params, targets, weights))
        times.append(time.perf_counter() - t0)
    wb = {k: v[None] for k, v in weights.items()}
    state = optim.lbfgs_init(content[None], 100)
    state = jax.block_until_ready(programs.lbfgs_step(state, params, targets, wb, jnp.float32(1), spec=obj))
    t0 = time.perf_counter()
    for _ in range(evals):
        state = programs.lbfgs_step(state, params, targets, wb, jnp.float32(1), spec=obj)
    jax.block_until_ready(state)
    return {"jax": jax.__version__, "shape": [size, size], "compile_s": compile_s,
            "eval_s": sorted(times)[len(times) // 2], "eval_all": times,
            "lbfgs_eval_s": (time.perf_counter() - t0) / evals}


def child_dream(sizes: list[int], steps: int) -> dict:
    """Median seconds of jaxdream's DeepDream step (:func:`dream_problem`) at each square size,
    programs compiled and warm."""
    import jax

    out = {}
    for size in sizes:
        img, step = dream_problem(size)
        img = jax.block_until_ready(step(img, 0))
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            img = jax.block_until_ready(step(img, i + 1))
            times.append(time.perf_counter() - t0)
        out[str(size)] = sorted(times)[len(times) // 2]
    return {"jax": jax.__version__, "step_s": out}


def dream_main(a) -> None:
    """--dream: jaxdream's step pair against the PyTorch reference's, alternating processes."""
    sizes = a.dream_sizes
    rows = []
    for rep in range(a.reps):
        j = _run([sys.executable, __file__, "--dream-child", "--dream-sizes", sizes, "--evals", str(a.evals)])
        t = _run([a.torch_python, str(HERE / "peer_torch_dream.py"), "--sizes", sizes, "--steps", str(a.evals)])
        tw = _run([a.torch_python, str(HERE / "peer_torch_dream.py"), "--sizes", sizes, "--steps", str(a.evals),
                   "--whole"])
        pair = [sum(r["step_s"].values()) for r in (j, t, tw)]
        rows.append(pair)
        print(f"rep {rep + 1}: step pair {sizes} px: jaxdream {pair[0]:.3f} s, PyTorch to 4c {pair[1]:.3f} s, "
              f"PyTorch whole network (as neural-dream) {pair[2]:.3f} s; ratios {pair[0] / pair[1]:.2f} "
              f"and {pair[0] / pair[2]:.2f}", flush=True)
    tot = [sum(r[i] for r in rows) for i in range(3)]
    print(f"DeepDream step pair {sizes} px, all repetitions: jaxdream / PyTorch to inception_4c "
          f"{tot[0] / tot[1]:.2f}, jaxdream / PyTorch whole network {tot[0] / tot[2]:.2f} (target <= 0.5)")


def torch_style(sizes: list[int], evals: int = 5, iterations: int = 100) -> dict:
    """In a Python with torch: ``peer_torch``'s objective (neural-style-pt's) at each square size,
    on the GPU when torch sees one (cudnn autotuning on, as ``-cudnn_autotune``), else the CPU:
    median seconds per evaluation, and ``torch.optim.LBFGS`` as neural-style-pt calls it for
    ``iterations`` iterations with the iterations and evaluations it really did (it returns
    early when a direction is not a descent direction) and its first and last loss."""
    import torch

    from peer_torch import vgg

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = vgg().to(device)
    for prm in net.parameters():
        prm.requires_grad_(False)
    return {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "sizes": {str(size): _torch_size(net, size, device, evals, iterations) for size in sizes}}


def _torch_size(net, size: int, device: str, evals: int, iterations: int) -> dict:
    import torch

    from peer_torch import objective, problem

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    x, content_t, grams_t, eval_once = problem(net, size, size, device)
    for _ in range(2):  # warm up (cudnn autotunes here)
        eval_once()
    sync()
    times = []
    for _ in range(evals):
        t = time.perf_counter()
        eval_once()
        sync()
        times.append(time.perf_counter() - t)
    opt = torch.optim.LBFGS([x], max_iter=iterations, history_size=100, tolerance_grad=-1, tolerance_change=-1)
    losses = []

    def closure():
        opt.zero_grad()
        loss = objective(net, x, content_t, grams_t)
        loss.backward()
        losses.append(loss.detach())
        return loss

    sync()
    t = time.perf_counter()
    opt.step(closure)
    sync()
    seconds = time.perf_counter() - t
    state = opt.state[x]
    done = int(state.get("n_iter", 0))
    return {"eval_s": sorted(times)[len(times) // 2], "eval_all": times, "iterations": iterations,
            "iterations_done": done, "evaluations": int(state.get("func_evals", len(losses))),
            "lbfgs_s": seconds, "seconds_per_iteration": seconds / max(done, 1),
            "loss_first": float(losses[0]) if losses else None, "loss_last": float(losses[-1]) if losses else None}


def torch_reference(sizes: list[int], evals: int = 5, iterations: int = 100, python: str = sys.executable,
                    timeout: float | None = None) -> dict:
    """:func:`torch_style` in a fresh ``python`` process (its own GPU context and memory);
    raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
    cmd = [python, str(Path(__file__).resolve()), "--torch-style", ",".join(map(str, sizes)), "--evals", str(evals),
           "--iterations", str(iterations)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"the PyTorch reference failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-python", default=sys.executable, help="a Python with torch installed")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--evals", type=int, default=4, help="timed evaluations per process")
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
    p.add_argument("--dream", action="store_true",
                   help="compare the DeepDream step pair instead (benchmarks/peer_torch_dream.py)")
    p.add_argument("--dream-sizes", default="307,512", help="square sizes of the step pair")
    p.add_argument("--torch-style", help=argparse.SUPPRESS)
    p.add_argument("--iterations", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dream-child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_style:
        print(json.dumps(torch_style([int(v) for v in a.torch_style.split(",")], a.evals, a.iterations)))
        return
    if a.child:
        print(json.dumps(child(a.child, a.evals)))
        return
    if a.dream_child:
        print(json.dumps(child_dream([int(v) for v in a.dream_sizes.split(",")], a.evals)))
        return
    if a.dream:
        dream_main(a)
        return
    rows = []
    for rep in range(a.reps):
        j = _run([sys.executable, __file__, "--child", str(a.size), "--evals", str(a.evals)])
        t = _run([a.torch_python, str(HERE / "peer_torch.py"), "--size", str(a.size), "--evals", str(a.evals)])
        rows.append((j, t))
        print(f"rep {rep + 1}: jaxdream eval {j['eval_s']:.3f} s, L-BFGS {j['lbfgs_eval_s']:.3f} s/eval "
              f"(jax {j['jax']}); PyTorch eval {t['eval_s']:.3f} s, L-BFGS {t['lbfgs_eval_s']:.3f} s/eval "
              f"(torch {t['torch']}); ratios {j['eval_s'] / t['eval_s']:.2f} and "
              f"{j['lbfgs_eval_s'] / t['lbfgs_eval_s']:.2f}", flush=True)
    ev = [j["eval_s"] / t["eval_s"] for j, t in rows]
    lb = [j["lbfgs_eval_s"] / t["lbfgs_eval_s"] for j, t in rows]
    print(f"{a.size} px: jaxdream / PyTorch per evaluation {min(ev):.2f}-{max(ev):.2f}, "
          f"per L-BFGS evaluation {min(lb):.2f}-{max(lb):.2f} (target <= 0.8)")


if __name__ == "__main__":
    main()
