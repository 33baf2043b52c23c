"""Long-term temporal consistency and multi-pass video stylisation (Ruder et al. 2018): the
long-term target against a hand-made example, flows to frames t-1, t-2, t-4, long-term and
two-pass runs on tiny clips, and resuming in the middle of a pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import maker, pan_frames, run_main, vgg_layers, write_clip

from jaxdream import flow, media
from jaxdream import video as vd
from jaxdream.errors import SettingsError


def test_long_term_target_holds_each_pixel_by_its_nearest_reliable_frame():
    """Four pixels; frames t-1, t-2, t-4 reliable as marked: each pixel follows the nearest
    reliable frame, once; a pixel with none has mask 0."""
    c1 = np.array([[1, 0, 0, 0]], np.float32)
    c2 = np.array([[1, 1, 0, 0]], np.float32)
    c4 = np.array([[1, 1, 1, 0]], np.float32)
    w1, w2, w4 = (np.full((1, 4, 3), v, np.float32) for v in (10.0, 20.0, 40.0))
    image, mask = vd.long_term_target([w1, w2, w4], [c1, c2, c4], "closest-first")
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0]])
    np.testing.assert_array_equal(image[0, :3, 0], [10, 20, 40])
    np.testing.assert_array_equal(image[0, 3], w1[0, 3])  # unconstrained: the nearest warp
    # the combined term equals artistic-videos' sum of per-frame terms with c_long weights
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 2, (8, 9)).astype(np.float32) for _ in range(3)]
    warped = [rng.uniform(0, 255, (8, 9, 3)).astype(np.float32) for _ in range(3)]
    image, mask = vd.long_term_target(warped, masks, "closest-first")
    x = rng.uniform(0, 255, (8, 9, 3)).astype(np.float32)
    seen, expected = np.zeros((8, 9), np.float32), 0.0
    for w, c in zip(warped, masks):
        c_long = np.maximum(c - seen, 0)
        expected += np.sum(c_long[..., None] * (x - w) ** 2)
        seen += c
    assert np.sum(mask[..., None] * (x - image) ** 2) == pytest.approx(expected, rel=1e-5)
    assert set(np.unique(mask)) <= {0.0, 1.0}


def test_long_term_frames_share_pixels_by_normalize_unless_told_closest_first(clip6, tiny_net, style_png,
                                                                              tmp_path):
    """normalize is the default weighting; a work folder of a version that recorded no weighting
    ran closest-first, so it resumes with --long-term-weights closest-first and no other way."""
    assert vd.VideoSettings().long_term_weights == "normalize"
    c1, c2 = np.array([[1, 0]], np.float32), np.array([[1, 1]], np.float32)
    w1, w2 = np.full((1, 2, 3), 10.0, np.float32), np.full((1, 2, 3), 20.0, np.float32)
    image, mask = vd.long_term_target([w1, w2], [c1, c2])
    np.testing.assert_array_equal(image[0, :, 0], [15, 20])  # the mean where both are reliable
    np.testing.assert_array_equal(mask, [[1, 1]])
    folder = tmp_path / "frames"
    closest = vd.VideoSettings(temporal_frames=(1, 2), long_term_weights="closest-first")

    def stop(p):
        if p.frame == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        vd.process(clip6, folder, maker(tiny_net, style_png), closest, progress=stop)
    state_file = folder / "jaxdream-state.json"
    state = json.loads(state_file.read_text())
    assert state.pop("long_term_weights") == "closest-first"
    state_file.write_text(json.dumps(state))  # as the older version wrote it
    with pytest.raises(SettingsError, match=r'\(long_term_weights: was "closest-first", now "normalize"\)'):
        vd.process(clip6, folder, maker(tiny_net, style_png), vd.VideoSettings(temporal_frames=(1, 2)), resume=True)
    assert vd.process(clip6, folder, maker(tiny_net, style_png), closest, resume=True).frames == 6


def test_flows_reach_back_to_each_offset():
    frames = pan_frames(6, 2)
    got = list(vd._with_flows(iter(frames), 0, True, None, (1, 2, 4)))
    assert [sorted(f) for _, _, f in got] == [[], [1], [1, 2], [1, 2], [1, 2, 4], [1, 2, 4]]
    fw, mask = flow.pair_flows([frames[5]], [frames[1]])
    np.testing.assert_allclose(got[5][2][4][0], fw[0], atol=1e-4)
    assert np.mean(np.abs(got[5][2][4][0][..., 0] - 8)[mask[0] > 0]) < 1  # a pan of 2 px per frame
    resumed = list(vd._with_flows(iter(frames), 3, True, None, (1, 2, 4)))
    assert [i for i, _, _ in resumed] == [3, 4, 5] and sorted(resumed[0][2]) == [1, 2]


@pytest.fixture(scope="module")
def clip4(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip4") / "pan4.mp4", pan_frames(4, 2))


@pytest.fixture(scope="module")
def clip6(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip6") / "pan6.mp4", pan_frames(6, 2))


def _frames_of(folder):
    return [media.load_image(p) for p in sorted(folder.glob("frame_*.png"))]


def test_long_term_run_resumes_bit_for_bit(clip6, tiny_net, style_png, tmp_path):
    settings = vd.VideoSettings(temporal_frames=(1, 2, 4))
    full = vd.process(clip6, tmp_path / "full", maker(tiny_net, style_png), settings)
    short = vd.process(clip6, tmp_path / "short", maker(tiny_net, style_png), vd.VideoSettings())
    assert full.frames == short.frames == 6
    a, b = _frames_of(tmp_path / "full"), _frames_of(tmp_path / "short")
    np.testing.assert_array_equal(a[:2], b[:2])  # frames 0 and 1 see only t-1
    assert max(float(np.abs(x - y).max()) for x, y in zip(a[2:], b[2:])) > 0  # t-2 and t-4 count

    def stop(p):
        if p.frame == 5:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        vd.process(clip6, tmp_path / "part", maker(tiny_net, style_png), settings, progress=stop)
    assert len(list((tmp_path / "part").glob("state_*.npy"))) == 4  # frames 1-4 kept for t-4
    vd.process(clip6, tmp_path / "part", maker(tiny_net, style_png), settings, resume=True)
    for x, y in zip(_frames_of(tmp_path / "full"), _frames_of(tmp_path / "part"), strict=True):
        np.testing.assert_array_equal(x, y)


def test_two_passes_and_a_resume_in_the_middle_of_a_pass(clip4, tiny_net, style_png, tmp_path):
    one = vd.process(clip4, tmp_path / "one", maker(tiny_net, style_png), vd.VideoSettings())
    seen = []
    two = vd.process(clip4, tmp_path / "two", maker(tiny_net, style_png), vd.VideoSettings(passes=2),
                     progress=lambda p: seen.append((p.frame, p.frames, p.pass_number)))
    assert one.frames == two.frames == 4
    assert seen == [(k, 8, 1) for k in range(1, 5)] + [(k, 8, 2) for k in range(5, 9)]
    frames_two = _frames_of(tmp_path / "two")
    assert all(media.read_settings(tmp_path / "two" / f"frame_{t:05d}.png")["pass"] == 2 for t in range(4))
    assert not list((tmp_path / "two").glob("flows_*")) and not (tmp_path / "two" / "jaxdream-passes.json").exists()
    assert max(float(np.abs(x - y).max()) for x, y in zip(_frames_of(tmp_path / "one"), frames_two)) > 0
    assert two.temporal_error is not None and np.isfinite(two.temporal_error)

    def stop(p):
        if p.pass_number == 2 and p.frame == 6:  # the second frame of the backward pass: frame 2
            raise KeyboardInterrupt
    out = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        vd.process(clip4, out, maker(tiny_net, style_png), vd.VideoSettings(passes=2), progress=stop)
    assert json.loads((out / "jaxdream-passes.json").read_text()) == {"pass": 2, "done": 2}
    assert len(list(out.glob("flows_*.npz"))) == 3
    vd.process(clip4, out, maker(tiny_net, style_png), vd.VideoSettings(passes=2), resume=True)
    for x, y in zip(frames_two, _frames_of(out), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kw, needle", [
    (dict(temporal_frames=(0,)), "temporal frames must be a whole number >= 1"),
    (dict(temporal_frames=(2, 4)), "must include 1"),
    (dict(passes=0), "passes"),
    (dict(blend_weight=-1.0), "blend weight"),
])
def test_bad_long_term_and_pass_settings(kw, needle):
    with pytest.raises(SettingsError, match=needle):
        vd.VideoSettings(**kw).validate()


def test_chain_flows_adds_up_and_keeps_only_pixels_reliable_all_along():
    """Three links of a 1.5 px shift: 4.5 px straight back; the columns whose chain leaves the
    frame, and the pixels that land on an unreliable pixel of a middle frame, drop out."""
    h, w = 6, 12
    shift = np.zeros((h, w, 2), np.float32)
    shift[..., 0] = 1.5
    masks = [np.ones((h, w), np.float32) for _ in range(3)]
    masks[1][2, 5] = 0  # frame t-1: pixel (x=5, y=2) unreliable; reached from x=3.5 of frame t
    composite, mask = flow.chain_flows([shift] * 3, masks)
    np.testing.assert_allclose(np.asarray(composite)[..., 0], 4.5)
    np.testing.assert_allclose(np.asarray(composite)[..., 1], 0)
    mask = np.asarray(mask)
    assert mask[:, 7:].sum() == 0 and mask[:, :7].sum() == h * 7 - 2  # x=3 and x=4 sample the hole
    assert mask[2, 3] == 0 and mask[2, 4] == 0 and mask[1, 3] == 1


@pytest.mark.slow
def test_cli_long_term_two_passes_and_bad_values(clip4, style_png, tmp_path, capsys, jaxdream_home):
    from jaxdream.weights.keras import write_keras_h5
    weights = tmp_path / "vgg.h5"
    write_keras_h5(weights, {f"block{k[4]}_conv{k[6]}": list(v) for k, v in vgg_layers().items()})
    out = tmp_path / "frames"
    rc, stdout, err = run_main(["video", clip4, "--style", style_png, "-o", f"{out}/", "--weights", weights,
                               "--iterations-first", 2, "--iterations", 1, "--temporal-frames", "1,2",
                               "--passes", 2, "--quiet"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{t:05d}.png" for t in range(4)]
    saved = media.read_settings(out / "frame_00000.png")
    assert saved["pass"] == 2 and saved["temporal_frames"] == [1, 2] and saved["passes"] == 2
    for argv, needle in [(["--temporal-frames", "0"], "temporal-frames"), (["--passes", "0"], "--passes"),
                         (["--temporal-frames", "2,4"], "must include 1"),
                         (["--blend-weight", "-1"], "--blend-weight")]:
        rc, _, err = run_main(["video", clip4, "--style", style_png, "-o", tmp_path / "x.mp4", *argv], capsys)
        lines = err.strip().splitlines()
        assert rc != 0 and len(lines) == 1 and needle in lines[0], err
        assert not (tmp_path / "x.mp4").exists()
    rc, _, err = run_main(["video", clip4, "--dream", "-o", tmp_path / "d.mp4", "--passes", "2"], capsys)
    assert rc != 0 and "for style transfer" in err and len(err.strip().splitlines()) == 1, err


def test_cli_video_passes_the_tolerance_to_the_frames(monkeypatch, clip4, style_png, tmp_path, capsys, jaxdream_home):
    """``video --tol-loss-relative`` and ``--lbfgs-precondition`` reach the frame maker (and
    their defaults stay the library's)."""
    seen = []

    class Stop(BaseException):  # past the command runner's catch-all for bugs
        pass

    def fake(self, *a, **kw):
        seen.append((kw.get("tol_loss_relative"), kw.get("tol_loss_relative_interval"), kw.get("lbfgs_precondition")))
        raise Stop

    import functools
    monkeypatch.setattr(vd.StyleFrames, "__init__", functools.wraps(vd.StyleFrames.__init__)(fake))
    for extra in ([], ["--tol-loss-relative", "0.05", "--tol-loss-relative-interval", "5", "--lbfgs-precondition", "0"]):
        with pytest.raises(Stop):
            run_main(["video", clip4, "--style", style_png, "-o", tmp_path / "t.mp4", *extra], capsys)
    assert seen == [(None, None, None), (0.05, 5, 0.0)]


def test_long_term_normalize_pulls_each_pixel_to_the_mean_of_its_reliable_frames():
    """artistic-videos' 'normalize': weights c_k / max(sum c, 1); the combined target is their
    weighted mean and equals the per-frame sum up to a constant (same gradient)."""
    c1 = np.array([[1, 0, 0, 0]], np.float32)
    c2 = np.array([[1, 1, 0, 0]], np.float32)
    c4 = np.array([[1, 1, 1, 0]], np.float32)
    w1, w2, w4 = (np.full((1, 4, 3), v, np.float32) for v in (10.0, 20.0, 40.0))
    image, mask = vd.long_term_target([w1, w2, w4], [c1, c2, c4], "normalize")
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0]])
    np.testing.assert_allclose(image[0, :3, 0], [70 / 3, 30, 40], rtol=1e-6)
    rng = np.random.default_rng(1)
    masks = [rng.uniform(0, 1, (8, 9)).astype(np.float32) for _ in range(3)]
    warped = [rng.uniform(0, 255, (8, 9, 3)).astype(np.float32) for _ in range(3)]
    image, mask = vd.long_term_target(warped, masks, "normalize")
    total = np.maximum(sum(masks), 1)

    def per_frame_sum(x):
        return sum(np.sum((c / total)[..., None] * (x - w) ** 2) for w, c in zip(warped, masks))
    x, y = (rng.uniform(0, 255, (8, 9, 3)).astype(np.float32) for _ in range(2))
    combined = lambda z: np.sum(mask[..., None] * (z - image) ** 2)
    # same loss up to a constant: differences between two points agree
    assert combined(x) - combined(y) == pytest.approx(per_frame_sum(x) - per_frame_sum(y), rel=1e-4)


