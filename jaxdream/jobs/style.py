"""``jaxdream style``: Gatys neural style transfer with jcjohnson/neural-style's settings.

The command parses, validates the output path, calls :func:`jaxdream.style.stylize` and owns
the progress bar, printing, intermediate saves and Ctrl-C (which writes the current image and
exits 130).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from jaxdream import options
from jaxdream.errors import MediaError, SettingsError

from .common import add, add_device_flags, add_dry_run, on_abandon, timing

_ABBREV = {"content_weight": "cw", "style_weight": "sw", "tv_weight": "tv", "seed": "seed"}

#: The Gatys options shared by ``style`` and ``video --style``, in help order (``--mask`` is
#: among the options video's two modes share).
STYLE_OPTIONS = ("style-blend-weights", "content-weight", "style-weight", "tv-weight", "content-layers",
                 "style-layers", "optimizer", "learning-rate", "lbfgs-num-correction", "pooling", "style-scale",
                 "tol-loss-relative", "tol-loss-relative-interval", "lbfgs-precondition", "original-colors",
                 "color-transfer", "mask", "content-mask", "style-mask", "style-loss", "ema")


def add_style_options(g, command: str) -> None:
    """The Gatys options of ``style`` and ``video --style``: in ``style`` the loss weights take
    comma-separated lists (a batched sweep), in ``video`` one value each
    (:data:`jaxdream.options.OPTIONS` says so, with every default and help)."""
    add(g, command, *(name for name in STYLE_OPTIONS if not (command == "video" and name == "mask")))


def register(sub) -> None:
    p = sub.add_parser(
        "style", help="neural style transfer (Gatys et al.), neural-style's defaults",
        description="Paint CONTENT in the style of one or more --style images. Defaults and "
                    "loss scale follow jcjohnson/neural-style. Comma-separated values of "
                    "--style-weight, --content-weight, --tv-weight and --seed run as one "
                    "batched sweep, writing OUT_sw100.png etc. and OUT_sheet.png.")
    p.add_argument("content", nargs="+",
                   help="content image; several images or a folder make a batch written into the "
                        "-o folder, one result per image, skipping those already there")
    add(p, "style", "style", "output")
    add_style_options(p, "style")
    add(p, "style", "precision", "iterations", "size", "scales", "init", "init-image", "seed", "model", "weights",
        "print-iter", "save-iter", "chunk", "band-rows", "remat", "quiet")
    add_dry_run(p, "style")
    add_device_flags(p, "style")
    p.set_defaults(func=cmd_style)


def _one(values: list):
    """A one-element list from a sweep option is a plain value."""
    return values[0] if len(values) == 1 else values


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def output_path(base: Path, label: dict, extra: str = "") -> Path:
    """``out.png`` + ``{"style_weight": 100}`` -> ``out_sw100.png`` (``extra`` appended)."""
    parts = [f"{_ABBREV[k]}{v:g}" if isinstance(v, float) else f"{_ABBREV[k]}{v}"
             for k, v in label.items()]
    if extra:
        parts.append(extra)
    return base.with_name("_".join([base.stem, *parts]) + base.suffix) if parts else base


def contact_sheet(images, labels: list[dict], thumb: int = 256):
    """A grid of thumbnails with their swept settings written under each (uint8 RGB array)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from jaxdream import media
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = images[0].shape[:2]
    th, tw = media.fit_size(h, w, thumb)
    pad, text_h = 6, 16
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, label) in enumerate(zip(images, labels)):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (tw + pad), pad + r * (th + text_h + pad)
        sheet.paste(Image.fromarray(media.to_uint8(media.resize(np.asarray(img), (th, tw)))), (x0, y0))
        text = " ".join(f"{_ABBREV[k]}={v:g}" if isinstance(v, float) else f"{_ABBREV[k]}={v}"
                        for k, v in label.items())
        draw.text((x0 + 2, y0 + th + 2), text, fill="black")
    return np.asarray(sheet)


#: Suffixes of the content images taken from a folder.
CONTENT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def _contents(items: list[str]) -> tuple[list[Path], bool]:
    """The content images named on the command line (folders expanded, sorted) and whether
    this is a batch (several images, or a folder)."""
    paths: list[Path] = []
    batch = len(items) > 1
    for item in items:
        p = Path(item)
        if p.is_dir():
            batch = True
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in CONTENT_SUFFIXES and f.is_file())
            if not found:
                raise SettingsError(f"{p}: is a folder with no images ({', '.join(CONTENT_SUFFIXES)})")
            paths.extend(found)
        else:
            paths.append(p)
    stems = [p.stem for p in paths]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if batch and twice:
        raise SettingsError(f"two content images are named {twice[0]}: their results would overwrite "
                            f"each other in the output folder")
    return paths, batch


