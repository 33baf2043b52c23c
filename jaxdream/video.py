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

import collections
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
from .errors import SettingsError
from .video_frames import DreamFrames, StyleFrames, check_mask_count, frame_masks, masks_at
from .media.frames import METRICS_FILE, PASSES_FILE, FrameStore, finish, frame_run, work_folder

__all__ = ["VideoSettings", "VideoProgress", "VideoResult", "StyleFrames", "DreamFrames", "process",
           "INITS", "long_term_target", "frame_masks", "masks_at", "check_mask_count"]

INITS = ("prev-warped", "prev", "content")

#: How the long-term frames share a pixel (artistic-videos' ``-combine_flowWeights_method``),
#: the default first. ``normalize`` is the default: on bigbuckbunny it gave 0.60-0.69x the
#: short-term run's long-term error (frame t against t-10), where closest-first gives 1.02-1.03x,
#: since closest-first hands every pixel that stays reliable to frame t-1 alone (README, "video").
LONG_TERM_WEIGHTS = ("normalize", "closest-first")

#: Settings a work folder of an earlier jaxdream version does not record, with what its run
#: used: no long-term terms (or closest-first weights where it had them), one pass, fixed
#: iterations and plain L-BFGS per frame (None: moot given those). ``--resume`` compares a
#: folder without the key at that value, so such a run resumes when given the options that
#: reproduce it (``--lbfgs-precondition 0``).
OLDER_SETTINGS = {"temporal_frames": [1], "passes": 1, "blend_weight": None, "tol_loss_relative": 0.0,
                  "tol_loss_relative_interval": None, "lbfgs_precondition": 0.0,
                  "long_term_weights": "closest-first"}


@dataclass(frozen=True)
class VideoSettings:
    """Settings of the frame loop (the style or dream settings live in the frame maker).

    Attributes:
        size: longest side of the processed frames (None: the clip's size).
        start, end: frame range [start, end) of the clip (end None: to the end).
        init: how frames after the first start: ``prev-warped`` (default), ``prev``, ``content``.
        motion_boundaries: also exclude motion boundaries from the reliable pixels.
        fps: output frame rate (None: the clip's).
        temporal_frames: offsets ``j`` of the earlier stylised frames ``t-j`` that constrain
            frame ``t`` (Ruder et al. 2018's long-term loss, e.g. ``(1, 2, 4)``; ``(1,)``: the
            short-term loss only).
        long_term_weights: how those frames share a pixel (artistic-videos'
            ``-combine_flowWeights_method``): ``normalize`` (default: by every reliable frame,
            weights summing to at most 1, so a pixel seen in all of them is pulled to their mean
            and cannot drift away from the older frames) or ``closest-first`` (artistic-videos'
            default: each pixel held by its nearest reliable frame only).
        passes: style passes over the clip (Ruder et al. 2018's multi-pass algorithm):
            pass 1 runs forward as above; later passes alternate backward and forward, each
            frame starting from its previous-pass result blended with the neighbour of the
            pass direction warped into it.
        blend_weight: weight of that warped neighbour in the blend (artistic-videos'
            ``-blendWeight``, default 1: an equal mix where the warp is reliable).
    """

    size: int | None = None
    start: int = options.default("start")
    end: int | None = None
    init: str = options.default("frame-init")
    motion_boundaries: bool = True
    fps: float | None = None
    temporal_frames: tuple[int, ...] = options.default("temporal-frames")
    long_term_weights: str = LONG_TERM_WEIGHTS[0]
    passes: int = options.default("passes")
    blend_weight: float = options.default("blend-weight")

    def validate(self) -> None:
        if self.init not in INITS:
            raise SettingsError(f"unknown --init '{self.init}'; use one of {', '.join(INITS)}")
        options.get("temporal_frames").check_all(self.temporal_frames)
        if 1 not in self.temporal_frames:
            raise SettingsError(f"--temporal-frames {','.join(map(str, self.temporal_frames))}: must include 1 "
                                f"(the previous frame, which also starts each frame)")
        if self.long_term_weights not in LONG_TERM_WEIGHTS:
            raise SettingsError(f"unknown --long-term-weights '{self.long_term_weights}'; use one of "
                                f"{', '.join(LONG_TERM_WEIGHTS)}")
        options.get("passes").check(self.passes)
        options.get("blend_weight").check(self.blend_weight)
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
    pass_number: int = 1   # which pass over the clip (1-based; frame and frames count all passes)


@dataclass
class VideoResult:
    """What :func:`process` made."""

    path: Path
    frames: int
    fps: float
    temporal_error: float | None          # mean over consecutive pairs
    seconds_per_frame: list[float]
    independent_error: float | None = None  # same measure for independent per-frame processing
    compile_seconds: float = 0.0  # of the frames' programs, compiled ahead of their first use


