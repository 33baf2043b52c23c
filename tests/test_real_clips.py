"""Video on real clips: non-square pixels, odd sizes, a variable frame rate, multichannel audio
cut to the frames written, the default output name and the line printed before the first frame.

Clips are made here with ffmpeg (imageio-ffmpeg's binary) and checked with ffmpeg alone: frame
timestamps with ``framecrc``, the audio decoded to WAV (channel count and exact length read from
its header), the pixel aspect from ``ffmpeg -i``. The real-media tests at the end skip when
``../shared`` is absent.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from helpers import run_main
from weightfiles import REAL_SKIP_REASON, REAL_WEIGHTS

from jaxdream import media
from jaxdream import video as vd
from jaxdream.errors import MediaError
from jaxdream.cli.main import main as cli_main

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
MEDIA = REAL_WEIGHTS.parent / "media"
BUNNY = MEDIA / "bigbuckbunny.mp4"
FPS = 12
#: the variable-rate clip: 10 frames, 0.1 s apart, then 0.25 s apart (milliseconds)
VFR_MS = [0, 100, 200, 300, 400, 500, 750, 1000, 1250, 1500]
BURST = 0.5  # seconds into the surround clip where its audio turns from silence to a tone


def ffmpeg(*args) -> None:
    subprocess.run([FFMPEG, "-y", "-nostdin", "-loglevel", "error", *map(str, args)], check=True)


def frame_times(path: Path) -> list[Fraction]:
    """Presentation time of every decoded frame, seconds (ffmpeg's framecrc, no conversion)."""
    out = subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
                          "-fps_mode", "passthrough", "-enc_time_base", "demux", "-c:v", "wrapped_avframe",
                          "-f", "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    tb = Fraction(next(line for line in out.splitlines() if line.startswith("#tb 0:")).split(":")[1].strip())
    return [int(line.split(",")[2]) * tb for line in out.splitlines() if line.startswith("0,")]


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream as int16 samples (frames, channels) and its sample rate, read from
    the header of the WAV ffmpeg writes (channel count and rate as the file states them)."""
    data = subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
                           "-c:a", "pcm_s16le", "-f", "wav", "-"], capture_output=True, check=True).stdout
    fmt = data.index(b"fmt ")
    channels, rate = struct.unpack_from("<HI", data, fmt + 10)
    body = data[data.index(b"data") + 8:]
    samples = np.frombuffer(body[: len(body) - len(body) % (2 * channels)], np.int16)
    return samples.reshape(-1, channels), rate


def stream_line(path: Path, kind: str) -> str:
    err = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True).stderr
    return next(line for line in err.splitlines() if "Stream #" in line and f"{kind}:" in line)


def onset(samples: np.ndarray, rate: int) -> float:
    """Seconds until the audio first reaches half its peak (the burst's start)."""
    level = np.abs(samples.astype(np.float32)).max(axis=1)
    return int(np.argmax(level >= 0.5 * level.max())) / rate


# --------------------------------------------------------------------------------------------
# clips
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("real_clips")
    # 47x41 (odd), pixels twice as wide as tall, 12 fps, 5.1 audio silent until BURST
    surround = folder / "surround.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=47x41:rate={FPS}:duration=1",
           "-f", "lavfi", "-i", f"aevalsrc=exprs='if(gte(t,{BURST}),0.8*sin(2*PI*440*t),0)':c=5.1:s=48000:d=1.2",
           "-vf", "setsar=2/1", "-c:v", "libx264", "-pix_fmt", "yuv444p", "-c:a", "aac", "-b:a", "384k",
           "-shortest", surround)
    # 48x40, a variable frame rate (timestamps VFR_MS), stereo audio as long as the frames
    vfr = folder / "vfr.mp4"
    steps = "+".join(f"{b - a}*gte(N,{i + 1})" for i, (a, b) in enumerate(zip(VFR_MS, VFR_MS[1:])))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x40:rate=10:duration=1",
           "-f", "lavfi", "-i", "sine=frequency=440:duration=1.6,aformat=channel_layouts=stereo",
           "-vf", f"settb=1/1000,setpts='({steps})/1000/TB'", "-fps_mode", "vfr", "-enc_time_base", "1/1000",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", vfr)
    # ten channels (5.1.4) of PCM in Matroska: more than the AAC encoder takes
    many = folder / "ten_channels.mkv"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=32x32:rate={FPS}:duration=1", "-f", "lavfi", "-i",
           "sine=frequency=300:duration=1", "-filter_complex", "[1:a]pan=10c" + "".join(f"|c{i}=c0" for i in range(10)),
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", many)
    return {"surround": surround, "vfr": vfr, "many": many}


@pytest.fixture(scope="module")
def noise_style_png(tmp_path_factory) -> Path:
    """Smoothed 8x8 noise (not conftest's ``style_png`` texture)."""
    path = tmp_path_factory.mktemp("style") / "style.png"
    rng = np.random.default_rng(9)
    media.save_image(path, media.resize(rng.uniform(0, 255, (8, 8, 3)).astype(np.float32), (36, 36)))
    return path


def maker(tiny_net, noise_style_png) -> vd.StyleFrames:
    return vd.StyleFrames([noise_style_png], iterations_first=2, iterations=1, network=tiny_net, chunk=2)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, channels", [("mono", 1), ("stereo", 2), ("5.1", 6), ("5.1(side)", 6),
                                              ("7.1(wide)", 8), ("5.1.4", 10), ("22.2", 24), ("quad", 4),
                                              ("6 channels (FL+FR+FC+LFE+BL+BR)", 6), ("nonsense", None)])
