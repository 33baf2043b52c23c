"""Video and animation files through ffmpeg: probing a clip, reading its frames with their
timestamps, writing MP4 (with the source's audio) and GIF."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import shutil
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import MediaError, SettingsError
from ..runtime.memory import check_pixels
from .images import _folder_problem, atomic_write, check_output, fit_size, resize, to_uint8

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
        cannot be created (tried), an output that is one of ``inputs``; for an MP4, no usable
        ffmpeg (:func:`check_ffmpeg`).
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
    if VIDEO_FORMATS[p.suffix.lower()] == "mp4":
        _ffmpeg()  # an MP4 needs a working ffmpeg: found out before any frame is made
    return p, VIDEO_FORMATS[p.suffix.lower()]


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


#: The oldest ffmpeg the video path works with: the probe passes every frame through with its
#: own timestamp (``-fps_mode passthrough``, ffmpeg 5.1's option, and ``-enc_time_base`` set to
#: the demuxer's time base, see :func:`_demux_time_base`). imageio-ffmpeg 0.6.0 is the oldest
#: release bundling one (7.0; 0.4.9-0.5.1 bundle 4.2.2).
MIN_FFMPEG = (5, 1)
_VERSION = re.compile(r"ffmpeg version (?:n)?(\d+)\.(\d+)")


def _ffmpeg() -> str:
    """The ffmpeg binary (imageio-ffmpeg's, or ``IMAGEIO_FFMPEG_EXE``), checked once."""
    import imageio_ffmpeg
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:  # none bundled for this platform and none on the PATH
        raise MediaError(f"no ffmpeg found ({e}); pip install -U imageio-ffmpeg, or set IMAGEIO_FFMPEG_EXE "
                         f"to an ffmpeg {MIN_FFMPEG[0]}.{MIN_FFMPEG[1]} or newer") from None
    return check_ffmpeg(exe)


@functools.lru_cache(maxsize=None)
def _version_line(exe: str) -> tuple[int, str]:
    """``exe -version``'s exit status and first line, asked once per binary.

    Raises:
        OSError, subprocess.SubprocessError: it does not run.
    """
    out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True, errors="replace",
                         timeout=60, stdin=subprocess.DEVNULL)
    return out.returncode, ((out.stdout or out.stderr or "").strip().splitlines() or [""])[0]


def _release(line: str) -> tuple[int, int] | None:
    """(major, minor) of an ffmpeg version line; None without a release number (a git snapshot)."""
    m = _VERSION.match(line)
    return (int(m.group(1)), int(m.group(2))) if m else None


@functools.lru_cache(maxsize=None)
def check_ffmpeg(exe: str) -> str:
    """``exe`` if it runs as ffmpeg :data:`MIN_FFMPEG` or newer (a build whose version line has
    no release number, such as a git snapshot, is taken as new); otherwise one error line naming
    the binary, its version and the minimum.

    Raises:
        MediaError: missing, not executable, not ffmpeg, or too old.
    """
    how = (f"pip install -U imageio-ffmpeg (0.6.0 or newer bundles one), or point IMAGEIO_FFMPEG_EXE at "
           f"ffmpeg {MIN_FFMPEG[0]}.{MIN_FFMPEG[1]} or newer")
    try:
        status, first = _version_line(exe)
    except (OSError, subprocess.SubprocessError) as e:
        raise MediaError(f"ffmpeg {exe} cannot run ({e.strerror if isinstance(e, OSError) and e.strerror else e}); "
                         f"{how}") from None
    if status != 0 or not first.startswith("ffmpeg version"):
        raise MediaError(f"{exe} is not ffmpeg (its -version printed {first[:60]!r} and exited "
                         f"{status}); {how}" if first else f"{exe} is not ffmpeg; {how}")
    release = _release(first)
    if release is not None and release < MIN_FFMPEG:
        raise MediaError(f"ffmpeg {release[0]}.{release[1]} at {exe} is too old: jaxdream's video needs "
                         f"ffmpeg {MIN_FFMPEG[0]}.{MIN_FFMPEG[1]} or newer; {how}")
    return exe