def test_unknown_long_term_weighting_is_refused():
    with pytest.raises(SettingsError, match="long-term"):
        vd.VideoSettings(temporal_frames=(1, 2), long_term_weights="furthest").validate()
    with pytest.raises(SettingsError, match="long-term"):
        vd.long_term_target([np.zeros((2, 2, 3))], [np.ones((2, 2))], "furthest")


class _OutOfRange:
    """A maker whose frames leave 0..255 (as optimised pixels do): records what each frame
    starts from."""

    kind, loss, mesh, index = "style", 0.0, None, 0

    def __init__(self):
        self.starts = []

    def check(self, frame_hw, frames=None):
        pass

    def settings(self):
        return {"mode": "out-of-range"}

    def first(self, frame, callback=None):
        return np.full(frame.shape, 300.0, np.float32)

    def next(self, frame, prev_out, warped, mask, init_mode, callback=None, target=None):
        return self.refine(frame, warped, target, callback)

    def refine(self, frame, init, target, callback=None):
        self.starts.append((self.index, float(np.min(init)), None if target is None else float(np.min(target[0]))))
        return np.asarray(init, np.float32) + 10.0


def test_frames_start_from_the_unclipped_states_in_every_pass(clip4, tmp_path):
    """The written frames are clipped to 0..255; the next frame (and every frame of a later
    pass) starts from, and is held to, the unclipped pixels of its neighbours."""
    fake = _OutOfRange()
    vd.process(clip4, tmp_path / "out", fake, vd.VideoSettings(passes=2))
    assert all(np.all(f == 255) for f in _frames_of(tmp_path / "out"))
    # pass 1 forward: frame t starts from frame t-1's 300 + 10 (t - 1) warped
    assert [(t, lo, tgt) for t, lo, tgt in fake.starts[:3]] == [(1, 300.0, 300.0), (2, 310.0, 310.0),
                                                                (3, 320.0, 320.0)]
    # pass 2 backward: frame 3 has no later neighbour (its own 330); frame t blends its own
    # 300 + 10 t with frame t+1's new result, both far above 255
    backward = fake.starts[3:]
    assert [t for t, _, _ in backward] == [3, 2, 1, 0]
    assert backward[0][1] == 330.0 and backward[0][2] is None
    assert all(lo >= 300 and tgt >= 300 for _, lo, tgt in backward[1:]), backward
    assert not list((tmp_path / "out").glob("state_*.npy"))


def test_style_frames_return_the_unclipped_iterate(tiny_net, style_png):
    frame = pan_frames(1)[0]
    m = maker(tiny_net, style_png, first_init=np.full(frame.shape, 300.0, np.float32), learning_rate=1e-3)
    out = m.first(frame)
    assert out.shape == frame.shape and out.min() > 280  # not clipped to 255


def test_original_colors_frames_are_written_recoloured(clip4, tiny_net, style_png, tmp_path):
    """With original_colors the written frame is the recoloured picture, while the next frame
    still starts from the optimised pixels."""
    m = maker(tiny_net, style_png, original_colors=True)
    frame = pan_frames(1)[0]
    iterate = m.first(frame)
    assert float(np.abs(np.clip(iterate, 0, 255) - m.picture).max()) > 1  # recoloured
    vd.process(clip4, tmp_path / "oc", m, vd.VideoSettings())
    np.testing.assert_array_equal(_frames_of(tmp_path / "oc")[-1], np.clip(np.rint(m.picture), 0, 255))
