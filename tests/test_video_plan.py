"""A video plans once per clip: the style targets are computed once and every later frame reuses
them and the compiled programs (results equal to planning every frame afresh)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxdream.style import run as style_run
from jaxdream.video import StyleFrames

#: Backend compiles seen since the listener was registered (jax.monitoring has no public way to
#: remove a listener, so one is registered for the session and read as a counter).
_COMPILES: list[str] = []


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(event)


jax.monitoring.register_event_duration_secs_listener(_on_event)


def _frames(images):
    frame = images[0]
    shifted = np.roll(frame, 2, axis=1)
    return [frame, shifted, np.roll(shifted, 2, axis=0)]


def _clip(maker, frames):
    """Frame 0, then two later frames from the previous output (an all-ones mask)."""
    mask = np.ones(frames[0].shape[:2], np.float32)
    out = [maker.first(frames[0])]
    for f in frames[1:]:
        out.append(maker.next(f, out[-1], out[-1], mask, "prev-warped"))
    return out


def test_style_targets_are_computed_once_per_clip(tiny_net, images, monkeypatch):
    calls = []
    real = style_run.style_targets

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)
    monkeypatch.setattr(style_run, "style_targets", counting)
    maker = StyleFrames([images[1]], network=tiny_net, iterations_first=3, iterations=2, chunk=2)
    _clip(maker, _frames(images))
    assert len(calls) == 1
    assert len(maker._targets) == 1


def test_reused_targets_give_the_same_frames(tiny_net, images):
    frames = _frames(images)
    planned_once = _clip(StyleFrames([images[1]], network=tiny_net, iterations_first=3, iterations=2, chunk=2),
                         frames)
    afresh = StyleFrames([images[1]], network=tiny_net, iterations_first=3, iterations=2, chunk=2)
    afresh._targets = None  # every frame computes its style targets again
    every_frame = _clip(afresh, frames)
    for a, b in zip(planned_once, every_frame):
        np.testing.assert_array_equal(a, b)


def test_the_compile_counter_counts():
    before = len(_COMPILES)
    jax.jit(lambda x: x * 3 + 1)(np.zeros((7, 5, 3), np.float32))
    assert len(_COMPILES) == before + 1


def test_later_frames_compile_nothing(tiny_net, images):
    frames = _frames(images) + [np.roll(images[0], 3, axis=1)]
    maker = StyleFrames([images[1]], network=tiny_net, iterations_first=3, iterations=2, chunk=2)
    mask = np.ones(frames[0].shape[:2], np.float32)
    out = maker.first(frames[0])
    out = maker.next(frames[1], out, out, mask, "prev-warped")  # the later frames' programs compile here
    before = len(_COMPILES)
    for f in frames[2:]:
        out = maker.next(f, out, out, mask, "prev-warped")
    assert len(_COMPILES) == before


@pytest.mark.parametrize("color_transfer", ["histogram"])
def test_a_colour_transfer_is_not_cached(tiny_net, images, color_transfer):
    """The styles are recoloured to each frame, so their targets cannot be kept."""
    maker = StyleFrames([images[1]], network=tiny_net, iterations_first=2, iterations=2, chunk=2,
                        color_transfer=color_transfer)
    _clip(maker, _frames(images)[:2])
    assert maker._targets == {}