def ffmpeg_version(exe: str) -> tuple[int, int] | None:
    """(major, minor) of an ffmpeg binary; None when its version line has no release number (a
    git snapshot) or it does not run."""
    try:
        return _release(_version_line(exe)[1])
    except (OSError, subprocess.SubprocessError):
        return None


def _demux_time_base(exe: str) -> str:
    """The ``-enc_time_base`` value that keeps each frame's demuxed timestamp: ``demux`` from
    ffmpeg 6.1 on (where it was added), ``-1`` before. Tried: 5.1 refuses ``demux`` ("Invalid
    time base"), 7.0 takes both (``-1`` as deprecated), 9.0 refuses ``-1``."""
    version = ffmpeg_version(exe)
    return "-1" if version is not None and version < (6, 1) else "demux"


def _last_line(stderr: str, default: str = "ffmpeg failed") -> str:
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    return lines[-1] if lines else default


def _rate(value) -> Fraction:
    """A frame rate as an exact fraction (a float such as 29.97 becomes 2997/100)."""
    return value if isinstance(value, Fraction) else Fraction(value).limit_denominator(1001)


# ----------------------------------------------------------------------------------------------
# probing (ffmpeg only: no ffprobe ships with imageio-ffmpeg)


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a file, as ``ffmpeg -i`` describes it."""

    codec: str
    channels: int | None       # None for a layout ffmpeg names in a way not known here
    layout: str                # ffmpeg's name: mono, stereo, 5.1, 7.1(wide), 6 channels, ...
    sample_rate: int | None
    bit_rate: int | None       # bits per second, None when ffmpeg does not say


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns by decoding a clip's first video stream once.

    Attributes:
        width, height: size of the decoded frames (a rotation in the metadata applied, as
            the frames are read).
        sar: sample (pixel) aspect ratio; 1 for square pixels.
        time_base: unit of ``pts``, in seconds.
        pts: presentation time of every frame that decodes, in order (a variable frame rate
            shows as uneven steps).
        last_duration: how long the last frame is shown, in ``time_base`` units.
        fps: the frame rate the container states (0 if none).
        listed_duration: the duration the container states, seconds (0 if none).
        start_time: the file's start time, seconds (where ``-ss 0`` lands).
        audio: the first audio stream, or None.
    """

    width: int
    height: int
    sar: Fraction
    time_base: Fraction
    pts: tuple[int, ...]
    last_duration: int
    fps: float
    listed_duration: float
    start_time: float
    audio: AudioInfo | None

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) with square pixels: the longer axis is stretched, none is shrunk."""
        if self.sar > 1:
            return max(1, round(self.width * self.sar)), self.height
        if 0 < self.sar < 1:
            return self.width, max(1, round(self.height / self.sar))
        return self.width, self.height


#: Channel counts of ffmpeg's named layouts that are not of the form ``5.1`` or ``N channels``.
_NAMED_LAYOUTS = {"mono": 1, "stereo": 2, "downmix": 2, "binaural": 2, "quad": 4, "hexagonal": 6,
                  "octagonal": 8, "cube": 8, "hexadecagonal": 16}


def layout_channels(layout: str) -> int | None:
    """Channels in an ffmpeg channel layout name: ``5.1`` -> 6, ``7.1(wide)`` -> 8, ``stereo`` -> 2,
    ``6 channels (FL+FR+...)`` -> 6; None for a name not known here."""
    base = layout.split("(")[0].strip().lower()
    if match := re.fullmatch(r"(\d+) channels?", base):
        return int(match.group(1))
    if base in _NAMED_LAYOUTS:
        return _NAMED_LAYOUTS[base]
    if re.fullmatch(r"\d+(\.\d+)+", base):
        return sum(int(part) for part in base.split("."))
    return None


def _fields(line: str, kind: str) -> list[str]:
    """The comma-separated fields after ``Video:``/``Audio:`` of a stream line (commas inside
    parentheses kept)."""
    return [f.strip() for f in re.split(r",\s*(?![^()]*\))", line.split(f"{kind}:", 1)[1])]


def _parse_audio(line: str) -> AudioInfo:
    fields = _fields(line, "Audio")
    codec = fields[0].split(" ", 1)[0] if fields else "?"
    rate = next((i for i, f in enumerate(fields) if re.fullmatch(r"\d+ Hz", f)), None)
    layout = fields[rate + 1] if rate is not None and rate + 1 < len(fields) else ""
    bit_rate = next((int(m.group(1)) * 1000 for f in fields if (m := re.match(r"(\d+) kb/s", f))), None)
    return AudioInfo(codec=codec, channels=layout_channels(layout) if layout else None, layout=layout,
                     sample_rate=int(fields[rate].split()[0]) if rate is not None else None, bit_rate=bit_rate)


def _input_header(stderr: str) -> list[str]:
    """The lines ffmpeg prints about its input (before the output and stream mapping)."""
    lines = []
    for line in stderr.splitlines():
        if line.startswith(("Output #", "Stream mapping:")):
            break
        lines.append(line)
    return lines


def _stream_line(header: list[str], kind: str) -> str | None:
    return next((line for line in header if line.lstrip().startswith("Stream #") and f" {kind}:" in line), None)


def parse_audio_probe(stderr: str) -> AudioInfo | None:
    """The first audio stream in what ``ffmpeg -i`` printed about its input (None if none)."""
    line = _stream_line(_input_header(stderr), "Audio")
    return _parse_audio(line) if line else None


def probe_audio(path: str | os.PathLike) -> AudioInfo | None:
    """The first audio stream of a media file (None if it has none), from ``ffmpeg -i``."""
    result = subprocess.run([_ffmpeg(), "-hide_banner", "-nostdin", "-i", os.fspath(path)],
                            capture_output=True, text=True, errors="replace")
    return parse_audio_probe(result.stderr)


def has_audio(path: str | os.PathLike) -> bool:
    """Whether a media file has an audio stream (asks ffmpeg)."""
    return probe_audio(path) is not None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Decode the first video stream once (frames are passed through, never duplicated or
    dropped to a constant rate) and return its frame size, pixel aspect, the timestamp of every
    frame and the first audio stream.

    Raises:
        MediaError: not a media file, no video stream, nothing decodes.
    """
    path = Path(path)
    result = subprocess.run(probe_command(_ffmpeg(), path), capture_output=True, text=True, errors="replace")
    return parse_video_probe(path, result.stdout, result.stderr, result.returncode)


