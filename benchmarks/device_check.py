"""The first thing to run on a machine with an accelerator: does jaxdream compute the same
numbers as the CPU, how long do the README's commands take there, and how fast is it?

Usage::

    python benchmarks/device_check.py [--quick] [--budget SECONDS] [--out DIR] [--plan-only]
                                      [--assume-backend {cpu,gpu,tpu}]

It runs a plan of items in priority order, within ``--budget`` seconds (default 300) of wall
time, compiles included. Before each item it compares the item's estimated cost on this backend
(a CPU or an accelerator; compiles counted: about 20 s per VGG-19 program and 10 s per
GoogLeNet program on an H200) with the time left, and skips what would not fit, saying so.
The order:

a. **device against CPU** (what matters most: no result computed on an accelerator had been
   compared with the CPU before): the same computation on ``jax.devices()[0]`` at ``highest``
   and at the default matmul precision, against the CPU at ``highest``: Gatys style loss and
   gradient, a DeepDream ascent step, 5 L-BFGS iterations (compact direction) from a state the
   CPU reached in 10 (the device's own loop, in-jit ``lbfgs_chunk`` on an accelerator, and the
   same 5 updates replayed with the CPU's gradients), TV-L1 flow both ways with its
   occlusion mask, the band-wise style evaluation (``bands.band_value_and_grad``, against the
   whole image on the device and against the bands on the CPU), and a tiled DeepDream step whose
   image is edge-padded to whole tiles (``dream.tiled_gradient``). Their programs are compiled
   and run concurrently, ahead, in a thread pool; the results are reported in this order.
b. **the commands end to end**, each ``python -m jaxdream.cli.main ...`` in a subprocess (a
   fresh ``JAXDREAM_HOME`` per empty-cache run): the README's ``dream examples/chelsea.jpg``
   with an empty compile cache and again warm (each command's last line ``X s: Y s compiling,
   Z s dreaming`` is parsed and recorded); ``zoom`` 48 frames at 512 px warm (after a 2-frame
   run that fills the cache; target <= 10 s, the command's own time); ``video --style`` 12
   frames at 512 px of ``../shared/media/bigbuckbunny.mp4``, else of a synthetic clip; then
   ``jaxdream.stylize`` at 512 and 1024 px in this process (after the child processes, which
   each take 75% of the accelerator's memory at start, while this one holds little), seconds
   per iteration between its chunk callbacks beside the raw jitted loss and gradient (target:
   stylize / raw <= 1.15 at 512 px). GoogLeNet and VGG-19 get random weights of the real
   shapes written to ``.npz`` files (``--weights``), unless ``$JAXDREAM_WEIGHTS_DIR`` holds the
   upstream files. This process runs with ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (unless set).
c. **the PyTorch reference** (where ``torch`` is importable): ``peer_compare.torch_reference``
   at the style sizes of (b), in a child process, on the GPU when torch sees one; every L-BFGS
   run (jaxdream's and PyTorch's) records the iterations it really did, and a run that did fewer
   than asked, or spent implausibly little per iteration (under half an evaluation), is flagged.
d. **speeds**: style loss and gradient at 512 / 1024 / 2048 px in float32 and bfloat16, the
   DeepDream step at 512 / 1024 px, 500 L-BFGS iterations at 512 px; compile seconds, XLA's
   memory analysis and the device's peak memory. Their programs compile concurrently first.

Outputs: the lines on stdout as it goes, and ``device_check.md`` (one markdown table: device,
versions, date, each measurement with its target or tolerance and pass/fail, the skipped items
and why) and ``device_check.json`` in ``--out DIR`` (rewritten after every item, so a run cut
short still leaves what it measured). ``--plan-only`` prints the plan with its estimates and
what the budget would skip, computing nothing (``--assume-backend gpu`` plans for an
accelerator from any machine). ``--quick``: tiny sizes, a CPU smoke run of every path.

Tolerances (relative; gradients, image updates and flows as ||a - b|| / ||b||). At ``highest``
precision both sides compute in float32 and differ by summation order only: loss 1e-4,
gradient / dream update / L-BFGS / flow 1e-3, occlusion mask 0.2% of pixels. At the default
precision accelerators may use TF32 or bf16 passes inside float32 convolutions (about 3
significant digits): loss 1e-2, the rest 5e-2, mask 2%. Bands against the whole image use the
loss and gradient tolerances. L-BFGS is held to its loss after the 5 iterations and to the
replayed iterate (the change from the shared start, relative to the CPU's change). Its own
iterate after 5 iterations is shown for information only: ``y = g - g_prev`` of nearby points
amplifies rounding (on the CPU, a 1e-6 relative change of the start moved it by 2-4% of its
change; the replay, which feeds both sides the same gradients, by 1e-6). Right after the
start it is worse still (neural-style's first step is tiny, so the next direction is noise),
hence the 10 iterations first. Exit status 1 if any comparison is beyond its tolerance,
else 2 if an item raised (out of memory, say), else 0; a missed speed target, a flagged run or
a skipped item leave it 0 (they are in the table). Where the default device is the CPU itself
the device-against-CPU comparisons are trivial, except L-BFGS (in-jit loop against Python
loop) and bands against the whole image.

jaxdream must be installed (``pip install .`` or a wheel): the commands run as
``python -m jaxdream.cli.main`` from a scratch folder.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # peer_compare

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxdream  # noqa: E402
from jaxdream import flow, optim  # noqa: E402
from jaxdream.nets import get_spec  # noqa: E402
from jaxdream.nets.network import Network, param_shapes, param_tree  # noqa: E402
from jaxdream.objectives import bands, gatys  # noqa: E402
from jaxdream.runtime import parallel  # noqa: E402
from jaxdream.style import programs  # noqa: E402

dream = importlib.import_module("jaxdream.dream")  # the package attribute is the function

# the commands start with fork and exec at once, from a process whose worker threads compile
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")

GROUPS = ("compare", "commands", "peer", "speed")
GROUP_TITLES = {"compare": "a. device against CPU", "commands": "b. commands end to end",
                "peer": "c. PyTorch reference", "speed": "d. speeds"}

FULL = {"compare": 128, "flow": (96, 128), "bands": (256, 48, 32), "tiled": (129, 128, 96),
        "dream_cmd": [], "style_cli": ((512, 200), (1024, 100)), "chunk": 20,
        "zoom": {"frames": 48, "size": 512, "warm_frames": 2, "extra": []},
        "video": {"frames": 12, "size": 512, "clip": (288, 512), "clip_frames": 16, "extra": []},
        "peer_iterations": 100, "peer_evals": 5,
        "style": (512, 1024, 2048), "bf16": (512, 1024, 2048), "dream": (512, 1024), "lbfgs": (512, 500),
        "reps": 5}
QUICK = {"compare": 64, "flow": (48, 64), "bands": (64, 48, 16), "tiled": (65, 64, 48),
         "dream_cmd": ["--size", "96", "--octaves", "2", "--steps", "2"], "style_cli": ((64, 8), (96, 8)),
         "chunk": 2,
         "zoom": {"frames": 3, "size": 64, "warm_frames": 2, "extra": ["--octaves", "1", "--steps-per-frame", "1"]},
         "video": {"frames": 3, "size": 64, "clip": (72, 128), "clip_frames": 4,
                   "extra": ["--iterations-first", "4", "--iterations", "2"]},
         "peer_iterations": 10, "peer_evals": 2,
         "style": (64, 128), "bf16": (64,), "dream": (64, 96), "lbfgs": (64, 20), "reps": 2}
TOLERANCE = {"highest": {"loss": 1e-4, "grad": 1e-3, "dream": 1e-3, "lbfgs": 1e-3, "flow": 1e-3, "mask": 2e-3},
             "default": {"loss": 1e-2, "grad": 5e-2, "dream": 5e-2, "lbfgs": 5e-2, "flow": 5e-2, "mask": 2e-2}}
#: CLI-path seconds per iteration / raw loss-and-gradient seconds, at 512 px (full plan only)
STYLE_RATIO_TARGET = (512, 1.15)
#: zoom 48 frames at 512 px with a warm compile cache: the command's own seconds (full plan only)
ZOOM_TARGET_S = 10.0
#: an L-BFGS iteration costs at least one evaluation: a run under this fraction of one is flagged
PLAUSIBLE_FRACTION = 0.5
LBFGS_CHUNK = 20
COMPARE_LBFGS_ITERATIONS = 5
#: L-BFGS iterations on the CPU before the compared ones (see _lbfgs_reference)
LBFGS_WARM = 10
CORRECTIONS = 100
TIMING = re.compile(r"(\d+(?:\.\d+)?) s: (\d+(?:\.\d+)?) s compiling, (\d+(?:\.\d+)?) s (dreaming|optimising)")
VIDEO_TIMING = re.compile(r"wrote .*?\((\d+) frames at [^;]*?(?:, (\d+(?:\.\d+)?) s per frame after the first)?; "
                          r"(\d+(?:\.\d+)?) s of it compiling\)")
#: the media folder beside the checkout (absent on a device machine)
SHARED_MEDIA = ROOT.parent / "shared" / "media"


# ------------------------------------------------------------------------------------------
# cost estimates (seconds, compiles included)
# ------------------------------------------------------------------------------------------

#: per backend kind: compile of one VGG-19 / GoogLeNet / flow program, a process's start (imports,
#: backend, weights), seconds per VGG-19 loss and gradient and per GoogLeNet step at 512 px
#: (scaled by pixels), PyTorch's import
COSTS = {"accelerator": {"vgg": 20.0, "googlenet": 10.0, "flow": 8.0, "start": 8.0, "vgg_eval": 0.003,
                         "gnet_step": 0.003, "torch_start": 8.0},
         "cpu": {"vgg": 5.0, "googlenet": 4.0, "flow": 4.0, "start": 4.0, "vgg_eval": 2.6, "gnet_step": 0.6,
                 "torch_start": 3.0}}


def _px(size: float, h: float | None = None) -> float:
    """Pixels relative to 512 x 512."""
    return size * (size if h is None else h) / 512 ** 2


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------


def random_flat(model: str, seed: int = 0) -> dict[str, np.ndarray]:
    """He-initialised parameters of the real shapes (kernels N(0, 2/fan_in), biases 0.01 N), flat
    ``{"layer/kernel": array}`` as a converted weights ``.npz`` holds them."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in param_shapes(model).items():
        if len(shape) > 1:
            fan_in = int(np.prod(shape[:-1]))
            flat[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        else:
            flat[name] = 0.01 * rng.standard_normal(shape, dtype=np.float32)
    return flat


def random_params(model: str, seed: int = 0) -> Any:
    """:func:`random_flat` as the model's parameter tree of host (NumPy) arrays."""
    flat = random_flat(model, seed)
    return param_tree(model, lambda name, _: flat[name])


def smooth_image(size: int, seed: int, width: int | None = None) -> np.ndarray:
    """A (size, width or size, 3) RGB 0..255 image: upsampled noise, so that it has structure."""
    width = size if width is None else width
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (size // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    return np.asarray(jax.image.resize(base, (size, width, 3), "linear"))


def to_vgg(rgb: np.ndarray) -> np.ndarray:
    """RGB 0..255 -> VGG-19's input space (BGR, means subtracted)."""
    from jaxdream.nets.vgg19 import MEAN_BGR
    return (rgb[..., ::-1] - np.asarray(MEAN_BGR, np.float32)).astype(np.float32)


STYLE_WEIGHTS = {"content": 5.0, "style": 100.0, "tv": 1e-3}


def style_weights() -> dict:
    return {k: np.float32(v) for k, v in STYLE_WEIGHTS.items()}


def random_targets(params, size: int, spec, seed: int = 5) -> dict:
    """Targets of the shapes ``prepare_targets`` gives at ``size`` px, with random non-negative
    values: for speed, where their values do not matter (no forward pass to compile)."""
    x = jax.ShapeDtypeStruct((size, size, 3), jnp.float32)
    p = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.float32), params)
    shapes = jax.eval_shape(lambda p, c, s: gatys.prepare_targets(p, c, [s], [1.0], spec), p, x, x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: np.abs(rng.standard_normal(s.shape)).astype(np.float32), shapes)