def long_term_target(warped: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                     method: str = LONG_TERM_WEIGHTS[0]) -> tuple[np.ndarray, np.ndarray]:
    """The long-term temporal target of Ruder et al. (2018) as one image and mask.

    ``warped[k]`` is the stylised frame ``t - j_k`` warped into frame ``t`` and ``masks[k]`` its
    reliability (0/1), nearest frame first. The per-frame weights ``w_k`` are, as in
    artistic-videos:

    * ``closest-first``: ``w_k = max(c_k - sum_{l<k} c_l, 0)``, each pixel held by its nearest
      reliable frame only;
    * ``normalize``: ``w_k = c_k / max(sum_l c_l, 1)``, every reliable frame, summing to at most 1.

    Either way ``sum_k w_k (x - v_k)^2 = m (x - image)^2 + const`` with ``m = sum_k w_k`` and
    ``image = sum_k w_k v_k / m`` (the constant, zero for disjoint 0/1 weights, does not move
    the optimum): the long-term loss is the short-term term with this target, at no extra cost
    per iteration.

    Returns:
        ``(image (H, W, 3), mask (H, W))``; where no frame is reliable the mask is 0 and the
        image is the nearest warped frame.
    """
    if method not in LONG_TERM_WEIGHTS:
        raise SettingsError(f"unknown long-term weighting '{method}'; use one of {', '.join(LONG_TERM_WEIGHTS)}")
    cs = [np.asarray(c, np.float32) for c in masks]
    if method == "normalize":
        total = np.maximum(sum(cs), 1.0)
        weights = [c / total for c in cs]
    else:
        seen, weights = np.zeros_like(cs[0]), []
        for c in cs:
            weights.append(np.maximum(c - seen, 0))
            seen = seen + c
    mask = sum(weights)
    image = sum(wk[..., None] * np.asarray(v, np.float32) for wk, v in zip(weights, warped))
    image = np.where(mask[..., None] > 0, image / np.maximum(mask, 1e-12)[..., None], np.asarray(warped[0]))
    return image.astype(np.float32), mask.astype(np.float32)


def _with_flows(frames, start: int, motion_boundaries: bool, mesh, offsets: Sequence[int] = (1,)):
    """``(i, frame, flows)`` for the frames from index ``start`` on, with ``flows[j] = (flow, mask)``:
    the flow from frame ``i`` to frame ``i - j`` and its occlusion mask, for each offset ``j`` that
    reaches a frame (none for frame 0). The flows do not depend on the stylisation, so with
    several devices the next pairs are computed together, one per device
    (:func:`jaxdream.flow.pair_flows`), ahead of the frames that use them."""
    width = mesh.size if mesh is not None else 1
    history: collections.deque = collections.deque(maxlen=max(offsets))
    pending: list = []

    def flush():
        pairs = [(frame, prev) for _, frame, wanted in pending for _, prev in wanted]
        flows, masks = flowlib.pair_flows([a for a, _ in pairs], [b for _, b in pairs],
                                          motion_boundaries=motion_boundaries, mesh=mesh) if pairs else ([], [])
        k = 0
        for i, frame, wanted in pending:
            yield i, frame, {j: (flows[k + n], masks[k + n]) for n, (j, _) in enumerate(wanted)}
            k += len(wanted)
        pending.clear()

    for i, frame in enumerate(frames):
        if i >= start:
            pending.append((i, frame, [(j, history[-j]) for j in sorted(offsets) if j <= len(history)]))
            if sum(len(w) for _, _, w in pending) >= width or not any(w for _, _, w in pending):
                yield from flush()
        history.append(frame)
    yield from flush()


