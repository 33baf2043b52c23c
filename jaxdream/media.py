"""Image reading and writing (Pillow), with atomic saves and run settings in PNG text chunks.

Images in jaxdream are float32 RGB arrays of shape (H, W, 3) in 0..255.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import MediaError, SettingsError

#: File suffixes ``save_image`` writes, mapped to Pillow format names.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                 ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 1.0
        arr = np.repeat((arr * scale)[..., None], 3, axis=-1)
        return np.clip(arr, 0, 255).astype(np.float32)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # composite on white so transparent areas do not turn black
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def resize(image: np.ndarray, size: tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """Resize an (H, W, C) float image to (height, width) with Pillow's ``bicubic`` or ``bilinear``."""
    height, width = size
    if (height, width) == image.shape[:2]:
        return image.astype(np.float32)
    channels = [Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), mode="F")
                .resize((width, height), Image.Resampling[method.upper()]) for c in range(image.shape[-1])]
    return np.stack([np.asarray(c) for c in channels], axis=-1).astype(np.float32)


def fit_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """(h, w) scaled so the longer side is ``longest``, aspect kept, at least 1 px each."""
    if longest < 1:
        raise SettingsError(f"size must be a positive number of pixels, got {longest}")
    scale = longest / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def load_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read any image Pillow reads as float32 RGB (H, W, 3) in 0..255.

    EXIF orientation is applied, alpha is composited on white, grayscale and 16-bit images are
    converted.

    Args:
        path: the image file.
        size: if given, resize so the longest side has this many pixels.

    Raises:
        MediaError: missing, unreadable or corrupt file.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            arr = _to_rgb_array(img)
    except FileNotFoundError:
        raise MediaError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MediaError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise MediaError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise MediaError(f"{path}: cannot read image ({e})") from None
    if size is not None:
        arr = resize(arr, fit_size(*arr.shape[:2], size))
    return arr


def to_uint8(image) -> np.ndarray:
    """Round and clip a 0..255 float image to uint8."""
    return np.clip(np.rint(np.asarray(image, dtype=np.float32)), 0, 255).astype(np.uint8)


def check_output(path: str | os.PathLike, suffixes: Mapping[str, object] = IMAGE_FORMATS) -> Path:
    """Validate an output path before work starts: known suffix, writable folder.

    Raises:
        MediaError: unknown suffix or a folder that does not exist or cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise MediaError(f"{path}: unknown output type '{suffix or '(none)'}'; use one of "
                         f"{', '.join(sorted(suffixes))}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MediaError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise MediaError(f"{path}: cannot write to folder {folder}")
    return path


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path``; never leave half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".",
                               prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise MediaError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_image(path: str | os.PathLike, image, settings: Mapping | None = None) -> Path:
    """Write an RGB image atomically; PNG files carry ``settings`` as text chunks.

    Each setting becomes a ``jaxdream:<name>`` text chunk (JSON-encoded value) and the whole
    mapping is also stored as ``jaxdream`` (JSON), readable with :func:`read_settings`.

    Raises:
        MediaError: unknown suffix, unwritable folder.
    """
    path = check_output(path)
    fmt = IMAGE_FORMATS[path.suffix.lower()]
    img = Image.fromarray(to_uint8(image), mode="RGB")
    kwargs = {}
    if fmt == "PNG" and settings:
        info = PngImagePlugin.PngInfo()
        info.add_text("jaxdream", json.dumps(dict(settings), sort_keys=True, default=str))
        for key, value in settings.items():
            info.add_text(f"jaxdream:{key}", json.dumps(value, default=str))
        kwargs["pnginfo"] = info
    elif fmt == "JPEG":
        kwargs["quality"] = 95
    atomic_write(path, lambda tmp: img.save(tmp, format=fmt, **kwargs))
    return path


def read_settings(path: str | os.PathLike) -> dict:
    """The run settings stored in a PNG by :func:`save_image` ({} if none)."""
    try:
        with Image.open(path) as img:
            text = getattr(img, "text", {}) or img.info
            return json.loads(text.get("jaxdream", "{}"))
    except (OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot read settings ({e})") from None
