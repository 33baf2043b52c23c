"""jaxdream's ffmpeg reader and probe against PyAV (``av``): decode speed, timestamp exactness on a
variable-frame-rate clip, and the metadata each reports (issue 29, item 3).

Run from the repository root (PyAV is not a dependency: install it somewhere throwaway)::

    pip install --target /tmp/avsite av
    PYTHONPATH=/tmp/avsite .venv/bin/python benchmarks/video_readers.py [--repeats 3]

Without ``av`` importable it says "PyAV not installed: measuring jaxdream's reader only" and
measures jaxdream's side alone. Clips come from ``../shared/media/`` (bigbuckbunny.mp4, pan.mp4,
moving_object.mp4); the variable-rate clip and a non-square-pixel 5.1 clip are made here with the
ffmpeg jaxdream uses (imageio-ffmpeg's, or ``IMAGEIO_FFMPEG_EXE``).

Prints:

(a) seconds to decode bigbuckbunny.mp4 (1280x720, 5.3 s) to RGB uint8 numpy frames, best of
    ``--repeats``: jaxdream's pipe (``VideoReader.__iter__``'s ffmpeg command, frames as uint8),
    its probe (``probe_video``: one full decode for the timestamps), the whole ``VideoReader``
    (probe + frames as float32, as the video command uses it), and PyAV decoding with the frames'
    pts in one pass (with FFmpeg's default threading, with ``thread_type="AUTO"``, and AUTO with the
    frames made float32 as ``VideoReader`` yields them); every row as a ratio to jaxdream's pipe
    and to the whole ``VideoReader``, measured in this run. Absolute seconds are this machine's only.
(b) every frame's time on a clip made from pan.mp4 with irregular timestamps (ms, known exactly):
    jaxdream's ``VideoReader.timestamps`` and PyAV's ``frame.pts * frame.time_base`` against them.
(c) size, SAR, rate, frame count, duration and audio (layout, channels, rate) of every clip, from
    ``probe_video`` and from PyAV's attributes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxdream.media import video as mv

MEDIA = ROOT.parent / "shared" / "media"
REAL = ("bigbuckbunny.mp4", "pan.mp4", "moving_object.mp4")

try:
    import av
except ImportError:
    av = None

#: the variable-rate clip's frame times, ms: steps of 40 ms +- up to 22 ms, all distinct
VFR_MS = [40 * n + (7 * n * n) % 23 for n in range(48)]


def ffmpeg(*args) -> None:
    subprocess.run([mv._ffmpeg(), "-y", "-nostdin", "-loglevel", "error", *map(str, args)], check=True)


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


# -- readers -------------------------------------------------------------------------------------


def jaxdream_pipe(path: Path) -> int:
    """The frames as VideoReader.__iter__ reads them (same ffmpeg command), kept as uint8."""
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(path), input_params=["-nostdin"],
                                     output_params=["-map", "0:v:0", "-fps_mode", "passthrough"])
    meta = next(gen)
    w, h = meta["size"]
    n, checksum = 0, 0
    for buf in gen:
        frame = np.frombuffer(buf, np.uint8).reshape(h, w, 3)
        checksum += int(frame[::97, ::89].sum())
        n += 1
    return n


def jaxdream_reader(path: Path) -> int:
    reader = mv.VideoReader(path)
    return sum(1 for _ in reader)


def pyav_decode(path: Path, threads: str | None = None, float32: bool = False) -> tuple[int, list[Fraction]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = threads
        times, checksum = [], 0
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            if float32:  # as VideoReader yields them
                rgb = rgb.astype(np.float32)
            checksum += int(rgb[::97, ::89].sum())
            times.append(frame.pts * frame.time_base)
    return len(times), times


def first_frames_diff(path: Path, count: int = 5) -> float:
    """Mean absolute difference (0..255) of the first frames' RGB from the two decoders."""
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(path), input_params=["-nostdin"],
                                     output_params=["-map", "0:v:0", "-fps_mode", "passthrough"])
    w, h = next(gen)["size"]
    ours = [np.frombuffer(next(gen), np.uint8).reshape(h, w, 3).astype(np.int16) for _ in range(count)]
    gen.close()
    with av.open(str(path)) as container:
        theirs = []
        for frame in container.decode(video=0):
            theirs.append(frame.to_ndarray(format="rgb24").astype(np.int16))
            if len(theirs) == count:
                break
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(ours, theirs)]))


