"""The ffmpeg text probe pinned over the ffmpeg versions jaxdream supports.

``media.probe_video`` and ``probe_audio`` read ffmpeg's human-readable stderr (stream lines,
channel layouts, "Duration:", "fps") and the ``framecrc`` listing of every frame's timestamp
(docs/video.md, "Probe and reader: why the ffmpeg text probe"). That wording is not an API, so
it is pinned here two ways:

* **Stored transcripts** (``tests/data/ffmpeg_probe/<ffmpeg version>/<clip>.txt``): what each
  supported ffmpeg printed for the probe's two commands on the same synthetic clips (non-square
  pixels, variable frame rate, 5.1, stereo, mono, no audio, NTSC rate in Matroska, truncated
  with and without its index, audio only) and on bigbuckbunny.mp4. They are parsed with the
  functions ``probe_video``/``probe_audio`` use (``parse_video_probe``, ``parse_audio_probe``)
  and must give the clips' known values, the same from every version. ``errors/`` holds a
  transcript of a refused probe (ffmpeg 5.1 given ``-enc_time_base demux``).
* **Live**: every ffmpeg binary on this machine (imageio-ffmpeg's bundled one,
  ``IMAGEIO_FFMPEG_EXE``, the PATH's ``ffmpeg``, and the floor release's, imageio-ffmpeg 0.6.0,
  downloaded once into the pytest temp folder) probes freshly made clips, so a new ffmpeg
  release that words things differently fails here.

Recorded 2026-12 with ffmpeg 9.0.2 (imageio-ffmpeg 0.8.1's), 7.0.2 (imageio-ffmpeg 0.6.0's, the
floor) and 5.1.9 (Debian 12's ``apt-get install ffmpeg``; 5.1 is the minimum). To add a version::

    .venv/bin/python tests/test_probe_versions.py record "/path/to/ffmpeg=where it comes from" [...]

which makes the clips with imageio-ffmpeg's bundled ffmpeg and writes one folder per binary given
(named by its version; "where it comes from" goes into each transcript's header).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
from helpers import bundled_ffmpeg

from jaxdream.errors import MediaError
from jaxdream.media import video as mv

FIXTURES = Path(__file__).parent / "data" / "ffmpeg_probe"
BUNNY = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "bigbuckbunny.mp4"
FLOOR = "0.6.0"  # pyproject's imageio-ffmpeg floor (tests/test_ffmpeg_floor.py checks it is)

#: the variable-rate clip's frame times, ms (irregular steps; each frame of testsrc at 10 fps
#: lasts 100 ms, so the last one ends at VFR_END)
VFR_MS = [0, 40, 100, 130, 200, 290, 300, 410, 500, 750, 1000, 1250]
VFR_END = 1350


# --------------------------------------------------------------------------------------------
# the clips and what a probe must find in them
# --------------------------------------------------------------------------------------------


def _vfr_filter() -> str:
    steps = "+".join(f"{b - a}*gte(N,{i + 1})" for i, (a, b) in enumerate(zip(VFR_MS, VFR_MS[1:])))
    # whole ticks of 1/1000 s: a division (x/1000/TB) is floating point and can truncate a tick
    return f"settb=1/1000,setpts='{steps}'"


def _lavfi_video(size: str, rate: str, duration: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={duration}"]


def _lavfi_audio(layout: str, rate: int, duration: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration={duration},"
                                 f"aformat=channel_layouts={layout}"]


H264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]

#: clip name -> ffmpeg arguments that make it (the output name is appended)
CLIPS: dict[str, list[str]] = {
    "sar.mp4": [*_lavfi_video("47x41", "12", 1), *_lavfi_audio("mono", 44100, 1), "-vf", "setsar=2/1",
                "-c:v", "libx264", "-pix_fmt", "yuv444p", "-c:a", "aac"],
    "vfr.mp4": [*_lavfi_video("48x40", "10", 1.2), *_lavfi_audio("stereo", 48000, VFR_END / 1000),
                "-vf", _vfr_filter(), "-fps_mode", "vfr", "-enc_time_base", "1/1000", *H264, "-c:a", "aac"],
    "surround.mp4": [*_lavfi_video("32x24", "25", 0.4), *_lavfi_audio("5.1", 48000, 0.4), *H264,
                     "-c:a", "aac", "-b:a", "384k"],
    "ntsc_stereo.mkv": [*_lavfi_video("64x48", "30000/1001", 1), *_lavfi_audio("stereo", 44100, 1), *H264,
                        "-c:a", "flac"],
    "noaudio.mp4": [*_lavfi_video("32x24", "24", 1), *H264],
    # cut to 60% below: the index (moov) first, so what remains reads, fewer frames than listed
    "truncated.mp4": [*_lavfi_video("64x48", "24", 1), *_lavfi_audio("stereo", 44100, 1), *H264, "-c:a", "aac",
                      "-movflags", "+faststart"],
    # cut to 60%: the index is at the end, so nothing reads
    "truncated_noindex.mp4": [*_lavfi_video("64x48", "24", 1), *H264],
    "audio_only.m4a": [*_lavfi_audio("stereo", 44100, 0.5), "-c:a", "aac"],
}
CUT = {"truncated.mp4": 0.6, "truncated_noindex.mp4": 0.6}


@dataclass(frozen=True)
class Expect:
    size: tuple[int, int]
    sar: Fraction = Fraction(1)
    fps: float = 0.0
    times: tuple[Fraction, ...] | None = None  # every frame's time (None: checked otherwise)
    duration: float = 0.0                      # the container's, to 0.1 s
    audio: tuple[str, str, int | None, int | None] | None = None  # codec, layout, channels, Hz
    reader_vfr: bool = False
    reader_end: Fraction | None = None         # VideoReader.timestamps[-1] (None: frames / fps)
    error: str | None = None                   # probe_video raises MediaError matching this


def _even(count: int, rate: Fraction) -> tuple[Fraction, ...]:
    return tuple(Fraction(i) / rate for i in range(count))


EXPECT: dict[str, Expect] = {
    "sar.mp4": Expect((47, 41), Fraction(2), 12, _even(12, Fraction(12)), 1.0, ("aac", "mono", 1, 44100)),
    "vfr.mp4": Expect((48, 40), Fraction(1), None, tuple(Fraction(ms, 1000) for ms in VFR_MS), VFR_END / 1000,
                      ("aac", "stereo", 2, 48000), reader_vfr=True, reader_end=Fraction(VFR_END, 1000)),
    "surround.mp4": Expect((32, 24), Fraction(1), 25, _even(10, Fraction(25)), 0.4, ("aac", "5.1", 6, 48000)),
    # Matroska counts milliseconds, rounded half up: 0, 33, 67, 100, ..., 501, ... (a constant
    # rate to the reader)
    "ntsc_stereo.mkv": Expect((64, 48), Fraction(1), 29.97,
                              tuple(Fraction(int(Fraction(i * 1001, 30) + Fraction(1, 2)), 1000)
                                    for i in range(30)), 1.0,
                              ("flac", "stereo", 2, 44100), reader_end=Fraction(1001, 1000)),
    "noaudio.mp4": Expect((32, 24), Fraction(1), 24, _even(24, Fraction(24)), 1.0),
    "truncated.mp4": Expect((64, 48), Fraction(1), 24, None, 1.0, ("aac", "stereo", 2, 44100)),
    "truncated_noindex.mp4": Expect((0, 0), error="not a video file ffmpeg can read"),
    "audio_only.m4a": Expect((0, 0), error="an audio stream only"),
    "bigbuckbunny.mp4": Expect((1280, 720), Fraction(1), 25, _even(132, Fraction(25)), 5.31,
                               ("aac", "5.1", 6, 48000)),
}


def make_clips(folder: Path, exe: str) -> list[str]:
    """Make every clip of CLIPS in ``folder`` with ``exe``; returns their names."""
    for name, args in CLIPS.items():
        subprocess.run([exe, "-y", "-nostdin", "-loglevel", "error", *args, name], cwd=folder, check=True,
                       timeout=120)
        if name in CUT:
            data = (folder / name).read_bytes()
            (folder / name).write_bytes(data[: int(len(data) * CUT[name])])
    return list(CLIPS)


def check_probe(name: str, info, audio: mv.AudioInfo | None) -> None:
    """Assert what the probe found in clip ``name`` (``info`` is the VideoInfo, or the MediaError
    probe_video raised; ``audio`` is probe_audio's answer)."""
    want = EXPECT[name]
    if want.error:
        assert isinstance(info, MediaError) and want.error in str(info), info
        if name == "audio_only.m4a":
            assert audio is not None and (audio.layout, audio.channels) == ("stereo", 2)
        return
    assert not isinstance(info, Exception), info
    assert (info.width, info.height, info.sar) == (*want.size, want.sar)
    times = [p * info.time_base for p in info.pts]
    if want.times is not None:
        assert times == list(want.times)
    else:  # truncated: fewer frames than listed (those decodable, maybe with gaps), each at its place
        count = round(want.duration * want.fps)
        assert 1 <= len(times) < count and times == sorted(set(times))
        assert all((t * Fraction(want.fps)).denominator == 1 for t in times), times
    if want.fps:
        assert info.fps == pytest.approx(want.fps, abs=0.005)
    assert info.listed_duration == pytest.approx(want.duration, abs=0.1)
    assert info.start_time == 0
    found = None if info.audio is None else (info.audio.codec, info.audio.layout, info.audio.channels,
                                             info.audio.sample_rate)
    assert found == want.audio
    assert audio == info.audio  # probe_audio's ffmpeg -i says the same as the probe's header


#: How long the probe says a variable-rate clip's last frame lasts differs between ffmpeg
#: releases: 9.0 gives the container's duration of that frame's packet (100 ms here), 5.1 and
#: 7.0 give one frame at the stream's average rate (1 / 12.63 fps, 79 ms). 7.1 to 8.x are not
#: recorded here: either is accepted.
PACKET_DURATION_FROM = (9, 0)
AVERAGE_DURATION_UNTIL = (7, 0)


def check_reader(name: str, info, version: tuple[int, int] | None, tmp_path: Path, monkeypatch) -> None:
    """What VideoReader makes of ``info`` (probed by ffmpeg ``version``; None: a snapshot):
    timing, display size, the truncation warning."""
    want = EXPECT[name]
    if want.error:
        return
    clip = tmp_path / name
    clip.write_bytes(b"")
    monkeypatch.setattr(mv, "probe_video", lambda path: info)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = mv.VideoReader(clip)
    said = [str(w.message) for w in caught]
    if name == "truncated.mp4":  # the frames that decode (a gap where some do not: a variable rate)
        listed = said and re.search(rf"only {reader.frames} of the (\d+) frames its container lists", said[0])
        assert len(said) == 1 and listed and int(listed.group(1)) > reader.frames, said
        assert reader.timestamps[:-1] == [(p - info.pts[0]) * info.time_base for p in info.pts]
        return
    assert reader.vfr is want.reader_vfr
    assert said == []
    assert reader.timestamps[:-1] == list(want.times)
    if name == "vfr.mp4":
        last = reader.timestamps[-1] - reader.timestamps[-2]
        packet = reader.timestamps[-1] == want.reader_end
        average = abs(last - 1 / Fraction(info.fps).limit_denominator(1000)) <= info.time_base + Fraction(1, 1000)
        if version is None or version >= PACKET_DURATION_FROM:
            assert packet, (version, last)
        elif version <= AVERAGE_DURATION_UNTIL:
            assert average and not packet, (version, last)
        else:
            assert packet or average, (version, last)
    elif want.reader_end is not None:
        assert reader.timestamps[-1] == want.reader_end
    else:
        assert reader.rate == want.fps and reader.timestamps[-1] == len(want.times) / Fraction(want.fps)
    if name == "ntsc_stereo.mkv":
        assert reader.rate == Fraction(30000, 1001)
    w, h = want.size
    assert reader.frame_size == ((round(w * want.sar), h) if want.sar > 1 else (w, h))


# --------------------------------------------------------------------------------------------
# transcripts
# --------------------------------------------------------------------------------------------

SECTIONS = ("probe stdout", "probe stderr", "ffmpeg -i stderr")


def _version(exe: str) -> str:
    first = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60).stdout.splitlines()[0]
    return first


