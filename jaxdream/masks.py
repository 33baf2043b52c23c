"""Masks: grey-level pictures that weight positions of an image (white 1, black 0).

Style transfer uses them for Gatys et al.'s spatial control (a region per style, a weighted
content term, the part of a style image its target comes from); DeepDream to dream only where
a mask is white. A mask must have the aspect ratio of the image it belongs to (within a pixel
of rounding); it is resized to every resolution it is used at.

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

from . import media
from .errors import MediaError, SettingsError

__all__ = ["load_mask", "check_aspect", "resize_mask", "mask_name", "check_not_empty"]

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