def _picture(maker, result) -> np.ndarray:
    """The frame to write for a maker's ``result``: its :attr:`StyleFrames.picture` where it
    has one (a style frame's result is its unclipped pixels), else the result itself."""
    picture = getattr(maker, "picture", None)
    return np.asarray(result if picture is None else picture, np.float32)


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
    # an MP4 needs even sides: a resized frame gets them now rather than losing a row later
    reader = media.VideoReader(input_path, settings.size, settings.start, settings.end, even=kind == "mp4")
    w, h = reader.frame_size
    maker.check((h, w), range(reader.start, reader.end))
    fps = settings.fps or reader.fps
    record = {"input": str(input_path), "input_sha256": media.file_sha256(input_path), "size": [h, w],
              "start": settings.start, "end": reader.end, "init": settings.init,
              "motion_boundaries": settings.motion_boundaries, "fps": fps,
              "temporal_frames": list(settings.temporal_frames), "passes": settings.passes,
              "blend_weight": settings.blend_weight,
              **({"long_term_weights": settings.long_term_weights} if len(settings.temporal_frames) > 1 else {}),
              **maker.settings(), **(metadata or {})}
    record = json.loads(json.dumps(record))  # what a resumed run reads back
    store = FrameStore(work_folder(out, kind), record, resume, overwrite, older=OLDER_SETTINGS)
    with frame_run(store):
        _prepare(maker, (h, w), settings, reader.frames)
        metrics = _frames(reader, store, maker, settings, compare_independent, progress, inner_progress)
    count = store.count()
    if count < reader.frames:
        warnings.warn(f"{input_path}: {count} of the {reader.frames} frames in the range could be decoded; "
                      f"the output has {count}")
    total = min(reader.frames, count)  # ffmpeg's count can exceed what decodes
    # the clip's own timing (a variable rate included) unless --fps retimes it; the audio
    # starts at the first frame's timestamp and lasts as long as the frames written
    timestamps = reader.timestamps[:total + 1] if reader.vfr and settings.fps is None else None
    path = finish(store, out, kind, total, settings.fps or reader.rate,
                  audio_from=str(input_path) if reader.has_audio else None, audio_start=reader.audio_start,
                  timestamps=timestamps)
    return VideoResult(path, total, fps, _mean(metrics["temporal_error"]), metrics["seconds"],
                       _mean(metrics["independent_error"]) if compare_independent else None,
                       getattr(maker, "compile_seconds", 0.0))


def _prepare(maker, hw: tuple[int, int], settings: VideoSettings, frames: int) -> None:
    """The programs of the run compiled before its first frame: the maker's, and the optical
    flow's (run once on blank frames of the clip's size)."""
    prepare = getattr(maker, "prepare", None)
    if prepare is not None:
        prepare(hw)
    if frames > 1:
        blank = np.zeros((*hw, 3), np.float32)
        flowlib.pair_flows([blank], [blank], motion_boundaries=settings.motion_boundaries,
                           mesh=getattr(maker, "mesh", None))


def _frames(reader, store: FrameStore, maker, settings: VideoSettings, compare_independent: bool,
            progress, inner_progress) -> dict:
    """The frame loops of :func:`process`: the first pass, then any later passes; returns the
    per-frame metrics."""
    later = store.folder / PASSES_FILE
    # the float states (unclipped iterates) a frame starts from: the frames t - j of the
    # temporal terms, or every frame when later passes revisit them all
    store.keep_states = reader.frames if settings.passes > 1 else max(settings.temporal_frames)
    if not (store.resuming and later.is_file()):  # a resumed run past pass 1 goes straight on
        metrics = _first_pass(reader, store, maker, settings, compare_independent, progress, inner_progress)
        if settings.passes == 1:
            return metrics
        store.write_json(PASSES_FILE, {"pass": 2, "done": 0})
    return _later_passes(reader, store, maker, settings, progress, inner_progress)


def _first_pass(reader, store: FrameStore, maker, settings: VideoSettings, compare_independent: bool,
                progress, inner_progress) -> dict:
    """Pass 1, forward: frame 0 in full, every later frame from the previous one warped, with the
    temporal term towards the frames ``t - j`` of ``settings.temporal_frames``."""
    metrics_path = store.folder / METRICS_FILE
    reach = max(settings.temporal_frames)
    done = store.count()
    metrics = {"temporal_error": [], "seconds": [], "independent_error": []}
    if done and metrics_path.is_file():
        saved = json.loads(metrics_path.read_text())
        metrics = {k: saved.get(k, [])[:done] for k in metrics}
    outs = {i: store.last_state(i) for i in range(max(0, done - reach), done)}
    prev_picture = media.load_image(store.frame_path(done - 1)) if done else None
    prev_indep = None
    store.start()
    total = reader.frames * settings.passes
    mesh = getattr(maker, "mesh", None)
    t0 = time.perf_counter()  # a frame's time includes its flows (computed as the frames are read)
    for i, frame, flows in _with_flows(reader, done, settings.motion_boundaries, mesh, settings.temporal_frames):
        maker.index = i
        error = indep_error = None
        if i == 0:
            result = maker.first(frame, inner_progress)
        else:
            fw, mask = flows[1]
            warped = {j: np.asarray(flowlib.warp(outs[i - j], f)) for j, (f, _) in flows.items()}
            target = long_term_target([warped[j] for j in sorted(flows)], [flows[j][1] for j in sorted(flows)],
                                      settings.long_term_weights)
            result = maker.next(frame, outs[i - 1], warped[1], mask, settings.init, inner_progress, target=target)
        picture = _picture(maker, result)
        if i > 0:
            error = _pair_error(prev_picture, picture, fw, mask)
        seconds = time.perf_counter() - t0
        if compare_independent:
            indep = _picture(maker, maker.independent(frame, None))
            indep_error = None if i == 0 or prev_indep is None else _pair_error(prev_indep, indep, *flows[1])
            prev_indep = indep
        result = np.asarray(result, np.float32)
        store.save(i, picture, result, meta={"pass": 1} if settings.passes > 1 else None)
        prev_picture = picture
        metrics["temporal_error"].append(error)
        metrics["seconds"].append(seconds)
        metrics["independent_error"].append(indep_error if compare_independent else None)
        store.write_json(METRICS_FILE, metrics)
        outs[i] = result
        outs.pop(i - reach, None)
        if progress is not None:
            progress(VideoProgress(i + 1, total, seconds, maker.loss, error))
        t0 = time.perf_counter()
    if store.count() == 0:
        raise SettingsError(f"{reader.path}: no frames could be decoded")
    return metrics


