"""One vocabulary of options: every option of every command comes from
:data:`jaxdream.options.OPTIONS` (flags, default, help, choices), the same option means the same
in every command, the old spellings still work with one note line, and the library's defaults
are the table's."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import numpy as np
import pytest
from PIL import Image

from jaxdream import options
from jaxdream.jobs.command import build_parser

#: The commands with progress output: each has -q/--quiet.
PROGRESS_COMMANDS = ("dream", "zoom", "style", "video", "warmup")
#: --size per command, as the table should say (None: the input's own size).
SIZE_DEFAULTS = {"dream": None, "zoom": 512, "warmup": 512, "style": 512, "video": 256, "layers": 224}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """``(command, parser)`` of every command and sub-command (``weights download`` is the
    table's ``weights``)."""
    out = []
    for name, sub in _subparsers(parser).items():
        out.append((name, sub))
        out += [(name, subsub) for subsub in _subparsers(sub).values()]
    return out


PARSER = build_parser()
COMMANDS = _commands(PARSER)
BY_NAME = {name: p for name, p in COMMANDS if not _subparsers(p)}


def _long(action: argparse.Action) -> str:
    return next(s for s in action.option_strings if s.startswith("--"))


def _options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _action(command: str, flag: str) -> argparse.Action:
    return next(a for a in _options(BY_NAME[command]) if flag in a.option_strings)


def problems(p: argparse.ArgumentParser, command: str) -> list[str]:
    """How the options of one command's parser differ from the table (empty: not at all)."""
    found = []
    for action in _options(p):
        flag = _long(action)
        if action.help == argparse.SUPPRESS and (command, flag) in options.RENAMED:
            new = options.spec(options.RENAMED[command, flag][2:], command)
            if action.dest != (new.dest or new.name.replace("-", "_")) or action.default != argparse.SUPPRESS:
                found.append(f"{command} {flag}: not an alias of {new.flag}")
            continue
        name = flag[2:]
        if name not in options.OPTIONS:
            found.append(f"{command} {flag}: not in the table")
            continue
        spec = options.spec(name, command)
        if spec.action == "store_true":
            expected = False
        elif spec.many == "list" and spec.default is not None and not isinstance(spec.default, (list, tuple)):
            expected = [spec.default]
        else:
            expected = spec.default
        checks = {
            "flags": (set(action.option_strings), {f"--{name}", *spec.short, *spec.also}),
            "default": (action.default, expected),
            "help": (action.help, options.help_text(name, command)),
            "choices": (tuple(action.choices or ()), tuple(spec.choices or ())),
            "metavar": (action.metavar, spec.metavar),
            "dest": (action.dest, spec.dest or name.replace("-", "_")),
            "type": (action.type, spec.type()),
            "required": (action.required, spec.required),
        }
        found += [f"{command} {flag}: {what} {got!r}, the table says {want!r}"
                  for what, (got, want) in checks.items() if got != want]
    return found


@pytest.mark.parametrize("command, parser", COMMANDS, ids=[f"{c}-{p.prog.split()[-1]}" for c, p in COMMANDS])
def test_every_option_is_the_tables(command, parser):
    assert problems(parser, command) == []


def test_the_check_sees_an_option_written_inline():
    p = argparse.ArgumentParser()
    options.add(p, "seed", "dream")
    p.add_argument("--size", type=int, default=300, help="longest side")
    p.add_argument("--frobnicate", action="store_true")
    options.add(p, "steps", "dream").default = 11
    found = problems(p, "dream")
    assert len(found) == 6, found  # --size: default, help, metavar, type; --frobnicate; --steps' default
    assert any("--frobnicate: not in the table" in f for f in found)
    assert not any("--seed" in f for f in found)


def test_every_table_entry_is_used():
    used = {_long(a)[2:] for _, p in COMMANDS for a in _options(p)}
    assert set(options.OPTIONS) - used == set()


@pytest.mark.parametrize("command", PROGRESS_COMMANDS)
def test_quiet_is_q_everywhere(command):
    action = _action(command, "--quiet")
    assert set(action.option_strings) == {"-q", "--quiet"}
    assert action.dest == "quiet" and action.default is False


def test_same_name_same_flags_in_every_command():
    """An option has the same flags, destination and choices in every command that has it."""
    seen: dict[str, tuple] = {}
    for command, p in COMMANDS:
        for action in _options(p):
            if action.help == argparse.SUPPRESS:
                continue
            name = _long(action)[2:]
            shape = (action.dest, tuple(action.choices or ()),
                     tuple(sorted(s for s in action.option_strings if not s.startswith("--"))))
            if name == "model" and command == "style":
                continue
            seen.setdefault(name, shape)
            assert seen[name] == shape, (command, name)
    for name in ("size", "seed", "precision", "quiet", "mask", "weights"):
        assert name in seen


@pytest.mark.parametrize("command", list(SIZE_DEFAULTS))
def test_size_help_states_its_default(command):
    action = _action(command, "--size")
    assert action.default == SIZE_DEFAULTS[command]
    shown = "".join(BY_NAME[command].format_help().split())  # --help wraps lines, nothing else
    assert "".join(action.help.split()) in shown
    if SIZE_DEFAULTS[command] is not None:
        assert f"default {SIZE_DEFAULTS[command]}" in action.help
    else:
        assert "default: the input's own size" in action.help


@pytest.mark.parametrize("command", sorted(BY_NAME))
def test_every_help_shows_every_default(command):
    """Each option with a default says it in --help (as the help shows it), and every help
    renders (no stray % or {default})."""
    text = " ".join(BY_NAME[command].format_help().split())
    assert "{default}" not in text
    for action in _options(BY_NAME[command]):
        if action.help == argparse.SUPPRESS or action.default in (None, False, argparse.SUPPRESS):
            continue
        shown = options.show(action.default)
        assert "default" in action.help and shown in action.help, (command, action.option_strings, action.help)


def test_video_groups_shared_options_under_both_modes():
    titles = {}
    for group in BY_NAME["video"]._action_groups:
        for action in group._group_actions:
            titles.setdefault(_long(action) if action.option_strings else action.dest, group.title)
    for flag in ("--mask", "--seed", "--precision", "--quiet", "--weights"):
        assert not titles[flag].startswith(("dream", "style")), (flag, titles[flag])
        assert titles[flag] == titles["--mask"]
    assert titles["--steps"].startswith("dream") and titles["--iterations-first"].startswith("style")


def test_choices_are_the_librarys():
    from jaxdream import video as vd
    from jaxdream.dream import NORMALIZATIONS
    from jaxdream.media.color import COLOR_TRANSFERS
    from jaxdream.nets import MODELS
    from jaxdream.objectives.gatys import CONTENT_LAYERS, STYLE_LAYERS, STYLE_LOSSES
    from jaxdream.runtime.precision import PRECISIONS
    from jaxdream.style.plan import OPTIMIZERS
    from jaxdream.warmup import ASPECTS
    spec = options.spec
    assert spec("frame-init").choices == vd.INITS and spec("frame-init").default == vd.INITS[0]
    assert spec("long-term-weights").choices == vd.LONG_TERM_WEIGHTS
    assert spec("long-term-weights").default == vd.VideoSettings().long_term_weights
    assert spec("color-transfer").choices == COLOR_TRANSFERS
    assert spec("style-loss").choices == STYLE_LOSSES
    assert spec("precision").choices == PRECISIONS
    assert spec("optimizer").choices == OPTIMIZERS
    assert spec("pooling").choices == MODELS["vgg19"].poolings
    assert spec("model").choices == tuple(MODELS)
    assert spec("normalize").choices == ("auto", *NORMALIZATIONS)
    assert spec("content-layers").default.split(",") == list(CONTENT_LAYERS)
    assert spec("style-layers").default.split(",") == list(STYLE_LAYERS)
    assert ",".join(ASPECTS) in options.help_text("aspects", "warmup")
    # the moved values of video --init are later-frame modes that are not start images
    target, moved, both = spec("init", "video").moved
    assert target == "frame-init" and set(moved) | set(both) == set(vd.INITS)


def test_enumerated_options_refuse_other_values(capsys):
    for argv in (["style", "c.png", "-s", "s.png", "--pooling", "median"],
                 ["style", "c.png", "-s", "s.png", "--color-transfer", "sepia"],
                 ["dream", "in.png", "--model", "resnet50"],
                 ["video", "c.mp4", "--dream", "--frame-init", "next"]):
        with pytest.raises(SystemExit) as e:
            PARSER.parse_args(argv)
        assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    args = PARSER.parse_args(["style", "c.png", "-s", "s.png", "--optimizer", "Adam", "--model", "VGG19"])
    assert (args.optimizer, args.model) == ("adam", "vgg19")


def _defaults(f) -> dict:
    return {k: p.default for k, p in inspect.signature(f).parameters.items() if p.default is not p.empty}


def test_the_librarys_defaults_are_the_tables():
    from jaxdream import video as vd
    from jaxdream.dream import DreamConfig
    from jaxdream.style import plan_style
    from jaxdream.zoom import ZoomSettings
    d = options.default
    plan = _defaults(plan_style)
    for key, name in [("content_weight", "content-weight"), ("style_weight", "style-weight"),
                      ("tv_weight", "tv-weight"), ("optimizer", "optimizer"), ("pooling", "pooling"),
                      ("lbfgs_num_correction", "lbfgs-num-correction"), ("style_scale", "style-scale"),
                      ("seed", "seed"), ("chunk", "chunk"), ("precision", "precision"), ("style_loss", "style-loss"),
                      ("ema", "ema")]:
        assert plan[key] == d(name), key
    for key, name in [("num_iterations", "iterations"), ("size", "size"), ("init", "init"), ("model", "model"),
                      ("tol_loss_relative", "tol-loss-relative"), ("lbfgs_precondition", "lbfgs-precondition"),
                      ("tol_loss_relative_interval", "tol-loss-relative-interval")]:
        assert plan[key] == d(name, "style"), key
    # neural-style's defaults, which the table holds
    assert (plan["content_weight"], plan["style_weight"], plan["tv_weight"], plan["num_iterations"],
            plan["size"], plan["init"]) == (5.0, 100.0, 1e-3, 1000, 512, "random")
    cfg = DreamConfig()
    for name in ("model", "guide-size", "steps", "octaves", "octave-scale", "step-size", "jitter", "tile-size",
                 "seed", "precision"):
        assert getattr(cfg, name.replace("-", "_")) == d(name), name
    assert (cfg.steps, cfg.octaves, cfg.octave_scale, cfg.step_size) == (10, 4, 1.4, 1.5)  # google/deepdream's
    zoom = ZoomSettings()
    for name in ("frames", "zoom", "rotate", "translate", "steps-per-frame", "fps"):
        assert getattr(zoom, name.replace("-", "_")) == d(name, "zoom"), name
    video = vd.VideoSettings()
    assert (video.init, video.start, video.passes, video.blend_weight, video.temporal_frames) == \
        (d("frame-init"), d("start"), d("passes"), d("blend-weight"), d("temporal-frames"))
    frames = _defaults(vd.StyleFrames.__init__)
    for key, name in [("iterations_first", "iterations-first"), ("iterations", "iterations"),
                      ("temporal_weight", "temporal-weight"), ("first_init", "init"),
                      ("tol_loss_relative", "tol-loss-relative"), ("lbfgs_precondition", "lbfgs-precondition"),
                      ("tol_loss_relative_interval", "tol-loss-relative-interval")]:
        assert frames[key] == d(name, "video"), key
    assert (frames["iterations"], frames["first_init"], frames["tol_loss_relative"]) == (100, "content", 0.005)
    dream_frames = _defaults(vd.DreamFrames.__init__)
    assert (dream_frames["blend"], dream_frames["steps_per_frame"]) == (d("blend"), d("steps-per-frame", "video"))


# --------------------------------------------------------------------------------------------
# the old spellings
# --------------------------------------------------------------------------------------------


def _parse(argv, capsys) -> tuple[argparse.Namespace, list[str]]:
    args = PARSER.parse_args(argv)
    return args, capsys.readouterr().err.splitlines()


def test_every_renamed_option_parses_as_the_new_one(capsys):
    values = {"--iterations": "7", "--init": "random"}
    bases = {"style": ["style", "c.png", "-s", "s.png"], "video": ["video", "c.mp4", "-s", "s.png"]}
    assert options.RENAMED == {("style", "--num-iterations"): "--iterations", ("video", "--first-init"): "--init"}
    for (command, old), new in options.RENAMED.items():
        via_old, err = _parse([*bases[command], old, values[new]], capsys)
        via_new, err_new = _parse([*bases[command], new, values[new]], capsys)
        assert vars(via_old) == vars(via_new)
        assert err == [f"jaxdream: note: {old} is now {new}"] and err_new == []
        assert old not in BY_NAME[command].format_help()


def test_old_spelling_with_a_bad_value_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit) as e:
        PARSER.parse_args(["style", "c.png", "-s", "s.png", "--num-iterations", "nan"])
    assert e.value.code == 2 and "argument --num-iterations: must be a whole number" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["prev-warped", "prev"])