def batch_key(args, content: Path) -> str:
    """What a batch member's result is the result of: a hash of the run's settings and of the
    content and style files' bytes, recorded in its PNG (``batch_key``), so that a rerun skips
    exactly the results of the same settings (a PNG of the right name is not enough: the
    photos themselves, or another --style's results)."""
    import hashlib
    import json

    from jaxdream import media
    settings = {k: v for k, v in _settings(args, _init(args)).items() if k != "init"}
    record = {"settings": settings, "init": _init(args), "content": media.file_sha256(content),
              "styles": [media.file_sha256(s) for s in args.style]}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _finished(out: Path, sweep: bool, key: str) -> bool:
    """Whether a batch member's result was written by an earlier run of the same settings and
    files (the sheet comes last; an image written on an interrupt is not finished)."""
    from jaxdream import media
    last = out.with_name(f"{out.stem}_sheet{out.suffix}") if sweep else out
    try:
        recorded = media.read_settings(last) if last.is_file() else {}
    except MediaError:  # unreadable: do it again
        return False
    return recorded.get("batch_key") == key and "interrupted_at_iteration" not in recorded


def _combos(args) -> int:
    return math.prod(len(v) for v in (args.content_weight, args.style_weight, args.tv_weight, args.seed))


def _groups(args, contents: list[Path]) -> list[list[Path]]:
    """Content images optimised at once: with several devices, as many images of one size (at
    every scale) as fill the devices beside the sweep; otherwise one at a time."""
    from jaxdream import media
    from jaxdream.style.plan import check_scales, scale_sizes
    mesh = getattr(args, "mesh", None)
    per = (mesh.size if mesh is not None else 1) // _combos(args)
    if per <= 1 or args.color_transfer or args.band_rows:
        return [[c] for c in contents]
    scales = check_scales(args.scales, args.size)
    by_size: dict[tuple, list[Path]] = {}
    for c in contents:
        by_size.setdefault(tuple(scale_sizes(media.image_shape(c), scales)), []).append(c)
    return [same[i:i + per] for same in by_size.values() for i in range(0, len(same), per)]


def cmd_style(args, observer=None) -> int:
    from jaxdream import media
    contents, batch = _contents(args.content)
    if not batch:
        return _style_run(args, [(contents[0], Path(args.output))], observer=observer)
    if args.output == options.default("output", "style"):
        raise SettingsError("several content images: give an output folder with -o FOLDER/")
    folder = Path(args.output)
    if folder.suffix.lower() in media.IMAGE_FORMATS and not args.output.endswith("/"):
        raise SettingsError(f"{folder}: several content images need an output folder, not one image")
    for content in contents:  # every file readable before hours of work start
        media.image_shape(content)
    media.check_animation_output(f"{folder}/")  # a folder that can be created and written
    if any(c.parent.resolve() == folder.resolve() for c in contents):
        raise SettingsError(f"{folder}: the output folder holds the content images; give another -o FOLDER/ "
                            f"(results would be written over the photos' names)")
    todo = [c for c in contents if not _finished(folder / f"{c.stem}.png", _combos(args) > 1, batch_key(args, c))]
    if len(todo) < len(contents):
        print(f"{len(contents) - len(todo)} of {len(contents)} content images are done already "
              f"(their results exist in {folder}); skipping them")
    if not args.dry_run:
        folder.mkdir(exist_ok=True)
    done = 0
    for group in _groups(args, todo):
        if not args.quiet:
            names = ", ".join(str(c) for c in group)
            span = f"{done + 1}" if len(group) == 1 else f"{done + 1}-{done + len(group)}"
            print(f"[{span}/{len(todo)}] {names}", flush=True)
        _style_run(args, [(c, folder / f"{c.stem}.png") for c in group], in_batch=True, observer=observer)
        done += len(group)
    return 0


def _settings(args, init) -> dict:
    """The library settings of a style command (see :func:`jaxdream.style.plan_style`)."""
    return dict(
        style_blend_weights=args.style_blend_weights,
        content_weight=_one(args.content_weight), style_weight=_one(args.style_weight),
        tv_weight=_one(args.tv_weight),
        content_layers=_names(args.content_layers), style_layers=_names(args.style_layers),
        num_iterations=_one(args.iterations), optimizer=args.optimizer,
        learning_rate=args.learning_rate, lbfgs_num_correction=args.lbfgs_num_correction,
        size=args.size, scales=args.scales, init=init, pooling=args.pooling,
        style_scale=args.style_scale, original_colors=args.original_colors,
        color_transfer=args.color_transfer, seed=_one(args.seed), model=args.model,
        remat=None if args.remat == "auto" else args.remat == "on", band_rows=args.band_rows,
        precision=args.precision, **optimiser_settings(args), **mask_settings(args))


