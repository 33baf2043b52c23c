"""The zoom-and-dream feedback loop: each frame is the previous dream zoomed, rotated and
shifted about its centre, then dreamed a few steps; frames go to a frames folder
(:mod:`jaxdream.media.frames`) and are assembled into the output at the end."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from . import media, options
from .dream import parse_layers
from .errors import SettingsError
from .media.masks import mask_hashes
from .media.frames import FrameStore, finish, frame_run, work_folder
from .optim.driver import loop_guard
from .runtime.cache import compile_ahead

# ----------------------------------------------------------------------------------------------
# geometry


@jax.jit
def affine_about_centre(image: jax.Array, zoom: jax.Array, angle_deg: jax.Array,
                        translate: jax.Array) -> jax.Array:
    """Zoom by ``zoom``, rotate by ``angle_deg`` (counter-clockwise) about the centre, then shift
    by ``translate`` (dx, dy) pixels; bilinear, edges replicated. Shape is kept."""
    h, w = image.shape[:2]
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    theta = jnp.deg2rad(angle_deg)
    # output pixel p came from source c + R(-theta) (p - c - t) / zoom
    dx, dy = xx - cx - translate[0], yy - cy - translate[1]
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    sx = cx + (cos * dx - sin * dy) / zoom
    sy = cy + (sin * dx + cos * dy) / zoom
    channels = [map_coordinates(image[..., c], [sy, sx], order=1, mode="nearest")
                for c in range(image.shape[-1])]
    return jnp.stack(channels, axis=-1)


# ----------------------------------------------------------------------------------------------
# zoom


def parse_layer_schedule(text: str | None) -> list[tuple[int, str]]:
    """``"0:inception_4c/output,60:inception_4d/output"`` -> [(0, ...), (60, ...)], sorted.

    A layer may carry ``+``-joined names (``"0:inception_4c/output+inception_4d/output"``).
    """
    if not text:
        return []
    out = []
    for part in text.split(","):
        frame, sep, layer = part.strip().partition(":")
        if not sep or not frame.strip().isdigit() or not layer.strip():
            raise SettingsError(f"--layer-schedule expects FRAME:LAYER items like "
                                f"'0:inception_4c/output,60:inception_4d/output', got '{part.strip()}'")
        out.append((int(frame), layer.strip()))
    return sorted(out)


@dataclass
class FrameProgress:
    """Reported after each finished frame."""

    frame: int
    frames: int
    seconds: float


@dataclass(frozen=True)
class ZoomSettings:
    """The zoom loop's own settings (the dream settings come from a DreamConfig)."""

    frames: int = options.default("frames", "zoom")
    zoom: float = options.default("zoom")
    rotate: float = options.default("rotate")
    translate: tuple[float, float] = options.default("translate")
    steps_per_frame: int = options.default("steps-per-frame", "zoom")
    fps: float = options.default("fps", "zoom")
    loop: bool = False

    def validate(self) -> None:
        """Raise SettingsError for any value outside its range (:mod:`jaxdream.options`)."""
        for name in ("frames", "zoom", "rotate", "steps_per_frame", "fps"):
            options.get(name).check(getattr(self, name))
        if len(self.translate) != 2:
            raise SettingsError(f"translate takes two numbers (dx, dy), got {self.translate!r}")
        options.get("translate").check_all(self.translate, "translate")

    def loop_overlap(self) -> int:
        return min(24, self.frames // 4) if self.loop else 0


def zoom(dreamer, image: np.ndarray, out: str | os.PathLike, settings: ZoomSettings,
         layer_schedule: list[tuple[int, str]] | None = None, resume: bool = False,
         progress: Callable[[FrameProgress], None] | None = None, metadata: dict | None = None,
         overwrite: bool = False) -> Path:
    """Infinite-zoom DeepDream: each frame is the previous one zoomed/rotated/shifted about its
    centre, then dreamed ``steps_per_frame`` steps. Frame 0 is a full octave dream.

    Args:
        dreamer: a :class:`jaxdream.dream.Dreamer`.
        image: the start image, (H, W, 3) RGB 0..255.
        out: ``.mp4``, ``.gif`` or a folder.
        settings: frame count, motion, fps, loop.
        layer_schedule: [(from frame, layer spec)] switching the dream layers during the run.
        resume: continue an interrupted run from its last finished frame.
        progress: called after every frame.
        metadata: extra JSON-able settings recorded in every frame and checked on resume.
        overwrite: start over in a folder that holds another run's frames.

    Returns:
        The output path.
    """
    settings.validate()
    out, kind = media.check_animation_output(out)
    overlap = settings.loop_overlap()
    total = settings.frames + overlap
    schedule = [(f, parse_layers(spec)) for f, spec in (layer_schedule or [])]
    for _, layers in schedule:
        dreamer.net.spec.check_layers([n for n, _ in layers])
    record = {"zoom": settings.zoom, "rotate": settings.rotate, "translate": list(settings.translate),
              "frames": settings.frames, "steps_per_frame": settings.steps_per_frame, "fps": settings.fps,
              "loop": settings.loop, "layer_schedule": [[f, [f"{n}:{w:g}" for n, w in ls]] for f, ls in schedule],
              "size": list(image.shape[:2])} | dreamer.cfg.to_dict() | (metadata or {})
    record["guide_sha256"] = media.file_sha256(dreamer.cfg.guide)
    record |= mask_hashes(record)
    store = FrameStore(work_folder(out, kind), record, resume, overwrite)
    with frame_run(store):
        _zoom_frames(dreamer, image, store, settings, schedule, total, progress)
    return finish(store, out, kind, total, settings.fps, overlap)


def _zoom_frames(dreamer, image, store: FrameStore, settings: ZoomSettings, schedule, total: int,
                 progress) -> None:
    """Frames ``store.count()`` .. ``total - 1``: the frame stays on the device from one to the
    next; each goes to the host once, to be written by a background thread while the device
    makes the next (every frame made is written, also on Ctrl-C)."""
    done = store.count()
    current = jax.device_put(store.last_state(done - 1) if done else np.asarray(image, np.float32))
    store.start()
    key = jax.random.key(dreamer.cfg.seed)
    motion = [jax.device_put(np.asarray(v, np.float32))
              for v in (settings.zoom, settings.rotate, settings.translate)]
    keys = {i: jax.random.fold_in(key, jax.device_put(np.uint32(i))) for i in range(max(done, 1), total)}
    _compile_ahead(dreamer, current.shape[:2], schedule, first_frame=done == 0)
    with _Writer(store) as writer, loop_guard():
        for i in range(done, total):
            start = time.perf_counter()
            layers = None
            for f, ls in schedule:
                if i >= f:
                    layers = ls
            if i == 0:
                current = jax.device_put(dreamer.run(jax.device_get(current), layers=layers))
            else:
                moved = affine_about_centre(current, *motion)
                current = dreamer.step(moved, keys[i], steps=settings.steps_per_frame, layers=layers)
            writer.save(i, current)
            if progress is not None:
                jax.block_until_ready(current)  # the frame's seconds, not its dispatch's
                progress(FrameProgress(i + 1, total, time.perf_counter() - start))


def _compile_ahead(dreamer, hw: tuple[int, int], schedule, first_frame: bool) -> float:
    """The programs a zoom runs, compiled before its first frame: frame 0's octaves, every
    later frame's steps (for each layer set of the schedule) and the warp."""
    sets = list(dict.fromkeys([None] + [ls for _, ls in schedule]))
    start = time.perf_counter()
    if first_frame:
        dreamer.compile(dreamer.octave_shapes(hw), layers=next((ls for f, ls in schedule if f == 0), None))
    for layers in sets:
        dreamer.compile([hw], layers=layers, starts=False)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    compile_ahead([(affine_about_centre, (jax.ShapeDtypeStruct((*hw, 3), jnp.float32), scalar, scalar,
                                          jax.ShapeDtypeStruct((2,), jnp.float32)), {})])
    return time.perf_counter() - start


class _Writer:
    """Writes frames (device arrays) to a :class:`FrameStore` on one background thread, in
    order; leaving the block waits for every frame handed over and re-raises a write's error."""

    def __init__(self, store: FrameStore):
        self.store, self.pool, self.pending = store, ThreadPoolExecutor(max_workers=1), []

    def __enter__(self):
        return self

    def save(self, i: int, frame) -> None:
        self._collect(2)  # at most two frames in flight: memory stays bounded
        self.pending.append(self.pool.submit(self._write, i, frame))

    def _write(self, i: int, frame) -> None:
        host = np.asarray(jax.device_get(frame), np.float32)
        self.store.save(i, host, host)

    def _collect(self, keep: int) -> None:
        while len(self.pending) > keep:
            self.pending.pop(0).result()

    def __exit__(self, *exc):
        try:
            self._collect(0)
        finally:
            self.pool.shutdown(wait=True)
        return False
