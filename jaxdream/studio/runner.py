"""What runs in a job's process: ``python -m jaxdream.studio.runner JOB_FOLDER``.

The job's command line (``settings.json``) is parsed by the commands' own parser and run as the
command line runs it (:func:`jaxdream.jobs.command.run_interruptibly`: SIGINT stops it and it
keeps what it finished), in the job folder, with an :class:`Observer`: the command calls its
hooks (:class:`jaxdream.jobs.common.Observer`), which write ``progress.json`` (what is done, an
estimate of the time left, the loss curve) and ``preview.jpg`` (the current image) through a
:class:`Reporter` as the run goes. Nothing here imports the command line or replaces a library
function: the commands and the studio share :mod:`jaxdream.jobs`.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from PIL import Image

from .. import media
from ..errors import JaxdreamError
from ..jobs import common
from ..jobs.command import parse, run_interruptibly
from ..jobs.style import contact_sheet
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
        img = image if isinstance(image, Image.Image) else Image.fromarray(media.to_uint8(np.asarray(image)))
        img = img.convert("RGB")
        img.thumbnail((PREVIEW_PX, PREVIEW_PX))
        tmp = self.folder / f".{PREVIEW}.tmp"
        img.save(tmp, format="JPEG", quality=88)
        os.replace(tmp, self.folder / PREVIEW)
        self.data["previews"] += 1

    def frame(self, path: Path) -> None:
        """Preview a frame file a run wrote (zoom, video)."""
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
# the command's progress hooks


class Observer(common.Observer):
    """The hooks a command calls (:class:`jaxdream.jobs.common.Observer`), reported to ``report``:

    * ``dream`` runs step by step here (:meth:`dream`), so the preview changes after every ascent
      step of every octave; the result is the command line's (the same step program and keys),
      and a stopped run writes the image it has, marked ``interrupted_at_step``;
    * ``style`` previews after every chunk of iterations (a sweep shows its contact sheet), with
      the losses on the curve;
    * ``zoom`` and ``video`` preview the newest frame after every frame (a video's loss on the curve).
    """

    def __init__(self, report: Reporter):
        self.report = report
        self.work, self.offset = [1], {"scale": 0, "x": 0, "last": 0}

    def dream(self, dreamer, image, on_stop):
        current: dict = {}

        def save_current() -> None:
            """On a stop: write the image of the last finished step (once)."""
            if current:
                on_stop(current.pop("image"), current.pop("step"))

        try:
            with common.on_abandon(save_current):
                return dream_octaves(dreamer, image, self.report, current)
        except KeyboardInterrupt:
            save_current()
            raise

    def style_plan(self, plan) -> None:
        """Pixels x iterations of each scale (for the time left)."""
        self.work = [h * w * n for (h, w), n in zip(plan.sizes, plan.iterations)] or [1]

    def style(self, p) -> None:
        work, offset, report = self.work, self.offset, self.report
        if p.scale != offset["scale"]:
            offset.update(scale=p.scale, x=offset["x"] + offset["last"])
        offset["last"] = p.iteration
        losses = {k: p.losses[k].tolist() for k in ("total", "content", "style", "tv")}
        report.point(offset["x"] + p.iteration, losses, "loss")
        labels = [{k: v for k, v in lb.items() if k != "content"} for lb in (p.labels or [{}])]
        report.preview(p.images[0] if len(p.images) == 1 else contact_sheet(p.images, labels))
        done = sum(work[:p.scale]) + (work[p.scale] if p.scale < len(work) else 0) * p.iteration / p.iterations
        scale = f"scale {p.scale + 1}/{p.scales} " if p.scales > 1 else ""
        report.progress(done / sum(work), f"{scale}{p.size[1]}x{p.size[0]}, iteration {p.iteration}/{p.iterations}")

    def frame(self, p, folder) -> None:
        frames = list(Path(folder).glob("frame_*.png"))
        if frames:
            self.report.frame(max(frames, key=lambda f: f.stat().st_mtime_ns))
        if getattr(p, "loss", None) is not None:
            self.report.point(p.frame, {"loss": p.loss}, "loss per frame")
        self.report.progress(p.frame / p.frames, f"frame {p.frame}/{p.frames}")


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


def _reporting_errors(func):
    """``func`` with an unexpected exception printed (traceback, then one error line for the
    page) and turned into exit status 1, before the process ends."""
    def guarded(args, **hooks) -> int:
        try:
            return func(args, **hooks)
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


def _end_with_parent(received: list[int], every_s: float = 0.5) -> None:
    """Stop the run (as SIGTERM: it keeps what it finished) when the studio that started it
    dies: a run of a studio that was killed must not go on writing into a job marked stopped."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        received.append(signal.SIGTERM)

    threading.Thread(target=watch, name="jaxdream-studio-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Run the job in folder ``argv[0]``; returns the command's exit status."""
    folder = Path((argv or sys.argv[1:])[0]).resolve()
    received = _record_signals()
    _end_with_parent(received)
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
            args.func = _reporting_errors(args.func)
            status = run_interruptibly(args, received, Observer(report))
    report.end(status)
    return status


if __name__ == "__main__":
    code = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)  # XLA may still run threads: end as the console script does after an interrupt