def _label(version_line: str) -> str:
    """Folder name of a version: ``ffmpeg-9.0.2`` (a git snapshot: ``ffmpeg-N-112345``)."""
    m = re.match(r"ffmpeg version n?(\d+(?:\.\d+)*|N-\d+)", version_line)
    return f"ffmpeg-{m.group(1) if m else 'unknown'}"


def run_probe(exe: str, folder: Path, name: str) -> dict[str, str]:
    """The two commands of probe_video and probe_audio on ``folder/name`` (run in ``folder``,
    so that the transcripts name the clip, not the temp folder)."""
    command = mv.probe_command(exe, name)
    probe = subprocess.run(command, cwd=folder, capture_output=True, text=True, errors="replace", timeout=120)
    plain = subprocess.run([exe, "-hide_banner", "-nostdin", "-i", name], cwd=folder, capture_output=True,
                           text=True, errors="replace", timeout=120)
    return {"command": " ".join(["ffmpeg", *command[1:]]), "returncode": str(probe.returncode),
            "probe stdout": probe.stdout, "probe stderr": probe.stderr, "ffmpeg -i stderr": plain.stderr}


def write_transcript(path: Path, version_line: str, source: str, name: str, parts: dict[str, str]) -> None:
    lines = [f"# {version_line}", f"# binary: {source}", f"# clip: {name}",
             f"# probe: {parts['command']}", f"# returncode: {parts['returncode']}"]
    for section in SECTIONS:
        lines.append(f"=== {section}")
        lines.extend(parts[section].splitlines())
    path.write_text("\n".join(lines) + "\n")


