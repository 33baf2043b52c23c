"""The first thing to run on a machine with an accelerator: does jaxdream run, how fast, and
does it compute the same numbers as the CPU?

GoogLeNet and VGG-19 get RANDOM weights of the real shapes (He-initialised, from
``jaxdream.nets.network.param_shapes``): no weights files, no downloads. Prints and records:

* the devices (``jaxdream.runtime.parallel.describe``);
* Gatys style: seconds per loss-and-gradient evaluation (``jit(value_and_grad(
  gatys.objective))``) at 512, 1024 and 2048 px in float32 (rematerialised above
  ``gatys.REMAT_PIXELS``, as ``stylize`` does), and in bfloat16 with the parameters and the
  image cast (the Gram matrices are then bfloat16 too: not yet the planned f32-Gram mode);
* DeepDream: seconds per ``dream.ascent_step`` (GoogLeNet to inception_4c) at 512 and 1024 px;
* L-BFGS: 500 iterations at 512 px end to end (``lbfgs_chunk`` in chunks of 20 where the loop
  runs inside ``jit``, else ``lbfgs_step`` in a Python loop, as ``stylize`` does);
* compile seconds of each program, XLA's memory analysis of it, and the device's peak memory
  so far (``device.memory_stats()["peak_bytes_in_use"]``, where the backend reports it);
* comparisons with the CPU at a small size (128 px; 64 px with ``--quick``): the same jitted
  computation on ``jax.devices()[0]`` and on ``jax.devices("cpu")[0]``, once at the default
  matmul precision and once at ``highest`` (only the first where the default device is the
  CPU itself).

Tolerances (relative; gradients and image updates as ||a - b|| / ||b||, robust to the odd max
pool that flips between near-equal inputs). At ``highest`` precision both sides compute in
float32 and differ by summation order only: loss 1e-4, gradient / dream update / L-BFGS 1e-3
(5 iterations). At the default precision accelerators may use TF32 or bf16 passes inside
float32 convolutions (about 3 significant digits): loss 1e-2, the rest 5e-2. Any comparison
beyond its tolerance makes the exit status 1; a benchmark that raised (out of memory, say) makes
it 2. On a CPU-only machine the two devices are the same one and the comparisons are trivial.

Usage::

    python benchmarks/device_check.py [--quick] [--out results.json]

``--quick``: small sizes (style 64 and 128 px, dream 64 and 96 px, 20 L-BFGS iterations at
64 px): a smoke run of every path on a CPU in under two minutes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxdream.runtime import parallel  # noqa: E402

from jaxdream.objectives import gatys  # noqa: E402

from jaxdream import optim  # noqa: E402

from jaxdream.style import programs  # noqa: E402
from jaxdream.nets.network import param_shapes, unflatten  # noqa: E402

dream = importlib.import_module("jaxdream.dream")  # the package attribute is the function

FULL = {"style": (512, 1024, 2048), "bf16": (512, 1024, 2048), "dream": (512, 1024),
        "lbfgs": (512, 500), "compare": 128, "reps": 5}
QUICK = {"style": (64, 128), "bf16": (64,), "dream": (64, 96), "lbfgs": (64, 20),
         "compare": 64, "reps": 2}
TOLERANCE = {"highest": {"loss": 1e-4, "grad": 1e-3, "dream": 1e-3, "lbfgs": 1e-3},
             "default": {"loss": 1e-2, "grad": 5e-2, "dream": 5e-2, "lbfgs": 5e-2}}
LBFGS_CHUNK = 20
COMPARE_LBFGS_ITERATIONS = 5
CORRECTIONS = 100


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------


def random_params(model: str, seed: int = 0) -> Any:
    """He-initialised parameters of the real shapes (kernels N(0, 2/fan_in), biases 0.01 N)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in param_shapes(model).items():
        if len(shape) > 1:
            fan_in = int(np.prod(shape[:-1]))
            flat[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        else:
            flat[name] = 0.01 * rng.standard_normal(shape, dtype=np.float32)
    return unflatten(model, flat)


def smooth_image(size: int, seed: int) -> np.ndarray:
    """A (size, size, 3) RGB 0..255 image: upsampled noise, so that it has structure."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (size // 8 + 2, size // 8 + 2, 3)).astype(np.float32)
    return np.asarray(jax.image.resize(base, (size, size, 3), "linear"))


def to_vgg(rgb: np.ndarray) -> np.ndarray:
    """RGB 0..255 -> VGG-19's input space (BGR, means subtracted)."""
    from jaxdream.nets.vgg19 import MEAN_BGR
    return rgb[..., ::-1] - np.asarray(MEAN_BGR, np.float32)


def style_problem(params, size: int):
    """(x, targets, weights, spec) of a style evaluation at size x size px."""
    spec = gatys.Objective(remat=size * size > gatys.REMAT_PIXELS)
    content, style_img = to_vgg(smooth_image(size, 1)), to_vgg(smooth_image(size, 2))
    targets = gatys.prepare_targets(params, content, [style_img], [1.0], spec)
    weights = {"content": jnp.float32(5), "style": jnp.float32(100), "tv": jnp.float32(1e-3)}
    x = jnp.asarray(to_vgg(smooth_image(size, 3)))
    return x, targets, weights, spec


# ------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------


def peak_memory(device: jax.Device | None = None) -> int | None:
    """Peak bytes in use on the device so far, where the backend reports it (not on CPU)."""
    device = device or parallel.devices(1)[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 -- backends without the call
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def compiled_memory(compiled) -> dict | None:
    """XLA's memory analysis of a compiled program (bytes), or None."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    return {"temp": int(m.temp_size_in_bytes), "arguments": int(m.argument_size_in_bytes),
            "outputs": int(m.output_size_in_bytes)}


def compile_timed(jitted, *args, **static):
    """Lower and compile ``jitted`` for ``args``; return (compiled, seconds)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args, **static).compile()
    return compiled, time.perf_counter() - start


def time_calls(fn: Callable[[], Any], reps: int) -> list[float]:
    """Seconds of ``reps`` calls of ``fn`` (each waited for)."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def rel(a, b) -> float:
    """|a - b| / |b| for scalars."""
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-30)


def rel_l2(a, b) -> float:
    """||a - b|| / ||b|| over all entries."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ------------------------------------------------------------------------------------------
# benchmarks
# ------------------------------------------------------------------------------------------

_STYLE_VG = jax.jit(jax.value_and_grad(gatys.objective, has_aux=True), static_argnames="spec")


def bench_style(params, size: int, reps: int, dtype=jnp.float32) -> dict:
    """Seconds per style loss-and-gradient evaluation at ``size`` px."""
    x, targets, weights, spec = style_problem(params, size)
    f32_loss = None
    if dtype != jnp.float32:
        (f32_loss, _), _ = _STYLE_VG(x, params, targets, weights, spec=spec)
        params = jax.tree.map(lambda a: a.astype(dtype), params)
        x = x.astype(dtype)
    compiled, compile_s = compile_timed(_STYLE_VG, x, params, targets, weights, spec=spec)
    (loss, _), grad = compiled(x, params, targets, weights)
    jax.block_until_ready(grad)
    times = time_calls(lambda: compiled(x, params, targets, weights), reps)
    out = {"size": size, "dtype": jnp.dtype(dtype).name, "remat": spec.remat,
           "compile_s": compile_s, "seconds": float(np.median(times)), "min_s": min(times),
           "loss": float(loss), "memory": compiled_memory(compiled), "peak_bytes": peak_memory()}
    if f32_loss is not None:
        out["loss_rel_diff_vs_f32"] = rel(loss, f32_loss)
    return out


def dream_args(params, size: int) -> tuple:
    image = jnp.asarray(smooth_image(size, 4))
    return (params, image, jax.random.key(0), jnp.int32(0), jnp.asarray([1.0], jnp.float32),
            jnp.float32(1.5), None)


def bench_dream(params, size: int, reps: int) -> dict:
    """Seconds per DeepDream ascent step (GoogLeNet, inception_4c, default schedule)."""
    args = dream_args(params, size)
    obj, sched = dream.Objective(), dream.Schedule(steps=1)
    compiled, compile_s = compile_timed(dream.ascent_step, *args, obj=obj, sched=sched)
    jax.block_until_ready(compiled(*args))
    times = time_calls(lambda: compiled(*args), reps)
    return {"size": size, "compile_s": compile_s, "seconds": float(np.median(times)),
            "min_s": min(times), "memory": compiled_memory(compiled), "peak_bytes": peak_memory()}


def lbfgs_run(params, size: int, iterations: int, in_loop: bool, device=None):
    """Run L-BFGS from the content image as ``stylize`` does; return (state, timings)."""
    x, targets, weights, spec = style_problem(params, size)
    weights = {k: v[None] for k, v in weights.items()}
    state = optim.lbfgs_init(x[None], CORRECTIONS, spec.n_losses)
    lr = jnp.float32(1.0)
    if device is not None:
        state, params, targets, weights, lr = jax.device_put((state, params, targets, weights, lr),
                                                             device)
    start = time.perf_counter()
    if in_loop:
        n = jnp.int32(min(LBFGS_CHUNK, iterations))
        compiled, compile_s = compile_timed(programs.lbfgs_chunk, state, params, targets, weights, n,
                                            lr, spec=spec)
        done = 0
        while done < iterations:
            k = min(LBFGS_CHUNK, iterations - done)
            state = compiled(state, params, targets, weights, jnp.int32(k), lr)
            done += k
    else:
        compiled, compile_s = compile_timed(programs.lbfgs_step, state, params, targets, weights, lr,
                                            spec=spec)
        for _ in range(iterations):
            state = compiled(state, params, targets, weights, lr)
    jax.block_until_ready(state)
    total = time.perf_counter() - start
    return state, {"compile_s": compile_s, "total_s": total, "memory": compiled_memory(compiled)}


def bench_lbfgs(params, size: int, iterations: int) -> dict:
    """``iterations`` L-BFGS iterations at ``size`` px, end to end (compile included)."""
    in_loop = optim.in_jit_loop_default()
    state, t = lbfgs_run(params, size, iterations, in_loop)
    losses = np.asarray(state.losses)[0]
    return {"size": size, "iterations": iterations, "in_jit_loop": in_loop, **t,
            "seconds_per_iteration": (t["total_s"] - t["compile_s"]) / iterations,
            "final_loss": float(losses[0]), "iterations_done": int(state.iteration),
            "peak_bytes": peak_memory()}


# ------------------------------------------------------------------------------------------
# comparisons with the CPU
# ------------------------------------------------------------------------------------------


def compare(vgg, googlenet, size: int, precision: str) -> dict:
    """Style evaluation, dream step and a few L-BFGS iterations on the default device and on
    the CPU at ``precision``; relative differences and whether each is within tolerance."""
    fast, cpu = parallel.devices(1)[0], jax.devices("cpu")[0]
    tol = TOLERANCE[precision]
    out: dict[str, Any] = {"precision": precision, "size": size, "same_device": fast == cpu}
    with jax.default_matmul_precision(precision):
        x, targets, weights, spec = style_problem(vgg, size)
        res = {}
        for name, dev in (("fast", fast), ("cpu", cpu)):
            args = jax.device_put((x, vgg, targets, weights), dev)
            (loss, parts), grad = _STYLE_VG(*args, spec=spec)
            res[name] = (np.asarray(loss), np.asarray(parts), np.asarray(grad))
        out["style_loss"] = rel(res["fast"][0], res["cpu"][0])
        out["style_parts"] = max(rel(a, b) for a, b in zip(res["fast"][1], res["cpu"][1]))
        out["style_grad"] = rel_l2(res["fast"][2], res["cpu"][2])

        args = dream_args(googlenet, size)
        obj, sched = dream.Objective(), dream.Schedule(steps=1)
        steps = {name: np.asarray(dream.ascent_step(*jax.device_put(args, dev), obj=obj, sched=sched))
                 - np.asarray(args[1]) for name, dev in (("fast", fast), ("cpu", cpu))}
        out["dream_update"] = rel_l2(steps["fast"], steps["cpu"])

        in_loop = optim.in_jit_loop_default()
        runs = {name: lbfgs_run(vgg, size, COMPARE_LBFGS_ITERATIONS, in_loop, dev)[0]
                for name, dev in (("fast", fast), ("cpu", cpu))}
        out["lbfgs_loss"] = rel(runs["fast"].losses[0, 0], runs["cpu"].losses[0, 0])
        out["lbfgs_x"] = rel_l2(runs["fast"].x, runs["cpu"].x)
    limits = {"style_loss": tol["loss"], "style_parts": tol["loss"], "style_grad": tol["grad"],
              "dream_update": tol["dream"], "lbfgs_loss": tol["lbfgs"], "lbfgs_x": tol["lbfgs"]}
    out["tolerance"] = limits
    out["failed"] = [k for k, limit in limits.items() if not out[k] <= limit]
    return out


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


def _line(kind: str, r: dict) -> str:
    if "error" in r:
        return f"{kind:>14} {r.get('size', '')}: ERROR {r['error']}"
    mem = r.get("memory") or {}
    if kind == "lbfgs":
        return (f"{'lbfgs':>14} {r['size']:>5} px x {r['iterations_done']}: {r['total_s']:.1f} s end to end "
                f"(compile {r['compile_s']:.1f} s, {r['seconds_per_iteration'] * 1e3:.1f} ms/it, "
                f"{'in-jit loop' if r['in_jit_loop'] else 'python loop'}), final loss "
                f"{r['final_loss']:.4g}, peak {_mb(r['peak_bytes'])}")
    extra = ""
    if "loss_rel_diff_vs_f32" in r:
        extra = f", loss vs f32 {r['loss_rel_diff_vs_f32']:.1e}"
    label = f"{kind} {r.get('dtype', '')}".strip()
    unit = "step" if kind == "dream" else "eval"
    return (f"{label:>14} {r['size']:>5} px: {r['seconds'] * 1e3:9.1f} ms/{unit} (min "
            f"{r['min_s'] * 1e3:.1f}), compile {r['compile_s']:.1f} s, temp "
            f"{_mb(mem.get('temp'))}, peak {_mb(r['peak_bytes'])}"
            f"{', remat' if r.get('remat') else ''}{extra}")


def _guard(kind: str, size, fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 -- record and go on (out of memory at 2048 px, say)
        return {"size": size, "error": " ".join(traceback.format_exception_only(e)[-1].split())[:400]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    start = time.perf_counter()
    print(parallel.describe(parallel.mesh()))
    results: dict[str, Any] = {"devices": parallel.describe(parallel.mesh()),
                               "backend": jax.default_backend(), "quick": args.quick}
    vgg, googlenet = random_params("vgg19", 0), random_params("googlenet", 1)

    results["style"] = []
    for size in plan["style"]:
        r = _guard("style", size, lambda: bench_style(vgg, size, plan["reps"]))
        results["style"].append(r)
        print(_line("style", r), flush=True)
    for size in plan["bf16"]:
        r = _guard("style", size, lambda: bench_style(vgg, size, plan["reps"], jnp.bfloat16))
        results["style"].append(r)
        print(_line("style", r), flush=True)
    results["dream"] = []
    for size in plan["dream"]:
        r = _guard("dream", size, lambda: bench_dream(googlenet, size, plan["reps"]))
        results["dream"].append(r)
        print(_line("dream", r), flush=True)
    size, iterations = plan["lbfgs"]
    results["lbfgs"] = _guard("lbfgs", size, lambda: bench_lbfgs(vgg, size, iterations))
    print(_line("lbfgs", results["lbfgs"]), flush=True)

    results["compare"] = []
    same = parallel.devices(1)[0] == jax.devices("cpu")[0]
    # on a CPU-only machine both sides are one device: once exercises the path, twice is time
    for precision in ("default",) if same else ("default", "highest"):
        r = _guard("compare", plan["compare"], lambda: compare(vgg, googlenet, plan["compare"],
                                                               precision))
        results["compare"].append(r)
        if "error" in r:
            print(f"compare {precision}: ERROR {r['error']}")
            continue
        diffs = ", ".join(f"{k} {r[k]:.1e}" for k in r["tolerance"])
        verdict = "ok" if not r["failed"] else "BEYOND TOLERANCE: " + ", ".join(r["failed"])
        same = " (same device: trivial)" if r["same_device"] else ""
        print(f"vs cpu, {precision} precision, {r['size']} px{same}: {diffs}: {verdict}")

    errors = [r for group in ("style", "dream") for r in results[group] if "error" in r]
    errors += [r for r in [results["lbfgs"], *results["compare"]] if "error" in r]
    failed = any(r.get("failed") for r in results["compare"])
    results["seconds"] = time.perf_counter() - start
    results["status"] = 1 if failed else (2 if errors else 0)
    print(f"done in {results['seconds']:.0f} s: "
          + ("comparisons beyond tolerance" if failed else
             f"{len(errors)} benchmark(s) raised" if errors else "all within tolerance"))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return results["status"]


if __name__ == "__main__":
    sys.exit(main())
