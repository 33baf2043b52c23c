"""Video mode: temporal loss, the frame loop, outputs, audio, resume, bad inputs.

Library tests use a VGG-19 with 4-8 channels per layer (fast); command-line tests use
full-shape random weights files. The real-media run is at the end (skipped without ../shared).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from helpers import FPS, H, N, W, maker, pan_frames, read_folder, run_main, texture, write_clip
from weightfiles import REAL_SKIP_REASON, REAL_WEIGHTS

from jaxdream.objectives import gatys
from jaxdream import media, style
from jaxdream import video as vd
from jaxdream.errors import SettingsError

MEDIA = REAL_WEIGHTS.parent / "media"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
# The synthetic clip's helpers (H, W, N, FPS, texture, pan_frames, write_clip, maker, read_folder)
# are in helpers.py; the fixtures tiny_net, style_png and vgg_h5 in conftest.py.


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "pan.mp4", pan_frames(), audio=True)


# --------------------------------------------------------------------------------------------
# the temporal term
# --------------------------------------------------------------------------------------------


def test_temporal_term_matches_numpy(tiny_net):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 30, (24, 28, 3)).astype(np.float32)
    prev = rng.normal(0, 30, (24, 28, 3)).astype(np.float32)
    mask = (rng.uniform(size=(24, 28, 1)) > 0.3).astype(np.float32)
    plain = gatys.Objective()
    temporal = gatys.Objective(temporal=True)
    targets = gatys.prepare_targets(tiny_net.params, x + 1.0, [x[::-1]], [1.0], plain)
    w = {"content": jnp.float32(5), "style": jnp.float32(100), "tv": jnp.float32(1e-3)}
    total0, parts0 = gatys.objective(jnp.asarray(x), tiny_net.params, targets, w, plain)
    targets_t = targets | {"temporal": {"image": jnp.asarray(prev), "mask": jnp.asarray(mask)}}
    total1, parts1 = gatys.objective(jnp.asarray(x), tiny_net.params, targets_t,
                                     w | {"temporal": jnp.float32(1e3)}, temporal)
    want = 1e3 * np.mean(mask * (x.astype(np.float64) - prev) ** 2)  # mean over H*W*3
    assert parts1.shape == (4,) and parts0.shape == (3,)
    assert float(parts1[3]) == pytest.approx(want, rel=1e-5)
    assert float(total1) == pytest.approx(float(total0) + want, rel=1e-5)
    np.testing.assert_allclose(np.asarray(parts1[:3]), np.asarray(parts0), rtol=1e-6)


def test_temporal_loss_pulls_toward_the_target(tiny_net, style_png):
    """With a huge temporal weight and full mask the result stays at the warped frame."""
    content = texture(H, W, 1)
    target = texture(H, W, 2)
    mask = np.ones((H, W), np.float32)
    kw = dict(num_iterations=20, size=W, scales=(), init=target, network=tiny_net, chunk=10)
    free = style.stylize(content, [style_png], **kw)
    held = style.stylize(content, [style_png], temporal=(target, mask, 1e6), **kw)
    assert np.abs(held.image - target).mean() < 0.5 * np.abs(free.image - target).mean()
    assert "temporal" in held.losses and "temporal" not in free.losses


def test_temporal_target_shape_is_checked(tiny_net, style_png):
    with pytest.raises(SettingsError, match="temporal target"):
        style.stylize(texture(H, W, 1), [style_png], size=W, scales=(), num_iterations=1,
                      network=tiny_net, temporal=(np.zeros((H, W - 2, 3)), np.ones((H, W)), 1.0))


# --------------------------------------------------------------------------------------------
# the frame loop
# --------------------------------------------------------------------------------------------


def test_style_video_to_mp4_keeps_frames_fps_and_audio(clip, tiny_net, style_png, tmp_path):
    seen = []
    out = tmp_path / "styled.mp4"
    result = vd.process(clip, out, maker(tiny_net, style_png), vd.VideoSettings(),
                        progress=seen.append)
    assert result.path == out and result.frames == N and result.fps == FPS
    reader = media.VideoReader(out)
    assert (reader.frames, reader.fps, reader.frame_size, reader.has_audio) == (N, FPS, (W, H), True)
    assert [p.frame for p in seen] == list(range(1, N + 1))
    assert seen[0].temporal_error is None and all(p.temporal_error >= 0 for p in seen[1:])
    assert result.temporal_error == pytest.approx(np.mean([p.temporal_error for p in seen[1:]]))
    assert not (tmp_path / ".styled.mp4.frames").exists()  # the work folder is cleaned up


@pytest.mark.slow
def test_style_video_gif_and_frame_range(clip, tiny_net, style_png, tmp_path):
    out = tmp_path / "styled.gif"
    result = vd.process(clip, out, maker(tiny_net, style_png), vd.VideoSettings(start=1, end=5, size=24))
    assert result.frames == 4
    frames = imageio.mimread(out)
    assert len(frames) == 4 and frames[0].shape[:2] == (20, 24)


def test_style_video_to_folder_and_independent_is_worse(clip, tiny_net, style_png, tmp_path):
    out = tmp_path / "frames"
    m = maker(tiny_net, style_png, first_init="random", iterations_first=12, iterations=6)
    result = vd.process(clip, str(out) + "/", m, vd.VideoSettings(), compare_independent=True)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:05d}.png" for i in range(N)]  # no state or metrics files left
    assert media.read_settings(out / "frame_00003.png")["frame"] == 3
    # warped init + temporal loss is smoother than stylising each frame on its own
    assert result.temporal_error < 0.5 * result.independent_error


@pytest.mark.parametrize("init", ["prev", "content"])
def test_other_init_modes_run(clip, tiny_net, style_png, tmp_path, init):
    result = vd.process(clip, tmp_path / "f", maker(tiny_net, style_png),
                        vd.VideoSettings(init=init, end=3))
    assert result.frames == 3 and len(read_folder(tmp_path / "f")) == 3


def test_resume_gives_the_same_frames(clip, tiny_net, style_png, tmp_path):
    full = vd.process(clip, tmp_path / "full", maker(tiny_net, style_png), vd.VideoSettings())
    assert full.frames == N

    def interrupt(p):
        if p.frame == 3:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.mp4"
    with pytest.raises(KeyboardInterrupt):
        vd.process(clip, out, maker(tiny_net, style_png), vd.VideoSettings(), progress=interrupt)
    work = tmp_path / ".resumed.mp4.frames"
    assert len(list(work.glob("frame_*.png"))) == 3 and not out.exists()
    with pytest.raises(SettingsError, match="--resume"):  # not resuming: refuse to overwrite
        vd.process(clip, out, maker(tiny_net, style_png), vd.VideoSettings())
    with pytest.raises(SettingsError, match="settings differ"):
        vd.process(clip, out, maker(tiny_net, style_png, temporal_weight=5.0), vd.VideoSettings(),
                   resume=True)
    # resume into a folder so the frames can be compared bit for bit
    folder = tmp_path / "resumed"
    work.rename(folder)
    state = json.loads((folder / "jaxdream-state.json").read_text())
    assert state["temporal_weight"] == 1e3
    resumed = vd.process(clip, folder, maker(tiny_net, style_png), vd.VideoSettings(), resume=True)
    assert resumed.frames == N
    for a, b in zip(read_folder(tmp_path / "full"), read_folder(folder), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_folder_of_an_older_version_resumes_with_the_options_it_ran_with(clip, tiny_net, style_png,
                                                                          tmp_path):
    """A work folder recorded before --lbfgs-precondition existed ran plain L-BFGS: resuming it
    needs --lbfgs-precondition 0, and the refusal says so by value."""
    def interrupt(p):
        if p.frame == 2:
            raise KeyboardInterrupt

    folder = tmp_path / "frames"
    with pytest.raises(KeyboardInterrupt):
        vd.process(clip, folder, maker(tiny_net, style_png, lbfgs_precondition=0.0), vd.VideoSettings(end=4),
                   progress=interrupt)
    state_file = folder / "jaxdream-state.json"
    state = json.loads(state_file.read_text())
    assert state.pop("lbfgs_precondition") == 0.0
    state_file.write_text(json.dumps(state))  # as the older version wrote it
    with pytest.raises(SettingsError, match=r"\(lbfgs_precondition: was 0.0, now 1.0\); give the same options"):
        vd.process(clip, folder, maker(tiny_net, style_png), vd.VideoSettings(end=4), resume=True)
    assert vd.process(clip, folder, maker(tiny_net, style_png, lbfgs_precondition=0.0), vd.VideoSettings(end=4),
                      resume=True).frames == 4


def test_dream_video_warps_the_previous_dream(clip, googlenet_caffemodel, tmp_path):
    from jaxdream.dream import Dreamer, make_config
    cfg = make_config(layers="inception_3b/output", octaves=1, steps=2, tile_size=64)
    dreamer = Dreamer(cfg, weights=googlenet_caffemodel.path)
    m = vd.DreamFrames(dreamer, blend=1.0, steps_per_frame=1)
    result = vd.process(clip, tmp_path / "dream", m, vd.VideoSettings(size=48, end=3),
                        compare_independent=True)
    frames = read_folder(tmp_path / "dream")
    assert len(frames) == 3 and result.temporal_error is not None
    with pytest.raises(SettingsError, match="blend"):
        vd.DreamFrames(dreamer, blend=1.5)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_style_video(clip, style_png, vgg_h5, tmp_path, capsys, jaxdream_home):
    out = tmp_path / "out.mp4"
    rc, stdout, err = run_main(["video", clip, "--style", style_png, "-o", out, "--weights", vgg_h5,
                               "--frames", 3, "--iterations-first", 2, "--iterations", 1,
                               "--compare-independent"], capsys)
    assert rc == 0, err
    assert "frame 3/3:" in stdout and "temporal error" in stdout
    assert "independent per-frame processing" in stdout
    reader = media.VideoReader(out)
    assert (reader.frames, reader.fps, reader.has_audio) == (3, FPS, True)


def test_cli_dream_video(clip, googlenet_caffemodel, tmp_path, capsys, jaxdream_home):
    out = tmp_path / "dream.gif"
    rc, stdout, err = run_main(["video", clip, "--dream", "-o", out, "--weights", googlenet_caffemodel.path,
                               "--frames", 3, "--octaves", 1, "--steps", 1, "--layers",
                               "inception_3a/output", "--quiet"], capsys)
    assert rc == 0, err
    assert len(imageio.mimread(out)) == 3


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n")
    audio_only = folder / "audio_only.mp4"
    subprocess.run([FFMPEG, "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=0.5", "-c:a", "aac", str(audio_only)], check=True)
    photo = folder / "photo.png"
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(photo)
    empty = folder / "empty_clip.mp4"  # a valid MP4 container with zero frames and no stream
    subprocess.run([FFMPEG, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=32x32:d=1",
                    "-frames:v", "0", "-c:v", "libx264", str(empty)], check=True)
    return {"text": text, "audio_only": audio_only, "photo": photo, "empty_clip": empty}


@pytest.mark.parametrize("case", ["not a video", "still image", "zero frames", "empty clip", "unknown codec",
                                  "missing style",
                                  "both modes", "negative temporal weight", "too small"])
def test_cli_video_bad_inputs(case, clip, bad_media, style_png, tmp_path, capsys, jaxdream_home):
    out = tmp_path / "out.mp4"
    argv = ["video", clip, "--style", style_png, "-o", out, "--weights", tmp_path / "none.h5"]
    needle = {"not a video": "not a video", "still image": "single still frame", "zero frames": "no frames",
              "empty clip": "clip is empty",
              "unknown codec": ".avi", "missing style": "not found", "both modes": "not allowed",
              "negative temporal weight": "temporal-weight", "too small": "px"}[case]
    if case == "not a video":
        argv[1] = bad_media["text"]
    elif case == "still image":
        argv[1] = bad_media["photo"]
    elif case == "zero frames":
        argv[1] = bad_media["audio_only"]
    elif case == "empty clip":
        argv[1] = bad_media["empty_clip"]
    elif case == "unknown codec":
        out = tmp_path / "out.avi"
        argv[argv.index("-o") + 1] = out
    elif case == "missing style":
        argv[3] = tmp_path / "missing.png"
    elif case == "both modes":
        argv.append("--dream")
    elif case == "negative temporal weight":
        argv += ["--temporal-weight", "-1"]
    elif case == "too small":
        argv += ["--size", "8"]
    try:
        rc, _, err = run_main(argv, capsys)
    except SystemExit as e:  # argparse usage errors
        rc, err = e.code, capsys.readouterr().err
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxdream: error:"), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


# --------------------------------------------------------------------------------------------
# real weights and media
# --------------------------------------------------------------------------------------------


@pytest.mark.realweights
@pytest.mark.skipif(not (MEDIA / "pan.mp4").is_file() or not REAL_WEIGHTS.is_dir(), reason=REAL_SKIP_REASON)
def test_real_pan_clip_warped_beats_independent(tmp_path, jaxdream_home):
    """pan.mp4 at 64 px, 8 frames, with the real VGG-19: prev-warped + temporal loss is at least
    twice as smooth as stylising each frame independently."""
    from jaxdream.nets.network import load_network
    vgg = REAL_WEIGHTS / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    net = load_network("vgg19", vgg)
    m = vd.StyleFrames([MEDIA / "hubble_deep_field.png"], iterations_first=40, iterations=15,
                       network=net, first_init="random")
    result = vd.process(MEDIA / "pan.mp4", tmp_path / "pan.mp4", m, vd.VideoSettings(size=64, end=8),
                        compare_independent=True)
    reader = media.VideoReader(tmp_path / "pan.mp4")
    assert (reader.frames, reader.fps, reader.has_audio) == (8, 24.0, True)
    assert result.temporal_error < 0.5 * result.independent_error