def read_transcript(path: Path) -> dict[str, str]:
    parts: dict[str, list[str]] = {}
    current = None
    head: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("=== "):
            current = line[4:]
            parts[current] = []
        elif current is not None:
            parts[current].append(line)
        elif line.startswith("# returncode: "):
            head["returncode"] = line.split(": ", 1)[1]
    return {**head, **{k: "\n".join(v) + "\n" for k, v in parts.items()}}


def parse(name: str, parts: dict[str, str]):
    """(VideoInfo or the MediaError, AudioInfo) as probe_video and probe_audio would return."""
    try:
        info = mv.parse_video_probe(name, parts["probe stdout"], parts["probe stderr"], int(parts["returncode"]))
    except MediaError as e:
        info = e
    return info, mv.parse_audio_probe(parts["ffmpeg -i stderr"])


def _stored() -> list[tuple[str, str]]:
    return sorted((d.name, f.stem) for d in FIXTURES.glob("ffmpeg-*") if d.is_dir() for f in d.glob("*.txt"))


STORED = _stored() if FIXTURES.is_dir() else []


def test_the_supported_versions_are_all_recorded():
    """The minimum (5.1), the floor's bundled one (7.0) and the newest bundled one, each with
    every clip."""
    versions = {v for v, _ in STORED}
    assert {"ffmpeg-5.1.9", "ffmpeg-7.0.2", "ffmpeg-9.0.2"} <= versions, versions
    for version in versions:
        names = {c for v, c in STORED if v == version}
        assert set(CLIPS) | {"bigbuckbunny.mp4"} == names, (version, names)
        assert _release(version) is None or _release(version) >= mv.MIN_FFMPEG, version