def test_video_init_with_a_later_frame_mode_is_frame_init(mode, capsys):
    args, err = _parse(["video", "c.mp4", "-s", "s.png", "--init", mode], capsys)
    assert (args.init, args.frame_init) == ("content", mode)
    assert err == [f"jaxdream: note: video --init {mode} is now --frame-init {mode}"]
    assert options.given(args, "frame-init") and not options.given(args, "init")


def test_video_init_names_the_first_frames_start(tmp_path, monkeypatch, capsys):
    args, err = _parse(["video", "c.mp4", "-s", "s.png", "--init", "random", "--frame-init", "prev"], capsys)
    assert (args.init, args.frame_init, err) == ("random", "prev", [])
    args, err = _parse(["video", "c.mp4", "-s", "s.png"], capsys)
    assert (args.init, args.frame_init, err) == ("content", "prev-warped", [])
    args, err = _parse(["video", "c.mp4", "-s", "s.png", "--init", "content"], capsys)  # both meanings: a note
    assert (args.init, args.frame_init) == ("content", "prev-warped") and len(err) == 1 and "--frame-init" in err[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prev").write_bytes(b"")  # an image file of that name is a start image
    args, err = _parse(["video", "c.mp4", "-s", "s.png", "--init", "prev"], capsys)
    assert (args.init, args.frame_init, err) == ("prev", "prev-warped", [])


def test_given_tells_a_default_from_a_value():
    args = PARSER.parse_args(["video", "c.mp4", "--dream"])
    assert args.size == 256 and not options.given(args, "size")
    args = PARSER.parse_args(["video", "c.mp4", "--dream", "--size", "256"])
    assert args.size == 256 and options.given(args, "size")


def test_old_spelling_runs_with_one_note(tmp_path, capsys, monkeypatch):
    """A whole command with ``--num-iterations`` (a dry run): exit 0, the plan on stdout, and
    exactly one line on stderr, the note."""
    from jaxdream.cli.main import main
    monkeypatch.setenv("JAXDREAM_OFFLINE", "1")
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(0)
    for name in ("content.png", "style.png"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / name)
    argv = ["style", tmp_path / "content.png", "-s", tmp_path / "style.png", "-o", tmp_path / "out.png",
            "--size", "32", "--num-iterations", "3", "--weights", tmp_path / "never-loaded.h5", "-q", "--dry-run"]
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.err.splitlines() == ["jaxdream: note: --num-iterations is now --iterations"]
    assert "dry run:" in captured.out and "3" in captured.out
    assert not (tmp_path / "out.png").exists()


def test_table_entries_are_well_formed():
    for name, o in options.OPTIONS.items():
        assert name == o.name and not name.startswith("-")
        assert o.action in ("store", "store_true", "append"), name
        assert o.many in ("", "list", "pair"), name
        assert "%" not in o.help, name  # argparse formats help with %
        for cmds, over in o.per.items():
            assert set(over) <= {f.name for f in dataclasses.fields(options.Option)}, (name, cmds)
            assert set(cmds.split()) <= {c for c, _ in COMMANDS}, (name, cmds)
        if o.number:
            assert o.number in options.NUMBERS, name