def mask_settings(args) -> dict:
    """The mask, style-loss and EMA settings of a style command (``style`` and ``video --style``)
    that differ from the library's defaults (so that a video's recorded settings, which
    ``--resume`` compares, only name them when used)."""
    given = {"masks": ("mask", args.masks), "content_mask": ("content-mask", args.content_mask),
             "style_masks": ("style-mask", args.style_masks), "style_loss": ("style-loss", args.style_loss),
             "ema": ("ema", args.ema)}
    return {k: v for k, (name, v) in given.items() if v != options.default(name)}


def optimiser_settings(args) -> dict:
    """``--tol-loss-relative``, its interval and ``--lbfgs-precondition`` where given (their
    defaults differ between ``style``, :func:`jaxdream.style.plan_style`'s, and ``video``,
    :class:`jaxdream.video.StyleFrames`'; both read them from :mod:`jaxdream.options`)."""
    return {k: getattr(args, k) for k in ("tol_loss_relative", "tol_loss_relative_interval", "lbfgs_precondition")
            if options.given(args, k)}


def _tag(label: dict, items) -> str:
    """`` [cw5 sw100]`` for a member's label (its content image's name in a batch)."""
    words = [f"{items[v][0].stem}" if k == "content" else
             f"{_ABBREV[k]}={v:g}" if isinstance(v, float) else f"{_ABBREV[k]}={v}" for k, v in label.items()]
    return f" [{' '.join(words)}]" if words else ""


def _style_run(args, items: list[tuple[Path, Path]], in_batch: bool = False, observer=None) -> int:
    """Style one content image, or a group of them at once, each into its own output."""
    from .command import enable_compilation_cache
    from jaxdream.style import plan_style

    init = _init(args)
    if not (in_batch and args.dry_run):  # a batch's folder is checked (and created) by cmd_style
        items = _checked_outputs(args, items, init)
    content = items[0][0] if len(items) == 1 else [c for c, _ in items]
    settings = _settings(args, init)
    plan = plan_style(content, args.style, chunk=args.chunk, **settings)
    (h, w), images = plan.sizes[-1], plan.batch + (len(items) if plan.combos > 1 else 0)  # and the sheets
    from jaxdream import media
    media.check_space(items[0][1], images * h * w * 3 + (1 << 16), "style transfer")
    if args.dry_run:
        print(f"dry run: {plan.describe()}; writing {', '.join(str(out) for _, out in items)}")
        return 0
    settings["weights"] = args.weights
    enable_compilation_cache()
    from jaxdream.runtime.parallel import is_writer
    writer = is_writer()  # in a multi-host run every process computes, process 0 writes
    if observer is not None:
        observer.style_plan(plan)
    run = _StyleRun(args, items, writer, observer)
    run.write_results(run.stylize(content, settings))
    return 0


def _init(args) -> str:
    """``--init``, or ``--init-image`` (the same as ``--init FILE``; refused when they differ)."""
    if args.init_image and args.init not in (options.default("init", "style"), args.init_image):
        raise SettingsError("give either --init FILE or --init-image FILE, not both")
    return args.init_image or args.init


def _checked_outputs(args, items: list[tuple[Path, Path]], init: str) -> list[tuple[Path, Path]]:
    """``items`` with each output path validated (:func:`jaxdream.media.check_output`) against
    the run's inputs."""
    from jaxdream import media
    masks = [*(args.masks or []), args.content_mask, *(args.style_masks or [])]
    return [(c, media.check_output(out, inputs=[c, *args.style, init, *masks])) for c, out in items]


def _chunk(args) -> int:
    """Iterations per compiled call: ``--chunk``, shortened to divide ``--print-iter`` and
    ``--save-iter``."""
    chunk = args.chunk
    for every in (args.print_iter, args.save_iter):
        if every > 0:
            chunk = math.gcd(chunk, every)
    return chunk


def _prefix(p) -> str:
    """``scale 2/3 1024x768 `` before the lines of a multi-scale run (nothing with one scale)."""
    return f"scale {p.scale + 1}/{p.scales} {p.size[1]}x{p.size[0]} " if p.scales > 1 else ""


def _crossed(p, every: int) -> bool:
    """Whether progress ``p`` is at a multiple of ``every`` iterations or the scale's last one."""
    return every > 0 and (p.iteration % every == 0 or p.iteration == p.iterations)


