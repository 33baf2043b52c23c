"""The page's options, read from the command line's own parser, and a form turned back into argv.

There is one definition of every option: :data:`jaxdream.options.OPTIONS`, from which the
argparse parser of ``jaxdream dream``, ``style``, ``zoom`` and ``video``
(:func:`jaxdream.jobs.command.build_parser`) is built, its numeric types being the
:class:`jaxdream.options.Number` definitions. This module lists which of those options the page
shows (:data:`MAIN`) and reads everything else about them (flag, default, help, choices, range)
from the parser; a submitted form becomes a command line that the same parser checks, so a value
is refused on the page exactly as on the command line.

Files reach a run only as uploads: no option the page offers names a file, except ``--init``,
whose values are limited to :data:`SAFE_CHOICES`.
"""

from __future__ import annotations

import argparse
import functools
import re
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import SettingsError
from ..options import Number, label

#: The commands the studio runs, in the page's order.
COMMANDS = ("dream", "style", "zoom", "video")

#: The options the page shows for each command, as typed on the command line. Their
#: definitions (default, type, range, choices, help) come from the parser.
MAIN = {
    "dream": ("--size", "--octaves", "--steps", "--step-size", "--octave-scale", "--jitter", "--layers",
              "--channels", "--class", "--normalize", "--tile-size", "--seed"),
    "style": ("--size", "--iterations", "--style-weight", "--content-weight", "--tv-weight", "--init",
              "--optimizer", "--learning-rate", "--style-scale", "--pooling", "--original-colors",
              "--color-transfer", "--seed"),
    "zoom": ("--size", "--frames", "--zoom", "--rotate", "--steps-per-frame", "--fps", "--loop", "--octaves",
             "--steps", "--step-size", "--layers", "--seed"),
    "video": ("--dream", "--size", "--start", "--frames", "--iterations-first", "--iterations",
              "--temporal-weight", "--style-weight", "--content-weight", "--steps-per-frame", "--blend",
              "--octaves", "--steps", "--layers", "--seed"),
}

#: What the studio's forms start with where it differs from the command line's default: a style
#: run that shows a picture at its defaults (the photo as the start; at the command line's random
#: start, a few dozen iterations show only noise), and enough iterations for the style to show.
PRESETS = {
    "dream": {},
    "style": {"init": "image", "iterations": "300"},
    "zoom": {"frames": "48"},
    "video": {"frames": "24", "iterations-first": "200", "iterations": "60"},
}

#: Options whose command-line value may also be a file name: the page allows only these values.
SAFE_CHOICES = {"--init": ("random", "image")}

#: What each run writes into its job folder (sweeps add RESULT_sw100.png ... and RESULT_sheet.png).
OUTPUTS = {"dream": "result.png", "style": "result.png", "zoom": "result.gif", "video": "result.mp4"}


@dataclass(frozen=True)
class Input:
    """A file a command takes: an upload of kind ``image`` or ``video``.

    Attributes:
        role: the form's name for it.
        label: what the page calls it.
        kind: ``image`` or ``video``.
        flag: the option that names it (None: positional).
        least, most: how many files (``most`` 0: any number).
    """

    role: str
    label: str
    kind: str
    flag: str | None = None
    least: int = 1
    most: int = 1


#: The files of each command, in command-line order.
INPUTS = {
    "dream": (Input("input", "photo", "image"),),
    "style": (Input("input", "photo", "image"), Input("style", "style images", "image", "--style", 1, 0)),
    "zoom": (Input("input", "start photo", "image"),),
    "video": (Input("input", "clip", "video"), Input("style", "style images (none with --dream)", "image",
                                                     "--style", 0, 0)),
}


class FormError(SettingsError):
    """A form the command line would refuse; the message says why (one line), ``field`` which
    of the form's fields it is about (None: the form as a whole)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


#: Words of an error line that name the field it is about, when it names no flag.
_FIELD_WORDS = (("layer", "layers"), ("class", "class"), ("channel", "channels"), ("megapixel", "size"),
                ("memory", "size"), ("octave", "octaves"), ("mask", None))


def field_named_by(command: str, message: str) -> str | None:
    """The field of ``command``'s form an error line is about: the first of its flags the line
    names (``--size``), else the first field a word of it points to (``unknown layer`` -> layers)."""
    names = [f.name for f in fields(command)]
    flags = [m for m in re.findall(r"--([\w-]+)", message) if m in names]  # in the line's order
    if flags:
        return flags[0]
    lower = message.lower()
    for word, name in _FIELD_WORDS:
        if word in lower:
            return name if name in names else None
    return None


@dataclass(frozen=True)
class Field:
    """One option as the page shows it.

    Attributes:
        name: the form key (the flag without dashes).
        flag: the option as typed (``--step-size``).
        kind: ``flag`` (a checkbox), ``number``, ``list`` (comma-separated numbers: a sweep),
            ``pair``, ``choice`` or ``text``.
        default: the command line's default, as text ('' when there is none).
        help: the command line's help.
        choices: the values allowed (``choice``).
        integer, low, high, low_open: a number's range (:class:`jaxdream.options.Number`).
    """

    name: str
    flag: str
    kind: str
    default: str
    help: str
    choices: tuple[str, ...] = ()
    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    label: str = ""


def _text(value) -> str:
    """A default as the page shows it: 1.5, 100, 'a,b', '' for None and False."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(action: argparse.Action) -> tuple[Number | None, str]:
    """The :class:`Number` behind an option's argparse type and how it is used (``number``,
    ``list`` or ``pair``), or (None, '')."""
    number = getattr(action.type, "__self__", None)
    if not isinstance(number, Number):
        return None, ""
    return number, {"parse": "number", "parse_list": "list", "parse_pair": "pair"}[action.type.__name__]


