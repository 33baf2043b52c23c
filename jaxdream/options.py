"""One definition of every setting: numeric types and ranges (:data:`NUMBERS`), and every
command-line option (:data:`OPTIONS`: flags, default, choices, help), shared by the CLI and the library.

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

The commands add every option with :func:`add` (``add(group, "size", "zoom")``), so an option
has the same flags, meaning, choices and help in every command that takes it; where a command
differs (``--size`` is 512 in ``zoom``, 256 in ``video``) the table says so. The library's
signatures read their defaults from here too (:func:`default`). This module imports nothing
from jaxdream but :mod:`jaxdream.errors`: it sits at the bottom of the import graph.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .errors import SettingsError

__all__ = ["Number", "NUMBERS", "get", "Option", "OPTIONS", "spec", "default", "help_text", "label", "add", "given",
           "RENAMED"]


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


# --------------------------------------------------------------------------------------------
# the command-line options
# --------------------------------------------------------------------------------------------


def _lower(text: str) -> str:
    """argparse ``type`` of a name typed in any case (``--optimizer Adam``)."""
    return text.strip().lower()


def _scales(text: str):
    """``--scales``: ``off`` (single scale) or increasing sizes."""
    if text.strip().lower() in ("off", "none", "0"):
        return ()
    return NUMBERS["scales"].parse_list(text)


def _size_or_full(text: str):
    """``video --size``: a number of pixels, or ``full`` for the clip's own size."""
    if text.strip().lower() == "full":
        return "full"
    return NUMBERS["size"].parse(text)


@dataclass(frozen=True)
class Option:
    """One command-line option: the same flags, meaning and help in every command that has it.

    Attributes:
        name: the long flag without dashes (``step-size``); the argparse destination is it with
            underscores unless ``dest`` says otherwise.
        help: what it does; ``{default}`` is replaced by the default, and a help without it
            gets `` (default X)`` appended when the option has a default.
        short: short flags (``-q``).
        number: the :data:`NUMBERS` entry that parses it (default: ``name`` if there is one).
        many: ``list`` (comma-separated values, a sweep), ``pair`` (``A,B``) or '' (one value).
        parse: a custom argparse ``type`` (when it is not a plain number).
        default, choices, metavar, dest, required: as in argparse.
        action: ``store``, ``store_true`` or ``append``.
        also: more long flags with the same meaning (``style --image-size``, neural-style's).
        old: deprecated long flags: still accepted, with a note naming the new one.
        moved: ``(option, values, both)``: ``values`` given to this option are the old
            spelling of ``option`` (``video --init prev`` is now ``--frame-init prev``); a value
            of ``both``, which each option takes, keeps the new meaning with a note.
        per: ``{"cmd1 cmd2": {field: value}}``: what differs in those commands.
    """

    name: str
    help: str
    short: tuple[str, ...] = ()
    number: str | None = None
    many: str = ""
    parse: Callable | None = None
    default: Any = None
    choices: tuple | None = None
    metavar: str | None = None
    action: str = "store"
    dest: str | None = None
    required: bool = False
    also: tuple[str, ...] = ()
    old: tuple[str, ...] = ()
    moved: tuple | None = None
    per: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    def type(self) -> Callable | None:
        """The argparse ``type``: the :class:`Number`'s parser, or :attr:`parse`."""
        if self.parse is not None:
            return self.parse
        number = NUMBERS.get(self.number or self.name)
        if number is None or self.action == "store_true":
            return None
        return {"": number.parse, "list": number.parse_list, "pair": number.parse_pair}[self.many]

    def value(self):
        """The default as the parser stores it (a list option's default is a one-element list)."""
        if self.many == "list" and self.default is not None and not isinstance(self.default, (list, tuple)):
            return [self.default]
        return self.default


def show(value) -> str:
    """A default as the help writes it: 1.5, 1000, 0,0 for a pair, 1,2 for a list."""
    if isinstance(value, (list, tuple)):
        return ",".join(show(v) for v in value)
    return _fmt(float(value)) if isinstance(value, float) else str(value)


