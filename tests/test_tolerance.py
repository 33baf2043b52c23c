"""Adaptive work: ``tol_loss_relative`` ends a scale (or a video frame) once the loss settles."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdream.style import programs
from jaxdream import style
from jaxdream.cli.main import main as cli_main
from jaxdream.errors import SettingsError
from jaxdream.video import StyleFrames


def _trajectory(tiny_net, images, **kwargs) -> np.ndarray:
    """(iterations, B) total loss after every iteration of a run without a tolerance."""
    seen = []
    r = style.stylize(images[0], images[1], network=tiny_net, size=40, chunk=1, init="image",
                      callback=lambda p: seen.append(p.losses["total"].astype(np.float64)), **kwargs)
    assert r.iterations_run == [len(seen)]
    return np.array(seen)


def _expected_stop(losses: np.ndarray, tol: float, every: int) -> int:
    """artistic-videos' rule in NumPy: at every multiple of ``every`` compare with the loss one
    interval before (the first check at twice the interval); stop when every member's relative
    change is below ``tol``."""
    total = len(losses)
    for k in range(2 * every, total + 1, every):
        before, now = losses[k - every - 1], losses[k - 1]
        if np.all(np.abs(before - now) < tol * np.abs(before)):
            return k
    return total


@pytest.mark.parametrize("in_jit_loop", [False, True])
def test_stops_where_the_relative_change_falls_below_tol(tiny_net, images, in_jit_loop):
    losses = _trajectory(tiny_net, images, num_iterations=30, in_jit_loop=in_jit_loop)[:, 0]
    every = 3
    checks = np.arange(2 * every, 31, every)
    rel = np.abs(losses[checks - every - 1] - losses[checks - 1]) / losses[checks - every - 1]
    # a tolerance between the first change that is a new minimum after k=6 and the ones before
    first = int(np.argmax(rel < rel[0] * 0.6))
    assert first > 0 and np.all(rel[:first] > rel[first]), rel
    tol = float((rel[first] + rel[:first].min()) / 2)
    want = int(checks[first])
    assert want == _expected_stop(losses[:, None], tol, every) < 30

    calls = []
    before = programs.lbfgs_chunk._cache_size() if in_jit_loop else programs.lbfgs_step._cache_size()
    r = style.stylize(images[0], images[1], network=tiny_net, size=40, num_iterations=30, chunk=2,
                      init="image", in_jit_loop=in_jit_loop, tol_loss_relative=tol,
                      tol_loss_relative_interval=every,
                      callback=lambda p: calls.append((p.iteration, p.converged)))
    assert r.iterations_run == [want]
    # chunks of 2 are cut at the multiples of the interval (2, 3, 5, 6, ..); the compiled
    # program is reused
    assert [i for i, _ in calls] == [i for i in range(1, want + 1) if i % 3 != 1]
    assert [i for i, c in calls if c] == [want]
    after = programs.lbfgs_chunk._cache_size() if in_jit_loop else programs.lbfgs_step._cache_size()
    assert after == before
    assert r.losses["total"][0] == pytest.approx(losses[want - 1], rel=1e-5)
    assert r.settings["tol_loss_relative"] == tol and r.settings["tol_loss_relative_interval"] == every

    # just below every change seen: runs the whole budget
    r = style.stylize(images[0], images[1], network=tiny_net, size=40, num_iterations=30, chunk=2,
                      init="image", in_jit_loop=in_jit_loop, tol_loss_relative=float(rel.min()) * 0.9,
                      tol_loss_relative_interval=every)
    assert r.iterations_run == [30]


def test_tol_zero_runs_the_full_budget_at_every_scale(tiny_net, images):
    calls = []
    r = style.stylize(images[0], images[1], network=tiny_net, size=40, scales=[20, 40],
                      num_iterations=[6, 4], chunk=4, tol_loss_relative_interval=1,
                      callback=lambda p: calls.append((p.scale, p.iteration, p.converged)))
    assert r.iterations_run == [6, 4]
    assert calls == [(0, 4, False), (0, 6, False), (1, 4, False)]  # no extra chunk boundaries
    assert r.settings["tol_loss_relative"] == 0.0
    # the stop applies per scale: each scale of a loose tolerance stops at its first check
    r = style.stylize(images[0], images[1], network=tiny_net, size=40, scales=[20, 40],
                      num_iterations=[6, 6], chunk=4, tol_loss_relative=1.0, tol_loss_relative_interval=2)
    assert r.iterations_run == [4, 4]


def test_a_batch_stops_only_when_every_member_converged(tiny_net, images):
    weights, every, tol = [1e2, 1e4], 3, 0.13
    losses = _trajectory(tiny_net, images, num_iterations=30, style_weight=weights)
    # each member's own run (its last bits may differ from its batch member's)
    alone = [_expected_stop(_trajectory(tiny_net, images, num_iterations=30, style_weight=sw), tol, every)
             for sw in weights]
    together = _expected_stop(losses, tol, every)
    assert together > min(alone), (alone, together)  # one member alone would have stopped sooner
    kwargs = dict(network=tiny_net, size=40, num_iterations=30, chunk=3, init="image",
                  tol_loss_relative=tol, tol_loss_relative_interval=every)
    swept = style.stylize(images[0], images[1], style_weight=weights, **kwargs)
    assert swept.iterations_run == [together]
    for m, sw in enumerate(weights):
        assert style.stylize(images[0], images[1], style_weight=sw, **kwargs).iterations_run == [alone[m]]


@pytest.mark.parametrize("bad, message", [
    ({"tol_loss_relative": -0.1}, "tol loss relative must be a number >= 0 and <= 1, got -0.1"),
    ({"tol_loss_relative": float("nan")}, "tol loss relative must be a number >= 0 and <= 1, got nan"),
    ({"tol_loss_relative": 2.0}, "tol loss relative must be a number >= 0 and <= 1, got 2"),
    ({"tol_loss_relative_interval": 0},
     "tol loss relative interval must be a whole number >= 1 and <= 10000000, got 0"),
    ({"tol_loss_relative_interval": 2.5},
     "tol loss relative interval must be a whole number >= 1 and <= 10000000, got 2.5"),
])
def test_bad_values_are_one_clear_line(tiny_net, images, bad, message):
    with pytest.raises(SettingsError) as e:
        style.plan_style(images[0], [images[1]], size=40, **bad)
    assert str(e.value) == message
    with pytest.raises(SettingsError, match=message.split(" must")[0]):
        StyleFrames([images[1]], network=tiny_net, **bad)


def test_video_frames_after_the_first_stop_early(tiny_net, images):
    frame = images[0]
    maker = StyleFrames([images[1]], network=tiny_net, iterations_first=6, iterations=30,
                        tol_loss_relative=1.0, tol_loss_relative_interval=5, chunk=4)
    out0 = maker.first(frame)
    assert maker.iterations_run == 6  # frame 0 always runs its whole budget
    mask = np.ones(frame.shape[:2], np.float32)
    maker.next(frame, out0, out0, mask, "prev-warped")
    assert maker.iterations_run == 10  # the first check, at twice the interval
    assert maker.settings()["tol_loss_relative"] == 1.0
    assert maker.settings()["tol_loss_relative_interval"] == 5
    off = StyleFrames([images[1]], network=tiny_net, iterations_first=6, iterations=30,
                      tol_loss_relative=0.0, chunk=4)
    off.next(frame, out0, out0, mask, "prev-warped")
    assert off.iterations_run == 30


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def test_cli_flags_reach_the_library(tmp_path, pngs, capsys, monkeypatch):
    monkeypatch.setenv("JAXDREAM_OFFLINE", "1")
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "home"))
    content, style_img = pngs
    argv = ["style", str(content), "--style", str(style_img), "-o", str(tmp_path / "out.png"),
            "--size", "32", "--iterations", "40"]
    assert cli_main([*argv, "--tol-loss-relative", "0.01", "--tol-loss-relative-interval", "5",
                     "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "for 40 iterations (each stopping once the loss changes by less than 0.01 in 5 iterations)" in out
    assert cli_main([*argv, "--dry-run"]) == 0
    assert "stopping" not in capsys.readouterr().out  # the style command's default: off

    seen = {}

    def fake_stylize(content, styles, callback=None, **settings):
        seen.update(settings)
        callback(style.StyleProgress(0, 1, (26, 32), 10, 40,
                                     {k: np.ones(1) for k in ("total", "content", "style", "tv")},
                                     np.full((1, 26, 32, 3), 100.0, np.float32), [], converged=True))
        return style.StyleResult(np.full((1, 26, 32, 3), 100.0, np.float32), [{}],
                                 {k: np.ones(1) for k in ("total", "content", "style", "tv")}, {}, [10])

    monkeypatch.setattr(style, "stylize", fake_stylize)
    assert cli_main([*argv, "--tol-loss-relative", "0.01", "--tol-loss-relative-interval", "5"]) == 0
    assert seen["tol_loss_relative"] == 0.01 and seen["tol_loss_relative_interval"] == 5
    assert "stopped at iteration 10/40" in capsys.readouterr().out
    seen.clear()
    assert cli_main([*argv, "--quiet"]) == 0
    assert "tol_loss_relative" not in seen and "tol_loss_relative_interval" not in seen


@pytest.mark.parametrize("flag, value, message", [
    ("--tol-loss-relative", "-1", "argument --tol-loss-relative: must be a number >= 0 and <= 1, got '-1'"),
    ("--tol-loss-relative", "nan", "argument --tol-loss-relative: must be a number >= 0 and <= 1, got 'nan'"),
    ("--tol-loss-relative-interval", "0",
     "argument --tol-loss-relative-interval: must be a whole number >= 1 and <= 10000000, got '0'"),
])
def test_cli_bad_values(tmp_path, pngs, capsys, flag, value, message):
    content, style_img = pngs
    rc = cli_main(["style", str(content), "--style", str(style_img), "-o", str(tmp_path / "out.png"),
                   flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