def probe_command(exe: str, path: str | os.PathLike) -> list[str]:
    """The ffmpeg command :func:`probe_video` runs: every frame of the first video stream
    passed through with its own timestamp, listed by the ``framecrc`` muxer on stdout; what
    ffmpeg says about the input on stderr."""
    return [exe, "-hide_banner", "-nostdin", "-nostats", "-i", os.fspath(path), "-map", "0:v:0",
            "-fps_mode", "passthrough", "-enc_time_base", _demux_time_base(exe),
            "-c:v", "wrapped_avframe", "-f", "framecrc", "-"]


def parse_video_probe(path: str | os.PathLike, stdout: str, stderr: str, returncode: int) -> VideoInfo:
    """:func:`probe_video`'s result from the output of :func:`probe_command` (``path`` only
    names the file in errors).

    Raises:
        MediaError: as :func:`probe_video`.
    """
    path = Path(path)
    header = _input_header(stderr)
    video_line, audio_line = _stream_line(header, "Video"), _stream_line(header, "Audio")
    time_base, size, sar, pts, durations = Fraction(0), None, Fraction(1), [], []
    for line in stdout.splitlines():
        if line.startswith("#tb 0:"):
            time_base = Fraction(line.split(":", 1)[1].strip())
        elif line.startswith("#dimensions 0:"):
            size = tuple(int(v) for v in line.split(":", 1)[1].strip().split("x"))
        elif line.startswith("#sar 0:"):
            num, den = (int(v) for v in line.split(":", 1)[1].strip().split("/"))
            sar = Fraction(num, den) if num > 0 and den > 0 else Fraction(1)
        elif line.startswith("0,"):
            fields = [f.strip() for f in line.split(",")]
            pts.append(int(fields[2]))
            durations.append(int(fields[3]))
    if video_line is None or size is None or not pts:
        if video_line is None and audio_line is not None:
            raise MediaError(f"{path}: the file has no frames (an audio stream only)")
        if video_line is not None and returncode == 0:
            raise MediaError(f"{path}: the video has no frames")
        if video_line is not None:  # a video ffmpeg failed on: its last line says why
            raise MediaError(f"{path}: ffmpeg could not decode its video ({_last_line(stderr)})")
        if any(line.startswith("Input #0") for line in header) and \
                not any(line.lstrip().startswith("Stream #") for line in header):
            raise MediaError(f"{path}: the clip is empty (its container holds no video stream)")
        raise MediaError(f"{path}: not a video file ffmpeg can read (or a truncated one whose index is missing)")
    duration_line = next((line for line in header if "Duration:" in line), "")
    listed = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", duration_line)
    start = re.search(r"start: (-?\d+(?:\.\d+)?)", duration_line)
    fps = re.search(r"([\d.]+) fps", video_line) or re.search(r"([\d.]+) tbr", video_line)
    return VideoInfo(width=size[0], height=size[1], sar=sar, time_base=time_base or Fraction(1, 1000),
                     pts=tuple(pts), last_duration=max(durations[-1], 0),
                     fps=float(fps.group(1)) if fps else 0.0,
                     listed_duration=(int(listed.group(1)) * 3600 + int(listed.group(2)) * 60
                                      + float(listed.group(3))) if listed else 0.0,
                     start_time=float(start.group(1)) if start else 0.0,
                     audio=_parse_audio(audio_line) if audio_line else None)