_DREAMS = "dream zoom warmup video"  # the commands that take the DeepDream options
_LAYERS = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"
_W = "W[,W..]"

OPTIONS: dict[str, Option] = {o.name: o for o in [
    # what every command has
    Option("output", "output image", short=("-o",), per={
        "dream": dict(help="output image (default: INPUT_dream.png)"),
        "zoom": dict(help="out.gif, out.mp4 or a folder/ for PNG frames", required=True),
        "style": dict(default="out.png", help="output image, or a folder/ for several content images"),
        "video": dict(help="out.mp4, out.gif or a folder/ for PNG frames (default: CLIP_styled.mp4, or "
                           "CLIP_dream.mp4 with --dream, beside the clip; an existing one is replaced only "
                           "with --overwrite)")}),
    Option("quiet", "no progress output (progress bars, loss lines)", short=("-q",),
           action="store_true"),
    Option("dry-run", "check the inputs, settings, output and memory, say what would run, and stop "
                      "(no weights loaded, nothing written)", action="store_true"),
    Option("resume", "continue an interrupted run from its last frame", action="store_true"),
    Option("overwrite", "start over when the output folder holds another run's frames (they are removed)",
           action="store_true"),
    Option("weights", "weights file (default: the cache, downloading if needed)"),
    Option("model", "network", parse=_lower, default="googlenet", choices=("googlenet", "vgg19"), per={
        "style": dict(default="vgg19", help=argparse.SUPPRESS),
        "classify": dict(help="model with a classifier")}),
    Option("size", "scale the input so its longest side is N px first (default: the input's own size)",
           metavar="N", per={
        "zoom": dict(default=512, help="scale the input so its longest side is N px first"),
        "warmup": dict(default=512, help="scale the images so their longest side is N px first (default: "
                                         "their own size, as dream); without images: the size to prepare "
                                         "(default {default})"),
        "style": dict(default=512, also=("--image-size",), help="longest side of the result"),
        "video": dict(default=256, parse=_size_or_full, metavar="SIZE",
                      help="longest side the frames are processed at, or 'full' for the clip's own "
                           "(default {default}, or the clip's own if smaller: 256x144 for 16:9, where on "
                           "a 2-core laptop CPU --style takes up to about 47 s per frame (100 iterations; "
                           "--tol-loss-relative ends a settled frame early: on bigbuckbunny after about "
                           "half) and 3.5 min for the first (400), --dream about 1 s per frame; the time "
                           "grows with the pixels: about 4x at 512)"),
        "layers": dict(default=224, help="square input size")}),
    Option("seed", "random seed", default=0, per={
        "style": dict(many="list", metavar="N[,N..]", help="random seed; several: a batched sweep")}),
    Option("precision", "network compute precision: float32 (CPU) or bfloat16 (GPU/TPU: half the memory "
                        "traffic; Gram matrices, losses and optimiser stay float32)",
           default="float32", choices=("float32", "bfloat16")),
    Option("mask", "dream only where this picture is white (grey levels scale the step; the input's aspect "
                   "ratio)", action="append", metavar="IMAGE", dest="masks",
           per={"zoom": dict(help="dream only where this picture is white (grey levels scale the step; the "
                                  "input's aspect ratio; one image for every frame)"),
                "style": dict(help="one per --style, in the same order: the region of the content image that "
                                   "style paints (white; grey levels are weights, grey borders blend the "
                                   "styles); the content image's aspect ratio"),
                "video": dict(help="with --dream: dream only where this picture is white (grey levels scale "
                                   "the step), a picture or a video of masks (frame k for the clip's frame "
                                   "k); with --style: one mask per --style, the region each style paints")}),
    # devices
    Option("devices", "compute on the first N devices (default: all of every process)"),
    Option("coordinator", "join a multi-host JAX cluster whose process 0 listens here (with --num-processes "
                          "and --process-id; standard cluster environments are detected without them)",
           metavar="HOST:PORT"),
    Option("num-processes", "processes in the cluster"),
    Option("process-id", "this process's rank (0: the one that writes)"),
    # DeepDream
    Option("layers", "layers with optional weights, e.g. inception_4c/output:1,inception_4d/output:0.5",
           default="inception_4c/output"),
    Option("channels", "channel(s) to amplify on every layer: 139, 10,20 or 10-19"),
    Option("class", "dream an ImageNet class: index (285) or name ('Egyptian cat')", dest="class_index",
           metavar="CLASS"),
    Option("guide", "guide image: push features toward the guide's (objective_guide)"),
    Option("guide-size", "longest side the guide is scaled to", default=224),
    Option("steps", "ascent steps per octave", default=10),
    Option("octaves", "number of octaves", default=4),
    Option("octave-scale", "size ratio between octaves", default=1.4),
    Option("step-size", "length of each ascent step (of the normalised gradient)", default=1.5),
    Option("jitter", "max random shift in px", default=32),
    Option("normalize", "gradient normalisation: mean (step / mean|g|), std, lapnorm (Laplacian pyramid); "
                        "default {default}: lapnorm with 5 levels for --class, else mean",
           default="auto", choices=("auto", "mean", "std", "lapnorm")),
    Option("lapnorm", "Laplacian pyramid normalisation with this many levels (sets --normalize lapnorm)",
           metavar="LEVELS"),
    Option("tile-size", "gradients of larger images are computed in tiles", default=512),
    # zoom
    Option("frames", "number of frames from --start (default: to --end or the clip's end)",
           per={"zoom": dict(default=120, help="number of frames")}),
    Option("zoom", "zoom factor per frame", default=1.05),
    Option("rotate", "degrees per frame, counter-clockwise", default=0.0),
    Option("translate", "pixels per frame", many="pair", default=(0.0, 0.0), metavar="DX,DY"),
    Option("steps-per-frame", "dream steps for each frame after the first", default=5,
           per={"zoom": dict(help="dream steps per frame")}),
    Option("fps", "output frame rate (default: the clip's)", per={
        "zoom": dict(default=24.0, help="frames per second")}),
    Option("loop", "cross-fade the end into the start for a seamless loop", action="store_true"),
    Option("layer-schedule", "switch layers during the run: '0:inception_4c/output,60:inception_4d/output'"),
    # warmup
    Option("aspects", "W:H ratios to prepare without images (default 1:1,4:3,3:4,3:2,2:3,16:9,9:16)"),
    # style transfer
    Option("style", "style image (repeat to blend several)", short=("-s",), action="append", metavar="IMAGE",
           per={"style": dict(required=True)}),
    Option("style-blend-weights", "relative weight of each style (default equal)", many="list",
           metavar="W1,W2"),
    Option("content-weight", "weight of the content loss", default=5.0, metavar="W",
           per={"style": dict(many="list", metavar=_W)}),
    Option("style-weight", "weight of the style loss", default=100.0, metavar="W",
           per={"style": dict(many="list", metavar=_W)}),
    Option("tv-weight", "weight of the total-variation (smoothness) loss", default=1e-3, metavar="W",
           per={"style": dict(many="list", metavar=_W)}),
    Option("content-layers", "VGG-19 layers of the content loss", default="relu4_2", metavar="LAYERS"),
    Option("style-layers", "VGG-19 layers of the style loss", default=_LAYERS, metavar="LAYERS"),
    Option("optimizer", "lbfgs (neural-style's) or adam, in any case", parse=_lower, default="lbfgs",
           choices=("lbfgs", "adam")),
    Option("learning-rate", "step size of the optimiser (default 1 for lbfgs, 10 for adam)"),
    Option("lbfgs-num-correction", "L-BFGS's history: how many past steps shape the next", default=100),
    Option("pooling", "VGG pooling", default="max", choices=("max", "avg")),
    Option("style-scale", "style image size relative to --size", default=1.0),
    Option("tol-loss-relative", "end each scale (of every image of a sweep or batch) early once its total loss "
                                "changed by less than this fraction over the last --tol-loss-relative-interval "
                                "iterations (artistic-videos' option; default {default}: off, every scale runs "
                                "all its iterations)", default=0.0, metavar="TOL",
           per={"video": dict(default=0.005, help="end each frame after the first (the first always runs "
                                                  "--iterations-first) early once its total loss changed by "
                                                  "less than this fraction over the last "
                                                  "--tol-loss-relative-interval iterations (artistic-videos' "
                                                  "option; default {default}; 0: off)")}),
    Option("tol-loss-relative-interval", "iterations between the loss comparisons of --tol-loss-relative "
                                         "(default {default}; the first comparison is at twice this)",
           default=100, metavar="N", per={"video": dict(default=10)}),
    Option("lbfgs-precondition", "L-BFGS's initial inverse Hessian moves the picture's block means over 2 to "
                                 "32 px up to 1+5W times as far as single pixels (a Laplacian-pyramid "
                                 "preconditioner; default {default}: neural-style's plain L-BFGS)",
           default=0.0, metavar="W",
           per={"video": dict(default=1.0, help="L-BFGS's initial inverse Hessian moves the picture's block "
                                                "means over 2 to 32 px up to 1+5W times as far as single "
                                                "pixels (a Laplacian-pyramid preconditioner; frames after "
                                                "the first; default {default}, 0 is plain L-BFGS)")}),
    Option("original-colors", "keep the content's colours", action="store_true"),
    Option("color-transfer", "give the style images the content's colour statistics first (default: off)",
           choices=("histogram", "mean-cov")),
    Option("content-mask", "weight the content loss by this picture (white: keep the content; in video also "
                           "a video of masks, one per frame)", metavar="IMAGE"),
    Option("style-mask", "one per --style: the part of that style image its style is taken from ('none': "
                         "all of it)", action="append", metavar="IMAGE|none", dest="style_masks"),
    Option("style-loss", "gram (neural-style's Gram matrices) or wasserstein (W2 distance between Gaussian "
                         "fits of the features, crowsonkb/style-transfer-pytorch's loss)",
           default="gram", choices=("gram", "wasserstein")),
    Option("ema", "with --optimizer adam: return the average of the iterates, each step weighted DECAY times "
                  "the next (e.g. 0.99; default {default}: the last iterate)", default=0.0, metavar="DECAY"),
    Option("iterations", "iterations for each frame after the first", default=100, per={
        "style": dict(default=1000, many="list", metavar="N[,N..]", old=("num-iterations",),
                      help="iterations (default {default}) at the coarsest scale (finer scales get half as "
                           "many as the one before), or one count per scale")}),
    Option("scales", "coarse-to-fine longest sides, the last one the output size (default: automatic above "
                     "512 px, halving down to 512; off: single scale)", parse=_scales, metavar="S1,S2,..|off"),
    Option("init", "start image: random, image/content (the content image) or an image file",
           default="random", per={
        "video": dict(default="content", old=("first-init",), moved=("frame-init", ("prev-warped", "prev"), ("content",)),
                      help="start image of the first frame: content, random or an image file (how later "
                           "frames start: --frame-init)")}),
    Option("init-image", "start from this image (same as --init FILE)"),
    Option("print-iter", "print losses every N iterations (0: never)", default=50, metavar="N"),
    Option("save-iter", "write OUT_N.png every N iterations (0: never)", default=0, metavar="N"),
    Option("chunk", "iterations per compiled call", default=20),
    Option("band-rows", "evaluate the objective band by band, N rows per band (exact; default: only at sizes "
                        "whose whole-image program does not fit in memory)", metavar="N"),
    Option("remat", "auto (above 1024x1024), on or off: recompute activations in the backward pass to save "
                    "memory", default="auto", choices=("auto", "on", "off")),
    # video
    Option("dream", "DeepDream the clip instead", action="store_true"),
    Option("start", "first frame to use", default=0),
    Option("end", "frame to stop before (default: the end)"),
    Option("frame-init", "how frames after the first start: from the previous result warped by the optical "
                         "flow, the previous result, or the content frame", default="prev-warped",
           choices=("prev-warped", "prev", "content")),
    Option("no-motion-boundaries", "only occlusions (not motion boundaries) are excluded from the temporal "
                                   "loss", action="store_true"),
    Option("compare-independent", "also process every frame independently (not written) and print its "
                                  "temporal error next to this run's", action="store_true"),
    Option("iterations-first", "iterations for the first frame", default=400),
    Option("temporal-weight", "weight of the temporal loss, artistic-videos' scale", default=1e3),
    Option("scales-first", "coarse-to-fine longest sides for the first frame (the last one = --size)",
           number="scales", many="list", metavar="S1,S2,.."),
    Option("temporal-frames", "earlier stylised frames t-j that hold frame t (Ruder et al. 2018's long-term "
                              "loss, e.g. 1,2,4; default {default}: the previous frame only)",
           many="list", default=(1,), metavar="J1,J2,.."),
    Option("long-term-weights", "how --temporal-frames share a pixel: normalize (every reliable frame, "
                                "weights summing to 1, which anchors static parts to the older frames) or "
                                "closest-first (artistic-videos' choice: its nearest reliable frame only)",
           default="normalize", choices=("normalize", "closest-first")),
    Option("passes", "passes over the clip, alternating forward and backward (Ruder et al. 2018's "
                     "multi-pass; each later pass costs --iterations per frame)", default=1),
    Option("blend-weight", "in passes after the first, weight of the warped neighbour in each frame's start "
                           "(artistic-videos' -blendWeight)", default=1.0),
    Option("blend", "share of the warped previous dream in each new frame's start", default=0.6),
    # the inspection commands
    Option("top", "how many classes", default=5),
    Option("url", "fetch from this URL instead of the canonical one (http(s) or file://)"),
]}

