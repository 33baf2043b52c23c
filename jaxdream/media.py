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


# ----------------------------------------------------------------------------------------------
# animations and video

#: Suffixes :func:`write_video` writes.
VIDEO_FORMATS = {".mp4": "mp4", ".gif": "gif"}


def check_animation_output(path: str | os.PathLike) -> tuple[Path, str]:
    """Validate where an animation goes: ``.mp4``, ``.gif`` or a folder (given with a trailing
    slash or no suffix). Returns (path, kind) with kind ``mp4``, ``gif`` or ``frames``.

    Raises:
        MediaError: unknown suffix, missing or unwritable parent folder.
    """
    text = os.fspath(path)
    p = Path(text)
    if text.endswith(("/", os.sep)) or (p.suffix == "" and not p.is_file()) or p.is_dir():
        parent = p.parent if str(p.parent) else Path(".")
        if p.exists() and not p.is_dir():
            raise MediaError(f"{p}: exists and is not a folder")
        if not parent.is_dir():
            raise MediaError(f"{p}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK) or (p.is_dir() and not os.access(p, os.W_OK)):
            raise MediaError(f"{p}: cannot write there")
        return p, "frames"
    check_output(p, VIDEO_FORMATS)
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
            raise MediaError(f"{self.path}: not a video file ffmpeg can read") from None
        if total < 1 or not self.meta.get("fps"):
            raise MediaError(f"{self.path}: the video has no frames")
        if total == 1:  # ffmpeg reads a photo as a one-frame "video"
            raise MediaError(f"{self.path}: a single still frame, not a video (for one image use "
                             f"'jaxdream style' or 'jaxdream dream')")
        if start < 0 or (end is not None and end <= start):
            raise SettingsError(f"frame range {start}..{end} is empty")
        if start >= total:
            raise SettingsError(f"{self.path} has {total} frames; --start {start} is past the end")
        self.fps = float(self.meta["fps"])
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