def _release(label: str) -> tuple[int, int] | None:
    """(major, minor) of a transcript folder's name (``ffmpeg-7.0.2``; None for a snapshot)."""
    m = re.fullmatch(r"ffmpeg-(\d+)\.(\d+)(?:\.\d+)*", label)
    return (int(m.group(1)), int(m.group(2))) if m else None


@pytest.mark.parametrize("version, name", STORED, ids=[f"{v}/{c}" for v, c in STORED])
def test_stored_transcript(version, name, tmp_path, monkeypatch):
    info, audio = parse(name, read_transcript(FIXTURES / version / f"{name}.txt"))
    check_probe(name, info, audio)
    check_reader(name, info, _release(version), tmp_path, monkeypatch)


def test_every_version_reads_a_clip_the_same():
    """For each clip, every version's transcript parses to the same VideoInfo and AudioInfo (but
    for the variable-rate clip's last frame duration: PACKET_DURATION_FROM)."""
    by_clip: dict[str, dict[str, object]] = {}
    for version, name in STORED:
        info, audio = parse(name, read_transcript(FIXTURES / version / f"{name}.txt"))
        if name == "vfr.mp4":
            info = dataclasses.replace(info, last_duration=0)
        by_clip.setdefault(name, {})[version] = (str(info) if isinstance(info, Exception) else info, audio)
    for name, found in by_clip.items():
        first = next(iter(found.values()))
        assert all(v == first for v in found.values()), (name, found)


def test_a_probe_ffmpeg_refuses_names_ffmpegs_reason():
    """ffmpeg 5.1 given ``-enc_time_base demux`` (refused before 6.1): the clip is a video, so the
    error says what ffmpeg said, not "the clip is empty" as it did; and the value passed now
    follows the version."""
    parts = read_transcript(FIXTURES / "errors" / "ffmpeg-5.1.9_demux_refused_sar.mp4.txt")
    info, audio = parse("sar.mp4", parts)
    assert isinstance(info, MediaError) and "Invalid time base: demux" in str(info), info
    assert "empty" not in str(info) and "not a video" not in str(info)
    assert audio is not None and audio.layout == "mono"