def test_layout_channels(layout, channels):
    assert media.layout_channels(layout) == channels


def test_reader_sees_pixel_aspect_odd_size_and_surround(clips):
    reader = media.VideoReader(clips["surround"])
    assert reader.source_size == (47, 41) and reader.sar == 2
    assert reader.frame_size == (94, 41)  # display aspect: the width stretched, nothing shrunk
    assert (reader.frames, reader.rate, reader.vfr) == (FPS, FPS, False)
    assert reader.audio.channels == 6 and reader.audio.layout == "5.1"
    frame = next(iter(reader))
    assert frame.shape == (41, 94, 3) and frame.dtype == np.float32
    # for an MP4, a resized frame gets even sides instead of losing a row when it is written
    assert media.VideoReader(clips["surround"], even=True).frame_size == (94, 40)
    assert media.VideoReader(clips["surround"], size=32, even=True).frame_size == (32, 14)


def test_reader_keeps_variable_frame_rate(clips):
    reader = media.VideoReader(clips["vfr"])
    assert reader.vfr and reader.frames == len(VFR_MS)
    assert reader.timestamps == [Fraction(ms, 1000) for ms in VFR_MS] + [Fraction(1600, 1000)]
    assert len(list(reader)) == len(VFR_MS)  # each frame once: none duplicated to a constant rate
    part = media.VideoReader(clips["vfr"], start=4, end=8)
    assert part.timestamps == [Fraction(ms - 400, 1000) for ms in VFR_MS[4:9]]
    assert part.audio_start == pytest.approx(0.4)
    assert media.VideoReader(clips["vfr"], end=5).vfr is False  # the first five are evenly spaced


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def test_write_video_variable_rate_keeps_each_frame_time(clips, tmp_path):
    reader = media.VideoReader(clips["vfr"], start=2)
    out = media.write_video(tmp_path / "out.mp4", reader, reader.rate, audio_from=str(clips["vfr"]),
                            audio_start=reader.audio_start, timestamps=reader.timestamps)
    assert frame_times(out) == reader.timestamps[:-1]
    samples, rate = decoded_audio(out)
    assert samples.shape[1] == 2
    assert len(samples) / rate == pytest.approx(float(reader.duration), abs=2e-3)
    assert media.VideoReader(out).duration == reader.duration  # the last frame keeps its 0.1 s
    gif = media.write_video(tmp_path / "out.gif", media.VideoReader(clips["vfr"]), 10,
                            timestamps=media.VideoReader(clips["vfr"]).timestamps)
    from PIL import Image, ImageSequence
    with Image.open(gif) as im:
        assert [f.info["duration"] for f in ImageSequence.Iterator(im)] == [100] * 5 + [250] * 4 + [100]