def _pass_flows(frames: list, store: FrameStore, motion_boundaries: bool, mesh) -> Callable[[int], dict]:
    """Flows both ways between neighbouring frames, computed once (one pair per device at a
    time) and kept in the work folder; returns ``flows(t) -> {"prev": (flow, mask), "next":
    (flow, mask)}`` for frame ``t`` (each key present where that neighbour exists)."""
    path = lambda t: store.folder / f"flows_{t:05d}.npz"  # the pair (t, t-1)
    missing = [t for t in range(1, len(frames)) if not path(t).is_file()]
    width = mesh.size if mesh is not None else 1
    for k in range(0, len(missing), width):
        ts = missing[k:k + width]
        fw, mask, bw, mask_back = flowlib.pair_flows([frames[t] for t in ts], [frames[t - 1] for t in ts],
                                                     motion_boundaries=motion_boundaries, mesh=mesh, both_ways=True)
        for n, t in enumerate(ts):
            def write(tmp, n=n):
                with open(tmp, "wb") as f:
                    np.savez(f, fw=fw[n], mask=mask[n], bw=bw[n], mask_back=mask_back[n])
            media.atomic_write(path(t), write)

    def flows(t: int) -> dict:
        out = {}
        if t > 0:
            with np.load(path(t)) as z:
                out["prev"] = (z["fw"], z["mask"])
        if t + 1 < len(frames):
            with np.load(path(t + 1)) as z:
                out["next"] = (z["bw"], z["mask_back"])
        return out
    return flows


def _later_passes(reader, store: FrameStore, maker, settings: VideoSettings, progress, inner_progress) -> dict:
    """Passes 2.. (Ruder et al. 2018, artistic-videos' multi-pass): even passes run backward,
    odd ones forward; frame ``t`` starts from its previous-pass result blended with the
    neighbour of the pass direction (already done in this pass) warped into it, where reliable,
    and is held to that warped neighbour by the temporal term. Resumable frame by frame."""
    frames = [np.asarray(f, np.float32) for f in reader]
    n = min(len(frames), store.count())
    frames = frames[:n]
    flows = _pass_flows(frames, store, settings.motion_boundaries, getattr(maker, "mesh", None))
    state = json.loads((store.folder / PASSES_FILE).read_text())
    total = n * settings.passes
    seconds_all = []
    for p in range(int(state["pass"]), settings.passes + 1):
        forward = p % 2 == 1
        order = list(range(n)) if forward else list(range(n - 1, -1, -1))
        done = int(state["done"]) if p == int(state["pass"]) else 0
        if done < n and media.read_settings(store.frame_path(order[done])).get("pass") == p:
            done += 1  # written, but interrupted before the count was
        for k, t in enumerate(order[done:], done):
            t0 = time.perf_counter()
            maker.index = t
            own = store.last_state(t)
            side = flows(t).get("prev" if forward else "next")
            if side is None:
                result = maker.refine(frames[t], own, None, inner_progress)
            else:
                fw, mask = side
                warped = np.asarray(flowlib.warp(store.last_state(t - 1 if forward else t + 1), fw))
                weight = settings.blend_weight * mask[..., None]
                result = maker.refine(frames[t], (own + weight * warped) / (1 + weight), (warped, mask), inner_progress)
            seconds = time.perf_counter() - t0
            seconds_all.append(seconds)
            store.save(t, _picture(maker, result), np.asarray(result, np.float32), meta={"pass": p})
            store.write_json(PASSES_FILE, {"pass": p, "done": k + 1})
            if progress is not None:
                progress(VideoProgress((p - 1) * n + k + 1, total, seconds, maker.loss, None, p))
        state = {"pass": p + 1, "done": 0}
    outs = [media.load_image(store.frame_path(t)) for t in range(n)]
    errors = [None] + [_pair_error(outs[t - 1], outs[t], *flows(t)["prev"]) for t in range(1, n)]
    metrics = {"temporal_error": errors, "seconds": seconds_all, "independent_error": [None] * n}
    store.write_json(METRICS_FILE, metrics)
    return metrics