def shifted_frames(h: int, w: int, dx: float = 2.5, dy: float = -1.5, seed: int = 0):
    """Two (h, w, 3) frames of a smooth texture, the second moved by (dx, dy) (bilinear)."""
    m = 6
    big = smooth_image(h + 2 * m + 2, seed, w + 2 * m + 2)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)

    def sample(x, y):
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = (x - x0)[..., None], (y - y0)[..., None]
        return ((big[y0, x0] * (1 - fx) + big[y0, x0 + 1] * fx) * (1 - fy)
                + (big[y0 + 1, x0] * (1 - fx) + big[y0 + 1, x0 + 1] * fx) * fy).astype(np.float32)

    return sample(xs + m, ys + m), sample(xs + m + dx, ys + m + dy)


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


def plausibility(per_iteration_s: float | None, eval_s: float | None, done: int | None, requested: int,
                 first_loss: float | None = None, last_loss: float | None = None) -> list[str]:
    """Why an optimisation run did not really do its iterations, if it did not (empty: fine)."""
    flags = []
    if done is not None and done < requested:
        flags.append(f"did {done} of {requested} iterations")
    if per_iteration_s is not None and eval_s and per_iteration_s < PLAUSIBLE_FRACTION * eval_s:
        flags.append(f"{per_iteration_s * 1e3:.3g} ms per iteration is under {PLAUSIBLE_FRACTION:g} of one "
                     f"evaluation ({eval_s * 1e3:.3g} ms): implausibly low")
    if first_loss is not None and last_loss is not None and not last_loss < first_loss:
        flags.append(f"loss did not fall ({first_loss:.4g} -> {last_loss:.4g})")
    return flags


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.3g} ms"


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


class BudgetExceeded(Exception):
    """An item's background work did not finish within the budget."""


# ------------------------------------------------------------------------------------------
# the run's context
# ------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One entry of the plan: ``run(ctx)`` returns ``{"rows": [...], **data}``; ``prepare(ctx)``
    starts its background work (compiles) when its group starts; ``unavailable`` says why it
    cannot run here at all (no torch, no ffmpeg)."""

    name: str
    group: str
    estimate: float
    run: Callable[["Context"], dict]
    prepare: Callable[["Context"], None] | None = None
    unavailable: str | None = None
    #: the item whose compiled program this one reuses, and the seconds to add where it did not run
    reuses: str | None = None
    extra: float = 0.0

    def cost(self, ran: set[str]) -> float:
        """The estimate, given the names of the items that ran before it."""
        return self.estimate + (self.extra if self.reuses and self.reuses not in ran else 0.0)


@dataclass
class Context:
    """What the items share: the plan's sizes, the clock and budget, the thread pool and the
    futures of the background work, inputs built once, measurements later items read, the
    records written out."""

    plan: dict
    quick: bool
    accelerator: bool
    budget: float
    out: Path | None
    started: float = field(default_factory=time.perf_counter)
    pool: cf.ThreadPoolExecutor | None = None
    futures: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)  # facts later items read (style eval seconds, ...)
    records: list = field(default_factory=list)
    header: dict = field(default_factory=dict)
    plan_listing: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _once: dict = field(default_factory=dict)
    _workdir: Path | None = None
    set_preallocate: bool = False

    # -- time
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        return self.budget - self.elapsed()

    def wait(self, fut: cf.Future):
        """The future's result, waiting at most for the time left (BudgetExceeded after)."""
        try:
            return fut.result(timeout=max(0.5, self.remaining()))
        except cf.TimeoutError:
            raise BudgetExceeded("its background work was still running when the budget ran out") from None

    # -- shared inputs, built once
    def once(self, key, build: Callable[[], Any]):
        with self._lock:
            slot = self._once.setdefault(key, {"lock": threading.Lock()})
        with slot["lock"]:
            if "value" not in slot:
                slot["value"] = build()
            return slot["value"]

    def built(self, key):
        """What :meth:`once` built for ``key`` already, else None (never builds)."""
        return self._once.get(key, {}).get("value")

    @property
    def fast(self) -> jax.Device:
        return parallel.devices(1)[0]

    @property
    def cpu(self) -> jax.Device:
        return jax.devices("cpu")[0]

    @property
    def same(self) -> bool:
        return self.fast == self.cpu

    def vgg(self):
        return self.once("vgg", lambda: random_params("vgg19", 0))

    def googlenet(self):
        return self.once("googlenet", lambda: random_params("googlenet", 1))

    def vgg_on(self, dev):
        return self.once(("vgg", dev), lambda: jax.device_put(self.vgg(), dev))

    def googlenet_on(self, dev):
        return self.once(("googlenet", dev), lambda: jax.device_put(self.googlenet(), dev))

    def submit(self, key, fn: Callable[[], Any]) -> cf.Future:
        fut = self.pool.submit(fn)
        self.futures[key] = fut
        return fut

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="device_check_"))
        return self._workdir

    def child_env(self, home: Path) -> dict[str, str]:
        env = dict(os.environ)
        if self.set_preallocate:
            env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)  # the commands run as a user runs them
        env.update(JAXDREAM_HOME=str(home), JAXDREAM_OFFLINE="1", PYTHONUNBUFFERED="1")
        return env