# -- metadata ------------------------------------------------------------------------------------


def ours_meta(path: Path) -> dict:
    info = mv.probe_video(path)
    a = info.audio
    return {"size": f"{info.width}x{info.height}", "sar": str(info.sar), "rate": f"{info.fps:g}",
            "frames": str(len(info.pts)), "duration": f"{info.listed_duration:.3f}",
            "audio": f"{a.layout}/{a.channels}ch/{a.sample_rate}" if a else "none"}


def pyav_meta(path: Path) -> dict:
    with av.open(str(path)) as container:
        v = container.streams.video[0]
        sar = v.sample_aspect_ratio or v.codec_context.sample_aspect_ratio
        rate = v.average_rate or v.guessed_rate
        decoded = sum(1 for _ in container.decode(v))
        duration = container.duration / 1e6 if container.duration else 0.0
        audio = container.streams.audio[0] if container.streams.audio else None
        a = (f"{audio.layout.name}/{audio.channels}ch/{audio.sample_rate}" if audio else "none")
        return {"size": f"{v.width}x{v.height}", "sar": str(sar or Fraction(1)), "rate": f"{float(rate):g}",
                "frames": f"{decoded}", "duration": f"{duration:.3f}", "audio": a}


# -- clips ---------------------------------------------------------------------------------------


