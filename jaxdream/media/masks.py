"""Masks: grey-level pictures that weight positions of an image (white 1, black 0).

Style transfer uses them for Gatys et al.'s spatial control (a region per style, a weighted
content term, the part of a style image its target comes from); DeepDream to dream only where
a mask is white. A mask must have the aspect ratio of the image it belongs to (within a pixel
of rounding); it is resized to every resolution it is used at. In video mode a mask is one
image for every frame or a video of masks (:class:`MaskFrames`), whose frame k weights the
clip's frame k.

Example:
    >>> import numpy as np
    >>> m = load_mask(np.ones((4, 6)), "mask")
    >>> resize_mask(m, (2, 3)).shape
    (2, 3)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import images as media
from .video import VideoReader
from ..errors import MediaError, SettingsError

__all__ = ["load_mask", "check_aspect", "resize_mask", "mask_name", "check_not_empty", "is_video",
           "MaskFrames", "mask_hashes", "mask_list",
           "check_region_count"]

#: Suffixes of a mask that is a video of masks (any clip ffmpeg reads; these are the ones
#: recognised by name).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")

#: ITU-R BT.601 luma weights: how an RGB mask becomes grey levels (Pillow's ``convert("L")``).
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def mask_name(mask, index: int | None = None, what: str = "mask") -> str:
    """How errors name a mask: ``mask 2 (ground.png)``, or ``mask 2`` for an array."""
    label = what if index is None else f"{what} {index}"
    return f"{label} ({Path(mask).name})" if isinstance(mask, (str, os.PathLike)) else label


def load_mask(mask, what: str = "mask") -> np.ndarray:
    """An (H, W) float32 mask in 0..1 from an image file (its grey levels / 255) or an array.

    Args:
        mask: a path, or an (H, W) or (H, W, 1|3) array of weights in 0..1.
        what: the mask's name in error messages.

    Raises:
        MediaError: the file cannot be read.
        SettingsError: an array of the wrong shape, or values outside 0..1.
    """
    if is_video(mask):
        raise SettingsError(f"{what} is a video: a video of masks is for 'jaxdream video' (one mask "
                            f"per frame); give a picture here")
    if isinstance(mask, (str, os.PathLike)):
        try:
            rgb = media.load_image(mask)
        except MediaError as e:  # the message names the file; say what it was for
            raise MediaError(f"{what.split(' (')[0]}: {e}") from None
        return np.clip(rgb @ _LUMA / 255.0, 0.0, 1.0).astype(np.float32)
    arr = np.asarray(mask, np.float32)
    if arr.ndim == 3 and arr.shape[-1] in (1, 3):
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr @ _LUMA
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise SettingsError(f"{what}: expected an (H, W) array of weights, got shape {np.shape(mask)}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise SettingsError(f"{what}: weights must be numbers in 0..1")
    return arr


def check_aspect(mask: np.ndarray, image_hw: tuple[int, int], what: str, image_what: str) -> None:
    """Refuse a mask whose aspect ratio is not the image's (a pixel of rounding allowed).

    Raises:
        SettingsError: naming both sizes and the size the mask could have had.
    """
    mh, mw = mask.shape[:2]
    h, w = image_hw
    if abs(mh * w - mw * h) <= (w + h):  # mh = s*h + e1, mw = s*w + e2 with |e| < 1
        return
    eh, ew = media.fit_size(h, w, max(mh, mw))
    raise SettingsError(f"{what} is {mw}x{mh} (aspect {mw / mh:.3g}); expected the aspect ratio of "
                        f"{image_what}, {w}x{h} ({w / h:.3g}), e.g. {ew}x{eh}")


def check_not_empty(mask: np.ndarray, what: str, consequence: str) -> None:
    """Refuse an all-black mask: ``consequence`` says what it would mean."""
    if not np.any(mask > 0):
        raise SettingsError(f"{what} is empty (all black): {consequence}")


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A mask resized to (h, w) with Pillow's bilinear filter (which averages over the area it
    covers when shrinking, so a small region never vanishes), clipped to 0..1."""
    if tuple(hw) == mask.shape:
        return mask.astype(np.float32)
    return np.clip(media.resize(mask[..., None], tuple(hw), "bilinear")[..., 0], 0.0, 1.0)


