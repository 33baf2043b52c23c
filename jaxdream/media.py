"""Image reading and writing (Pillow), with atomic saves and run settings in PNG text chunks.

Images in jaxdream are float32 RGB arrays of shape (H, W, 3) in 0..255.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Mapping, Sequence

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
        from .memory import check_pixels
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
    from .weights.store import file_hash
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
    return None


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


def _temp_prefix(path: Path) -> str:
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
                      and (any_name or p.name.startswith(_temp_prefix(path)))]
    except OSError:
        return removed
    for candidate in candidates:
        pid = candidate.name.split(marker, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
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
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_temp_prefix(path)}{os.getpid()}-", suffix=path.suffix)
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


# ----------------------------------------------------------------------------------------------
# animations and video

#: Suffixes :func:`write_video` writes.
VIDEO_FORMATS = {".mp4": "mp4", ".gif": "gif"}


def check_animation_output(path: str | os.PathLike,
                           inputs: Sequence[str | os.PathLike] = ()) -> tuple[Path, str]:
    """Validate where an animation goes: ``.mp4``, ``.gif`` or a folder (given with a trailing
    slash or no suffix). Returns (path, kind) with kind ``mp4``, ``gif`` or ``frames``.

    Raises:
        MediaError: unknown suffix, a parent that is missing or a file, a place where files
        cannot be created (tried), an output that is one of ``inputs``.
    """
    text = os.fspath(path)
    p = Path(text)
    if p.is_dir() and p.suffix.lower() in VIDEO_FORMATS and not text.endswith(("/", os.sep)):
        raise MediaError(f"{p}: is a folder; name a {p.suffix} file, or give the folder as {p}/ for PNG frames")
    if text.endswith(("/", os.sep)) or (p.suffix == "" and not p.is_file()) or p.is_dir():
        if p.exists() and not p.is_dir():
            raise MediaError(f"{p}: exists and is not a folder")
        parent = p if p.is_dir() else (p.parent if str(p.parent) else Path("."))
        problem = _folder_problem(parent)
        if problem:
            raise MediaError(f"{p}: cannot write: {problem}")
        return p, "frames"
    check_output(p, VIDEO_FORMATS, inputs)
    return p, VIDEO_FORMATS[p.suffix.lower()]


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


def write_video(path: str | os.PathLike, frames, fps: float, audio_from: str | None = None,
                audio_start: float = 0.0) -> Path:
    """Encode an iterable of (H, W, 3) frames to MP4 (H.264, yuv420p) or GIF, atomically.

    Frames are consumed one at a time (an MP4 streams through ffmpeg; a GIF keeps only
    palette-indexed frames). Odd frame sizes are cropped by one pixel for yuv420p.

    Args:
        path: ``.mp4`` or ``.gif``.
        frames: iterable of RGB frames (uint8 or float 0..255).
        fps: frames per second.
        audio_from: a video whose audio stream is copied into an MP4 (if it has one).
        audio_start: where in ``audio_from`` the copied audio starts, in seconds.

    Raises:
        MediaError: unknown suffix, unwritable folder, no frames, encoder failure.
    """
    path, kind = check_animation_output(path)
    if kind == "frames":
        raise MediaError(f"{path}: write_video needs a .mp4 or .gif name")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise MediaError(f"{path}: no frames to write")

    def write(tmp: str) -> None:
        if kind == "gif":
            def palette(frame):
                return Image.fromarray(to_uint8(frame)).quantize(256, method=Image.Quantize.MEDIANCUT)
            head = palette(first)
            head.save(tmp, format="GIF", save_all=True, append_images=(palette(f) for f in frames),
                      duration=round(1000 / fps), loop=0, optimize=False)
            return
        _write_mp4(tmp, first, frames, fps, audio_from, audio_start)

    atomic_write(path, write)
    return path


def _write_mp4(tmp: str, first: np.ndarray, frames, fps: float, audio_from: str | None,
               audio_start: float = 0.0) -> None:
    import imageio_ffmpeg
    first = _even(to_uint8(first))
    h, w = first.shape[:2]
    target = tmp if audio_from is None else tmp + ".video.mp4"
    writer = imageio_ffmpeg.write_frames(
        target, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
        macro_block_size=1, output_params=["-crf", "18", "-preset", "medium", "-movflags", "+faststart"],
        ffmpeg_log_level="error")
    writer.send(None)
    try:
        writer.send(np.ascontiguousarray(first))
        for frame in frames:
            writer.send(np.ascontiguousarray(_even(to_uint8(frame))[:h, :w]))
    finally:
        writer.close()
    if audio_from is not None:
        try:
            _mux_audio(target, audio_from, tmp, audio_start)
        finally:
            if os.path.exists(target):
                os.unlink(target)


def has_audio(path: str | os.PathLike) -> bool:
    """Whether a media file has an audio stream (asks ffmpeg)."""
    import subprocess

    import imageio_ffmpeg
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", os.fspath(path)],
                            capture_output=True, text=True)
    return any("Audio:" in line for line in result.stderr.splitlines() if "Stream #" in line)


def _mux_audio(video: str, audio_source: str, out: str, audio_start: float = 0.0) -> None:
    import subprocess

    import imageio_ffmpeg
    if not has_audio(audio_source):
        os.replace(video, out)
        return
    seek = ["-ss", f"{audio_start:.6f}"] if audio_start > 0 else []
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", video, *seek, "-i", audio_source,
           "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "copy", "-shortest",
           "-movflags", "+faststart", "-f", "mp4", out]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        # the audio codec may not fit MP4 as is: re-encode it to AAC
        cmd[cmd.index("-c:a") + 1] = "aac"
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise MediaError(f"{audio_source}: could not copy the audio track "
                         f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'ffmpeg failed'})")


class VideoReader:
    """Frames of any clip ffmpeg reads, one at a time, as float32 RGB (H, W, 3) 0..255.

    Args:
        path: the video file.
        size: if given, frames are scaled so the longest side has this many pixels.
        start: first frame index to yield; end: one past the last (None: to the end).

    Attributes:
        fps, frame_size (w, h of the yielded frames), source_size, has_audio, frames (count
        in the requested range, from ffmpeg's count), meta (ffmpeg's metadata).

    Raises:
        MediaError: missing file, not a video, no frames.
    """

    def __init__(self, path: str | os.PathLike, size: int | None = None, start: int = 0,
                 end: int | None = None):
        import imageio_ffmpeg
        self.path = Path(path)
        if self.path.is_dir():
            raise MediaError(f"{self.path}: is a folder, not a video file")
        if not self.path.is_file():
            raise MediaError(f"{self.path}: file not found")
        try:
            gen = imageio_ffmpeg.read_frames(str(self.path))
            self.meta = next(gen)
            gen.close()
            total, _ = imageio_ffmpeg.count_frames_and_secs(str(self.path))
        except (OSError, RuntimeError, StopIteration, ValueError):
            if has_audio(self.path):
                raise MediaError(f"{self.path}: the file has no frames (an audio stream only)") from None
            raise MediaError(f"{self.path}: not a video file ffmpeg can read (or a truncated one whose "
                             f"index is missing)") from None
        if total < 1 or not self.meta.get("fps"):
            raise MediaError(f"{self.path}: the video has no frames")
        if total == 1:  # ffmpeg reads a photo as a one-frame "video"
            raise MediaError(f"{self.path}: a single still frame, not a video (for one image use "
                             f"'jaxdream style' or 'jaxdream dream')")
        if start < 0 or (end is not None and end <= start):
            raise SettingsError(f"frame range {start}..{end} is empty")
        self.fps = float(self.meta["fps"])
        listed = round(float(self.meta.get("duration") or 0) * self.fps)
        truncated = listed > total + 1  # the container promises more frames than can be read
        if start >= total:
            what = f"only {total} of the {listed} frames its container lists can be read (a truncated " \
                   f"file?)" if truncated else f"has {total} frames"
            raise SettingsError(f"{self.path} {what}; --start {start} is past the end")
        if truncated and (end is None or end > total):
            warnings.warn(f"{self.path}: only {total} of the {listed} frames its container lists can be "
                          f"read (a truncated file?); using frames {start}..{total - 1}")
        self.source_size = tuple(self.meta["source_size"])
        self.has_audio = bool(self.meta.get("audio_codec"))
        self.start, self.end = start, min(end, total) if end is not None else total
        self.frames = self.end - self.start
        w, h = self.source_size
        self.size = size
        self.frame_size = (w, h) if size is None else fit_size(h, w, size)[::-1]

    def __iter__(self):
        import imageio_ffmpeg
        w, h = self.source_size
        gen = imageio_ffmpeg.read_frames(str(self.path))
        try:
            next(gen)
            for i, buf in enumerate(gen):
                if i >= self.end:
                    break
                if i < self.start:
                    continue
                frame = np.frombuffer(buf, np.uint8).reshape(h, w, 3).astype(np.float32)
                if self.size is not None:
                    frame = resize(frame, self.frame_size[::-1])
                yield frame
        finally:
            gen.close()