def make_vfr(folder: Path) -> Path:
    """pan.mp4's first 48 frames (a synthetic pattern when pan.mp4 is absent) shown at VFR_MS. The
    pts expression is in whole ticks of 1/1000 s (a division such as ``x/1000/TB`` is computed in
    floating point and truncates some to the tick below)."""
    out = folder / "vfr.mp4"
    source = (["-i", MEDIA / "pan.mp4"] if (MEDIA / "pan.mp4").is_file()
              else ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=24:duration=2"])
    expr = "+".join(f"{b - a - 40}*gte(N,{i + 1})" for i, (a, b) in enumerate(zip(VFR_MS, VFR_MS[1:])) if b - a != 40)
    ffmpeg(*source, "-frames:v", len(VFR_MS), "-an",
           "-vf", f"settb=1/1000,setpts='40*N+{expr}'", "-fps_mode", "vfr", "-enc_time_base", "1/1000",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", out)
    return out


def make_sar51(folder: Path) -> Path:
    """47x41, SAR 2:1, 12 fps, 5.1 AAC (tests/test_real_clips.py's surround clip)."""
    out = folder / "sar_51.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=47x41:rate=12:duration=1", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=1,aformat=channel_layouts=5.1", "-vf", "setsar=2/1", "-c:v", "libx264",
           "-pix_fmt", "yuv444p", "-c:a", "aac", "-shortest", out)
    return out


def agree(key: str, ours: str, theirs: str) -> str:
    """"same", "same to 0.01" (ffmpeg's text gives the stated rate and duration to 2 decimals),
    or "DIFFERS"."""
    if ours == theirs:
        return "same"
    if key in ("rate", "duration") and abs(float(ours) - float(theirs)) <= 0.01:
        return "same to 0.01 (ffmpeg prints 2 decimals)"
    return "DIFFERS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    exe = mv._ffmpeg()
    version = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"ffmpeg (jaxdream's): {version[:60]}")
    if av is None:
        print("PyAV not installed: measuring jaxdream's reader only")
    else:
        print(f"PyAV {av.__version__}, its FFmpeg libraries {av.ffmpeg_version_info}")
    print(f"CPUs: {os.cpu_count()}")
    bunny = MEDIA / "bigbuckbunny.mp4"

    print("\n(a) decode bigbuckbunny.mp4 (1280x720) to RGB uint8, best of", args.repeats)
    if not bunny.is_file():
        print(f"  {bunny} absent: skipped")
    else:
        rows = []
        base, n = best(lambda: jaxdream_pipe(bunny), args.repeats)
        rows.append(("jaxdream pipe (frames only)", base, n))
        t, _ = best(lambda: mv.probe_video(bunny), args.repeats)
        rows.append(("jaxdream probe_video (pts pass)", t, len(mv.probe_video(bunny).pts)))
        t, n = best(lambda: jaxdream_reader(bunny), args.repeats)
        rows.append(("jaxdream VideoReader (probe + float32 frames)", t, n))
        if av is not None:
            t, (n, _) = best(lambda: pyav_decode(bunny), args.repeats)
            rows.append(("PyAV decode + pts, default threads", t, n))
            t, (n, _) = best(lambda: pyav_decode(bunny, "AUTO"), args.repeats)
            rows.append(("PyAV decode + pts, thread_type AUTO", t, n))
            t, (n, _) = best(lambda: pyav_decode(bunny, "AUTO", float32=True), args.repeats)
            rows.append(("PyAV decode + pts + float32, AUTO", t, n))
        whole = rows[2][1]
        print(f"  {'reader':48s} {'frames':>6s} {'s':>7s} {'fps':>7s} {'/ pipe':>7s} {'/ VideoReader':>13s}")
        for name, t, n in rows:
            print(f"  {name:48s} {n:6d} {t:7.3f} {n / t:7.1f} {t / base:7.2f} {t / whole:13.2f}")
        if av is not None:
            print(f"  pixels, first 5 frames: mean |jaxdream - PyAV| = {first_frames_diff(bunny):.3f} of 255")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vfr = make_vfr(folder)
        want = [Fraction(ms, 1000) for ms in VFR_MS]
        print(f"\n(b) pts on a variable-rate clip: {len(VFR_MS)} frames, steps "
              f"{min(b - a for a, b in zip(VFR_MS, VFR_MS[1:]))}..{max(b - a for a, b in zip(VFR_MS, VFR_MS[1:]))} ms")
        got = {"jaxdream VideoReader.timestamps": mv.VideoReader(vfr).timestamps[:-1]}
        info = mv.probe_video(vfr)
        got["jaxdream probe_video pts * time_base"] = [p * info.time_base for p in info.pts]
        if av is not None:
            got["PyAV frame.pts * frame.time_base"] = pyav_decode(vfr)[1]
        packets = subprocess.run([mv._ffmpeg(), "-nostdin", "-loglevel", "error", "-i", str(vfr), "-map", "0:v:0",
                                  "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True).stdout
        count = sum(line.startswith("0,") for line in packets.splitlines())
        print(f"  the clip holds {count} video packets" + ("" if count == len(want) else " (made by this ffmpeg)"))
        print(f"  {'reader':40s} {'frames':>6s} {'exact':>8s} {'max |error| ms':>14s}")
        for name, times in got.items():
            exact = sum(a == b for a, b in zip(times, want))
            error = max((abs(float(a - b)) * 1000 for a, b in zip(times, want)), default=float("nan"))
            print(f"  {name:40s} {len(times):6d} {f'{exact}/{len(want)}':>8s} {error:14.3f}")

        print("\n(c) metadata: jaxdream probe_video | PyAV (frames: decoded; duration: the container's)")
        clips = [MEDIA / name for name in REAL if (MEDIA / name).is_file()] + [make_sar51(folder), vfr]
        keys = ("size", "sar", "rate", "frames", "duration", "audio")
        for clip in clips:
            ours = ours_meta(clip)
            theirs = pyav_meta(clip) if av is not None else {}
            print(f"  {clip.name}")
            for key in keys:
                same = "" if av is None else agree(key, ours[key], theirs[key])
                print(f"    {key:9s} {ours[key]:22s} {theirs.get(key, '-'):22s} {same}")


if __name__ == "__main__":
    main()
