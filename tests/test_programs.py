"""Every program a command needs is compiled once, ahead, before its first step; inside the
loops nothing crosses between host and device but what is named (``jax.transfer_guard``)."""

from __future__ import annotations

import contextlib
import logging
import re

import jax
import numpy as np
import pytest

from jaxdream.dream import Dreamer, make_config
from jaxdream.nets import get_spec
from jaxdream.nets.network import Network, unflatten

_COMPILING = re.compile(r"Compiling jit\((?P<name>[^)]*)\) with global shapes and types (?P<shapes>.*?)\. Argument")


class _Log(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.events: list[tuple[str, str]] = []

    def emit(self, record):
        m = _COMPILING.search(record.getMessage())
        if m:
            self.events.append((m["name"], m["shapes"]))

    def mark(self, label: str) -> None:
        self.events.append(("@" + label, ""))


@contextlib.contextmanager
def compile_log():
    """Collect ``(program name, argument shapes)`` of every XLA compile (and marks)."""
    handler = _Log()
    logger = logging.getLogger("jax._src.interpreters.pxla")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles():
            yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_the_log_sees_a_compile():
    with compile_log() as log:
        jax.jit(lambda x: x * 5 - 1)(np.zeros((3, 11), np.float32))
    assert [name for name, _ in log.events] == ["<lambda>"]


@pytest.fixture(scope="module")
def net(googlenet_caffemodel) -> Network:
    return Network(get_spec("googlenet"), unflatten("googlenet", googlenet_caffemodel.flat))


def _image(h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("per_step, hw", [(False, (67, 59)), (True, (71, 53))])
def test_a_dream_compiles_each_program_once_before_its_first_step(net, per_step, hw):
    """Three octaves of distinct shapes (odd sizes no other test uses): one ascent program and
    one start-image program per octave, all compiled before the first step; a second dream of
    the same size compiles nothing."""
    dreamer = Dreamer(make_config(layers="inception_3a/output", steps=2, octaves=3, octave_scale=1.3, jitter=2,
                                  seed=1), network=net)
    image = _image(*hw, 1)
    hook = {"on_step": (lambda p: log.mark("step"))} if per_step else {}
    with compile_log() as log:
        first = dreamer.run(image, progress=lambda p: log.mark("octave"), **hook)
    names = [n for n, _ in log.events]
    first_mark = min(i for i, n in enumerate(names) if n.startswith("@"))
    compiled = [e for e in log.events if not e[0].startswith("@")]
    assert all(not n.startswith("@") for n in names[:first_mark]) and len(compiled) == first_mark, log.events
    ascents = [e for e in compiled if e[0] == "ascent_step"]
    assert len(ascents) == 3 and len(set(ascents)) == 3                  # one per octave shape, once
    assert len([e for e in compiled if e[0] == "_octave_start"]) == 3
    with compile_log() as again:
        second = dreamer.run(image)
    assert again.events == []
    np.testing.assert_array_equal(first, second)


def test_step_counts_share_one_program(net):
    """The in-jit loop's step count is traced: 2 and 3 steps run the same program."""
    dreamer = Dreamer(make_config(layers="inception_3a/output", steps=2, octaves=1, jitter=2), network=net)
    image = jax.device_put(_image(41, 37))
    key = jax.random.key(0)
    dreamer.step(image, key, steps=2)  # the one-step-per-call program (CPU)
    with compile_log() as log:
        fn, args, kwargs = dreamer.program(image, key, in_jit_loop=True)
        fn(*args, **kwargs)
        dreamer2 = Dreamer(make_config(layers="inception_3a/output", steps=3, octaves=1, jitter=2), network=net)
        fn2, args2, kwargs2 = dreamer2.program(image, key, in_jit_loop=True)
        fn2(*args2, **kwargs2)
    assert [n for n, _ in log.events].count("_ascend_in_jit") == 1


def test_a_dream_moves_no_data_inside_its_loops(net):
    """Under ``jax.transfer_guard("disallow")`` the whole run works: its octave images go to the
    device and its result comes back explicitly, once; nothing else crosses."""
    dreamer = Dreamer(make_config(layers="inception_3a/output", steps=2, octaves=2, octave_scale=1.4, jitter=2),
                      network=net)
    image = _image(48, 40, 2)
    want = dreamer.run(image)
    with jax.transfer_guard("disallow"):
        got = dreamer.run(image)
    np.testing.assert_array_equal(got, want)


def test_the_transfer_guard_would_catch_an_implicit_transfer(net):
    with jax.transfer_guard("disallow"), pytest.raises(Exception, match="[Dd]isallowed"):
        jax.jit(lambda x: x + 1)(np.ones(3, np.float32))


# --------------------------------------------------------------------------------------------
# style transfer
# --------------------------------------------------------------------------------------------


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 127 + 60 * np.sin(xx / (3 + seed))[..., None] * np.cos(yy / 5)[..., None] + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.float32)


def test_a_coarse_to_fine_style_run_compiles_each_program_once_before_its_first_iteration(tiny_net):
    from jaxdream import style
    content, style_image = _texture(50, 70, 1), _texture(36, 36, 2)
    with compile_log() as log:
        style.stylize(content, [style_image], network=tiny_net, size=70, scales=(30, 45, 70), num_iterations=4,
                      chunk=2, callback=lambda p: log.mark(f"{p.scale}:{p.iteration}"))
    names = [n for n, _ in log.events]
    first = names.index(next(n for n in names if n.startswith("@")))
    steps = [e for e in log.events if e[0] == "lbfgs_step"]
    assert len(steps) == 3 and len(set(steps)) == 3        # one program per scale, compiled once
    assert all(n != "lbfgs_step" for n in names[first:])  # ...all before the first iteration
    with compile_log() as again:
        style.stylize(content, [style_image], network=tiny_net, size=70, scales=(30, 45, 70), num_iterations=4,
                      chunk=2)
    assert [n for n, _ in again.events if n in ("lbfgs_step", "lbfgs_chunk")] == []


@pytest.mark.parametrize("in_jit_loop", [False, True])
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_style_loops_move_only_what_they_name(tiny_net, monkeypatch, in_jit_loop, optimizer):
    """With the loops' transfer guard at ``disallow`` (:func:`jaxdream.optim.driver.loop_guard`)
    a run works and equals the unguarded run."""
    from jaxdream import style
    content, style_image = _texture(32, 40, 3), _texture(36, 36, 4)
    run = lambda: style.stylize(content, [style_image], network=tiny_net, size=40, num_iterations=4,  # noqa: E731
                                chunk=2, in_jit_loop=in_jit_loop, optimizer=optimizer)
    monkeypatch.setenv("JAXDREAM_TRANSFER_GUARD", "allow")
    want = run()
    monkeypatch.setenv("JAXDREAM_TRANSFER_GUARD", "disallow")
    got = run()
    np.testing.assert_array_equal(got.image, want.image)


def test_the_loop_guard_refuses_an_implicit_transfer(monkeypatch):
    from jaxdream.optim.driver import loop_guard
    monkeypatch.setenv("JAXDREAM_TRANSFER_GUARD", "disallow")
    with loop_guard(), pytest.raises(Exception, match="[Dd]isallowed"):
        jax.jit(lambda x: x * 2)(np.ones(4, np.float32))


def test_pipelined_chunks_give_the_same_run(tiny_net, monkeypatch):
    """In-jit chunks dispatched ahead of the host's reads (accelerators) reach the same images
    and report the same progress as chunks read one by one."""
    from jaxdream import style
    from jaxdream.style import run as style_run
    content, style_image = _texture(32, 40, 5), _texture(36, 36, 6)

    def go():
        seen = []
        result = style.stylize(content, [style_image], network=tiny_net, size=40, num_iterations=6, chunk=2,
                               in_jit_loop=True, callback=lambda p: seen.append((p.iteration, p.losses["total"][0])))
        return result, seen

    piped, piped_seen = go()
    monkeypatch.setattr(style_run, "_pipelined", lambda run, sc: False)
    plain, plain_seen = go()
    np.testing.assert_array_equal(piped.iterates, plain.iterates)
    assert piped_seen == plain_seen and [i for i, _ in plain_seen] == [2, 4, 6]


def test_a_pipelined_run_stops_at_the_chunk_its_callback_stopped(tiny_net):
    from jaxdream import style
    content, style_image = _texture(32, 40, 5), _texture(36, 36, 6)
    result = style.stylize(content, [style_image], network=tiny_net, size=40, num_iterations=10, chunk=2,
                           in_jit_loop=True, callback=lambda p: p.iteration >= 4)
    assert result.iterations_run == [4]
    four = style.stylize(content, [style_image], network=tiny_net, size=40, num_iterations=4, chunk=2,
                         in_jit_loop=True)
    np.testing.assert_array_equal(result.iterates, four.iterates)


# --------------------------------------------------------------------------------------------
# zoom
# --------------------------------------------------------------------------------------------


def test_a_zoom_compiles_each_program_once_before_its_first_frame(net, tmp_path, monkeypatch):
    """5 frames with a layer switch at frame 3: the octaves of frame 0, the later frames'
    steps for both layer sets and the warp are compiled before frame 0 is dreamed; nothing
    compiles while frames are made (the loops run under the transfer guard too)."""
    from jaxdream import zoom as zoom_loop
    monkeypatch.setenv("JAXDREAM_TRANSFER_GUARD", "disallow")
    dreamer = Dreamer(make_config(layers="inception_3a/output", steps=1, octaves=2, octave_scale=1.3, jitter=2),
                      network=net)
    settings = zoom_loop.ZoomSettings(frames=5, zoom=1.05, rotate=1.0, steps_per_frame=1)
    with compile_log() as log:
        zoom_loop.zoom(dreamer, _image(45, 61, 3), tmp_path / "z", settings,
                       layer_schedule=[(3, "inception_3b/output")], progress=lambda p: log.mark(str(p.frame)))
    names = [n for n, _ in log.events]
    first = next(i for i, n in enumerate(names) if n.startswith("@"))
    assert [n for n in names[first:] if not n.startswith("@")] == []
    assert names[:first].count("affine_about_centre") == 1
    ascents = [e for e in log.events[:first] if e[0] == "ascent_step"]
    assert len(ascents) == len(set(ascents)) == 3   # two octave shapes, the frame shape again with 3b
    assert sorted(p.name for p in (tmp_path / "z").glob("frame_*.png")) == [f"frame_{i:05d}.png" for i in range(5)]


# --------------------------------------------------------------------------------------------
# video
# --------------------------------------------------------------------------------------------

#: The programs that do a video's work (the optimiser's iterations, the optical flow).
_BIG = ("lbfgs_step", "lbfgs_chunk", "adam_step", "adam_chunk", "_estimate", "_pairs_jit", "_occlusion_mask")


def test_a_style_video_compiles_its_programs_before_its_first_frame(tiny_net, tmp_path):
    """3 frames: frame 0's and the later frames' iteration programs and the flow's are compiled
    before frame 0's first iteration, each once."""
    from jaxdream import media
    from jaxdream import video as vd
    clip = tmp_path / "clip.mp4"
    frames = [np.roll(_texture(40, 56, 7), 3 * i, axis=1) for i in range(3)]
    media.write_video(clip, iter(frames), 8)
    maker = vd.StyleFrames([_texture(36, 36, 8)], network=tiny_net, iterations_first=3, iterations=2, chunk=2)
    with compile_log() as log:
        vd.process(clip, tmp_path / "out/", maker, vd.VideoSettings(size=None),
                   inner_progress=lambda p: log.mark("iteration"))
    names = [n for n, _ in log.events]
    first = names.index("@iteration")
    assert [n for n in names[first:] if n in _BIG] == []
    big = [e for e in log.events[:first] if e[0] in _BIG]
    assert len(big) == len(set(big))                        # each compiled once
    assert [n for n, _ in big].count("lbfgs_step") == 2     # frame 0's and the later frames'
    assert any(n in ("_estimate", "_pairs_jit") for n, _ in big)


@pytest.mark.parametrize("in_jit_loop, calls", [(True, 3), (False, 6)])
def test_programs_dispatched_per_chunk(tiny_net, monkeypatch, in_jit_loop, calls):
    """6 iterations in chunks of 2: one program call per chunk inside jit (accelerators), one per
    iteration in the Python loop (CPU), and nothing else dispatched that runs the objective."""
    from jaxdream import style
    from jaxdream.style import run as style_run
    counted = []
    real = style_run._program

    class Counting:
        def __init__(self, fn):
            self.fn = fn

        def __call__(self, *a, **kw):
            counted.append(1)
            return self.fn(*a, **kw)

        def lower(self, *a, **kw):
            return self.fn.lower(*a, **kw)

    monkeypatch.setattr(style_run, "_program", lambda plan, loop: (Counting(real(plan, loop)[0]), real(plan, loop)[1]))
    style.stylize(_texture(32, 40, 9), [_texture(36, 36, 10)], network=tiny_net, size=40, num_iterations=6, chunk=2,
                  in_jit_loop=in_jit_loop)
    assert len(counted) == calls
