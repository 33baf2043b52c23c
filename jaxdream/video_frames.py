"""The frame makers of video mode: :class:`StyleFrames` (Ruder et al.'s stylised frames, planned
once per clip: style targets and compiled programs made before the first frame and reused) and
:class:`DreamFrames` (DeepDream frames from the warped previous dream), with the per-frame masks
they read. :mod:`jaxdream.video` drives them over a clip."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from . import media, options
from . import style as style_transfer
from .errors import SettingsError
from .media.masks import MaskFrames, check_region_count, is_video, mask_hashes, mask_list, mask_name
from .nets.network import load_network
from .objectives.gatys import CONTENT_LAYERS, STYLE_LAYERS
from .style.plan import load_image_or_array

__all__ = ["StyleFrames", "DreamFrames", "frame_masks", "masks_at", "check_mask_count"]


class StyleFrames:
    """Makes stylised frames: :meth:`first`, :meth:`next` (temporal) and :meth:`independent`.

    Each returns the optimised pixels (:attr:`jaxdream.StyleResult.iterates`), not clipped to
    0..255, and the next frame starts from them warped; the frame written is :attr:`picture`
    (their clip, recoloured with ``original_colors``). The clipped frame's style statistics are
    far from the optimum's (on bigbuckbunny with the hubble style its style loss was about 10x
    the unclipped one's), so a frame started from it spent its first iterations undoing the clip.

    Args:
        styles: style images (paths or arrays), read once.
        iterations_first: iterations of frame 0 (and of each frame of the independent baseline).
        iterations: iterations of every later frame.
        temporal_weight: weight of the temporal loss (artistic-videos' scale; default 1e3).
        first_init: init of frame 0 (``random``, ``image``/``content`` or an image).
        tol_loss_relative, tol_loss_relative_interval: a later frame stops once its loss changed
            by less than this fraction over an interval of this many iterations (0: off).
        lbfgs_precondition: weight of the Laplacian-pyramid initial inverse Hessian of the
            later frames' L-BFGS (:func:`jaxdream.style.pyramid_preconditioner`; 0: plain
            L-BFGS). Frame 0 and the independent baseline run plain L-BFGS, as neural-style.
        network: a loaded VGG-19 :class:`jaxdream.Network` (loaded from ``weights`` if None).
        mesh: a :func:`jaxdream.runtime.parallel.mesh` to split each frame's rows across.
        **style: any other :func:`jaxdream.stylize` settings (weights, layers, optimiser...).
    """

    kind = "style"

    def __init__(self, styles: Sequence, *, iterations_first: int = options.default("iterations-first"),
                 iterations: int = options.default("iterations", "video"),
                 temporal_weight: float = options.default("temporal-weight"),
                 first_init=options.default("init", "video"), scales_first=None,
                 tol_loss_relative: float = options.default("tol-loss-relative", "video"),
                 tol_loss_relative_interval: int = options.default("tol-loss-relative-interval", "video"),
                 lbfgs_precondition: float = options.default("lbfgs-precondition", "video"),
                 network=None, weights=None, mesh=None, **style):
        options.get("iterations_first").check(iterations_first)
        options.get("iterations").check(iterations)
        options.get("temporal_weight").check(temporal_weight)
        # later frames stop once the loss changes by less than tol_loss_relative in an interval;
        # at 160 px the defaults ran 51.5 of the 100 iterations per frame on bigbuckbunny (48
        # frames, 0.55x the temporal error, 1.052x the loss; 0.01 ran 36 at 1.09-1.10x) and 87.4
        # on the synthetic pan, which changes more (README, "Adaptive work per frame")
        self.tol_loss_relative = options.get("tol_loss_relative").check(tol_loss_relative)
        self.tol_loss_relative_interval = options.get("tol_loss_relative_interval").check(tol_loss_relative_interval)
        # a later frame moves its low spatial frequencies more readily: with weight 1 the
        # adaptive frames ended 1.7-2.2% lower in loss at the same work (bigbuckbunny, 160 px,
        # 24 frames; README, "Adaptive work per frame")
        self.lbfgs_precondition = options.get("lbfgs_precondition").check(lbfgs_precondition)
        if isinstance(styles, (str, os.PathLike)):
            styles = [styles]
        self.style_names = [str(s) if isinstance(s, (str, os.PathLike)) else "array" for s in styles]
        self.style_paths = [s if isinstance(s, (str, os.PathLike)) else None for s in styles]
        self.styles = [load_image_or_array(s, None, f"style image {i + 1}") for i, s in enumerate(styles)]
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
        check_mask_count(style, len(self.styles))
        self.net = network or load_network("vgg19", weights, style.get("pooling", "max"))
        self.loss = None
        self.iterations_run = None  # of the last frame: L-BFGS evaluations, all scales together
        self.picture = None  # of the last frame: the picture to write (see the class docstring)
        self.index = 0  # the frame being made (set by process), which picks a video mask's frame
        self._masks: dict | None = None  # the region and content masks per frame (set by check)
        self._targets: dict = {}  # the style targets of the clip, computed once (stylize's targets_cache)
        self.compile_seconds = 0.0  # the frames' programs, compiled ahead by each stylize call

    def check(self, frame_hw: tuple[int, int], frames: range | None = None) -> None:
        """Fail before any work when the frames are too small for the network, or a mask does not
        fit them; read the masks of ``frames`` (the clip's frame indices)."""
        layers = tuple(self.style.get("content_layers", CONTENT_LAYERS)) + tuple(
            self.style.get("style_layers", STYLE_LAYERS))
        self.net.spec.check_size(*frame_hw, self.net.spec.check_layers(layers))
        self._masks = frame_masks(self.style, frame_hw, frames)

    def settings(self) -> dict:
        return {"mode": "style", "styles": self.style_names, "iterations_first": self.iterations_first,
                "iterations": self.iterations, "temporal_weight": self.temporal_weight,
                "tol_loss_relative": self.tol_loss_relative,
                "tol_loss_relative_interval": self.tol_loss_relative_interval,
                "lbfgs_precondition": self.lbfgs_precondition,
                "first_init": self.first_init if isinstance(self.first_init, str) else "array",
                "scales_first": None if self.scales_first is None else list(self.scales_first),
                "weights": self.net.weights_id,
                "styles_sha256": [media.file_sha256(s) for s in self.style_paths],
                "first_init_sha256": media.file_sha256(self.first_init),
                **{k: _recordable(v) for k, v in self.style.items()}, **mask_hashes(self.style)}

    def prepare(self, frame_hw: tuple[int, int]) -> float:
        """Compile frame 0's programs and the later frames' (with their temporal term and
        stopping rule) ahead, concurrently, before the first frame (on blank frames of the clip's
        size); seconds spent."""
        blank, ones = np.zeros((*frame_hw, 3), np.float32), np.ones(frame_hw, np.float32)
        first = lambda: self._run(blank, self.first_init, self.iterations_first, self.scales_first, None,  # noqa: E731
                                  None, compile_only=True)
        later = lambda: self._run(blank, blank, self.iterations, (), (blank, ones, self.temporal_weight),  # noqa: E731
                                  None, compile_only=True)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda job: job(), [first, later] if self.temporal_weight > 0 else [first]))
        return time.perf_counter() - start

    def _run(self, frame, init, iterations, scales, temporal, callback, compile_only: bool = False):
        size = max(frame.shape[:2])
        # the tolerance and the preconditioner apply to the later frames (those with a temporal
        # term); frame 0 and the independent baseline run their whole budget with plain L-BFGS
        later = temporal is not None
        lbfgs = self.style.get("optimizer", "lbfgs") == "lbfgs"
        style = self.style | masks_at(self._masks, self.index)
        result = style_transfer.stylize(frame, self.styles, init=init, num_iterations=iterations, size=size,
                         scales=scales, temporal=temporal, network=self.net, callback=callback, mesh=self.mesh,
                         targets_cache=self._targets, compile_only=compile_only,
                         tol_loss_relative=self.tol_loss_relative if later else 0.0,
                         tol_loss_relative_interval=self.tol_loss_relative_interval,
                         lbfgs_precondition=self.lbfgs_precondition if later and lbfgs else 0.0, **style)
        if compile_only:
            self.compile_seconds += result
            return None
        self.loss = float(result.losses["total"][0])
        self.compile_seconds += result.compile_seconds
        self.iterations_run = sum(result.iterations_run)
        self.picture = result.image  # what is written (clipped; recoloured with original_colors)
        return result.iterates[0]

    def first(self, frame, callback=None):
        return self._run(frame, self.first_init, self.iterations_first, self.scales_first, None,
                         callback)

    def independent(self, frame, callback=None):
        """The baseline: every frame stylised on its own exactly like frame 0."""
        return self.first(frame, callback)

    def next(self, frame, prev_out, warped, mask, init_mode, callback=None, target=None):
        """A later frame: started as ``init_mode`` says, held to ``target`` (image, mask) by the
        temporal term (default: the warped previous frame and its mask)."""
        init = {"prev-warped": warped, "prev": prev_out, "content": "content"}[init_mode]
        return self.refine(frame, init, target or (warped, mask), callback)

    def refine(self, frame, init, target, callback=None):
        """``iterations`` from ``init`` with the temporal term towards ``target`` (image, mask;
        None: no temporal term)."""
        temporal = (*target, self.temporal_weight) if self.temporal_weight > 0 and target is not None else None
        return self._run(frame, init, self.iterations, (), temporal, callback)