#: Old spellings still accepted: ``(command, old flag) -> new flag``.
RENAMED: dict[tuple[str, str], str] = {
    (cmd.strip(), f"--{old}"): o.flag for o in OPTIONS.values() for cmds, over in o.per.items()
    for cmd in cmds.split() for old in over.get("old", ())}


def spec(name: str, command: str | None = None) -> Option:
    """The option ``name`` (``step-size`` or ``step_size``) as ``command`` has it."""
    o = OPTIONS[name.replace("_", "-")]
    if command is not None:
        for cmds, over in o.per.items():
            if command in cmds.split():
                o = replace(o, **over)
    return o


def default(name: str, command: str | None = None):
    """The default of option ``name`` (in ``command`` where it differs there): what the library's
    signatures use, so that the command line and the library agree."""
    return spec(name, command).default


def help_text(name: str, command: str | None = None) -> str:
    """The help of option ``name`` as ``command --help`` shows it: with its default."""
    o = spec(name, command)
    if o.help == argparse.SUPPRESS:
        return o.help
    if "{default}" in o.help:
        return o.help.replace("{default}", show(o.default))
    if o.default is None or o.action != "store":
        return o.help
    return f"{o.help} (default {show(o.default)})"


#: What the studio calls an option, in plain words (the flag is shown beside it); an option not
#: listed is called by its name (``step-size``: "Step size"). A dict gives per-command labels.
LABELS = {
    "size": "Size (longest side, px)", "steps": "Steps per octave", "jitter": "Random shift (px)",
    "layers": "Layers to amplify", "channels": "Channels to amplify", "class": "ImageNet class to dream",
    "normalize": "Gradient normalisation", "tile-size": "Tile size (px)", "seed": "Random seed",
    "octave-scale": "Size ratio between octaves", "tv-weight": "Smoothness weight", "init": "Start from",
    "learning-rate": "Learning rate", "style-scale": "Style image scale", "pooling": "VGG pooling",
    "original-colors": "Keep the photo's colours", "color-transfer": "Match the style's colours to the photo",
    "zoom": "Zoom per frame", "rotate": "Rotation per frame (degrees)", "fps": "Frames per second",
    "steps-per-frame": "Dream steps per frame", "loop": "Loop seamlessly", "dream": "DeepDream instead of style",
    "start": "First frame of the clip", "frames": {"video": "Frames to use", "": "Frames"},
    "iterations": {"video": "Iterations (later frames)", "": "Iterations"},
    "iterations-first": "Iterations (first frame)", "temporal-weight": "Temporal weight",
    "blend": "Share of the previous dream", "optimizer": "Optimiser",
}


