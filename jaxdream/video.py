"""Video mode: temporally consistent style transfer and DeepDream, frame by frame.

Style (Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos", 2016): frame 0 is
stylised fully; every later frame ``t`` starts from the stylised frame ``t-1`` warped into
frame ``t`` by the optical flow between the input frames (``init="prev-warped"``; ``prev`` and
``content`` are the paper's baselines) and adds the temporal loss
``temporal_weight * mean(c * (x - warp(stylised_prev))**2)`` over all pixels and channels in
the network's input space, where ``c`` is the forward-backward reliability mask (0 at
occlusions and motion boundaries). That is manuelruder/artistic-videos' short-term
``WeightedContentLoss`` (an ``MSECriterion`` of mask-weighted images), so its default weight
1e3 means the same here.

DeepDream: frame 0 is dreamed through all octaves; every later frame starts from the previous
dream warped by the flow, blended with the new input frame
(``init = frame + blend * mask * (warped_dream - frame)``), then dreamed a few steps at full
size, so the patterns stick to moving objects instead of swimming.

Frames are read one at a time, written to a work folder as they are finished (with the float
result of the last one, so ``resume`` continues bit for bit), and assembled into the output at
the end (MP4 with the source's audio, GIF or a folder of PNGs). The quality measure of every run
is the mean temporal warping error between consecutive output frames over the reliable pixels
(:func:`jaxdream.flow.temporal_error`; lower is smoother).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import flow as flowlib
from . import media, options
from .animate import METRICS_FILE, FrameStore, finish, frame_run, work_folder
from .errors import SettingsError

__all__ = ["VideoSettings", "VideoProgress", "VideoResult", "StyleFrames", "DreamFrames", "process",
           "INITS"]

INITS = ("prev-warped", "prev", "content")


@dataclass(frozen=True)
class VideoSettings:
    """Settings of the frame loop (the style or dream settings live in the frame maker).

    Attributes:
        size: longest side of the processed frames (None: the clip's size).
        start, end: frame range [start, end) of the clip (end None: to the end).
        init: how frames after the first start: ``prev-warped`` (default), ``prev``, ``content``.
        motion_boundaries: also exclude motion boundaries from the reliable pixels.
        fps: output frame rate (None: the clip's).
    """

    size: int | None = None
    start: int = 0
    end: int | None = None
    init: str = "prev-warped"
    motion_boundaries: bool = True
    fps: float | None = None

    def validate(self) -> None:
        if self.init not in INITS:
            raise SettingsError(f"unknown --init '{self.init}'; use one of {', '.join(INITS)}")
        options.get("start").check(self.start)
        if self.end is not None:
            options.get("end").check(self.end)
            if self.end <= self.start:
                raise SettingsError(f"--end ({self.end}) must be after --start ({self.start})")
        if self.fps is not None:
            options.get("fps").check(self.fps)
        if self.size is not None:
            options.get("size").check(self.size)


@dataclass
class VideoProgress:
    """Reported after every finished frame."""

    frame: int             # frames finished (1-based count)
    frames: int            # frames in the run
    seconds: float         # seconds this frame took
    loss: float | None     # final loss of this frame (style) or None (dream)
    temporal_error: float | None  # warping error to the previous output frame (None for frame 0)


@dataclass
class VideoResult:
    """What :func:`process` made."""

    path: Path
    frames: int
    fps: float
    temporal_error: float | None          # mean over consecutive pairs
    seconds_per_frame: list[float]
    independent_error: float | None = None  # same measure for independent per-frame processing


class StyleFrames:
    """Makes stylised frames: :meth:`first`, :meth:`next` (temporal) and :meth:`independent`.

    Args:
        styles: style images (paths or arrays), read once.
        iterations_first: iterations of frame 0 (and of each frame of the independent baseline).
        iterations: iterations of every later frame.
        temporal_weight: weight of the temporal loss (artistic-videos' scale; default 1e3).
        first_init: init of frame 0 (``random``, ``image``/``content`` or an image).
        network: a loaded VGG-19 :class:`jaxdream.Network` (loaded from ``weights`` if None).
        mesh: a :func:`jaxdream.parallel.mesh` to split each frame's rows across.
        **style: any other :func:`jaxdream.stylize` settings (weights, layers, optimiser...).
    """

    kind = "style"

    def __init__(self, styles: Sequence, *, iterations_first: int = 400, iterations: int = 100,
                 temporal_weight: float = 1e3, first_init="content", scales_first=None,
                 network=None, weights=None, mesh=None, **style):
        from .network import load_network
        from .style import _load
        options.get("iterations_first").check(iterations_first)
        options.get("iterations").check(iterations)
        options.get("temporal_weight").check(temporal_weight)
        if isinstance(styles, (str, os.PathLike)):
            styles = [styles]
        self.style_names = [str(s) if isinstance(s, (str, os.PathLike)) else "array" for s in styles]
        self.style_paths = [s if isinstance(s, (str, os.PathLike)) else None for s in styles]
        self.styles = [_load(s, None, f"style image {i + 1}") for i, s in enumerate(styles)]
        if not self.styles:
            raise SettingsError("give at least one --style image")
        self.iterations_first, self.iterations = int(iterations_first), int(iterations)
        self.temporal_weight = float(temporal_weight)
        self.first_init, self.scales_first = first_init, scales_first
        for key in ("content_weight", "style_weight", "tv_weight", "seed"):
            if isinstance(style.get(key), (list, tuple)):
                raise SettingsError(f"video mode takes one value of {key.replace('_', ' ')}, not a sweep")
        self.style = style
        self.mesh = mesh  # each frame's rows are split across it (jaxdream.style, _Placement)
        self.net = network or load_network("vgg19", weights, style.get("pooling", "max"))
        self.loss = None

    def check(self, frame_hw: tuple[int, int]) -> None:
        """Fail before any work when the frames are too small for the network."""
        from .style import CONTENT_LAYERS, STYLE_LAYERS
        layers = tuple(self.style.get("content_layers", CONTENT_LAYERS)) + tuple(
            self.style.get("style_layers", STYLE_LAYERS))
        self.net.spec.check_size(*frame_hw, self.net.spec.check_layers(layers))

    def settings(self) -> dict:
        return {"mode": "style", "styles": self.style_names, "iterations_first": self.iterations_first,
                "iterations": self.iterations, "temporal_weight": self.temporal_weight,
                "first_init": self.first_init if isinstance(self.first_init, str) else "array",
                "scales_first": None if self.scales_first is None else list(self.scales_first),
                "weights": self.net.weights_id,
                "styles_sha256": [media.file_sha256(s) for s in self.style_paths],
                "first_init_sha256": media.file_sha256(self.first_init),
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.style.items()}}

    def _run(self, frame, init, iterations, scales, temporal, callback):
        from .style import stylize
        size = max(frame.shape[:2])
        result = stylize(frame, self.styles, init=init, num_iterations=iterations, size=size,
                         scales=scales, temporal=temporal, network=self.net, callback=callback, mesh=self.mesh,
                         **self.style)
        self.loss = float(result.losses["total"][0])
        return result.image

    def first(self, frame, callback=None):
        return self._run(frame, self.first_init, self.iterations_first, self.scales_first, None,
                         callback)

    def independent(self, frame, callback=None):
        """The baseline: every frame stylised on its own exactly like frame 0."""
        return self.first(frame, callback)

    def next(self, frame, prev_out, warped, mask, init_mode, callback=None):
        init = {"prev-warped": warped, "prev": prev_out, "content": "content"}[init_mode]
        temporal = (warped, mask, self.temporal_weight) if self.temporal_weight > 0 else None
        return self._run(frame, init, self.iterations, (), temporal, callback)


class DreamFrames:
    """Makes dreamed frames: frame 0 through all octaves, later frames from the blended warp.

    Args:
        dreamer: a :class:`jaxdream.dream.Dreamer`.
        blend: how much of the warped previous dream is kept (0: dream each frame afresh from
            the input frame; 1: only the warped dream, the new frame enters only at occlusions).
        steps_per_frame: ascent steps for each frame after the first.
    """

    kind = "dream"

    def __init__(self, dreamer, blend: float = 0.6, steps_per_frame: int = 5):
        options.get("blend").check(blend)
        options.get("steps_per_frame").check(steps_per_frame)
        self.dreamer, self.blend, self.steps = dreamer, float(blend), int(steps_per_frame)
        self.loss = None
        self.index = 0

    @property
    def mesh(self):
        """The dreamer's devices (its tile batches, and the frame pairs' flows, are split over them)."""
        return self.dreamer.mesh

    def check(self, frame_hw: tuple[int, int]) -> None:
        self.dreamer.net.spec.check_size(*frame_hw, self.dreamer.layer_names)

    def settings(self) -> dict:
        return {"mode": "dream", "blend": self.blend, "steps_per_frame": self.steps,
                "weights": self.dreamer.net.weights_id} | self.dreamer.cfg.to_dict() | {
                "guide_sha256": media.file_sha256(self.dreamer.cfg.guide)}

    def first(self, frame, callback=None):
        return self.dreamer.run(frame)

    def independent(self, frame, callback=None):
        return self.dreamer.run(frame)

    def next(self, frame, prev_out, warped, mask, init_mode, callback=None):
        import jax
        source = {"prev-warped": warped, "prev": prev_out, "content": frame}[init_mode]
        weight = self.blend * (mask[..., None] if init_mode == "prev-warped" else 1.0)
        start = frame + weight * (source - frame)
        key = jax.random.fold_in(self.dreamer.key, 1000 + self.index)
        return np.asarray(self.dreamer.step(start, key, steps=self.steps))


def _with_flows(frames, start: int, motion_boundaries: bool, mesh):
    """``(i, frame, flow, mask)`` for the frames from index ``start`` on: the flow from each frame
    to the one before it and its occlusion mask (None for frame 0). The flows do not depend on
    the stylisation, so with several devices the next pairs are computed together, one per
    device (:func:`jaxdream.flow.pair_flows`), ahead of the frames that use them."""
    width = mesh.size if mesh is not None else 1
    prev, pending = None, []

    def flush():
        if pending:
            flows, masks = flowlib.pair_flows([f for _, f, _ in pending], [p for _, _, p in pending],
                                              motion_boundaries=motion_boundaries, mesh=mesh)
            yield from ((i, frame, fw, mask) for (i, frame, _), fw, mask in zip(pending, flows, masks))
            pending.clear()

    for i, frame in enumerate(frames):
        if i >= start:
            if prev is None:
                yield i, frame, None, None
            else:
                pending.append((i, frame, prev))
                if len(pending) >= width:
                    yield from flush()
        prev = frame
    yield from flush()


def _pair_error(prev_out, out, fw, mask) -> float:
    if float(np.sum(mask)) <= 0:
        return float("nan")
    return flowlib.temporal_error(np.clip(prev_out, 0, 255), np.clip(out, 0, 255), fw, mask)


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def process(input_path: str | os.PathLike, out: str | os.PathLike, maker, settings: VideoSettings,
            *, resume: bool = False, overwrite: bool = False, compare_independent: bool = False,
            progress: Callable[[VideoProgress], None] | None = None,
            inner_progress: Callable | None = None, metadata: dict | None = None) -> VideoResult:
    """Stylise or dream a clip frame by frame into ``out`` (``.mp4``, ``.gif`` or a folder).

    Args:
        input_path: any clip ffmpeg reads.
        out: output path; checked before any work.
        maker: a :class:`StyleFrames` or :class:`DreamFrames`.
        settings: frame range, size, init mode.
        resume: continue an interrupted run from its last finished frame (refused, with a
            clear error, when the settings differ).
        overwrite: start over in a folder that holds another run's frames.
        compare_independent: also process every frame independently (not written) and report
            its temporal error as :attr:`VideoResult.independent_error`.
        progress: called after every frame.
        inner_progress: passed to the style optimiser as its per-chunk callback.
        metadata: extra JSON-able settings recorded and checked on resume.

    Returns:
        A :class:`VideoResult`.
    """
    settings.validate()
    out, kind = media.check_animation_output(out, inputs=[input_path])
    reader = media.VideoReader(input_path, settings.size, settings.start, settings.end)
    w, h = reader.frame_size
    maker.check((h, w))
    fps = settings.fps or reader.fps
    record = {"input": str(input_path), "input_sha256": media.file_sha256(input_path), "size": [h, w],
              "start": settings.start, "end": reader.end, "init": settings.init,
              "motion_boundaries": settings.motion_boundaries, "fps": fps,
              **maker.settings(), **(metadata or {})}
    record = json.loads(json.dumps(record))  # what a resumed run reads back
    store = FrameStore(work_folder(out, kind), record, resume, overwrite)
    with frame_run(store):
        metrics = _frames(reader, store, maker, settings, compare_independent, progress, inner_progress)
    count = store.count()
    if count < reader.frames:
        warnings.warn(f"{input_path}: {count} of the {reader.frames} frames in the range could be decoded; "
                      f"the output has {count}")
    total = min(reader.frames, count)  # ffmpeg's count can exceed what decodes
    audio_start = settings.start / reader.fps
    path = finish(store, out, kind, total, fps, audio_from=str(input_path) if reader.has_audio else None,
                  audio_start=audio_start)
    return VideoResult(path, total, fps, _mean(metrics["temporal_error"]), metrics["seconds"],
                       _mean(metrics["independent_error"]) if compare_independent else None)


def _frames(reader, store: FrameStore, maker, settings: VideoSettings, compare_independent: bool,
            progress, inner_progress) -> dict:
    """The frame loop of :func:`process`; returns the per-frame metrics."""
    metrics_path = store.folder / METRICS_FILE
    done = store.count()
    metrics = {"temporal_error": [], "seconds": [], "independent_error": []}
    if done and metrics_path.is_file():
        saved = json.loads(metrics_path.read_text())
        metrics = {k: saved.get(k, [])[:done] for k in metrics}
    prev_out = prev_indep = None
    if done:
        prev_out = store.last_state(done - 1)
    store.start()
    total = reader.frames
    for i, frame, fw, mask in _with_flows(reader, done, settings.motion_boundaries, getattr(maker, "mesh", None)):
        t0 = time.perf_counter()
        maker.index = i
        if i == 0:
            result = maker.first(frame, inner_progress)
            error = None
            indep_error = None
        else:
            warped = np.asarray(flowlib.warp(prev_out, fw))
            result = maker.next(frame, prev_out, warped, mask, settings.init, inner_progress)
            error = _pair_error(prev_out, result, fw, mask)
        seconds = time.perf_counter() - t0
        if compare_independent:
            indep = np.asarray(maker.independent(frame, None), np.float32)
            indep_error = None if i == 0 or prev_indep is None else _pair_error(prev_indep, indep, fw, mask)
            prev_indep = indep
        result = np.asarray(result, np.float32)
        store.save(i, result, result)
        metrics["temporal_error"].append(error)
        metrics["seconds"].append(seconds)
        metrics["independent_error"].append(indep_error if compare_independent else None)
        store.write_json(METRICS_FILE, metrics)
        prev_out = result
        if progress is not None:
            progress(VideoProgress(i + 1, total, seconds, maker.loss, error))
    if store.count() == 0:
        raise SettingsError(f"{reader.path}: no frames could be decoded")
    return metrics