# ------------------------------------------------------------------------------------------
# a. device against CPU
# ------------------------------------------------------------------------------------------

_STYLE_VG = jax.jit(jax.value_and_grad(gatys.objective, has_aux=True), static_argnames="spec")


def _on(dev, precision: str, fn: Callable[[], Any]):
    """``fn()`` with ``dev`` the default device at ``precision``; its results on the host."""
    with jax.default_device(dev), jax.default_matmul_precision(precision):
        return jax.device_get(fn())


def _fast_precisions(ctx: Context) -> tuple[str, ...]:
    # on a CPU-only machine both sides are one device: once exercises the path, twice is time
    return ("default",) if ctx.same else ("highest", "default")


def _ref_precision(ctx: Context) -> str:
    return "default" if ctx.same else "highest"


def _style_problem_host(ctx: Context, h: int, w: int | None = None):
    """(x, targets, weights, spec) on the host, targets computed on the CPU (float32)."""
    def build():
        w_ = h if w is None else w
        spec = gatys.Objective(remat=h * w_ > gatys.REMAT_PIXELS)
        content, style_img = to_vgg(smooth_image(h, 1, w_)), to_vgg(smooth_image(h, 2, w_))
        targets = _on(ctx.cpu, _ref_precision(ctx),
                      lambda: gatys.prepare_targets(ctx.vgg_on(ctx.cpu), content, [style_img], [1.0], spec))
        return to_vgg(smooth_image(h, 3, w_)), targets, style_weights(), spec
    return ctx.once(("style_problem", h, w), build)


def _side_style(ctx, dev, h, w=None):
    x, targets, weights, spec = _style_problem_host(ctx, h, w)
    args = jax.device_put((x, targets, weights), dev)
    (loss, parts), grad = _STYLE_VG(args[0], ctx.vgg_on(dev), args[1], args[2], spec=spec)
    return loss, parts, grad


def _side_bands(ctx, dev, h, w, band_rows):
    x, targets, weights, spec = _style_problem_host(ctx, h, w)
    x, targets, weights = jax.device_put((x, targets, weights), dev)
    return bands.band_value_and_grad(x, ctx.vgg_on(dev), targets, weights, spec, band_rows)


def _dream_args(ctx, dev, image: np.ndarray) -> tuple:
    return (ctx.googlenet_on(dev), jax.device_put(image, dev), jax.device_put(jax.random.key(0), dev),
            jnp.int32(0), jnp.asarray([1.0], jnp.float32), jnp.float32(1.5), None)


def _side_dream(ctx, dev, image: np.ndarray, tile_size: int = 512):
    sched = dream.Schedule(steps=1, tile_size=tile_size)
    args = _dream_args(ctx, dev, image)
    return dream.ascent_step(*args, obj=dream.Objective(), sched=sched) - args[1]


def _batched_vg(spec):
    """jit of ``gatys.batched_value_and_grad``: (B, H, W, 3) -> ((total (B,), parts (B, n)), grad)."""
    return jax.jit(lambda x, p, t, w: gatys.batched_value_and_grad(p, t, w, spec)(x))


def _lbfgs_reference(ctx: Context, size: int):
    """On the CPU, from the problem's image: ``LBFGS_WARM`` iterations (neural-style's first step
    is tiny, so the next directions are ill-conditioned; after these the history is sound), then
    ``COMPARE_LBFGS_ITERATIONS`` more, each one's loss, parts and gradient recorded. Returns
    (warm state, records, final state), all on the host."""
    def build():
        x, targets, weights, spec = _style_problem_host(ctx, size)

        def run():
            cpu = ctx.cpu
            params = ctx.vgg_on(cpu)
            t, w = jax.device_put((targets, {k: np.asarray(v)[None] for k, v in weights.items()}), cpu)
            lr = jnp.float32(1.0)
            state = optim.lbfgs_init(jax.device_put(x[None], cpu), CORRECTIONS, spec.n_losses)
            for _ in range(LBFGS_WARM):
                state = programs.lbfgs_step(state, params, t, w, lr, spec=spec)
            warm = jax.device_get(state)
            vg, records = _batched_vg(spec), []
            for _ in range(COMPARE_LBFGS_ITERATIONS):
                (total, parts), grad = vg(state.x, params, t, w)
                records.append(jax.device_get((total, parts, grad)))
                state = programs.lbfgs_apply(state, total, parts, grad, lr)
            return warm, records, jax.device_get(state)
        return _on(ctx.cpu, _ref_precision(ctx), run)
    return ctx.once(("lbfgs_reference", size), build)


def _side_lbfgs(ctx, dev, size: int, in_loop: bool):
    """From the reference's warm state on ``dev``: ``COMPARE_LBFGS_ITERATIONS`` iterations end to
    end (the device's own evaluations) and the same number replayed with the reference's
    recorded gradients (``lbfgs_apply``: the update's arithmetic alone, a well-conditioned
    comparison). Returns ((loss row, x, iterations) end to end, replayed x, warm x)."""
    warm, records, _ = _lbfgs_reference(ctx, size)
    _, targets, weights, spec = _style_problem_host(ctx, size)
    params, lr = ctx.vgg_on(dev), jnp.float32(1.0)
    t, w = jax.device_put((targets, {k: np.asarray(v)[None] for k, v in weights.items()}), dev)
    state = jax.device_put(warm, dev)
    if in_loop:
        state = programs.lbfgs_chunk(state, params, t, w, jnp.int32(COMPARE_LBFGS_ITERATIONS), lr, spec=spec)
    else:
        for _ in range(COMPARE_LBFGS_ITERATIONS):
            state = programs.lbfgs_step(state, params, t, w, lr, spec=spec)
    end_to_end = (state.losses[0], state.x[0], state.iteration)
    state = jax.device_put(warm, dev)
    for total, parts, grad in records:
        state = programs.lbfgs_apply(state, *jax.device_put((total, parts, grad), dev), lr)
    return end_to_end, state.x[0], warm.x[0]


def _ref_lbfgs(ctx, size: int):
    warm, _, final = _lbfgs_reference(ctx, size)
    return (final.losses[0], final.x[0], final.iteration), final.x[0], warm.x[0]


def _side_flow(ctx, dev, h, w):
    a, b = ctx.once(("frames", h, w), lambda: shifted_frames(h, w))
    a, b = jax.device_put((a, b), dev)
    fw, bw = flow.forward_backward(a, b)
    return fw, bw, flow.occlusion_mask(fw, bw)


def _compare_sides(ctx: Context, kind: str) -> Callable[..., Any]:
    """``side(dev, fast: bool)`` of a comparison kind: its results on the host."""
    p = ctx.plan
    s = p["compare"]
    if kind == "style":
        return lambda dev, fast: _side_style(ctx, dev, s)
    if kind == "dream":
        return lambda dev, fast: _side_dream(ctx, dev, smooth_image(s, 4))
    if kind == "tiled":
        h, w, tile = p["tiled"]
        return lambda dev, fast: _side_dream(ctx, dev, smooth_image(h, 6, w), tile)
    if kind == "lbfgs":
        # the device runs what stylize runs there (in-jit loop on an accelerator); where it is the
        # CPU itself, the in-jit loop against the reference's Python loop
        return lambda dev, fast: (_side_lbfgs(ctx, dev, s, optim.in_jit_loop_default() or ctx.same) if fast
                                  else _ref_lbfgs(ctx, s))
    if kind == "flow":
        return lambda dev, fast: _side_flow(ctx, dev, *p["flow"])
    if kind == "bands":
        h, w, rows = p["bands"]

        def side(dev, fast):
            banded = _side_bands(ctx, dev, h, w, rows)
            return (banded, _side_style(ctx, dev, h, w)) if fast else banded
        return side
    raise ValueError(kind)


COMPARE_KINDS = ("style", "dream", "lbfgs", "flow", "bands", "tiled")
COMPARE_TITLES = {"style": "style loss and gradient", "dream": "dream ascent step",
                  "lbfgs": f"{COMPARE_LBFGS_ITERATIONS} L-BFGS iterations after {LBFGS_WARM} (end to end; replayed "
                           f"gradients)", "flow": "TV-L1 flow and mask",
                  "bands": "band-wise style evaluation", "tiled": "tiled dream step (edge-padded tiles)"}


