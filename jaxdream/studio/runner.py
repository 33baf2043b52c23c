"""What runs in a job's process: ``python -m jaxdream.studio.runner JOB_FOLDER``.

The job's command line (``settings.json``) is parsed by the command line's own parser and run
as the command line runs it (:func:`jaxdream.cli.main.run_interruptibly`: SIGINT stops it and
it keeps what it finished), in the job folder, with a :class:`Reporter` that writes
``progress.json`` (what is done, an estimate of the time left, the loss curve) and
``preview.jpg`` (the current image) as the run goes:

* ``dream`` runs here step by step (:func:`dream`), so the preview changes after every ascent
  step of every octave; the result is the command line's (the same step program and keys);
* ``style``, ``zoom`` and ``video`` run the command line's own functions, with their progress
  callbacks chained to the reporter (:func:`observing`): a style preview after every chunk of
  L-BFGS iterations (a sweep shows its contact sheet), a zoom or video preview after every frame.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .jobs import PREVIEW, PROGRESS, SETTINGS, read_json, write_json

#: Longest side of a preview image, and the most points a loss curve keeps.
PREVIEW_PX = 768
CURVE_POINTS = 400

#: A DeepDream's objective is evaluated for the curve at most this often (it costs a forward
#: pass; the image does not depend on it), and after every octave.
OBJECTIVE_EVERY_S = 2.0


class Reporter:
    """Writes a run's ``progress.json`` and ``preview.jpg`` in its job folder.

    ``progress.json`` holds ``phase`` (a line saying where the run is), ``fraction`` (of the
    work, 0..1), ``eta_s`` (seconds left, from the rate measured since the first report, so
    start-up and the first compile are not counted), ``elapsed_s``, ``previews`` (how many
    preview images were written), ``curve`` (the loss names, then ``[x, values...]`` points,
    thinned to :data:`CURVE_POINTS`) and ``state`` once the run has ended.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.started = time.time()
        self._first: tuple[float, float] | None = None
        self.data = {"phase": "starting (loading the weights, compiling)", "fraction": 0.0, "eta_s": None,
                     "elapsed_s": 0.0, "previews": 0, "curve": {"names": [], "label": "", "points": []}}
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.time() - self.started, 2)
        write_json(self.folder / PROGRESS, self.data)

    def progress(self, fraction: float, phase: str) -> None:
        """Record how far the run is; the time left is extrapolated from the rate since the
        first report."""
        now = time.time()
        fraction = min(max(fraction, 0.0), 1.0)
        if self._first is None:
            self._first = (now, fraction)
        t0, f0 = self._first
        rate = (fraction - f0) / (now - t0) if now > t0 else 0.0
        self.data.update(phase=phase, fraction=round(fraction, 5),
                         eta_s=round((1 - fraction) / rate, 1) if rate > 0 else None)
        self.write()

    def point(self, x: float, values: dict, label: str) -> None:
        """Add one point of the loss curve (``values``: name -> number or list of numbers)."""
        curve = self.data["curve"]
        curve["names"], curve["label"] = list(values), label
        flat = [float(np.mean(v)) if np.ndim(v) else float(v) for v in values.values()]
        if all(map(math.isfinite, flat)):
            curve["points"].append([x, *flat])
        if len(curve["points"]) > CURVE_POINTS:
            curve["points"] = curve["points"][::2] + ([curve["points"][-1]] if len(curve["points"]) % 2 == 0 else [])

    def preview(self, image) -> None:
        """Write the current image (an (H, W, 3) 0..255 array or a PIL image) as the preview."""
        from PIL import Image

        from .. import media
        img = image if isinstance(image, Image.Image) else Image.fromarray(media.to_uint8(np.asarray(image)))
        img = img.convert("RGB")
        img.thumbnail((PREVIEW_PX, PREVIEW_PX))
        tmp = self.folder / f".{PREVIEW}.tmp"
        img.save(tmp, format="JPEG", quality=88)
        os.replace(tmp, self.folder / PREVIEW)
        self.data["previews"] += 1

    def frame(self, path: Path) -> None:
        """Preview a frame file a run wrote (zoom, video)."""
        from PIL import Image
        try:
            with Image.open(path) as img:
                img.load()
                self.preview(img)
        except OSError:
            pass  # a frame replaced while being read: the next one will do

    def end(self, status: int) -> None:
        self.data["state"] = {0: "done", 130: "stopped", 143: "stopped"}.get(status, "failed")
        if status == 0:
            self.data.update(fraction=1.0, eta_s=0.0, phase="finished")
        self.write()