def field_of(action: argparse.Action, flag: str) -> Field:
    """The page's description of one parser action."""
    name = flag.lstrip("-")
    help_text = "" if action.help in (None, argparse.SUPPRESS) else action.help
    if isinstance(action, argparse._StoreTrueAction):
        return Field(name, flag, "flag", "", help_text)
    number, use = _number(action)
    if number is not None:
        default = action.default
        if isinstance(default, str):  # argparse converts a text default with the type: so does the page
            default = action.type(default)
        return Field(name, flag, use, _text(default), help_text, integer=number.kind is int,
                     low=number.low, high=number.high, low_open=number.low_open)
    choices = SAFE_CHOICES.get(flag) or tuple(action.choices or ())
    return Field(name, flag, "choice" if choices else "text", _text(action.default), help_text,
                 tuple(str(c) for c in choices))


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``{command: its parser}`` of a parser with subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``{flag: action}`` of one command's parser (the last definition of a flag wins, as in
    argparse's ``conflict_handler="resolve"``)."""
    return {flag: action for action in parser._actions for flag in action.option_strings}


def fields(command: str) -> list[Field]:
    """The fields the page shows for ``command``, read from the command line's parser."""
    actions = _actions(subparsers(cli_parser())[_command(command)])
    return [replace(field_of(actions[flag], flag), label=label(flag, command)) for flag in MAIN[command]]


def describe() -> dict:
    """Everything the page needs to draw its forms (JSON-able)."""
    return {name: {"fields": [asdict(f) for f in fields(name)], "inputs": [asdict(i) for i in INPUTS[name]],
                   "presets": PRESETS[name]} for name in COMMANDS}


def _command(command: str) -> str:
    if command not in COMMANDS:
        raise FormError(f"unknown command '{command}'; the studio runs {', '.join(COMMANDS)}")
    return command


def _checked(value) -> bool:
    return value is True or str(value).strip().lower() in ("1", "on", "true", "yes")


def option_argv(command: str, values: dict) -> list[str]:
    """The command-line options of a submitted form: ``--flag=value`` for every value that
    differs from the default (one token each, so no value can be read as another option)."""
    known = {f.name: f for f in fields(command)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FormError(f"{command} has no option the page can set called '{unknown[0]}'")
    argv = []
    for name, f in known.items():
        value = values.get(name)
        if f.kind == "flag":
            argv += [f.flag] if value is not None and _checked(value) else []
            continue
        text = "" if value is None else str(value).strip()
        if text == "" or text == f.default:
            continue
        if f.flag in SAFE_CHOICES and text not in SAFE_CHOICES[f.flag]:
            raise FormError(f"{f.flag} must be one of {', '.join(SAFE_CHOICES[f.flag])} here, got '{text}'")
        argv.append(f"{f.flag}={text}")
    return argv


def input_argv(command: str, files: dict[str, list[Path]]) -> list[str]:
    """The command-line words naming a run's input files (positional, or ``--style FILE``...)."""
    argv = []
    for spec in INPUTS[command]:
        given = files.get(spec.role, [])
        if len(given) < spec.least or (spec.most and len(given) > spec.most):
            many = f"{spec.least} or more" if not spec.most else str(spec.least)
            raise FormError(f"{command} needs {many} {spec.label}, got {len(given)}")
        for path in given:
            argv += [spec.flag, str(path)] if spec.flag else [str(path)]
    return argv


def to_argv(command: str, files: dict[str, list[Path]], values: dict, output: Path) -> list[str]:
    """The full command line of a run (``dream IN -o OUT --steps=20 ...``), checked by the
    command line's parser; raises :class:`FormError` with the parser's message."""
    argv = [_command(command), *input_argv(command, files), "-o", str(output), *option_argv(command, values)]
    try:
        parse(argv)
    except FormError as e:
        raise FormError(str(e), field_named_by(command, str(e))) from None
    return argv


class _Refused(Exception):
    """Raised by the studio's copy of the parser instead of printing and exiting."""


def _raise(message: str):
    raise _Refused(message)


@functools.lru_cache(maxsize=1)
def cli_parser() -> argparse.ArgumentParser:
    """The command line's parser (built once), made to raise on a bad command line instead of
    exiting."""
    from ..jobs.command import build_parser
    parser = build_parser()
    for p in (parser, *subparsers(parser).values()):
        p.error = _raise
    return parser


_PARSE = threading.Lock()


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse a command line with the command line's own parser; :class:`FormError` if refused."""
    with _PARSE:
        try:
            return cli_parser().parse_args(argv)
        except _Refused as e:
            raise FormError(str(e)) from None
        except SystemExit:  # argparse exits only for --help or --version, which no form writes
            raise FormError("the options could not be read") from None