def _prepare_compare(kind: str) -> Callable[[Context], None]:
    def prepare(ctx: Context) -> None:
        side = _compare_sides(ctx, kind)
        ref = ctx.submit((kind, "ref"), lambda: _on(ctx.cpu, _ref_precision(ctx), lambda: side(ctx.cpu, False)))
        for precision in _fast_precisions(ctx):
            def task(precision=precision):
                if ctx.same:
                    ref.result()  # one device: its programs compile once, in the reference's task
                return _on(ctx.fast, precision, lambda: side(ctx.fast, True))
            ctx.submit((kind, precision), task)
    return prepare


def _metrics(kind: str, fast, ref, tol: dict) -> tuple[dict, dict]:
    """(relative differences, their limits) of one comparison."""
    if kind == "style":
        (loss, parts, grad), (rloss, rparts, rgrad) = fast, ref
        m = {"loss": rel(loss, rloss), "parts": max(rel(a, b) for a, b in zip(parts, rparts)),
             "grad": rel_l2(grad, rgrad)}
        return m, {"loss": tol["loss"], "parts": tol["loss"], "grad": tol["grad"]}
    if kind in ("dream", "tiled"):
        return {"update": rel_l2(fast, ref)}, {"update": tol["dream"]}
    if kind == "lbfgs":
        ((loss, x, it), replayed, warm), ((rloss, rx, rit), _, _) = fast, ref
        moved = np.asarray(rx, np.float64) - np.asarray(warm, np.float64)
        m = {"loss": rel(loss[0], rloss[0]), "replayed_x": rel_l2(np.asarray(replayed) - warm, moved),
             "iterations": float(int(it) != int(rit)),
             # information only: the end-to-end iterate amplifies rounding (y = g - g_prev)
             "x": rel_l2(np.asarray(x) - warm, moved)}
        return m, {"loss": tol["lbfgs"], "replayed_x": tol["lbfgs"], "iterations": 0.0}
    if kind == "flow":
        (fw, bw, mask), (rfw, rbw, rmask) = fast, ref
        m = {"forward": rel_l2(fw, rfw), "backward": rel_l2(bw, rbw),
             "mask": float(np.mean((np.asarray(mask) > 0.5) != (np.asarray(rmask) > 0.5)))}
        return m, {"forward": tol["flow"], "backward": tol["flow"], "mask": tol["mask"]}
    if kind == "bands":
        ((total, parts, grad), (wloss, wparts, wgrad)), (rtotal, _, rgrad) = fast, ref
        m = {"vs_whole_loss": rel(total, wloss), "vs_whole_parts": max(rel(a, b) for a, b in zip(parts, wparts)),
             "vs_whole_grad": rel_l2(grad, wgrad), "vs_cpu_loss": rel(total, rtotal),
             "vs_cpu_grad": rel_l2(grad, rgrad)}
        return m, {"vs_whole_loss": tol["loss"], "vs_whole_parts": tol["loss"], "vs_whole_grad": tol["grad"],
                   "vs_cpu_loss": tol["loss"], "vs_cpu_grad": tol["grad"]}
    raise ValueError(kind)


def run_compare(kind: str) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        ref = ctx.wait(ctx.futures[(kind, "ref")])
        rows, data = [], {"reference": f"cpu at {_ref_precision(ctx)}", "same_device": ctx.same}
        for precision in _fast_precisions(ctx):
            fast = ctx.wait(ctx.futures[(kind, precision)])
            metrics, limits = _metrics(kind, fast, ref, TOLERANCE[precision])
            failed = [k for k, limit in limits.items() if not metrics[k] <= limit]
            data[precision] = {"differences": metrics, "tolerance": limits, "failed": failed}
            shown = {k: v for k, v in metrics.items() if k != "iterations"}
            what = (f"{COMPARE_TITLES[kind]}, device at {precision} vs cpu"
                    + (" (same device: trivial)" if ctx.same and kind not in ("lbfgs", "bands") else ""))
            if kind == "lbfgs" and ctx.same:
                what += " (in-jit loop vs Python loop)"
            value = ", ".join(f"{k} {v:.1e}" for k, v in shown.items() if k in limits)
            value += "".join(f"; {k} {v:.1e} (information)" for k, v in shown.items() if k not in limits)
            if kind == "lbfgs" and metrics["iterations"]:
                value += "; iteration counts differ"
            rows.append({"measurement": what, "value": value,
                         "target": "<= " + ", ".join(f"{k} {limits[k]:.0e}" for k in shown if k in limits),
                         "status": "FAIL" if failed else "pass"})
        data["failed"] = any(data[p]["failed"] for p in _fast_precisions(ctx))
        return {"rows": rows, **data}
    return run


# ------------------------------------------------------------------------------------------
# b. commands end to end
# ------------------------------------------------------------------------------------------


def _ffmpeg() -> str | None:
    """Why video files cannot be written or read here, or None."""
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        return "imageio-ffmpeg is not installed (no ffmpeg to read or write clips)"
    try:
        import imageio_ffmpeg
        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # noqa: BLE001
        return f"no ffmpeg: {e}"
    return None


def weights_args(ctx: Context, model: str) -> tuple[list[str], str]:
    """The ``--weights`` arguments of a command for ``model``: none where the upstream file is in
    ``$JAXDREAM_WEIGHTS_DIR`` (the real weights), else a file of random weights of the real shapes."""
    from jaxdream.weights.registry import get_info
    info = get_info(model)
    for folder in os.environ.get("JAXDREAM_WEIGHTS_DIR", "").split(os.pathsep):
        if folder and (Path(folder).expanduser() / info.filename).is_file():
            return [], f"real ({Path(folder) / info.filename})"

    def write() -> Path:
        path = ctx.workdir / f"{model}_random.npz"
        np.savez(path, **random_flat(model, 0 if model == "vgg19" else 1))
        return path
    return ["--weights", str(ctx.once(("weights", model), write))], "random, real shapes"


def _shown_arg(ctx: Context, arg: str) -> str:
    if arg.startswith(str(ctx.workdir)):
        return Path(arg).name + ("/" if arg.endswith("/") else "")
    if arg.startswith(str(ROOT) + os.sep):
        return os.path.relpath(arg, ROOT)
    return arg