# ----------------------------------------------------------------------------------------------
# dream, step by step


def dream(args, report: Reporter) -> int:
    """``jaxdream dream`` with a preview after every ascent step: the command's checks, steps,
    keys and saved settings (:func:`jaxdream.cli.dream.cmd_dream`), its octave loop
    (:meth:`jaxdream.dream.Dreamer.run`) written out here so that the steps of an octave can be
    watched. On the CPU the result equals the command line's bit for bit (both call the same
    one-step program); a stopped run writes the image it has, marked ``interrupted_at_step``."""
    from jaxdream import media
    from jaxdream.cli.common import on_abandon, output_size, single_process
    from jaxdream.cli.dream import check_dream_size, dream_config, make_dreamer
    from jaxdream.cli.main import enable_compilation_cache

    single_process("dream")
    cfg = dream_config(args)
    out = Path(args.output)
    hw = output_size(args.input, args.size)
    media.check_output(out, inputs=[args.input, args.guide])
    check_dream_size(args, cfg, hw)
    image = media.load_image(args.input, size=args.size)
    enable_compilation_cache()
    dreamer = make_dreamer(args, cfg)
    settings = cfg.to_dict() | {"input": str(args.input), "weights_sha256": dreamer.net.weights_id,
                                "jaxdream": "dream"}
    current: dict = {}

    def save_current() -> None:
        """On a stop: write the image of the last finished step (once)."""
        if current:
            image, step = current.pop("image"), current.pop("step")
            media.save_image(out, image, settings | {"interrupted_at_step": step})
            print(f"jaxdream: interrupted; wrote the current image to {out}", file=sys.stderr)

    try:
        with on_abandon(save_current):
            result = dream_octaves(dreamer, image, report, current)
    except KeyboardInterrupt:
        save_current()
        raise
    media.save_image(out, result, settings)
    print(f"wrote {out} ({result.shape[1]}x{result.shape[0]})")
    return 0


def dream_octaves(dreamer, image: np.ndarray, report: Reporter, current: dict | None = None) -> np.ndarray:
    """:meth:`jaxdream.dream.Dreamer.run`, reporting after every step.

    ``current`` receives the latest image and the number of steps done (for a save on a stop).
    """
    cfg = dreamer.cfg
    shapes = dreamer.octave_shapes(np.shape(image)[:2])
    work = [s[0] * s[1] * cfg.steps for s in shapes]
    last_eval = 0.0

    def on_step(p) -> None:
        nonlocal last_eval
        result, step = np.asarray(p.image), (p.octave - 1) * cfg.steps + p.step
        if current is not None:
            current.update(image=result, step=step)
        report.preview(result)
        if p.step == p.steps or time.time() - last_eval > OBJECTIVE_EVERY_S:
            # the curve: the objective of images small enough to take whole (larger ones are tiled)
            value = dreamer.objective(result) if max(p.shape) <= cfg.tile_size else float("nan")
            report.point(step, {"objective": value}, "objective")
            last_eval = time.time()
        h, w = p.shape
        done = sum(work[:p.octave - 1]) + h * w * p.step
        report.progress(done / sum(work), f"octave {p.octave}/{p.octaves} ({w}x{h}), step {p.step}/{p.steps}")

    return dreamer.run(image, on_step=on_step)


# ----------------------------------------------------------------------------------------------
# style, zoom and video: the command line's functions, their progress callbacks chained


@contextlib.contextmanager
def chained(module, name: str, keyword: str, make_hook):
    """Replace ``module.name`` for the block by a function that passes ``keyword`` (a progress
    callback) as both the caller's callback and ``make_hook(args, kwargs)``'s."""
    original = getattr(module, name)

    def observed(*a, **kw):
        theirs, ours = kw.get(keyword), make_hook(a, kw)

        def both(p):
            if theirs is not None:
                theirs(p)
            ours(p)
        kw[keyword] = both
        return original(*a, **kw)

    setattr(module, name, observed)
    try:
        yield
    finally:
        setattr(module, name, original)


def _style_work(a, kw) -> tuple[list[int], int]:
    """Pixels x iterations of each scale of a style run (for the time left), and its total."""
    from jaxdream.style import plan_style
    settings = {k: v for k, v in kw.items() if k not in ("weights", "network", "in_jit_loop", "callback", "mesh")}
    try:
        plan = plan_style(*a, **settings)
        work = [h * w * n for (h, w), n in zip(plan.sizes, plan.iterations)]
    except Exception:  # noqa: BLE001 - the run itself reports a bad setting
        work = [1]
    return work, sum(work)


