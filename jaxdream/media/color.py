"""Colour helpers for style transfer: YCbCr, luminance-only transfer, colour statistics matching.

All functions take and return float RGB arrays (..., H, W, 3) in 0..255 (NumPy).
"""

from __future__ import annotations

import numpy as np

from ..errors import SettingsError

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "original_colors", "match_color", "COLOR_TRANSFERS"]

#: ``--color-transfer`` modes.
COLOR_TRANSFERS = ("histogram", "mean-cov")

# ITU-R BT.601 full range (JPEG) YCbCr, in 0..255 units with chroma centred on 128.
_RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                          [-0.168736, -0.331264, 0.5],
                          [0.5, -0.418688, -0.081312]], np.float64)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
_OFFSET = np.array([0.0, 128.0, 128.0])


def rgb_to_ycbcr(rgb) -> np.ndarray:
    """RGB 0..255 -> YCbCr (BT.601 full range, as JPEG), float32."""
    return (np.asarray(rgb, np.float64) @ _RGB_TO_YCBCR.T + _OFFSET).astype(np.float32)


def ycbcr_to_rgb(ycbcr) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (not clipped), float32."""
    return ((np.asarray(ycbcr, np.float64) - _OFFSET) @ _YCBCR_TO_RGB.T).astype(np.float32)


def original_colors(generated, content) -> np.ndarray:
    """Keep the content's colour: the generated image's luminance with the content's chroma.

    neural-style's ``-original_colors 1`` (it uses YUV; YCbCr is the same idea, and what the
    tests measure). ``content`` is resized by the caller to the generated image's size.

    Returns:
        RGB 0..255, clipped.
    """
    generated = np.asarray(generated, np.float32)
    content = np.asarray(content, np.float32)
    if generated.shape[-3:] != content.shape[-3:]:
        raise ValueError(f"original_colors: generated {generated.shape} and content "
                         f"{content.shape} differ in size")
    y = rgb_to_ycbcr(generated)[..., :1]
    chroma = np.broadcast_to(rgb_to_ycbcr(content)[..., 1:], y.shape[:-1] + (2,))
    return np.clip(ycbcr_to_rgb(np.concatenate([y, chroma], axis=-1)), 0, 255)


def _sqrtm(cov: np.ndarray, inverse: bool = False) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-6)
    return (vecs * (vals ** (-0.5 if inverse else 0.5))) @ vecs.T


def match_color(source, target, mode: str = "mean-cov") -> np.ndarray:
    """Recolour ``source`` so its colour statistics match ``target``'s.

    Style transfer uses it to give the style image the content's colours before optimising
    (Gatys et al. 2016, "Preserving colour in neural artistic style transfer").

    Args:
        source: RGB image to recolour, (H, W, 3), 0..255.
        target: RGB image whose statistics to take, (h, w, 3), any size.
        mode: ``mean-cov``: the affine map ``x -> A (x - mu_s) + mu_t`` with
            ``A = Cov_t^(1/2) Cov_s^(-1/2)`` (symmetric square roots), which gives the result
            the target's mean and covariance; ``histogram``: per-channel histogram
            matching (quantile mapping), which gives each channel the target's distribution.

    Returns:
        float32 RGB, clipped to 0..255.

    Raises:
        SettingsError: unknown mode.
    """
    src = np.asarray(source, np.float64)
    tgt = np.asarray(target, np.float64)
    flat_s, flat_t = src.reshape(-1, 3), tgt.reshape(-1, 3)
    if mode == "mean-cov":
        mu_s, mu_t = flat_s.mean(0), flat_t.mean(0)
        a = _sqrtm(np.cov(flat_t, rowvar=False, bias=True)) @ _sqrtm(
            np.cov(flat_s, rowvar=False, bias=True), inverse=True)
        out = (flat_s - mu_s) @ a.T + mu_t
    elif mode == "histogram":
        out = np.empty_like(flat_s)
        for c in range(3):
            order = np.argsort(flat_s[:, c], kind="stable")
            quantiles = (np.arange(len(order)) + 0.5) / len(order)
            sorted_t = np.sort(flat_t[:, c])
            positions = (np.arange(len(sorted_t)) + 0.5) / len(sorted_t)
            out[order, c] = np.interp(quantiles, positions, sorted_t)
    else:
        raise SettingsError(f"unknown colour transfer '{mode}'; use one of "
                            f"{', '.join(COLOR_TRANSFERS)}")
    return np.clip(out.reshape(src.shape), 0, 255).astype(np.float32)