# ----------------------------------------------------------------------------------------------
# writing


def write_video(path: str | os.PathLike, frames, fps: float | Fraction, audio_from: str | None = None,
                audio_start: float = 0.0, timestamps: Sequence | None = None) -> Path:
    """Encode an iterable of (H, W, 3) frames to MP4 (H.264, yuv420p) or GIF, atomically.

    Frames are consumed one at a time (an MP4 at a constant rate streams through ffmpeg; a GIF
    keeps only palette-indexed frames). Odd frame sizes lose their last row or column (yuv420p
    needs even sides). Pixels are square (SAR 1:1 is written).

    Args:
        path: ``.mp4`` or ``.gif``.
        frames: iterable of RGB frames (uint8 or float 0..255).
        fps: frames per second (a ``Fraction`` such as 30000/1001 is kept exactly).
        audio_from: a video whose first audio stream goes into an MP4 (if it has one): cut to
            start at ``audio_start`` and to last exactly as long as the frames (padded with
            silence if it ends sooner), all its channels kept, encoded as AAC.
        audio_start: where in ``audio_from`` the audio starts, in seconds from its start.
        timestamps: for a variable frame rate, when each frame is shown, in seconds from 0,
            followed by when the last one ends (one more value than frames; ``Fraction`` values
            are kept exactly). None: every frame lasts ``1 / fps``.

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
    if timestamps is not None:
        timestamps = [t if isinstance(t, Fraction) else Fraction(t).limit_denominator(90000) for t in timestamps]
        if any(b <= a for a, b in zip(timestamps, timestamps[1:])) or timestamps[0] < 0:
            raise MediaError(f"{path}: frame timestamps must start at 0 or later and increase")

    def write(tmp: str) -> None:
        if kind == "gif":
            def palette(frame):
                return Image.fromarray(to_uint8(frame)).quantize(256, method=Image.Quantize.MEDIANCUT)
            head = palette(first)
            duration = (round(1000 / fps) if timestamps is None else
                        [max(1, round(1000 * (b - a))) for a, b in zip(timestamps, timestamps[1:])])
            head.save(tmp, format="GIF", save_all=True, append_images=(palette(f) for f in frames),
                      duration=duration, loop=0, optimize=False)
            return
        _write_mp4(tmp, first, frames, _rate(fps), audio_from, audio_start, timestamps)

    atomic_write(path, write)
    return path


#: H.264 settings of every MP4 (visually lossless; stills of styled art compress well).
_X264 = ["-crf", "18", "-preset", "medium"]


def _write_mp4(tmp: str, first: np.ndarray, frames, fps: Fraction, audio_from: str | None,
               audio_start: float = 0.0, timestamps: Sequence[Fraction] | None = None) -> None:
    target = tmp if audio_from is None else tmp + ".video.mp4"
    try:
        if timestamps is None:
            count = _write_mp4_constant(target, first, frames, fps)
            duration = Fraction(count) / fps
        else:
            count = _write_mp4_timed(target, first, frames, timestamps)
            duration = timestamps[count] if count < len(timestamps) else timestamps[-1]
        if audio_from is not None:
            _mux_audio(target, audio_from, tmp, audio_start, duration)
    finally:
        if target != tmp and os.path.exists(target):
            os.unlink(target)


def _write_mp4_constant(target: str, first: np.ndarray, frames, fps: Fraction) -> int:
    """Stream frames through ffmpeg at a constant rate; returns the number written."""
    import imageio_ffmpeg
    first = _even(to_uint8(first))
    h, w = first.shape[:2]
    writer = imageio_ffmpeg.write_frames(
        target, (w, h), fps=float(fps), codec="libx264", pix_fmt_out="yuv420p", quality=None,
        macro_block_size=1, input_params=["-r", f"{fps.numerator}/{fps.denominator}"],
        output_params=[*_X264, "-vf", "setsar=1", "-movflags", "+faststart"], ffmpeg_log_level="error")
    writer.send(None)
    count = 1
    try:
        writer.send(np.ascontiguousarray(first))
        for frame in frames:
            writer.send(np.ascontiguousarray(_even(to_uint8(frame))[:h, :w]))
            count += 1
    finally:
        writer.close()
    return count


def _write_mp4_timed(target: str, first: np.ndarray, frames, timestamps: Sequence[Fraction]) -> int:
    """Frames with their own timestamps (variable frame rate): ffmpeg's concat demuxer reads
    them as PNGs in a temp folder beside ``target``, each lasting until the next; B-frames are
    off so that the MP4's sample durations are the frames' own. Returns the number written."""
    import math
    scale = math.lcm(*(t.denominator for t in timestamps))
    if scale > 10**6:  # timestamps that are not on one fine grid: a 90 kHz clock (MPEG's)
        scale = 90000
    ticks = [round(t * scale) for t in timestamps]
    folder = Path(target + ".frames")  # a temp name: a killed run's is removed by remove_stale_temps
    try:
        folder.mkdir()
        first = _even(to_uint8(first))
        h, w = first.shape[:2]
        lines = ["ffconcat version 1.0"]
        count = 0
        for i, frame in enumerate(_chain(first, frames)):
            if i + 1 >= len(ticks):
                raise MediaError(f"{target}: more frames than timestamps")
            name = f"f{i:06d}.png"
            Image.fromarray(np.ascontiguousarray(_even(to_uint8(frame))[:h, :w])).save(folder / name, compress_level=1)
            # concat sums durations in microseconds: give each the difference of the rounded
            # ends so that no rounding error accumulates
            micro = round(ticks[i + 1] * 10**6 / scale) - round(ticks[i] * 10**6 / scale)
            lines += [f"file '{name}'", f"option framerate {scale}", f"duration {micro}us"]
            count += 1
        (folder / "frames.txt").write_text("\n".join(lines) + "\n")
        last, last_duration = ticks[count - 1] - ticks[0], ticks[count] - ticks[count - 1]
        exe = _ffmpeg()
        cmd = [exe, "-y", "-nostdin", "-loglevel", "error", "-f", "concat", "-safe", "0",
               "-i", str(folder / "frames.txt"), "-fps_mode", "passthrough",
               "-enc_time_base", _demux_time_base(exe), "-vf", "setsar=1", "-c:v", "libx264", "-bf", "0",
               "-pix_fmt", "yuv420p", *_X264,
               "-video_track_timescale", str(scale),
               "-bsf:v", rf"setts=pts=PTS:dts=DTS:duration=if(eq(PTS\,{last})\,{last_duration}\,DURATION)",
               "-movflags", "+faststart", "-f", "mp4", target]
        result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            raise MediaError(f"{target}: ffmpeg could not encode the frames ({_last_line(result.stderr)})")
        return count
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _chain(first, rest):
    yield first
    yield from rest


def _audio_bit_rate(info: AudioInfo) -> int:
    """AAC bit rate for a re-encoded track: the source's, at most 96 kb/s per channel (64 kb/s
    per channel when the source does not say)."""
    channels = info.channels or 2
    return min(info.bit_rate, 96000 * channels) if info.bit_rate else 64000 * channels


def _mux_audio(video: str, audio_source: str, out: str, audio_start: float = 0.0,
               duration: float | None = None) -> None:
    """Put ``audio_source``'s first audio stream beside ``video``'s frames in ``out``.

    The audio is cut to ``[audio_start, audio_start + duration)`` sample for sample (silence
    pads a track that ends sooner) and encoded as AAC with all its channels; a track the AAC
    encoder refuses (more than 8 channels) is copied as it is, cut at its packet boundaries.
    """
    info = probe_audio(audio_source)
    if info is None:
        os.replace(video, out)
        return
    seek = ["-ss", f"{float(audio_start):.6f}"] if audio_start > 0 else []
    length = ["-t", f"{float(duration):.6f}"] if duration is not None else []
    head = [_ffmpeg(), "-y", "-nostdin", "-loglevel", "error", "-i", video, *seek, *length, "-i", audio_source,
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy"]
    tail = ["-movflags", "+faststart", "-f", "mp4", out]
    pad = ["-af", f"apad=whole_dur={float(duration):.6f}"] if duration is not None else []
    result = subprocess.run([*head, "-c:a", "aac", "-b:a", str(_audio_bit_rate(info)), *pad, *tail],
                            capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        result = subprocess.run([*head, "-c:a", "copy", *tail], capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        raise MediaError(f"{audio_source}: could not copy the audio track ({_last_line(result.stderr)})")


# ----------------------------------------------------------------------------------------------
# reading


def _uniform(steps: Sequence[Fraction], time_base: Fraction) -> bool:
    """Whether frame steps are one constant rate up to the timestamp rounding of the container
    (a 29.97 fps clip in milliseconds steps 33, 33, 34 ms)."""
    if len(steps) < 2:
        return True
    mean = sum(steps) / len(steps)
    return max(abs(s - mean) for s in steps) <= time_base + mean / 500


class VideoReader:
    """Frames of any clip ffmpeg reads, one at a time, as float32 RGB (H, W, 3) 0..255.

    Every frame that decodes is yielded once, with its own timestamp (a variable frame rate
    is neither duplicated nor dropped to a constant one). Non-square pixels are resized to the
    display aspect (the longer axis stretched), so frames always have square pixels.

    Args:
        path: the video file.
        size: if given, frames are scaled so the longest side has this many pixels.
        start: first frame index to yield; end: one past the last (None: to the end).
        even: round a resized frame size down to even sides (what an MP4 needs), so that no
            row or column is cropped when the frames are written.
        upscale: with False, a ``size`` above the clip's own longest side is ignored.

    Attributes:
        fps (float) and rate (Fraction): the frame rate (the mean one of a variable rate),
        vfr: whether the range has a variable frame rate, timestamps: when each frame of the
        range is shown (seconds from the range's start, Fractions) plus when the last one ends,
        duration: the range's length in seconds, audio_start: where the range starts in the
        file (seconds, for its audio), frame_size (w, h of the yielded frames), source_size
        (w, h as decoded), sar, has_audio, audio (an :class:`AudioInfo` or None), frames
        (count in the requested range), info (the :class:`VideoInfo`).

    Raises:
        MediaError: missing file, not a video, no frames.
    """

    def __init__(self, path: str | os.PathLike, size: int | None = None, start: int = 0,
                 end: int | None = None, even: bool = False, upscale: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise MediaError(f"{self.path}: is a folder, not a video file")
        if not self.path.is_file():
            raise MediaError(f"{self.path}: file not found")
        if start < 0 or (end is not None and end <= start):
            raise SettingsError(f"frame range {start}..{end} is empty")
        info = self.info = probe_video(self.path)
        total = len(info.pts)
        if total == 1:  # ffmpeg reads a photo as a one-frame "video"
            raise MediaError(f"{self.path}: a single still frame, not a video (for one image use "
                             f"'jaxdream style' or 'jaxdream dream')")
        # the container promises more than decodes (by more than two frames or a quarter second,
        # so that an audio track a little longer than the frames does not count)
        shown = float((info.pts[-1] - info.pts[0] + info.last_duration) * info.time_base)
        listed = max(total, round(info.listed_duration * total / shown)) if shown > 0 else total
        truncated = info.listed_duration - shown > max(0.25, 2 * shown / total)
        if start >= total:
            what = f"only {total} of the {listed} frames its container lists can be read (a truncated " \
                   f"file?)" if truncated else f"has {total} frames"
            raise SettingsError(f"{self.path} {what}; --start {start} is past the end")
        if truncated and (end is None or end > total):
            warnings.warn(f"{self.path}: only {total} of the {listed} frames its container lists can be "
                          f"read (a truncated file?); using frames {start}..{total - 1}")
        self.start, self.end = start, min(end, total) if end is not None else total
        self.frames = self.end - self.start
        self._timing(info)
        self.source_size = (info.width, info.height)
        self.sar = info.sar
        self.audio = info.audio
        self.has_audio = info.audio is not None
        w, h = info.display_size
        if size is not None and not upscale and size >= max(w, h):
            size = None
        self.size = size  # the longest side asked for and used (None: the clip's own size)
        if size is not None:
            h, w = fit_size(h, w, size)
        if even and (w, h) != self.source_size:
            w, h = max(2, w - w % 2), max(2, h - h % 2)
        check_pixels(h, w, f"{self.path} frames" + (f" at size {size}" if size is not None else ""))
        self.frame_size = (w, h)

    def _timing(self, info: VideoInfo) -> None:
        tb = info.time_base
        pts = list(info.pts[self.start:self.end + 1])  # with the next frame's, which ends the range
        steps = [b - a for a, b in zip(pts, pts[1:])]
        if self.end == len(info.pts):  # the clip's last frame: the container says how long it shows
            last = info.last_duration
            if steps and _uniform([s * tb for s in steps], tb):
                last = round(sum(steps) / len(steps))  # a constant rate: some muxers leave it 0 or 1
            if last <= 0:
                last = round(1 / (_rate(info.fps or 25) * tb))
            steps.append(last)
        pts = pts[:self.frames]
        if min(steps) <= 0:  # timestamps that cannot be trusted: the stated rate
            rate = _rate(info.fps or 25)
            self.timestamps = [Fraction(i) / rate for i in range(self.frames + 1)]
            self.vfr = False
        else:
            ends = np.cumsum(steps).tolist()
            self.timestamps = [Fraction(0)] + [e * tb for e in ends]
            self.vfr = not _uniform([s * tb for s in steps], tb)
            rate = Fraction(self.frames) / self.timestamps[-1]
            if not self.vfr:
                rate = rate.limit_denominator(1001)
        self.rate, self.fps = rate, float(rate)
        self.duration = self.timestamps[-1]
        self.audio_start = max(0.0, float(pts[0] * tb) - info.start_time)

    def __iter__(self):
        import imageio_ffmpeg
        w, h = self.source_size
        gen = imageio_ffmpeg.read_frames(str(self.path), input_params=["-nostdin"],
                                         output_params=["-map", "0:v:0", "-fps_mode", "passthrough"])
        try:
            meta = next(gen)
            if tuple(meta["size"]) != (w, h):
                raise MediaError(f"{self.path}: ffmpeg decodes {meta['size'][0]}x{meta['size'][1]} frames "
                                 f"after probing {w}x{h}")
            for i, buf in enumerate(gen):
                if i >= self.end:
                    break
                if i < self.start:
                    continue
                frame = np.frombuffer(buf, np.uint8).reshape(h, w, 3).astype(np.float32)
                if self.frame_size != (w, h):
                    frame = resize(frame, self.frame_size[::-1])
                yield frame
        finally:
            gen.close()
