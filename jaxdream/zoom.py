"""The zoom-and-dream feedback loop: each frame is the previous dream zoomed, rotated and
shifted about its centre, then dreamed a few steps; frames go to a frames folder
(:mod:`jaxdream.media.frames`) and are assembled into the output at the end."""

from __future__ import annotations

import os
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
    done = store.count()
    current = store.last_state(done - 1) if done else np.asarray(image, np.float32)
    store.start()
    key = jax.random.key(dreamer.cfg.seed)
    zoom_f, angle = jnp.float32(settings.zoom), jnp.float32(settings.rotate)
    shift = jnp.asarray(settings.translate, jnp.float32)
    for i in range(done, total):
        start = time.perf_counter()
        layers = None
        for f, ls in schedule:
            if i >= f:
                layers = ls
        if i == 0:
            current = dreamer.run(current, layers=layers)
        else:
            moved = affine_about_centre(jnp.asarray(current), zoom_f, angle, shift)
            current = np.asarray(dreamer.step(moved, jax.random.fold_in(key, i),
                                              steps=settings.steps_per_frame, layers=layers))
        store.save(i, current, current)
        if progress is not None:
            progress(FrameProgress(i + 1, total, time.perf_counter() - start))