def style_hook(report: Reporter):
    """The style callback: losses on the curve, the current image (a sweep's contact sheet)."""
    def make(a, kw):
        from jaxdream.cli.style import contact_sheet
        work, total = _style_work(a, kw)
        offset = {"scale": 0, "x": 0, "last": 0}

        def hook(p):
            if p.scale != offset["scale"]:
                offset.update(scale=p.scale, x=offset["x"] + offset["last"])
            offset["last"] = p.iteration
            losses = {k: p.losses[k].tolist() for k in ("total", "content", "style", "tv")}
            report.point(offset["x"] + p.iteration, losses, "loss")
            labels = [{k: v for k, v in lb.items() if k != "content"} for lb in (p.labels or [{}])]
            report.preview(p.images[0] if len(p.images) == 1 else contact_sheet(p.images, labels))
            done = sum(work[:p.scale]) + (work[p.scale] if p.scale < len(work) else 0) * p.iteration / p.iterations
            scale = f"scale {p.scale + 1}/{p.scales} " if p.scales > 1 else ""
            report.progress(done / total, f"{scale}{p.size[1]}x{p.size[0]}, iteration {p.iteration}/{p.iterations}")
        return hook
    return make


def frames_hook(report: Reporter, output: Path):
    """The zoom and video callback: the newest frame as the preview, the loss (video style) on
    the curve."""
    from jaxdream import media
    from jaxdream.animate import work_folder

    def make(a, kw):
        out, kind = media.check_animation_output(output)
        folder = work_folder(out, kind)

        def hook(p):
            frames = list(folder.glob("frame_*.png"))
            if frames:
                report.frame(max(frames, key=lambda f: f.stat().st_mtime_ns))
            if getattr(p, "loss", None) is not None:
                report.point(p.frame, {"loss": p.loss}, "loss per frame")
            report.progress(p.frame / p.frames, f"frame {p.frame}/{p.frames}")
        return hook
    return make


@contextlib.contextmanager
def observing(args, report: Reporter):
    """Point the command of ``args`` at the reporter for the block."""
    from jaxdream import animate, style
    from jaxdream import video as vd
    with contextlib.ExitStack() as stack:
        if args.command == "dream":
            args.func = lambda a: dream(a, report)
        elif args.command == "style":
            stack.enter_context(chained(style, "stylize", "callback", style_hook(report)))
        elif args.command == "zoom":
            stack.enter_context(chained(animate, "zoom", "progress", frames_hook(report, Path(args.output))))
        elif args.command == "video":
            stack.enter_context(chained(vd, "process", "progress", frames_hook(report, Path(args.output))))
        args.func = _reporting_errors(args.func)
        yield


def _reporting_errors(func):
    """``func`` with an unexpected exception printed (traceback, then one error line for the
    page) and turned into exit status 1, before the process ends."""
    from jaxdream.errors import JaxdreamError

    def guarded(args) -> int:
        try:
            return func(args)
        except (JaxdreamError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - shown on the page instead of lost with the thread
            import traceback
            traceback.print_exc()
            print(f"jaxdream: error: unexpected {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return 1
    return guarded


# ----------------------------------------------------------------------------------------------
# the process


def _record_signals() -> list[int]:
    """SIGINT and SIGTERM recorded, to be answered by run_interruptibly (as the console script)."""
    received: list[int] = []
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: received.append(signum))
    return received


def main(argv: list[str] | None = None) -> int:
    """Run the job in folder ``argv[0]``; returns the command's exit status."""
    from jaxdream.cli.main import parse, run_interruptibly
    folder = Path((argv or sys.argv[1:])[0]).resolve()
    received = _record_signals()
    command = read_json(folder / SETTINGS)["argv"]
    os.chdir(folder)
    print(f"jaxdream {shlex.join(command)}", flush=True)
    report = Reporter(folder)
    try:
        args = parse(command)
    except SystemExit as e:  # a bad command line (already printed)
        status = e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt:
        status = 130
    else:
        if received:
            status = 130
        else:
            with observing(args, report):
                status = run_interruptibly(args, received)
    report.end(status)
    return status


if __name__ == "__main__":
    code = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)  # XLA may still run threads: end as the console script does after an interrupt