def test_write_video_refuses_timestamps_that_go_back(tmp_path):
    frames = [np.zeros((8, 8, 3), np.float32)] * 2
    with pytest.raises(MediaError, match="increase"):
        media.write_video(tmp_path / "out.mp4", frames, 10, timestamps=[0, 0.2, 0.1])
    assert list(tmp_path.iterdir()) == []


def test_audio_the_aac_encoder_refuses_is_copied(clips, tmp_path):
    """Ten channels: copied as they are (PCM fits an MP4), cut at packet boundaries."""
    reader = media.VideoReader(clips["many"], end=6)
    assert reader.audio.channels == 10
    out = media.write_video(tmp_path / "out.mp4", reader, reader.rate, audio_from=str(clips["many"]))
    samples, rate = decoded_audio(out)
    assert samples.shape[1] == 10 and len(samples) / rate == pytest.approx(0.5, abs=0.03)


# --------------------------------------------------------------------------------------------
# the frame loop on such clips
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_process_surround_clip_from_a_later_frame(clips, tiny_net, noise_style_png, tmp_path):
    """Frames 3..8 of the 5.1, non-square, odd-sized clip: six frames at the display aspect with
    even sides and square pixels, all six audio channels, the audio as long as the frames and
    starting at frame 3 (the burst at 0.5 s comes 0.25 s in)."""
    start, end = 3, 9
    out = tmp_path / "out.mp4"
    result = vd.process(clips["surround"], out, maker(tiny_net, noise_style_png),
                        vd.VideoSettings(start=start, end=end))
    assert result.frames == end - start and result.fps == FPS
    written = media.VideoReader(out)
    assert (written.frames, written.frame_size, written.sar) == (end - start, (94, 40), 1)
    assert "SAR 1:1" in stream_line(out, "Video")
    assert frame_times(out) == [Fraction(i, FPS) for i in range(end - start)]
    samples, rate = decoded_audio(out)
    assert samples.shape[1] == 6
    assert len(samples) / rate == pytest.approx((end - start) / FPS, abs=2e-3)
    assert onset(samples, rate) == pytest.approx(BURST - start / FPS, abs=0.01)