def mask_list(values) -> list:
    """One mask or a sequence of them (None: none) as a list."""
    if values is None:
        return []
    if isinstance(values, (str, os.PathLike)) or (isinstance(values, np.ndarray) and values.ndim in (2, 3)):
        return [values]
    return list(values)


def check_region_count(regions: list, styles: int) -> None:
    """One region mask per style image, or none."""
    if regions and len(regions) != styles:
        raise SettingsError(f"{len(regions)} masks for {styles} style image{'s' if styles > 1 else ''}: give "
                            f"one --mask per --style, in the same order")


def is_video(mask) -> bool:
    """Whether ``mask`` names a video of masks (by its suffix)."""
    return isinstance(mask, (str, os.PathLike)) and Path(mask).suffix.lower() in VIDEO_SUFFIXES


class MaskFrames:
    """The mask of every frame of a clip: one mask (a path or array) for all frames, or a video
    of masks whose frame ``start + k`` weights the clip's frame ``start + k`` (the same range of
    frames as the clip, so a mask video made for the whole clip fits any ``--start``).

    Args:
        mask: an image path, an (H, W) array of weights in 0..1, or a video path.
        what: the mask's name in error messages.
        empty: if given, what an all-black frame would mean; an all-black frame is then refused
            (raised by :meth:`check`, naming the frame).
    """

    def __init__(self, mask, what: str, empty: str | None = None):
        self.source, self.what, self.empty = mask, what, empty
        self.video = is_video(mask)
        self._still = None if self.video else load_mask(mask, what)
        self._frames: list[np.ndarray] = []

    def check(self, image_hw: tuple[int, int], frames: range | None = None, image_what: str = "the frames") -> None:
        """Read the masks of ``frames`` (the clip's frame indices) and refuse a wrong aspect ratio,
        too few frames or an empty one, in one line each."""
        if not self.video:
            check_aspect(self._still, image_hw, self.what, image_what)
            if self.empty:
                check_not_empty(self._still, self.what, self.empty)
            return
        frames = frames if frames is not None else range(1)
        try:
            reader = VideoReader(self.source, start=frames.start)
        except (MediaError, SettingsError) as e:
            raise type(e)(f"{self.what.split(' (')[0]}: {e}") from None
        if reader.frames < len(frames):
            raise SettingsError(f"{self.what} has {reader.frames} frames from frame {frames.start}; the clip's "
                                f"range has {len(frames)} (one mask frame per clip frame)")
        check_aspect(np.broadcast_to(np.float32(0), reader.frame_size[::-1]), image_hw, self.what, image_what)
        grey = []
        for k, frame in enumerate(reader):
            if k >= len(frames):
                break
            level = np.rint(frame @ _LUMA).clip(0, 255).astype(np.uint8)
            if self.empty and not level.any():
                raise SettingsError(f"{self.what} frame {frames.start + k} is empty (all black): {self.empty}")
            grey.append(level)
        self._frames = grey

    def at(self, index: int) -> np.ndarray:
        """The (H, W) mask of the clip's frame ``index`` (counted from the range's start)."""
        if not self.video:
            return self._still
        if not self._frames:
            raise SettingsError(f"{self.what}: call check() with the clip's frame range first")
        return self._frames[min(index, len(self._frames) - 1)].astype(np.float32) / 255.0


def mask_hashes(settings: dict, keys=("mask", "masks", "content_mask", "style_masks")) -> dict:
    """``{key_sha256: hash or list of hashes}`` of the mask files a run's settings name (a
    resumed run compares these, not the paths as typed)."""
    out = {}
    for key in keys:
        value = settings.get(key)
        if value is None:
            continue
        out[f"{key}_sha256"] = ([media.file_sha256(m) for m in value] if isinstance(value, (list, tuple))
                                else media.file_sha256(value))
    return out