def run_command(ctx: Context, args: list[str], home: Path) -> dict:
    """``python -m jaxdream.cli.main *args`` from the scratch folder with ``home`` as
    ``JAXDREAM_HOME``, within the time left; its timing line parsed."""
    cmd = [sys.executable, "-m", "jaxdream.cli.main", *args]
    home.mkdir(parents=True, exist_ok=True)
    timeout = max(1.0, ctx.remaining())
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ctx.workdir, env=ctx.child_env(home), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise BudgetExceeded(f"`{' '.join(args[:1])}` was stopped after {timeout:.0f} s, when the budget "
                             f"ran out") from None
    wall = time.perf_counter() - start
    text = proc.stdout + "\n" + proc.stderr
    lines = [ln for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    out = {"command": "jaxdream " + " ".join(_shown_arg(ctx, a) for a in args),
           "rc": proc.returncode, "wall_s": wall, "tail": lines[-4:]}
    if proc.returncode != 0:
        raise RuntimeError(f"{out['command']} exited {proc.returncode}: {' | '.join(lines[-3:])}")
    timing = TIMING.findall(text)
    if timing:
        total, compiling, work, verb = timing[-1]
        out.update(seconds=float(total), compile_s=float(compiling), work_s=float(work), verb=verb)
    video = VIDEO_TIMING.findall(text)
    if video:
        frames, per_frame, compiling = video[-1]
        out.update(frames=int(frames), compile_s=float(compiling),
                   per_frame_s=float(per_frame) if per_frame else None)
    return out


def _timing_text(r: dict) -> str:
    if "seconds" in r:
        return (f"{r['wall_s']:.1f} s process; command {r['seconds']:.1f} s: {r['compile_s']:.1f} s compiling, "
                f"{r['work_s']:.1f} s {r['verb']}")
    if "per_frame_s" in r:
        per = f", {r['per_frame_s']:.2f} s per frame after the first" if r.get("per_frame_s") else ""
        return f"{r['wall_s']:.1f} s process ({r['frames']} frames{per}; {r['compile_s']:.1f} s compiling)"
    return f"{r['wall_s']:.1f} s process (no timing line found)"


def _dream_cmd(ctx: Context, out: str) -> list[str]:
    wargs, _ = weights_args(ctx, "googlenet")
    return ["dream", str(ROOT / "examples" / "chelsea.jpg"), "-o", str(ctx.workdir / out), *ctx.plan["dream_cmd"],
            *wargs]


def run_dream_cold(ctx: Context) -> dict:
    r = run_command(ctx, _dream_cmd(ctx, "dream_cold.png"), ctx.workdir / "home_dream")
    r["weights"] = weights_args(ctx, "googlenet")[1]
    ctx.measured["dream_home_ready"] = True
    return {"rows": [{"measurement": f"`{_short(r['command'])}`, empty compile cache", "value": _timing_text(r),
                      "target": "", "status": ""}], **r}


def run_dream_warm(ctx: Context) -> dict:
    home = ctx.workdir / "home_dream"
    if not ctx.measured.get("dream_home_ready"):
        raise BudgetExceeded("the empty-cache run before it did not run")
    r = run_command(ctx, _dream_cmd(ctx, "dream_warm.png"), home)
    return {"rows": [{"measurement": f"`{_short(r['command'])}`, warm (same JAXDREAM_HOME)",
                      "value": _timing_text(r), "target": "", "status": ""}], **r}


def _short(command: str) -> str:
    return re.sub(r"--weights \S+", "--weights W.npz", command)


def _raw_style(ctx: Context, size: int, dtype=jnp.float32):
    """The raw jitted loss and gradient at ``size`` px (random targets): (compiled, compile_s,
    args), compiled once per run and shared by the items that time it."""
    key = ("style", size, jnp.dtype(dtype).name)

    def build():
        spec = gatys.Objective(remat=size * size > gatys.REMAT_PIXELS)
        params = ctx.vgg_on(ctx.fast)
        targets = jax.device_put(random_targets(ctx.vgg(), size, spec), ctx.fast)
        x = jax.device_put(to_vgg(smooth_image(size, 3)), ctx.fast)
        weights = jax.device_put(style_weights(), ctx.fast)
        if dtype != jnp.float32:
            params = jax.tree.map(lambda a: a.astype(dtype), params)
            x = x.astype(dtype)
        compiled, seconds = compile_timed(_STYLE_VG, x, params, targets, weights, spec=spec)
        return compiled, seconds, (x, params, targets, weights), spec
    return ctx.once(key, build)


def run_style_cli(size: int, iterations: int) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        raw_future = ctx.pool.submit(_raw_style, ctx, size)  # compiles beside stylize's own compile
        net = Network(get_spec("vgg19"), ctx.vgg_on(ctx.fast))
        stamps: list[tuple[float, int, float]] = []

        def callback(p) -> bool:
            if not stamps:
                # the raw program compiled beside stylize's own compiles; the iterations after
                # this first chunk run alone (and the timed interval starts at the next stamp)
                ctx.wait(raw_future)
            stamps.append((time.perf_counter(), p.iteration, float(p.losses["total"][0])))
            return False

        start = time.perf_counter()
        result = jaxdream.stylize(smooth_image(size, 1), [smooth_image(size, 2)], network=net, size=size, scales=(),
                                  num_iterations=iterations, init="content", chunk=ctx.plan["chunk"],
                                  callback=callback)
        total = time.perf_counter() - start
        done = sum(result.iterations_run)
        # from the second callback on: with pipelined chunks the first one's successor was
        # already running while the callback waited
        timed = stamps[1:] if len(stamps) > 2 else stamps
        per_it = ((timed[-1][0] - timed[0][0]) / (timed[-1][1] - timed[0][1])
                  if len(timed) > 1 and timed[-1][1] > timed[0][1] else None)
        compiled, raw_compile_s, args, _ = ctx.wait(raw_future)
        jax.block_until_ready(compiled(*args))
        raw = float(np.median(time_calls(lambda: compiled(*args), ctx.plan["reps"])))
        ctx.measured[("style_eval", size)] = raw
        ratio = per_it / raw if per_it else None
        flags = plausibility(per_it, raw, done, iterations, stamps[0][2] if stamps else None,
                             stamps[-1][2] if stamps else None)
        target_size, target = STYLE_RATIO_TARGET
        has_target = size == target_size and not ctx.quick
        ctx.measured[("stylize_per_it", size)] = per_it
        rows = [{"measurement": f"stylize {size} px, {iterations} iterations in chunks of {ctx.plan['chunk']}: "
                                f"per iteration (between chunk callbacks, the last {timed[-1][1] - timed[0][1]})",
                 "value": f"{_ms(per_it)} ({total:.1f} s in all, {result.compile_seconds:.1f} s compiling ahead, "
                          f"{done} iterations done)",
                 "target": "", "status": "FLAG: " + "; ".join(flags) if flags else ""},
                {"measurement": f"raw jitted loss and gradient {size} px, same process",
                 "value": f"{_ms(raw)} (compile {raw_compile_s:.1f} s)", "target": "", "status": ""},
                {"measurement": f"stylize per iteration / raw evaluation, {size} px",
                 "value": "n/a" if ratio is None else f"{ratio:.2f}",
                 "target": f"<= {target}" if has_target else "",
                 "status": ("" if not has_target or ratio is None else "pass" if ratio <= target else "miss")}]
        return {"rows": rows, "size": size, "iterations": iterations, "iterations_done": done,
                "seconds": total, "compile_s": result.compile_seconds, "per_iteration_s": per_it,
                "raw_eval_s": raw, "raw_compile_s": raw_compile_s, "ratio": ratio, "flags": flags,
                "loss_first": stamps[0][2] if stamps else None, "loss_last": stamps[-1][2] if stamps else None}
    return run


def run_zoom(ctx: Context) -> dict:
    z = ctx.plan["zoom"]
    wargs, kind = weights_args(ctx, "googlenet")
    suffix = ".mp4" if _ffmpeg() is None else "/"
    home = ctx.workdir / "home_zoom"
    base = ["zoom", str(ROOT / "examples" / "chelsea.jpg"), "--size", str(z["size"]), *z["extra"], *wargs]
    warm_up = run_command(ctx, [*base, "--frames", str(z["warm_frames"]), "-o",
                                str(ctx.workdir / ("zoom_warmup" + suffix))], home)
    timed = run_command(ctx, [*base, "--frames", str(z["frames"]), "-o", str(ctx.workdir / ("zoom" + suffix))], home)
    has_target = not ctx.quick
    seconds = timed.get("seconds")
    rows = [{"measurement": f"zoom {z['warm_frames']} frames at {z['size']} px, empty cache (warm-up)",
             "value": _timing_text(warm_up), "target": "", "status": ""},
            {"measurement": f"zoom {z['frames']} frames at {z['size']} px, warm", "value": _timing_text(timed),
             "target": f"<= {ZOOM_TARGET_S:g} s" if has_target else "",
             "status": ("" if not has_target or seconds is None else "pass" if seconds <= ZOOM_TARGET_S else "miss")}]
    return {"rows": rows, "warm_up": warm_up, "timed": timed, "weights": kind,
            "output": "mp4" if suffix == ".mp4" else "png frames"}


def _clip(ctx: Context) -> tuple[Path, str]:
    real = SHARED_MEDIA / "bigbuckbunny.mp4"
    if real.is_file() and not ctx.quick:
        return real, "bigbuckbunny.mp4"
    v = ctx.plan["video"]
    h, w = v["clip"]
    path = ctx.workdir / "clip.mp4"
    if not path.exists():
        from jaxdream import media
        step = 3
        big = smooth_image(h, 7, w + step * v["clip_frames"])
        media.write_video(path, [big[:, i * step: i * step + w] for i in range(v["clip_frames"])], fps=24)
    return path, f"synthetic pan {w}x{h}, {v['clip_frames']} frames"


def run_video(ctx: Context) -> dict:
    v = ctx.plan["video"]
    clip, what = _clip(ctx)
    wargs, kind = weights_args(ctx, "vgg19")
    r = run_command(ctx, ["video", str(clip), "-s", str(ROOT / "examples" / "chelsea.jpg"), "--frames", str(v["frames"]),
                          "--size", str(v["size"]), "-o", str(ctx.workdir / "video.mp4"), *v["extra"], *wargs],
                    ctx.workdir / "home_video")
    return {"rows": [{"measurement": f"video --style {v['frames']} frames at {v['size']} px of {what}, empty cache",
                      "value": _timing_text(r), "target": "", "status": ""}], "clip": what, "weights": kind, **r}


# ------------------------------------------------------------------------------------------
# c. the PyTorch reference
# ------------------------------------------------------------------------------------------


def run_peer(ctx: Context) -> dict:
    import peer_compare
    sizes = [s for s, _ in ctx.plan["style_cli"]]
    timeout = max(1.0, ctx.remaining())
    try:
        ref = peer_compare.torch_reference(sizes, evals=ctx.plan["peer_evals"], iterations=ctx.plan["peer_iterations"],
                                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BudgetExceeded(f"the PyTorch process was stopped after {timeout:.0f} s, when the budget ran out") from None
    rows = []
    for size in sizes:
        r = ref["sizes"][str(size)]
        flags = plausibility(r["seconds_per_iteration"], r["eval_s"], r["iterations_done"], r["iterations"],
                             r["loss_first"], r["loss_last"])
        r["flags"] = flags
        rows.append({"measurement": f"PyTorch ({ref['device']}) {size} px: evaluation; L-BFGS per iteration",
                     "value": f"{_ms(r['eval_s'])}; {_ms(r['seconds_per_iteration'])} ({r['iterations_done']} of "
                              f"{r['iterations']} iterations, {r['evaluations']} evaluations)",
                     "target": "", "status": "FLAG: " + "; ".join(flags) if flags else ""})
        mine = ctx.measured.get(("stylize_per_it", size))
        if mine:
            rows.append({"measurement": f"jaxdream stylize / PyTorch per L-BFGS iteration, {size} px",
                         "value": f"{mine / r['seconds_per_iteration']:.2f}", "target": "", "status": ""})
    return {"rows": rows, **ref}


# ------------------------------------------------------------------------------------------
# d. speeds
# ------------------------------------------------------------------------------------------


def _dream_compiled(ctx: Context, size: int):
    def build():
        args = _dream_args(ctx, ctx.fast, smooth_image(size, 4))
        compiled, seconds = compile_timed(dream.ascent_step, *args, obj=dream.Objective(),
                                          sched=dream.Schedule(steps=1))
        return compiled, seconds, args
    return ctx.once(("dream", size), build)


def _lbfgs_problem(ctx: Context, size: int):
    def build():
        spec = gatys.Objective(remat=size * size > gatys.REMAT_PIXELS)
        targets = jax.device_put(random_targets(ctx.vgg(), size, spec), ctx.fast)
        weights = jax.device_put({k: v[None] for k, v in style_weights().items()}, ctx.fast)
        x = jax.device_put(to_vgg(smooth_image(size, 1)), ctx.fast)
        state = optim.lbfgs_init(x[None], CORRECTIONS, spec.n_losses)
        in_loop = optim.in_jit_loop_default()
        params, lr = ctx.vgg_on(ctx.fast), jnp.float32(1.0)
        if in_loop:
            compiled, seconds = compile_timed(programs.lbfgs_chunk, state, params, targets, weights,
                                              jnp.int32(LBFGS_CHUNK), lr, spec=spec)
        else:
            compiled, seconds = compile_timed(programs.lbfgs_step, state, params, targets, weights, lr, spec=spec)
        return compiled, seconds, (x, params, targets, weights, lr, spec, in_loop)
    return ctx.once(("lbfgs", size), build)


#: speed programs compiled at once (XLA:GPU's autotuning of a 2048 px program allocates tens of GiB)
SPEED_COMPILES = 3
_speed_slots = threading.Semaphore(SPEED_COMPILES)


def _prepare_speed(build: Callable[[Context], Any], key) -> Callable[[Context], None]:
    def prepare(ctx: Context) -> None:
        def task():
            with _speed_slots:
                return build(ctx)
        ctx.submit(key, task)
    return prepare


def _waited(ctx: Context, key, build: Callable[[], Any]) -> tuple[Any, bool]:
    """The item's compiled program (from its group's start, else compiled now), once every other
    speed program started ahead has compiled, so that no compile or autotuning runs beside the
    timed calls; waits for those at most until 10 s before the budget's end. Returns (what
    ``build`` returns, whether others were still compiling)."""
    fut = ctx.futures.get(key)
    value = ctx.wait(fut) if fut is not None else build()
    others = [f for k, f in ctx.futures.items() if k[0] == "speed" and k != key and not f.done()]
    if others:
        cf.wait(others, timeout=max(0.0, ctx.remaining() - 10))
    return value, any(not f.done() for f in others)


_BESIDE = " (timed while other programs were still compiling)"


def _speed(ctx: Context, compiled, args, compile_s: float) -> dict:
    """A compiled program's timed calls (it has run once already), its compile time and memory."""
    times = time_calls(lambda: compiled(*args), ctx.plan["reps"])
    return {"compile_s": compile_s, "seconds": float(np.median(times)), "min_s": min(times),
            "memory": compiled_memory(compiled), "peak_bytes": peak_memory()}


def _speed_row(measurement: str, out: dict, note: str) -> dict:
    """The table row of a :func:`_speed` result; ``note`` ends its value."""
    mem = out["memory"] or {}
    return {"measurement": measurement,
            "value": f"{_ms(out['seconds'])} (min {_ms(out['min_s'])}), compile {out['compile_s']:.1f} s, temp "
                     f"{_mb(mem.get('temp'))}, peak {_mb(out['peak_bytes'])}{note}",
            "target": "", "status": ""}


def run_style_speed(size: int, dtype) -> Callable[[Context], dict]:
    name = jnp.dtype(dtype).name

    def run(ctx: Context) -> dict:
        (compiled, compile_s, args, spec), beside = _waited(ctx, ("speed", "style", size, name),
                                                             lambda: _raw_style(ctx, size, dtype))
        (loss, _), grad = compiled(*args)
        jax.block_until_ready(grad)
        out = {"size": size, "dtype": name, "remat": spec.remat, "loss": float(loss),
               **_speed(ctx, compiled, args, compile_s)}
        extra = ""
        f32 = ctx.built(("style", size, "float32"))
        if dtype != jnp.float32 and f32 is not None:
            c32, _, a32, _ = f32
            (l32, _), _ = c32(*a32)
            out["loss_rel_diff_vs_f32"] = rel(loss, l32)
            extra = f", loss vs f32 {out['loss_rel_diff_vs_f32']:.1e}"
        if dtype == jnp.float32:
            ctx.measured.setdefault(("style_eval", size), out["seconds"])
        row = _speed_row(f"style loss+gradient {size} px {name}{' (remat)' if spec.remat else ''}", out,
                         extra + (_BESIDE if beside else ""))
        return {"rows": [row], **out}
    return run


def run_dream_speed(size: int) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        (compiled, compile_s, args), beside = _waited(ctx, ("speed", "dream", size), lambda: _dream_compiled(ctx, size))
        jax.block_until_ready(compiled(*args))
        out = {"size": size, **_speed(ctx, compiled, args, compile_s)}
        row = _speed_row(f"dream ascent step {size} px (GoogLeNet to inception_4c)", out, _BESIDE if beside else "")
        return {"rows": [row], **out}
    return run


def run_lbfgs_speed(size: int, iterations: int) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        (compiled, compile_s, (x, params, targets, weights, lr, spec, in_loop)), beside = _waited(
            ctx, ("speed", "lbfgs", size), lambda: _lbfgs_problem(ctx, size))
        state = optim.lbfgs_init(x[None], CORRECTIONS, spec.n_losses)
        start = time.perf_counter()
        if in_loop:
            done = 0
            while done < iterations:
                k = min(LBFGS_CHUNK, iterations - done)
                state = compiled(state, params, targets, weights, jnp.int32(k), lr)
                done += k
        else:
            for _ in range(iterations):
                state = compiled(state, params, targets, weights, lr)
        jax.block_until_ready(state)
        total = time.perf_counter() - start
        per_it = total / iterations
        done = int(state.iteration)
        eval_s = ctx.measured.get(("style_eval", size))
        flags = plausibility(per_it, eval_s, done, iterations)
        out = {"size": size, "iterations": iterations, "iterations_done": done, "in_jit_loop": in_loop,
               "compile_s": compile_s, "run_s": total, "seconds_per_iteration": per_it,
               "final_loss": float(np.asarray(state.losses)[0, 0]), "memory": compiled_memory(compiled),
               "peak_bytes": peak_memory(), "flags": flags}
        row = {"measurement": f"L-BFGS {iterations} iterations at {size} px "
                              f"({'in-jit loop' if in_loop else 'Python loop'}, {CORRECTIONS} corrections)",
               "value": f"{_ms(per_it)} per iteration ({done} done, {total:.1f} s), compile {compile_s:.1f} s, "
                        f"peak {_mb(out['peak_bytes'])}{_BESIDE if beside else ''}",
               "target": "", "status": "FLAG: " + "; ".join(flags) if flags else ""}
        return {"rows": [row], **out}
    return run


# ------------------------------------------------------------------------------------------
# the plan
# ------------------------------------------------------------------------------------------


def build_plan(quick: bool, accelerator: bool, torch: bool | None = None, ffmpeg: str | None = "check") -> list[Item]:
    """The items in priority order with their estimated seconds on this kind of backend (a rough
    model: :data:`COSTS`' compiles, a process start per command, evaluations scaled by pixels).

    ``torch``: whether PyTorch is importable (None: look); ``ffmpeg``: why there is no ffmpeg, or
    None ("check": look)."""
    p = QUICK if quick else FULL
    c = COSTS["accelerator" if accelerator else "cpu"]
    torch = importlib.util.find_spec("torch") is not None if torch is None else torch
    ffmpeg = _ffmpeg() if ffmpeg == "check" else ffmpeg
    vgg, gnet, start, ev, step = c["vgg"], c["googlenet"], c["start"], c["vgg_eval"], c["gnet_step"]
    s = p["compare"]
    if accelerator:
        # the two sides of every comparison compile and run at once in the thread pool: the
        # first item waits for the bulk of it, the rest mostly for what remains (about 60 s)
        compare = {"style": 25, "dream": 3, "lbfgs": 10, "flow": 3, "bands": 15, "tiled": 4}
    else:
        compare = {"style": vgg + 3 * ev * _px(s), "dream": gnet + 3 * step * _px(s),
                   "lbfgs": 2 * vgg + (LBFGS_WARM + 3 * COMPARE_LBFGS_ITERATIONS) * ev * _px(s),
                   "flow": c["flow"], "bands": 2 * vgg + 12 * ev * _px(*p["bands"][:2]),
                   "tiled": gnet + 3 * step * _px(*p["tiled"][:2])}
    items = [Item(f"compare {kind}", "compare", compare[kind], run_compare(kind), _prepare_compare(kind))
             for kind in COMPARE_KINDS]

    # the README's dream: 4 octaves of 10 steps at 400 px (the quick plan: 2 of 2 at 96 px); its
    # octave programs compile concurrently (about two compiles' time on an accelerator's host)
    dream_px, octaves, steps = (_px(96, 64), 2, 2) if quick else (_px(400, 266), 4, 10)
    dream_work = octaves * steps * step * dream_px
    items += [Item("dream README, empty cache", "commands",
                   start + (2 if accelerator else octaves) * gnet + dream_work, run_dream_cold),
              Item("dream README, warm", "commands", start + 2 + dream_work, run_dream_warm)]
    # the commands in child processes first, while this process holds little accelerator memory
    # (each child takes its own 75% at start; this one keeps what its compiles' autotuning grew)
    z = p["zoom"]
    zoom_px = _px(z["size"], z["size"] * 266 / 400)
    zoom_steps = 2 * octaves * steps + (z["frames"] + z["warm_frames"]) * (1 if quick else 5)
    items.append(Item(f"zoom {z['frames']} frames {z['size']} px warm", "commands",
                      2 * start + 2 * gnet + zoom_steps * step * zoom_px + 0.05 * z["frames"], run_zoom))
    v = p["video"]
    video_its = 4 + 2 * (v["frames"] - 1) if quick else 400 + 100 * (v["frames"] - 1)
    vh = v["size"] * v["clip"][0] / v["clip"][1]
    items.append(Item(f"video {v['frames']} frames {v['size']} px", "commands",
                      start + 2 * vgg + c["flow"] + video_its * ev * _px(v["size"], vh) * 1.2 + v["frames"] * 0.3,
                      run_video, unavailable=ffmpeg))

    for size, iterations in p["style_cli"]:
        # stylize compiles its targets and its iteration program; the raw program beside it
        items.append(Item(f"style {size} px: stylize vs raw", "commands",
                          1.6 * vgg + (iterations + 2 * p["reps"] + 4) * ev * _px(size) * 1.2,
                          run_style_cli(size, iterations)))
    peer_sizes = [size for size, _ in p["style_cli"]]
    torch_ev = (0.8 if not accelerator else 2.0) * ev  # neural-style-pt: 19 ms per iteration at 1024 px on the H200
    items.append(Item(f"PyTorch reference {', '.join(map(str, peer_sizes))} px", "peer",
                      c["torch_start"] + sum(2 + (p["peer_evals"] + 2 + p["peer_iterations"]) * torch_ev * _px(size)
                                             for size in peer_sizes), run_peer,
                      unavailable=None if torch else "torch is not importable here"))

    compiled_before = set(peer_sizes)  # the raw float32 programs of (b), reused
    # the group's programs compile ahead, SPEED_COMPILES at a time on an accelerator's host
    share = 1.0 / SPEED_COMPILES if accelerator else 1.0
    for dtype, sizes in ((jnp.float32, p["style"]), (jnp.bfloat16, p["bf16"])):
        name = jnp.dtype(dtype).name
        for size in sizes:
            reused = dtype == jnp.float32 and size in compiled_before
            compile_s = 0.5 if reused else vgg * share
            work = (p["reps"] + 2) * ev * _px(size) * (0.6 if name == "bfloat16" else 1.0)
            items.append(Item(f"speed style {size} px {name}", "speed", compile_s + work, run_style_speed(size, dtype),
                              _prepare_speed(lambda ctx, size=size, dtype=dtype: _raw_style(ctx, size, dtype),
                                             ("speed", "style", size, name)),
                              reuses=f"style {size} px: stylize vs raw" if reused else None, extra=vgg * share))
    for size in p["dream"]:
        items.append(Item(f"speed dream step {size} px", "speed", gnet * share + (p["reps"] + 2) * step * _px(size),
                          run_dream_speed(size),
                          _prepare_speed(lambda ctx, size=size: _dream_compiled(ctx, size), ("speed", "dream", size))))
    size, iterations = p["lbfgs"]
    items.append(Item(f"speed L-BFGS {iterations} iterations {size} px", "speed",
                      vgg * share + iterations * ev * _px(size) * 1.3, run_lbfgs_speed(size, iterations),
                      _prepare_speed(lambda ctx: _lbfgs_problem(ctx, size), ("speed", "lbfgs", size))))
    return items


def simulate(items: list[Item], budget: float) -> list[dict]:
    """What the plan would run within ``budget`` if every item took its estimate: one entry per
    item with ``run`` (bool), ``start`` (estimated seconds into the run) and ``reason``."""
    clock, out, ran = 0.0, [], set()
    for it in items:
        cost = it.cost(ran)
        entry = {"name": it.name, "group": it.group, "estimate_s": round(cost, 1), "start_s": round(clock, 1)}
        if it.unavailable:
            entry.update(run=False, reason=it.unavailable)
        elif cost > budget - clock:
            entry.update(run=False, reason=f"estimated {cost:.0f} s > {max(0.0, budget - clock):.0f} s left")
        else:
            entry.update(run=True, reason="")
            clock += cost
            ran.add(it.name)
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------


def _record(ctx: Context, it: Item, status: str, seconds: float, rows: list | None = None,
            data: dict | None = None, reason: str = "") -> dict:
    rec = {"index": len(ctx.records) + 1, "name": it.name, "group": it.group, "estimate_s": round(it.estimate, 1),
           "status": status, "seconds": round(seconds, 2), "reason": reason, "rows": rows or [],
           "data": data or {}}
    ctx.records.append(rec)
    if status == "skipped":
        print(f"[{it.group}] {it.name}: SKIPPED: {reason}", flush=True)
    elif status == "error":
        print(f"[{it.group}] {it.name}: ERROR after {seconds:.1f} s: {reason}", flush=True)
    else:
        for row in rec["rows"]:
            target = f" (target {row['target']})" if row.get("target") else ""
            verdict = f": {row['status']}" if row.get("status") else ""
            print(f"[{it.group}] {row['measurement']}: {row['value']}{target}{verdict}", flush=True)
        print(f"[{it.group}] {it.name}: {status}, {seconds:.1f} s (estimated {it.estimate:.0f} s, "
              f"{ctx.elapsed():.0f} s of {ctx.budget:.0f} s used)", flush=True)
    write_outputs(ctx)
    return rec


def run_item(ctx: Context, it: Item) -> dict:
    """Run one item if it fits in the time left (its estimate against the clock), record it."""
    if it.unavailable:
        return _record(ctx, it, "skipped", 0.0, reason=it.unavailable)
    left = ctx.remaining()
    cost = it.cost({r["name"] for r in ctx.records if r["status"] not in ("skipped", "error")})
    if cost > left:
        return _record(ctx, it, "skipped", 0.0,
                       reason=f"estimated {cost:.0f} s > {max(0.0, left):.0f} s left of the {ctx.budget:.0f} s budget")
    start = time.perf_counter()
    try:
        result = it.run(ctx)
    except BudgetExceeded as e:
        return _record(ctx, it, "skipped", time.perf_counter() - start, reason=f"budget: {e}")
    except Exception as e:  # noqa: BLE001 -- record and go on (out of memory at 2048 px, say)
        traceback.print_exc()
        return _record(ctx, it, "error", time.perf_counter() - start,
                       reason=" ".join(traceback.format_exception_only(e)[-1].split())[:400])
    rows = result.pop("rows")
    statuses = [r.get("status", "") for r in rows]
    status = ("fail" if any(s == "FAIL" for s in statuses) else
              "flag" if any(s.startswith("FLAG") for s in statuses) else
              "miss" if any(s == "miss" for s in statuses) else "ok")
    return _record(ctx, it, status, time.perf_counter() - start, rows, _jsonable(result))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _status(ctx: Context) -> int:
    if any(r["status"] == "fail" for r in ctx.records):
        return 1
    return 2 if any(r["status"] == "error" for r in ctx.records) else 0


def write_outputs(ctx: Context) -> None:
    """``device_check.json`` and ``device_check.md`` in ``--out``, as the run stands."""
    if ctx.out is None:
        return
    ctx.out.mkdir(parents=True, exist_ok=True)
    skipped = [{"name": r["name"], "reason": r["reason"]} for r in ctx.records if r["status"] == "skipped"]
    doc = {**ctx.header, "seconds": round(ctx.elapsed(), 1), "status": _status(ctx), "plan": ctx.plan_listing,
           "items": ctx.records, "skipped": skipped}
    (ctx.out / "device_check.json").write_text(json.dumps(doc, indent=1))
    (ctx.out / "device_check.md").write_text(markdown(doc))


def markdown(doc: dict) -> str:
    h = doc
    lines = ["# jaxdream device check", "",
             f"- device: {h.get('device', '?')}",
             f"- jax {h.get('jax')}, jaxlib {h.get('jaxlib')}, jaxdream {h.get('jaxdream')}, Python {h.get('python')}"
             + (f", torch {h['torch']}" if h.get("torch") else ""),
             f"- date: {h.get('date')}; plan: {'quick' if h.get('quick') else 'full'}"
             + (" (plan only: nothing computed)" if h.get("plan_only") else ""),
             f"- budget {h.get('budget_s')} s; took {h.get('seconds')} s; exit status {h.get('status')}", "",
             "| # | group | item | measurement | value | target / tolerance | result | took |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    for r in h.get("items", []):
        took = f"{r['seconds']:.1f} s (est. {r['estimate_s']:.0f})"
        if r["status"] in ("skipped", "error") or not r["rows"]:
            lines.append(f"| {r['index']} | {r['group']} | {cell(r['name'])} | | | | {r['status'].upper()}: "
                         f"{cell(r['reason'])} | {took} |")
            continue
        for j, row in enumerate(r["rows"]):
            lines.append(f"| {r['index']} | {r['group']} | {cell(r['name']) if j == 0 else ''} | "
                         f"{cell(row['measurement'])} | {cell(row['value'])} | {cell(row.get('target', ''))} | "
                         f"{cell(row.get('status', '') or r['status'])} | {took if j == 0 else ''} |")
    skipped = h.get("skipped", [])
    lines += ["", f"## Skipped ({len(skipped)})", ""]
    lines += [f"- {s['name']}: {s['reason']}" for s in skipped] or ["- none"]
    if h.get("plan"):
        lines += ["", "## Plan (estimates)", "", "| group | item | estimate | planned start | would run |",
                  "|---|---|---|---|---|"]
        for e in h["plan"]:
            lines.append(f"| {e['group']} | {cell(e['name'])} | {e['estimate_s']:.0f} s | {e['start_s']:.0f} s | "
                         f"{'yes' if e['run'] else 'no: ' + cell(e['reason'])} |")
    return "\n".join(lines) + "\n"


def _header(ctx: Context, backend: str, plan_only: bool) -> dict:
    import jaxlib
    torch_version = None
    if importlib.util.find_spec("torch") is not None and not plan_only:
        try:
            from importlib import metadata
            torch_version = metadata.version("torch")
        except Exception:  # noqa: BLE001
            torch_version = "installed"
    if plan_only:
        device = f"{backend} (assumed; plan only)"
    else:
        d = ctx.fast
        device = f"{d.platform} {d.device_kind} ({len(jax.devices())} device(s); backend {jax.default_backend()})"
    return {"device": device, "backend": backend, "accelerator": ctx.accelerator, "jax": jax.__version__,
            "jaxlib": getattr(jaxlib, "__version__", "?"), "jaxdream": jaxdream.__version__,
            "python": platform.python_version(), "torch": torch_version,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": ctx.quick, "budget_s": ctx.budget, "plan_only": plan_only}


def _print_plan(listing: list[dict], budget: float, backend: str) -> None:
    print(f"plan for {backend}, budget {budget:.0f} s (estimates include compiles):")
    total = 0.0
    for i, e in enumerate(listing, 1):
        verdict = "run" if e["run"] else f"skip: {e['reason']}"
        if e["run"]:
            total += e["estimate_s"]
        print(f"  {i:2d}. [{e['group']:8}] {e['name']:<40} ~{e['estimate_s']:6.1f} s  from {e['start_s']:6.1f} s  "
              f"{verdict}")
    print(f"  planned: {total:.0f} s of {budget:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke run of every path)")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds of wall time in all (default 300)")
    parser.add_argument("--out", type=Path, help="folder for device_check.json and device_check.md (created)")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and its estimates; compute nothing")
    parser.add_argument("--assume-backend", choices=("cpu", "gpu", "tpu"),
                        help="plan for this backend (with --plan-only; default: this machine's)")
    args = parser.parse_args(argv)
    if args.assume_backend and not args.plan_only:
        parser.error("--assume-backend goes with --plan-only")
    set_preallocate = False
    if not args.plan_only and "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ:
        # this process must not hold 75% of the accelerator's memory while the commands of (b)
        # start their own processes on it (effective only before JAX starts its backend)
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        set_preallocate = True
    backend = args.assume_backend or jax.default_backend()
    accelerator = backend != "cpu"
    ctx = Context(QUICK if args.quick else FULL, args.quick, accelerator, args.budget, args.out,
                  set_preallocate=set_preallocate)
    items = build_plan(args.quick, accelerator)
    ctx.plan_listing = simulate(items, args.budget)
    ctx.header = _header(ctx, backend, args.plan_only)
    if args.plan_only:
        _print_plan(ctx.plan_listing, args.budget, backend)
        write_outputs(ctx)
        return 0

    print(parallel.describe(parallel.mesh()), flush=True)
    print(f"jax {jax.__version__}, jaxdream {jaxdream.__version__}, budget {args.budget:.0f} s, "
          f"{'quick' if args.quick else 'full'} plan", flush=True)
    _print_plan(ctx.plan_listing, args.budget, backend)
    try:
        ctx.cpu  # noqa: B018 -- the comparisons need the CPU backend
    except RuntimeError as e:
        for it in items:
            if it.group == "compare":
                it.unavailable = f"no CPU backend in this process ({e})"
    workers = max(2, min(8, os.cpu_count() or 2))
    ctx.pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="device_check")
    try:
        for group in GROUPS:
            group_items = [it for it in items if it.group == group]
            print(f"--- {GROUP_TITLES[group]} ---", flush=True)
            # start the background work (compiles, the comparisons' two sides) of what would fit
            clock, ran = 0.0, {r["name"] for r in ctx.records if r["status"] not in ("skipped", "error")}
            for it in group_items:
                if it.unavailable or it.prepare is None:
                    continue
                clock += it.cost(ran)
                if clock <= ctx.remaining():
                    it.prepare(ctx)
            for it in group_items:
                run_item(ctx, it)
    finally:
        unfinished = [k for k, f in ctx.futures.items() if not f.done()]
        ctx.pool.shutdown(wait=not unfinished, cancel_futures=True)
        if ctx._workdir is not None and not unfinished:
            shutil.rmtree(ctx._workdir, ignore_errors=True)
        if set_preallocate:
            os.environ.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    status = _status(ctx)
    counts = {s: sum(r["status"] == s for r in ctx.records) for s in ("ok", "fail", "miss", "flag", "error", "skipped")}
    print(f"done in {ctx.elapsed():.0f} s: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
          + (": comparisons beyond tolerance" if status == 1 else ""), flush=True)
    write_outputs(ctx)
    if args.out:
        print(f"wrote {args.out / 'device_check.md'} and {args.out / 'device_check.json'}", flush=True)
    main.last_unfinished = bool(unfinished)  # for __main__: a worker thread still compiling
    return status


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if getattr(main, "last_unfinished", False):
        os._exit(code)  # a compile still running in a worker thread would hold the exit
    sys.exit(code)