@pytest.mark.parametrize("line, value", [
    ("ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026", "-1"),
    ("ffmpeg version 6.0 Copyright (c) 2000-2023", "-1"),
    ("ffmpeg version 6.1.1-3ubuntu5 Copyright (c) 2000-2023", "demux"),
    ("ffmpeg version 7.0.2-static https://johnvansickle.com/ffmpeg/", "demux"),
    ("ffmpeg version n9.0.2-17-g2a571b6068-20260930 Copyright (c) 2000-2026", "demux"),
    ("ffmpeg version N-112345-gabcdef0 Copyright (c) 2000-2025", "demux"),  # a git snapshot
])
def test_the_time_base_value_follows_the_version(tmp_path, line, value):
    exe = tmp_path / "ffmpeg"
    exe.write_text(f"#!/bin/sh\necho '{line}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    command = mv.probe_command(str(exe), "clip.mp4")
    assert command[command.index("-enc_time_base") + 1] == value


# --------------------------------------------------------------------------------------------
# live: every ffmpeg on this machine
# --------------------------------------------------------------------------------------------


def _bundled() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def _maker() -> str:
    """The ffmpeg that makes the clips: the one bundled with the installed imageio-ffmpeg, even
    when ``IMAGEIO_FFMPEG_EXE`` names another (the clips stay the same whichever ffmpeg probes
    them); imageio-ffmpeg's choice when it bundles none."""
    import imageio_ffmpeg
    bundled = sorted((Path(imageio_ffmpeg.__file__).parent / "binaries").glob("ffmpeg-*"))
    return str(bundled[-1]) if bundled else _bundled()


#: ffmpeg 7.0's MP4 muxer marks the variable-rate clip's last frame as discarded (an edit list
#: that ends at its timestamp), so no reader sees it; 5.1 and 9.0 keep it.
DROPS_LAST_VFR_FRAME = (7, 0)


@pytest.fixture(scope="module")
def live_clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("probe_clips")
    make_clips(folder, _maker())
    return folder


@pytest.mark.parametrize("which", ["bundled", "IMAGEIO_FFMPEG_EXE", "PATH",
                                   pytest.param(f"floor {FLOOR}", marks=pytest.mark.slow)])  # slow: a download
def test_every_ffmpeg_here_probes_fresh_clips(which, live_clips, tmp_path_factory, tmp_path, monkeypatch):
    """probe_video, probe_audio and VideoReader with each ffmpeg at hand, on clips made now: what a
    new ffmpeg release words differently fails here before it fails a user."""
    if which == "bundled":
        exe = _bundled()
    elif which == "IMAGEIO_FFMPEG_EXE":
        exe = os.environ.get("IMAGEIO_FFMPEG_EXE")
        if not exe:
            pytest.skip("IMAGEIO_FFMPEG_EXE is not set")
    elif which == "PATH":
        exe = shutil.which("ffmpeg")
        if not exe:
            pytest.skip("no ffmpeg on the PATH (Debian: apt-get install ffmpeg gives 5.1)")
    else:  # cached across runs beside pytest's numbered temp folders
        exe = str(bundled_ffmpeg(FLOOR, tmp_path_factory.getbasetemp().parent / f"jaxdream-imageio-ffmpeg-{FLOOR}"))
    try:
        mv.check_ffmpeg(exe)
    except MediaError as e:
        pytest.skip(f"{which}: {e}")
    monkeypatch.setattr(mv, "_ffmpeg", lambda: exe)  # probe_video and probe_audio run this binary
    for name in CLIPS:
        if name == "vfr.mp4" and mv.ffmpeg_version(_maker()) == DROPS_LAST_VFR_FRAME:
            continue  # the stored transcripts cover it, with a clip made by 9.0
        try:
            info = mv.probe_video(live_clips / name)
        except MediaError as e:
            info = e
        check_probe(name, info, mv.probe_audio(live_clips / name))
        with monkeypatch.context() as m:
            check_reader(name, info, mv.ffmpeg_version(exe), tmp_path, m)


# --------------------------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------------------------


def record(exes: list[str]) -> None:
    """Make the clips with imageio-ffmpeg's ffmpeg and store each binary's transcripts."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names = make_clips(folder, _maker())
        if BUNNY.is_file():
            shutil.copy(BUNNY, folder / BUNNY.name)
            names.append(BUNNY.name)
        for given in exes:
            exe, _, source = given.partition("=")
            version = _version(exe)
            out = FIXTURES / _label(version)
            out.mkdir(parents=True, exist_ok=True)
            source = source or os.path.basename(exe)
            for name in names:
                write_transcript(out / f"{name}.txt", version, source, name, run_probe(exe, folder, name))
            print(f"{out}: {len(names)} transcripts")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "record":
        sys.exit(f"usage: {sys.argv[0]} record FFMPEG[=SOURCE] [FFMPEG[=SOURCE] ...]")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    record(sys.argv[2:])