class DreamFrames:
    """Makes dreamed frames: frame 0 through all octaves, later frames from the blended warp.

    Args:
        dreamer: a :class:`jaxdream.dream.Dreamer`.
        blend: how much of the warped previous dream is kept (0: dream each frame afresh from
            the input frame; 1: only the warped dream, the new frame enters only at occlusions).
        steps_per_frame: ascent steps for each frame after the first.
        mask: dream only where it is white: an image (path or array) for every frame or a video
            of masks, one per frame (None: the dreamer's own mask, if any).
    """

    kind = "dream"

    def __init__(self, dreamer, blend: float = options.default("blend"),
                 steps_per_frame: int = options.default("steps-per-frame", "video"), mask=None):
        options.get("blend").check(blend)
        options.get("steps_per_frame").check(steps_per_frame)
        self.dreamer, self.blend, self.steps = dreamer, float(blend), int(steps_per_frame)
        self.mask = None if mask is None else MaskFrames(mask, mask_name(mask))
        self.loss = None
        self.index = 0

    @property
    def compile_seconds(self) -> float:
        return self.dreamer.compile_seconds

    @property
    def mesh(self):
        """The dreamer's devices (its tile batches, and the frame pairs' flows, are split over them)."""
        return self.dreamer.mesh

    def check(self, frame_hw: tuple[int, int], frames: range | None = None) -> None:
        self.dreamer.net.spec.check_size(*frame_hw, self.dreamer.layer_names)
        if self.mask is not None:
            self.mask.check(frame_hw, frames)

    def settings(self) -> dict:
        record = {"mode": "dream", "blend": self.blend, "steps_per_frame": self.steps,
                  "weights": self.dreamer.net.weights_id} | self.dreamer.cfg.to_dict()
        if self.mask is not None:
            record["mask"] = _recordable(self.mask.source)
        return record | {"guide_sha256": media.file_sha256(self.dreamer.cfg.guide)} | mask_hashes(record)

    def _use_mask(self) -> None:
        if self.mask is not None:
            self.dreamer.set_mask(self.mask.at(self.index))

    def first(self, frame, callback=None):
        self._use_mask()
        return self.dreamer.run(frame)

    def independent(self, frame, callback=None):
        self._use_mask()
        return self.dreamer.run(frame)

    def next(self, frame, prev_out, warped, mask, init_mode, callback=None, target=None):
        import jax
        self._use_mask()
        source = {"prev-warped": warped, "prev": prev_out, "content": frame}[init_mode]
        weight = self.blend * (mask[..., None] if init_mode == "prev-warped" else 1.0)
        start = frame + weight * (source - frame)
        key = jax.random.fold_in(self.dreamer.key, 1000 + self.index)
        return np.asarray(self.dreamer.step(start, key, steps=self.steps))