@pytest.mark.slow
def test_process_variable_rate_clip(clips, tiny_net, noise_style_png, tmp_path):
    out = tmp_path / "out.mp4"
    result = vd.process(clips["vfr"], out, maker(tiny_net, noise_style_png), vd.VideoSettings(start=3))
    assert result.frames == len(VFR_MS) - 3
    assert frame_times(out) == [Fraction(ms - VFR_MS[3], 1000) for ms in VFR_MS[3:]]
    samples, rate = decoded_audio(out)
    assert len(samples) / rate == pytest.approx((1600 - VFR_MS[3]) / 1000, abs=2e-3)
    # --fps retimes: a constant rate, every frame 1/fps
    retimed = vd.process(clips["vfr"], tmp_path / "retimed.mp4", maker(tiny_net, noise_style_png),
                         vd.VideoSettings(start=3, fps=20))
    assert frame_times(retimed.path) == [Fraction(i, 20) for i in range(len(VFR_MS) - 3)]


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_default_output_beside_the_clip_never_replaced_silently(clips, noise_style_png, vgg_h5,
                                                                     tmp_path, capsys, jaxdream_home):
    folder = tmp_path / "clips"
    folder.mkdir()
    clip = shutil.copy(clips["surround"], folder / "clip.mp4")
    argv = ["video", clip, "--style", noise_style_png, "--weights", vgg_h5, "--frames", 2, "--size", 48,
            "--iterations-first", 1, "--iterations", 1]
    rc, out, err = run_main(argv, capsys)
    assert rc == 0, err
    made = folder / "clip_styled.mp4"
    assert media.VideoReader(made).frames == 2
    # before the first frame: frame count, size, duration, audio and a time estimate
    header = out.splitlines()[0]
    assert re.fullmatch(r"clip\.mp4: 2 frames \(0\.17 s, 12 fps\) at 48x20, 5\.1 audio kept; "
                        r"(about .+ on this CPU \(estimated; refined as frames finish\)"
                        r"|time left is shown once the first frame is done)", header), header
    assert re.search(r"^frame 1/2: .*about \d+ s left$", out, re.M), out
    before = made.read_bytes()
    rc, out, err = run_main(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "clip_styled.mp4 already exists" in lines[0] and "--overwrite" in lines[0] and "-o" in lines[0]
    assert made.read_bytes() == before and out == ""
    rc, _, err = run_main(argv + ["--overwrite", "--quiet"], capsys)
    assert rc == 0, err
    rc, out, err = run_main(["video", clip, "--dream", "--dry-run"], capsys)
    assert rc == 0 and str(folder / "clip_dream.mp4") in out, err
    assert sorted(p.name for p in folder.iterdir()) == ["clip.mp4", "clip_styled.mp4"]


def test_cli_help_states_default_size_and_its_cost(capsys):
    assert cli_main(["video", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert re.search(r"--size SIZE longest side .* 'full' .*\(default 256\b.* s per frame", text), text


def test_cli_size_full_runs_at_the_clips_own_size(clips, noise_style_png, tmp_path, capsys):
    rc, out, err = run_main(["video", clips["vfr"], "--style", noise_style_png, "--size", "full", "-o",
                            tmp_path / "o.mp4", "--dry-run"], capsys)
    assert rc == 0 and "at 48x40" in out, err


# --------------------------------------------------------------------------------------------
# the real clip
# --------------------------------------------------------------------------------------------


@pytest.mark.realweights
@pytest.mark.skipif(not BUNNY.is_file(), reason="../shared/media/bigbuckbunny.mp4 not present (dev/CI only)")
def test_bigbuckbunny_keeps_51_audio_in_sync(tiny_net, noise_style_png, tmp_path):
    """Frames 50..54 of the real 1280x720 25 fps clip with 5.1 AAC: five frames, six channels,
    audio 0.2 s long and equal to the source's samples from 2.0 s on."""
    out = tmp_path / "bunny.mp4"
    result = vd.process(BUNNY, out, maker(tiny_net, noise_style_png), vd.VideoSettings(size=64, start=50, end=55))
    assert result.frames == 5 and result.fps == 25
    assert media.VideoReader(out).frame_size == (64, 36)
    samples, rate = decoded_audio(out)
    assert samples.shape[1] == 6 and rate == 48000
    assert len(samples) / rate == pytest.approx(0.2, abs=2e-3)
    source, _ = decoded_audio(BUNNY)
    want = source[2 * rate: 2 * rate + len(samples)].astype(np.float32)
    got = samples.astype(np.float32)
    # re-encoded AAC: the same signal (not shifted by even 1 ms, which would decorrelate it)
    middle = slice(2048, len(got) - 2048)
    corr = np.sum(want[middle] * got[middle]) / np.sqrt(np.sum(want[middle] ** 2) * np.sum(got[middle] ** 2))
    assert corr > 0.9


@pytest.mark.realweights
@pytest.mark.skipif(not BUNNY.is_file() or not REAL_WEIGHTS.is_dir(), reason=REAL_SKIP_REASON)
def test_bigbuckbunny_card_command_with_real_weights(tmp_path, capsys, jaxdream_home, monkeypatch):
    """The card's command, as typed, on a copy of the real clip (few frames, small size)."""
    monkeypatch.setenv("JAXDREAM_WEIGHTS_DIR", str(REAL_WEIGHTS))
    clip = shutil.copy(BUNNY, tmp_path / "bigbuckbunny.mp4")
    rc, out, err = run_main(["video", clip, "--style", MEDIA / "hubble_deep_field.png", "--size", 64,
                            "--frames", 3, "--iterations-first", 5, "--iterations", 2], capsys)
    assert rc == 0, err
    assert out.startswith("bigbuckbunny.mp4: 3 frames (0.12 s, 25 fps) at 64x36, 5.1 audio kept; ")
    made = tmp_path / "bigbuckbunny_styled.mp4"
    assert frame_times(made) == [Fraction(i, 25) for i in range(3)]
    samples, rate = decoded_audio(made)
    assert samples.shape[1] == 6 and len(samples) / rate == pytest.approx(0.12, abs=2e-3)
