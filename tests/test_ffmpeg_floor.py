"""The ffmpeg jaxdream's video path needs (5.1 or newer: the probe's passthrough timestamps),
named in one line when the one at hand is older, missing or not ffmpeg; and the floor of
``imageio-ffmpeg`` in pyproject (0.6.0, which bundles ffmpeg 7.0) really runs a video."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from helpers import bundled_ffmpeg, cli_env, needs_script, pan_frames, run_cli, write_clip

from jaxdream.errors import MediaError
from jaxdream.media import video as media_video


def _fake_ffmpeg(folder: Path, first_line: str, status: int = 0) -> Path:
    exe = folder / "ffmpeg"
    exe.write_text(f"#!/bin/sh\necho '{first_line}'\nexit {status}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


@pytest.mark.parametrize("line, ok", [
    ("ffmpeg version 4.2.2-static https://johnvansickle.com/ffmpeg/  Copyright (c) 2000-2019", False),
    ("ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright (c) 2000-2021 the FFmpeg developers", False),
    ("ffmpeg version 5.0.1 Copyright (c) 2000-2022", False),
    ("ffmpeg version 5.1.2-3 Copyright (c) 2000-2022", True),
    ("ffmpeg version n9.0.2-17-g2a571b6068-20260930 Copyright (c) 2000-2026", True),
    ("ffmpeg version N-112345-gabcdef0 Copyright (c) 2000-2025", True),   # a git snapshot
])
def test_versions_below_the_floor_are_named(tmp_path, line, ok):
    exe = _fake_ffmpeg(tmp_path, line)
    if ok:
        assert media_video.check_ffmpeg(str(exe)) == str(exe)
        return
    with pytest.raises(MediaError) as e:
        media_video.check_ffmpeg(str(exe))
    text = str(e.value)
    version = line.split()[2].split("-")[0]
    assert "\n" not in text and str(exe) in text and version.rsplit(".", 1)[0] in text
    assert "5.1 or newer" in text and "imageio-ffmpeg" in text


def test_a_missing_or_foreign_binary_is_named(tmp_path):
    with pytest.raises(MediaError, match="cannot run"):
        media_video.check_ffmpeg(str(tmp_path / "nowhere" / "ffmpeg"))
    with pytest.raises(MediaError, match="is not ffmpeg"):
        media_video.check_ffmpeg(str(_fake_ffmpeg(tmp_path, "Python 3.11.7")))
    with pytest.raises(MediaError, match="is not ffmpeg"):
        media_video.check_ffmpeg(str(_fake_ffmpeg(tmp_path, "ffmpeg version 7.0", status=1)))


@needs_script
def test_an_old_ffmpeg_ends_the_video_command_in_one_line(tmp_path):
    """Not "not a video file" for a clip that is one: the line names the binary and versions."""
    clip = write_clip(tmp_path / "clip.mp4", pan_frames(3))
    (tmp_path / "style.png").write_bytes(b"")
    exe = _fake_ffmpeg(tmp_path, "ffmpeg version 4.2.2-static https://johnvansickle.com/ffmpeg/")
    env = cli_env(tmp_path / "home", IMAGEIO_FFMPEG_EXE=str(exe))
    run = run_cli(["video", clip, "--dream", "-o", tmp_path / "out.mp4"], env, cwd=tmp_path)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "ffmpeg 4.2" in lines[0] and str(exe) in lines[0] and "5.1" in lines[0]
    assert "not a video file" not in run.stderr
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.slow
@needs_script
def test_the_floor_release_runs_a_video_and_the_one_below_is_named(tmp_path, googlenet_caffemodel):
    """pyproject's floor, imageio-ffmpeg 0.6.0: a 3-frame dream video with its bundled ffmpeg
    writes its MP4; 0.5.1's ffmpeg (4.2.2) ends in the one line naming it."""
    import tomllib
    floor = next(d for d in tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
                 ["project"]["dependencies"] if d.startswith("imageio-ffmpeg"))
    assert floor.split(">=")[1].split(",")[0].strip() == "0.6.0"
    clip = write_clip(tmp_path / "clip.mp4", pan_frames(3))
    args = ["video", clip, "--dream", "--frames", 3, "--octaves", 1, "--steps", 1, "--size", 32,
            "--layers", "inception_3a/output", "--weights", googlenet_caffemodel.path]
    new = bundled_ffmpeg("0.6.0", tmp_path / "floor")
    run = run_cli([*args, "-o", tmp_path / "floor.mp4"], cli_env(tmp_path / "h1", IMAGEIO_FFMPEG_EXE=str(new)),
                  cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "floor.mp4").stat().st_size > 0
    old = bundled_ffmpeg("0.5.1", tmp_path / "below")
    run = run_cli([*args, "-o", tmp_path / "below.mp4"], cli_env(tmp_path / "h2", IMAGEIO_FFMPEG_EXE=str(old)),
                  cwd=tmp_path, timeout=900)
    assert run.returncode == 1 and "ffmpeg 4.2" in run.stderr and "5.1 or newer" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@needs_script
def test_a_zoom_to_mp4_finds_a_bad_ffmpeg_before_its_first_frame(tmp_path):
    from jaxdream import media
    photo = tmp_path / "photo.png"
    media.save_image(photo, np.full((32, 32, 3), 128.0, np.float32))
    env = cli_env(tmp_path / "home", IMAGEIO_FFMPEG_EXE=str(tmp_path / "missing-ffmpeg"))
    run = run_cli(["zoom", photo, "-o", tmp_path / "z.mp4", "--frames", 2], env, cwd=tmp_path)
    assert run.returncode == 1 and "cannot run" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert list(tmp_path.glob("*.frames")) == [] and not (tmp_path / "z.mp4").exists()