def label(name: str, command: str | None = None) -> str:
    """What the studio calls option ``name`` in ``command`` (see :data:`LABELS`)."""
    name = name.lstrip("-").replace("_", "-")
    given = LABELS.get(name)
    if isinstance(given, dict):
        given = given.get(command or "", given.get(""))
    return given or name.replace("-", " ").capitalize()


def note(message: str) -> None:
    """One line on stderr that is neither a warning nor an error."""
    print(f"jaxdream: note: {message}", file=sys.stderr)


_GIVEN = "_given_options"


def _mark(namespace, dest: str) -> None:
    given = getattr(namespace, _GIVEN, None)
    if given is None:
        given = set()
        setattr(namespace, _GIVEN, given)
    given.add(dest)


def given(args, name: str) -> bool:
    """Whether option ``name`` was on the command line (rather than left at its default)."""
    return (spec(name).dest or spec(name).name.replace("-", "_")) in getattr(args, _GIVEN, ())


class _Store(argparse._StoreAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _mark(namespace, self.dest)
        setattr(namespace, self.dest, values)


class _StoreTrue(argparse._StoreTrueAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _mark(namespace, self.dest)
        setattr(namespace, self.dest, True)


class _Append(argparse._AppendAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _mark(namespace, self.dest)
        super().__call__(parser, namespace, values, option_string)


class _Renamed(_Store):
    """A deprecated spelling: stores into the new option's destination, with a note."""

    def __init__(self, *args, new: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        note(f"{option_string} is now {self.new}")
        super().__call__(parser, namespace, values, option_string)


class _Moved(_Store):
    """An option some of whose values are the old spelling of another option (``video --init
    prev`` is ``--frame-init prev``): those values, unless a file of that name exists, go to the
    other option, with a note; a value both options take keeps the new meaning, with a note."""

    def __init__(self, *args, moved: tuple = (), command: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.target, self.values, self.both = moved
        self.command = command

    def __call__(self, parser, namespace, values, option_string=None):
        if not os.path.exists(values):
            if values in self.values:
                note(f"{self.command} {option_string} {values} is now --{self.target} {values}")
                _mark(namespace, self.target.replace("-", "_"))
                setattr(namespace, self.target.replace("-", "_"), values)
                return
            if values in self.both:
                note(f"{self.command} {option_string} {values} now means the first frame's start; later "
                     f"frames that start from the {values} frame are --{self.target} {values}")
        super().__call__(parser, namespace, values, option_string)


_ACTIONS = {"store": _Store, "store_true": _StoreTrue, "append": _Append}


def add(group, name: str, command: str) -> argparse.Action:
    """Add option ``name`` as ``command`` has it to an argparse parser or group (with its
    deprecated spellings, hidden); the action added."""
    o = spec(name, command)
    dest = o.dest or o.name.replace("-", "_")
    kw: dict[str, Any] = dict(dest=dest, help=help_text(name, command), action=_ACTIONS[o.action])
    if o.action != "store_true":
        kw.update(type=o.type(), default=o.value(), choices=o.choices, metavar=o.metavar)
    if o.required:
        kw["required"] = True
    if o.moved:
        kw.update(action=_Moved, moved=o.moved, command=command)
    action = group.add_argument(*o.short, o.flag, *o.also, **kw)
    for old in o.old:
        group.add_argument(f"--{old}", action=_Renamed, new=o.flag, dest=dest, type=o.type(),
                           metavar=o.metavar, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return action