def _recordable(value):
    """A setting as the run's record keeps it: tuples as lists, paths as text, arrays as ``"array"``."""
    if isinstance(value, (list, tuple)):
        return [_recordable(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    return "array" if isinstance(value, np.ndarray) else value


def check_mask_count(style: dict, styles: int) -> None:
    """One region mask per style; style masks (of the style images) are pictures."""
    check_region_count(mask_list(style.get("masks")), styles)
    if any(is_video(m) for m in mask_list(style.get("style_masks"))):
        raise SettingsError("a --style-mask is a picture of its style image, not a video")


def frame_masks(style: dict, frame_hw: tuple[int, int], frames: range | None) -> dict | None:
    """The region masks (``masks``) and ``content_mask`` of a styled clip as
    :class:`jaxdream.media.masks.MaskFrames` (pictures or videos of masks), checked against the frames
    of ``frames``; None without masks."""
    regions = mask_list(style.get("masks"))
    content = style.get("content_mask")
    if not regions and content is None:
        return None
    out = {"masks": [MaskFrames(m, mask_name(m, i), f"style image {i} would apply nowhere")
                     for i, m in enumerate(regions, 1)],
           "content_mask": None if content is None else MaskFrames(content, mask_name(content, None, "content mask"))}
    for m in [*out["masks"], out["content_mask"]]:
        if m is not None:
            m.check(frame_hw, frames)
    return out


def masks_at(masks: dict | None, index: int) -> dict:
    """The ``stylize`` mask settings of frame ``index`` from :func:`frame_masks`."""
    if masks is None:
        return {}
    return {"masks": [m.at(index) for m in masks["masks"]] or None,
            "content_mask": None if masks["content_mask"] is None else masks["content_mask"].at(index)}
