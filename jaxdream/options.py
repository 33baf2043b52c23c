"""One definition of every numeric setting: its type and range, shared by the CLI and the library.

The command line uses :meth:`Number.parse` as an argparse ``type`` (a bad value is a one-line
usage error naming the option); the library calls :meth:`Number.check` on the values it is
given (a bad value is a :class:`~jaxdream.errors.SettingsError`). Both say the same thing, so a
setting is refused the same way wherever it comes from. Every range is finite: nan, inf and
numbers too large to mean anything (``10**30`` steps, a zoom of ``1e30``) are refused.

Example:
    >>> STEP_SIZE.check(1.5)
    1.5
    >>> STEP_SIZE.parse("nan")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a number > 0 and <= 10000, got 'nan'
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .errors import SettingsError

__all__ = ["Number", "NUMBERS", "get"]


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Number:
    """A numeric setting: whole number or real, with an inclusive range (``low`` may be open).

    Attributes:
        name: the option as typed without dashes (``step-size``); the library spells it with
            underscores (``step_size``).
        kind: ``int`` or ``float``.
        low, high: the range; both always given, so every value is bounded.
        low_open: ``low`` itself is excluded (``> 0`` rather than ``>= 0``).
    """

    name: str
    kind: type
    low: float
    high: float
    low_open: bool = False

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    def describe(self) -> str:
        noun = "a whole number" if self.kind is int else "a number"
        low = f"> {_fmt(self.low)}" if self.low_open else f">= {_fmt(self.low)}"
        return f"{noun} {low} and <= {_fmt(self.high)}"

    def _problem(self, value) -> str | None:
        """Why ``value`` is not allowed (None if it is)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                return f"must be {self.describe()}, got {value!r}"
        if self.kind is int and (isinstance(value, float) and not value.is_integer()):
            return f"must be {self.describe()}, got {_fmt(value)}"
        if not math.isfinite(value):
            return f"must be {self.describe()}, got {value}"
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            return f"must be {self.describe()}, got {_fmt(value)}"
        return None

    def check(self, value, label: str | None = None):
        """Return ``value`` (as ``kind``) or raise SettingsError naming the setting."""
        problem = self._problem(value)
        if problem:
            raise SettingsError(f"{label or self.name.replace('-', ' ')} {problem}")
        return self.kind(value)

    def check_all(self, values, label: str | None = None) -> list:
        """:meth:`check` each of a list of values (a sweep)."""
        return [self.check(v, label) for v in values]

    def _convert(self, text: str):
        text = text.strip()
        if self.kind is int:
            try:
                return int(text)
            except ValueError:
                try:
                    value = float(text)  # "1e3" is a whole number too
                except ValueError:
                    raise argparse.ArgumentTypeError(f"expected {self.describe()}, got '{text}'") from None
                if math.isfinite(value) and value.is_integer():
                    return int(value)
                raise argparse.ArgumentTypeError(f"must be {self.describe()}, got '{text}'") from None
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got '{text}'") from None

    def parse(self, text: str):
        """argparse ``type``: text -> value; a bad value is a one-line usage error."""
        value = self._convert(text)
        problem = self._problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem.split(', got')[0]}, got '{text.strip()}'")
        return value

    def parse_list(self, text: str) -> list:
        """argparse ``type`` for ``V1,V2,..``: a list of at least one valid value."""
        parts = [p for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected {self.describe()} or a comma-separated list, got '{text}'")
        return [self.parse(p) for p in parts]

    def parse_pair(self, text: str) -> tuple:
        """argparse ``type`` for ``A,B``."""
        parts = text.split(",")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected two numbers like 2,-1, got '{text}'")
        return tuple(self.parse(p) for p in parts)


_MAX_PX = 65536     # longest side of any image jaxdream makes; memory is checked separately
_MAX_COUNT = 10**7  # iterations, steps, frames
_MAX_WEIGHT = 1e15  # loss weights: beyond this float32 losses overflow

NUMBERS: dict[str, Number] = {n.name: n for n in [
    # sizes
    Number("size", int, 1, _MAX_PX),
    Number("guide-size", int, 1, _MAX_PX),
    Number("tile-size", int, 32, _MAX_PX),
    Number("scales", int, 1, _MAX_PX),
    Number("style-scale", float, 0, 64, low_open=True),
    # DeepDream
    Number("steps", int, 1, _MAX_COUNT),
    Number("octaves", int, 1, 64),
    Number("octave-scale", float, 1, 16),
    Number("step-size", float, 0, 1e4, low_open=True),
    Number("jitter", int, 0, _MAX_PX),
    Number("lapnorm", int, 1, 16),
    Number("lapnorm-levels", int, 1, 16),
    Number("tile-batch", int, 1, 1024),
    Number("layer-weight", float, 0, _MAX_WEIGHT),
    Number("channel", int, 0, 100_000),
    Number("seed", int, 0, 2**32 - 1),
    # animation
    Number("frames", int, 1, _MAX_COUNT),
    Number("zoom", float, 0, 100, low_open=True),
    Number("rotate", float, -360, 360),
    Number("translate", float, -_MAX_PX, _MAX_PX),
    Number("steps-per-frame", int, 1, _MAX_COUNT),
    Number("fps", float, 0, 1000, low_open=True),
    Number("blend", float, 0, 1),
    Number("temporal-frames", int, 1, 64),
    Number("passes", int, 1, 1000),
    Number("blend-weight", float, 0, _MAX_WEIGHT),
    # style transfer
    Number("content-weight", float, 0, _MAX_WEIGHT),
    Number("style-weight", float, 0, _MAX_WEIGHT),
    Number("tv-weight", float, 0, _MAX_WEIGHT),
    Number("temporal-weight", float, 0, _MAX_WEIGHT),
    Number("style-blend-weights", float, 0, _MAX_WEIGHT),
    Number("num-iterations", int, 1, _MAX_COUNT),
    Number("iterations", int, 1, _MAX_COUNT),
    Number("iterations-first", int, 1, _MAX_COUNT),
    Number("learning-rate", float, 0, 1e6, low_open=True),
    Number("ema", float, 0, 0.9999),  # decay of Adam's iterate average (0: off)
    Number("lbfgs-precondition", float, 0, 100),  # weight of L-BFGS's pyramid preconditioner (0: off)
    Number("lbfgs-num-correction", int, 1, 10_000),
    Number("print-iter", int, 0, _MAX_COUNT),
    Number("save-iter", int, 0, _MAX_COUNT),
    Number("chunk", int, 1, _MAX_COUNT),
    Number("band-rows", int, 1, _MAX_PX),
    # stop a scale when the total loss changed by less than this fraction over an interval
    Number("tol-loss-relative", float, 0, 1),
    Number("tol-loss-relative-interval", int, 1, _MAX_COUNT),
    # video range
    Number("start", int, 0, _MAX_COUNT),
    Number("end", int, 1, _MAX_COUNT),
    # inspection and devices
    Number("top", int, 1, 1000),
    Number("devices", int, 1, 65536),
    Number("num-processes", int, 1, 65536),
    Number("process-id", int, 0, 65535),
    # the web studio (jaxdream serve)
    Number("port", int, 0, 65535),
    Number("max-upload-mb", float, 0, 1 << 20, low_open=True),
]}


def get(name: str) -> Number:
    """The definition of option ``name`` (``step-size`` or ``step_size``)."""
    return NUMBERS[name.replace("_", "-")]