class _StyleRun:
    """The optimisation of a style run: progress bar, loss lines, intermediate saves, the image
    written on Ctrl-C, and the results."""

    def __init__(self, args, items: list[tuple[Path, Path]], writer: bool, observer=None):
        self.args, self.items, self.writer, self.observer = args, items, writer, observer
        self.started = time.perf_counter()
        self.last = None  # the progress of the last finished chunk: what Ctrl-C writes
        self.bar, self.done, self.scale = None, 0, -1

    def stylize(self, content, settings: dict):
        """:func:`jaxdream.style.stylize` with this run's callback; Ctrl-C writes the current image."""
        from jaxdream.style import stylize
        try:
            with on_abandon(self.save_current):
                return stylize(content, self.args.style, chunk=_chunk(self.args), callback=self.callback,
                               mesh=self.args.mesh, **settings)
        except KeyboardInterrupt:
            self.save_current()
            raise
        finally:
            if self.bar is not None:
                self.bar.close()

    def save(self, images, labels, meta: dict, extra: str = "") -> list[Path]:
        """Write each image to its member's output path (in the writing process); the paths."""
        from jaxdream import media
        paths = []
        for img, label in zip(images, labels):
            ci = label.get("content", 0)
            label = {k: v for k, v in label.items() if k != "content"}
            paths.append(output_path(self.items[ci][1], label, extra))
            if self.writer:
                media.save_image(paths[-1], img, {**meta, **label})
        return paths

    def save_current(self) -> None:
        """On Ctrl-C: write the image of the last finished chunk (once)."""
        last, self.last = self.last, None
        if last is not None:
            for path in self.save(last.images, last.labels or [{}],
                                  {"interrupted_at_iteration": last.iteration}):
                print(f"jaxdream: interrupted; wrote the current image to {path}", file=sys.stderr)

    def callback(self, p) -> None:
        """After each chunk: advance the bar, print the losses, save every ``--save-iter``."""
        self._advance(p)
        if not self.args.quiet:
            self._print_losses(p)
        self._save_iteration(p)
        if self.observer is not None:
            self.observer.style(p)

    def _advance(self, p) -> None:
        """Move the progress bar to ``p`` (a new bar for each scale) and keep ``p`` for Ctrl-C."""
        from jaxdream.progress import bar
        if self.bar is None or self.scale != p.scale:
            if self.bar is not None:
                self.bar.close()
            self.bar = bar(total=p.iterations, desc=f"style {p.size[1]}x{p.size[0]}",
                           unit="it", disable=True if self.args.quiet else None)
            self.scale, self.done = p.scale, 0
        self.last = p
        self.bar.update(p.iteration - self.done)
        self.done = p.iteration

    def _print_losses(self, p) -> None:
        """The loss lines every ``--print-iter`` iterations, and a line when the scale converged."""
        prefix = _prefix(p)
        if _crossed(p, self.args.print_iter):
            for i, label in enumerate(p.labels or [{}]):
                print(f"{prefix}iteration {p.iteration}/{p.iterations}{_tag(label, self.items)}: "
                      f"total {p.losses['total'][i]:.4g}  content {p.losses['content'][i]:.4g}  "
                      f"style {p.losses['style'][i]:.4g}  tv {p.losses['tv'][i]:.4g}", flush=True)
        if p.converged:
            print(f"{prefix}stopped at iteration {p.iteration}/{p.iterations}: the loss changed by less "
                  f"than the --tol-loss-relative tolerance", flush=True)

    def _save_iteration(self, p) -> None:
        """Every ``--save-iter`` iterations before a scale's last: ``OUT_N.png`` (with several
        scales ``OUT_<size>px_N.png``)."""
        every = self.args.save_iter
        if every > 0 and p.iteration % every == 0 and p.iteration < p.iterations:
            extra = f"{p.size[1] if p.size[1] >= p.size[0] else p.size[0]}px_{p.iteration}" \
                if p.scales > 1 else str(p.iteration)
            self.save(p.images, p.labels or [{}], {"iteration": p.iteration}, extra)

    def write_results(self, result) -> None:
        """Write each member's images (and a sweep's contact sheet), then name them."""
        results = result if isinstance(result, list) else [result]
        for ci, ((c, out), one) in enumerate(zip(self.items, results)):
            meta = dict(one.settings, content=str(c), style=[str(s) for s in self.args.style],
                        batch_key=batch_key(self.args, Path(c)))
            paths = self.save(one.images, [{"content": ci, **lb} for lb in one.labels or [{}]], meta)
            if len(one.images) > 1:
                paths.append(self._save_sheet(out, one, meta))
            for path in paths if self.writer else []:
                print(f"wrote {path}" + (f" ({self.spent(one)})" if path == paths[-1] else ""))

    def spent(self, result) -> str:
        """The run's time so far, its compiling apart."""
        return timing(time.perf_counter() - self.started, result.compile_seconds, "optimising")

    def _save_sheet(self, out: Path, one, meta: dict) -> Path:
        """Write a sweep's contact sheet beside its images (``OUT_sheet.png``); its path."""
        from jaxdream import media
        sheet = out.with_name(f"{out.stem}_sheet{out.suffix}")
        if self.writer:
            media.save_image(sheet, contact_sheet(one.images, one.labels), meta)
        return sheet
