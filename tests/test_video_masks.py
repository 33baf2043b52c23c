"""Masks in video mode: a video of masks (frame k weights the clip's frame k), one picture for
every frame, and resume comparing the masks' contents.

Uses test_video's synthetic pan clip and narrow VGG-19, and the synthetic GoogLeNet of
``conftest.py``; mask videos are GIFs (their black and white are exact).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import H, N, W, as_params, pan_frames, read_folder, vgg_layers, write_clip

from jaxdream import media
from jaxdream import video as vd
from jaxdream.dream import Dreamer, make_config
from jaxdream.errors import MediaError, SettingsError
from jaxdream.media.masks import MaskFrames, load_mask
from jaxdream.nets import get_spec
from jaxdream.nets.network import Network, unflatten

DREAM = dict(layers="inception_3a/output", steps=2, octaves=1, jitter=2, seed=0)


def edge(k: int) -> int:
    """Frame k's mask is white left of this column (the region grows 6 px a frame)."""
    return 10 + 6 * k


def mask_frames(n: int = N, invert: bool = False) -> list[np.ndarray]:
    out = []
    for k in range(n):
        m = np.zeros((H, W, 3), np.float32)
        m[:, :edge(k)] = 255.0
        out.append(255.0 - m if invert else m)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video_masks")
    still = np.zeros((H, W), np.float32)
    still[:, : W // 2] = 1.0
    media.save_image(root / "left.png", np.repeat(still[..., None] * 255, 3, axis=-1))
    media.save_image(root / "square.png", np.full((20, 20, 3), 255.0))
    frames = mask_frames()
    frames[2] = np.zeros_like(frames[2])
    media.write_video(root / "with_empty.gif", frames, 12)
    return {"clip": write_clip(root / "pan.mp4", pan_frames()),
            "masks": media.write_video(root / "masks.gif", mask_frames(), 12),
            "inverse": media.write_video(root / "inverse.gif", mask_frames(invert=True), 12),
            "short": media.write_video(root / "short.gif", mask_frames(3), 12),
            "with_empty": root / "with_empty.gif", "left": root / "left.png", "square": root / "square.png"}


@pytest.fixture(scope="module")
def gnet(googlenet_caffemodel) -> Network:
    return Network(get_spec("googlenet"), unflatten("googlenet", googlenet_caffemodel.flat))


@pytest.fixture(scope="module")
def tiny_vgg() -> Network:
    return Network(get_spec("vgg19"), as_params(vgg_layers(widths=(4, 6, 8, 8, 8))), "max")


def expected_mask(k: int) -> np.ndarray:
    m = np.zeros((H, W), np.float32)
    m[:, :edge(k)] = 1.0
    return m


# --------------------------------------------------------------------------------------------
# MaskFrames


def test_a_video_of_masks_gives_each_frame_its_own_mask(files):
    masks = MaskFrames(files["masks"], "mask (masks.gif)")
    masks.check((H, W), range(0, N))
    for k in range(N):
        np.testing.assert_array_equal(masks.at(k), expected_mask(k))


def test_a_video_of_masks_follows_the_clips_range(files):
    """With --start 2 the clip's first frame is its frame 2, and so is the mask's."""
    masks = MaskFrames(files["masks"], "mask")
    masks.check((H, W), range(2, 5))
    np.testing.assert_array_equal(masks.at(0), expected_mask(2))
    np.testing.assert_array_equal(masks.at(2), expected_mask(4))


def test_a_picture_mask_is_every_frames_mask(files):
    masks = MaskFrames(files["left"], "mask")
    masks.check((H, W), range(0, N))
    assert masks.at(0) is masks.at(5)
    assert masks.at(3)[:, : W // 2].min() == 1.0 and masks.at(3)[:, W // 2:].max() == 0.0


@pytest.mark.parametrize("case, error, needle", [
    ("short", SettingsError, "mask (short.gif) has 3 frames from frame 0; the clip's range has 6"),
    ("aspect", SettingsError, "mask (square.png) is 20x20 (aspect 1); expected the aspect ratio of the frames, 48x40"),
    ("empty", SettingsError, "mask (with_empty.gif) frame 2 is empty (all black): style 1 would apply nowhere"),
    ("missing", MediaError, "nothing.gif"),
])
def test_bad_mask_videos_are_refused_with_the_reason(files, case, error, needle):
    path = {"short": files["short"], "aspect": files["square"], "empty": files["with_empty"],
            "missing": files["short"].with_name("nothing.gif")}[case]
    with pytest.raises(error) as info:
        masks = MaskFrames(path, f"mask ({path.name})", "style 1 would apply nowhere")
        masks.check((H, W), range(0, N))
    assert needle in str(info.value)


def test_a_video_is_no_mask_of_a_single_picture(files):
    with pytest.raises(SettingsError, match="is a video: a video of masks is for 'jaxdream video'"):
        load_mask(files["masks"], "mask (masks.gif)")


# --------------------------------------------------------------------------------------------
# the frame loop


def test_dream_video_dreams_only_where_each_frames_mask_is_white(files, gnet, tmp_path):
    """blend 0: every later frame starts from its own input frame, so right of its own mask's
    edge it is exactly the input (and the region grows frame by frame)."""
    maker = vd.DreamFrames(Dreamer(make_config(**DREAM), network=gnet), blend=0.0, steps_per_frame=2,
                           mask=files["masks"])
    vd.process(files["clip"], tmp_path / "out", maker, vd.VideoSettings())
    inputs = list(media.VideoReader(files["clip"]))
    outs = read_folder(tmp_path / "out")
    assert len(outs) == N
    for k, (inp, out) in enumerate(zip(inputs, outs)):
        right = slice(edge(k) + 4, None)
        np.testing.assert_array_equal(out[:, right], np.clip(np.rint(inp[:, right]), 0, 255), err_msg=f"frame {k}")
        assert np.abs(out[:, : edge(k) - 4] - inp[:, : edge(k) - 4]).mean() > 0.5, k


@pytest.mark.slow
def test_style_video_passes_each_frame_its_masks(files, tiny_vgg, tmp_path, monkeypatch):
    seen = []
    real = vd.StyleFrames._run

    def spy(self, frame, init, iterations, scales, temporal, callback, compile_only=False):
        if not compile_only:  # the programs compiled ahead (on blank frames) are not frames
            style = self.style | vd.masks_at(self._masks, self.index)
            seen.append([np.asarray(m) for m in style["masks"]])
        return real(self, frame, init, iterations, scales, temporal, callback, compile_only)

    monkeypatch.setattr(vd.StyleFrames, "_run", spy)
    styles = [np.full((24, 24, 3), 200.0, np.float32), np.full((24, 24, 3), 30.0, np.float32)]
    maker = vd.StyleFrames(styles, network=tiny_vgg, iterations_first=2, iterations=2, chunk=2,
                           masks=[files["masks"], files["inverse"]])
    result = vd.process(files["clip"], tmp_path / "styled", maker, vd.VideoSettings(end=4))
    assert result.frames == 4 and len(seen) == 4
    for k, (a, b) in enumerate(seen):
        np.testing.assert_array_equal(a, expected_mask(k))
        np.testing.assert_array_equal(b, 1 - expected_mask(k))
    assert all(np.all(np.isfinite(f)) for f in read_folder(tmp_path / "styled"))


def test_resume_compares_the_masks_contents_not_their_paths(files, gnet, tmp_path):
    mask = tmp_path / "mask.gif"
    mask.write_bytes(files["masks"].read_bytes())

    def maker(path):
        return vd.DreamFrames(Dreamer(make_config(**DREAM), network=gnet), blend=0.5, steps_per_frame=1,
                              mask=path)

    def interrupt(p):
        if p.frame == 2:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        vd.process(files["clip"], out, maker(mask), vd.VideoSettings(), progress=interrupt)
    state = json.loads((out / "jaxdream-state.json").read_text())
    assert state["mask_sha256"] == media.file_sha256(files["masks"])
    mask.write_bytes(files["inverse"].read_bytes())  # same path, other masks
    with pytest.raises(SettingsError, match="settings differ.*mask_sha256"):
        vd.process(files["clip"], out, maker(mask), vd.VideoSettings(), resume=True)
    copy = tmp_path / "elsewhere.gif"  # other path, same masks: resumes
    copy.write_bytes(files["masks"].read_bytes())
    assert vd.process(files["clip"], out, maker(copy), vd.VideoSettings(), resume=True).frames == N


# --------------------------------------------------------------------------------------------
# command line: one line for each bad mask


@pytest.mark.parametrize("case, needle", [
    ("short", "mask (short.gif) has 3 frames from frame 0; the clip's range has 6"),
    ("style short", "mask 2 (short.gif) has 3 frames from frame 0; the clip's range has 6"),
    ("style empty", "mask 1 (with_empty.gif) frame 2 is empty (all black): style image 1 would apply nowhere"),
    ("style mask video", "a --style-mask is a picture of its style image, not a video"),
    ("zoom", "mask (masks.gif) is a video: a video of masks is for 'jaxdream video'"),
])
def test_cli_bad_video_masks_are_one_line(files, case, needle, tmp_path, capsys, monkeypatch):
    from jaxdream.cli import main as cli_main
    monkeypatch.setenv("JAXDREAM_OFFLINE", "1")
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    out = tmp_path / "out.mp4"
    never = tmp_path / "never-loaded.weights"
    clip, style = files["clip"], files["left"]
    video = ["video", clip, "-o", out, "--weights", never, "--size", "full"]
    argv = {"short": [*video, "--dream", "--layers", "inception_3a/output", "--mask", files["short"]],
            "style short": [*video, "--style", style, "--style", style, "--mask", files["masks"],
                            "--mask", files["short"]],
            "style empty": [*video, "--style", style, "--mask", files["with_empty"]],
            "style mask video": [*video, "--style", style, "--style-mask", files["masks"]],
            "zoom": ["zoom", files["left"], "-o", out, "--weights", never, "--mask", files["masks"]]}[case]
    rc = cli_main.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err
    assert len([ln for ln in err.strip().splitlines() if ln.startswith("jaxdream: error:")]) == 1, err
    assert needle in err, err
    assert not out.exists()
