"""Image reading and writing (Pillow), with atomic saves and run settings in PNG text chunks.

Images in jaxdream are float32 RGB arrays of shape (H, W, 3) in 0..255.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..errors import MediaError, SettingsError
from ..runtime.memory import check_pixels
from ..weights.store import file_hash

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


def _open_errors(path: Path):
    """Map Pillow's and the OS's errors on opening ``path`` to one-line MediaErrors."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except FileNotFoundError:
            raise MediaError(f"{path}: file not found") from None
        except IsADirectoryError:
            raise MediaError(f"{path}: is a folder, not an image") from None
        except UnidentifiedImageError:
            raise MediaError(f"{path}: not an image file Pillow can read") from None
        except Image.DecompressionBombError as e:
            raise MediaError(f"{path}: refused as a decompression bomb ({e})") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise MediaError(f"{path}: cannot read image ({e})") from None
    return guard()


def image_shape(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file as :func:`load_image` returns it (EXIF rotation
    applied), read from its header without decoding the pixels."""
    path = Path(path)
    with _open_errors(path), Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # orientations that swap the axes
            w, h = h, w
    if w < 1 or h < 1:
        raise MediaError(f"{path}: the image is empty ({w}x{h})")
    return h, w


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
    with _open_errors(path), Image.open(path) as img:
        img.load()
        arr = _to_rgb_array(img)
    if arr.size == 0:
        raise MediaError(f"{path}: the image is empty ({arr.shape[1]}x{arr.shape[0]})")
    if size is not None:
        h, w = fit_size(*arr.shape[:2], size)
        check_pixels(h, w, f"{path} at size {size}")
        arr = resize(arr, (h, w))
    return arr


def file_sha256(path: str | os.PathLike | None) -> str | None:
    """SHA-256 of a file's content (None for None): how a resumed run recognises its inputs
    whatever path they are given by."""
    if path is None or not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        return None
    st = os.stat(path)
    return _sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Cached by (path, size, mtime): a resumed run hashes each input once."""
    return file_hash(path, "sha256")


def to_uint8(image) -> np.ndarray:
    """Round and clip a 0..255 float image to uint8."""
    return np.clip(np.rint(np.asarray(image, dtype=np.float32)), 0, 255).astype(np.uint8)


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (None if they can), found by trying."""
    if not folder.exists():
        ancestor = folder
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            return f"{ancestor} is a file, not a folder"
        return f"folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{TEMP_TAG}-probe-{os.getpid()}-")
    except OSError as e:
        return f"cannot create files in {folder} ({e.strerror or e})"
    os.close(fd)
    os.unlink(probe)
    free = _free_bytes(folder)
    if free is not None and free < MIN_FREE_BYTES:  # an empty file fits on a full disk; a picture does not
        return f"no space left in {folder} ({free // 1024} KiB free)"
    return None


#: Below this much free space no output can be written (a full disk still creates empty files).
MIN_FREE_BYTES = 1 << 20


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_space(path: str | os.PathLike, need: int, what: str) -> None:
    """Before work: ``need`` bytes (an estimate of what the run writes) must be free where
    ``path`` (a file or a folder to be) goes.

    Raises:
        MediaError: one line with the estimate and what is free.
    """
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = _free_bytes(folder if folder.is_dir() else folder.parent)
    if free is not None and free < need:
        raise MediaError(f"{path}: {what} writes about {_mb(need)} and {_mb(free)} is free there; "
                         f"free some space or write elsewhere")


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{max(n, 0) // 1024} KiB"


def check_output(path: str | os.PathLike, suffixes: Mapping[str, object] = IMAGE_FORMATS,
                 inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Validate an output path before work starts: known suffix, a folder files can be created
    in (tried, not guessed from permission bits), not a folder itself, not one of ``inputs``.

    Temp files that a killed earlier run left for this output are removed.

    Raises:
        MediaError: one line saying what is wrong.
    """
    path = _known_suffix(Path(path), suffixes)
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not a file name")
    folder = path.parent if str(path.parent) else Path(".")
    problem = _folder_problem(folder)
    if problem:
        raise MediaError(f"{path}: cannot write: {problem}")
    check_not_input(path, inputs)
    remove_stale_temps(path)
    return path


def _known_suffix(path: Path, suffixes: Mapping[str, object]) -> Path:
    if path.suffix.lower() not in suffixes:
        raise MediaError(f"{path}: unknown output type '{path.suffix.lower() or '(none)'}'; use one of "
                         f"{', '.join(sorted(suffixes))}")
    return path


def check_not_input(path: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an output that is one of the input files (inputs are never overwritten)."""
    for source in inputs:
        if source is None or not isinstance(source, (str, os.PathLike)):
            continue
        try:
            same = path.exists() and os.path.samefile(path, source)
        except OSError:
            same = False
        if same:
            raise MediaError(f"{path}: is an input of this run; choose another output name")


#: Marks jaxdream's temporary files: ``.NAME.jaxdream-tmp-PID-XXXX.SUFFIX`` beside NAME.
TEMP_TAG = "jaxdream-tmp"


def temp_prefix(path: Path) -> str:
    return f".{path.name}.{TEMP_TAG}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(path: str | os.PathLike, any_name: bool = False) -> list[Path]:
    """Remove temp files for ``path`` (for any file in the folder ``path`` with ``any_name``)
    whose writing process no longer runs (a SIGKILL, a power cut); those of a live process (a
    concurrent run) are left alone. Returns what was removed."""
    path = Path(path)
    folder = path if any_name else (path.parent if str(path.parent) else Path("."))
    marker = f".{TEMP_TAG}-"
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(".") and marker in p.name
                      and (any_name or p.name.startswith(temp_prefix(path)))]
    except OSError:
        return removed
    for candidate in candidates:
        pid = candidate.name.split(marker, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
                if candidate.is_dir() and not candidate.is_symlink():  # a video's frames for ffmpeg
                    shutil.rmtree(candidate)
                else:
                    candidate.unlink()
                removed.append(candidate)
            except OSError:
                pass
    return removed


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path``; never leave half a file.

    The temp file sits beside ``path`` as ``.NAME.jaxdream-tmp-PID-XXXX.SUFFIX``, so that a run
    killed without a chance to clean up (SIGKILL) leaves a file the next run recognises and
    removes (:func:`remove_stale_temps`).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{temp_prefix(path)}{os.getpid()}-", suffix=path.suffix)
    except OSError as e:
        raise MediaError(f"{path}: cannot write: {_folder_problem(folder) or (e.strerror or e)}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise MediaError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        for leftover in (tmp, tmp + ".video.mp4"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def save_image(path: str | os.PathLike, image, settings: Mapping | None = None) -> Path:
    """Write an RGB image atomically; PNG files carry ``settings`` as text chunks.

    Each setting becomes a ``jaxdream:<name>`` text chunk (JSON-encoded value) and the whole
    mapping is also stored as ``jaxdream`` (JSON), readable with :func:`read_settings`.

    Only the suffix is checked here (and stale temps of this name removed): the commands check
    where their outputs go once, before any work (:func:`check_output`), and a folder that
    cannot be written fails in :func:`atomic_write` with the same one-line reason, so saving
    frame after frame does not probe the folder every time.

    Raises:
        MediaError: unknown suffix, unwritable folder.
    """
    path = _known_suffix(Path(path), IMAGE_FORMATS)
    remove_stale_temps(path)
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
