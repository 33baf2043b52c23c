"""``jaxdream dream`` and ``jaxdream zoom``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxdream.dream import objective_layers, octave_shapes
from jaxdream.options import note
from jaxdream.errors import SettingsError

from .common import (FRAMES_KEPT, add, add_device_flags, add_dry_run, add_frames_flags, dry_run_done, output_size,
                     report_interrupt, single_process, timing)

#: The DeepDream options, in help order.
DREAM_OPTIONS = ("model", "layers", "channels", "class", "guide", "guide-size", "steps", "octaves", "octave-scale",
                 "step-size", "jitter", "normalize", "lapnorm", "tile-size")
#: The options that mean the same in a dream and in video's style transfer.
SHARED_OPTIONS = ("weights", "mask", "seed", "precision", "quiet")


def add_dream_options(p: argparse.ArgumentParser, command: str, shared=None, title: str = "dream") -> None:
    """The DeepDream options of ``dream``, ``zoom``, ``warmup`` and ``video --dream``; those that
    also apply to video's style transfer (:data:`SHARED_OPTIONS`) go into ``shared`` when given
    (video has its own ``--size``)."""
    g = p.add_argument_group(title)
    add(g, command, *DREAM_OPTIONS)
    if shared is None:
        add(g, command, "size", *SHARED_OPTIONS)
    else:
        add(shared, command, *SHARED_OPTIONS)
    add_dry_run(p, command)
    add_device_flags(p, command)


def dream_config(args):
    from jaxdream.dream import make_config
    normalize = "lapnorm" if args.lapnorm else args.normalize
    return make_config(model=args.model, layers=args.layers, channels=args.channels,
                       class_index=args.class_index, guide=args.guide, guide_size=args.guide_size,
                       steps=args.steps, octaves=args.octaves, octave_scale=args.octave_scale,
                       step_size=args.step_size, jitter=args.jitter, normalize=normalize,
                       lapnorm_levels=args.lapnorm, tile_size=args.tile_size,
                       seed=args.seed, precision=args.precision, mask=dream_mask(args))


def dream_mask(args) -> str | None:
    """The one ``--mask`` of a dream (None without)."""
    masks = getattr(args, "masks", None) or []
    if len(masks) > 1:
        raise SettingsError(f"{len(masks)} masks given: a dream takes one --mask")
    return masks[0] if masks else None


def make_dreamer(args, cfg, with_mask: bool = True):
    """The Dreamer of ``cfg``, with its ``--mask`` unless ``with_mask`` is False (video sets a
    mask per frame)."""
    from jaxdream import media
    from jaxdream.dream import Dreamer
    guide = media.load_image(args.guide) if args.guide else None
    return Dreamer(cfg, weights=args.weights, guide_image=guide, mesh=getattr(args, "mesh", None),
                   mask=_read_mask(cfg.mask) if with_mask else None)


def _read_mask(path):
    from jaxdream.media.masks import load_mask, mask_name
    return None if path is None else load_mask(path, mask_name(path))


def register(sub) -> None:
    p = sub.add_parser("dream", help="DeepDream an image",
                       description="DeepDream an image (google/deepdream defaults on BVLC GoogLeNet).")
    p.add_argument("input", help="image to dream on")
    add(p, "dream", "output")
    add_dream_options(p, "dream")
    p.set_defaults(func=cmd_dream)

    p = sub.add_parser("zoom", help="infinite-zoom DeepDream animation (GIF, MP4 or frames folder)")
    p.add_argument("input", help="start image")
    add(p, "zoom", "output", "frames", "zoom", "rotate", "translate", "steps-per-frame", "fps", "loop",
        "layer-schedule")
    add_frames_flags(p, "zoom")
    add_dream_options(p, "zoom")
    p.set_defaults(func=cmd_zoom)


def check_dream_size(args, cfg, hw: tuple[int, int]) -> None:
    """Before any image is loaded: big enough for the layers, within the memory the device has."""
    from jaxdream.runtime import memory
    from jaxdream.nets import get_spec
    h, w = hw
    spec = get_spec(cfg.model)
    spec.check_size(h, w, objective_layers(cfg))
    _say_octaves_that_fit(cfg, hw, spec.min_size(objective_layers(cfg)))
    need = memory.dream_bytes(h, w, cfg.tile_size, cfg.tile_batch)
    if args.guide:
        gh, gw = output_size(args.guide, cfg.guide_size, "guide", "--guide-size")
        need = max(need, memory.forward_bytes(gh, gw))
    memory.check_fits(need, f"DeepDream at {w}x{h}")
    if cfg.mask is not None and not getattr(args, "dream", False):  # video checks its masks itself
        from jaxdream.media.masks import check_aspect, mask_name
        check_aspect(_read_mask(cfg.mask), hw, mask_name(cfg.mask), f"the input {Path(args.input).name}")


def _say_octaves_that_fit(cfg, hw: tuple[int, int], min_size: int) -> None:
    """A note when fewer octaves than ``--octaves`` fit (each is ``--octave-scale`` smaller, and
    none may be under the layers' minimum size): the run uses those that fit."""
    fit = len(octave_shapes(hw[0], hw[1], cfg.octaves, cfg.octave_scale, min_size))
    if fit < cfg.octaves:
        note(f"--octaves {cfg.octaves}: only {fit} fit at {hw[1]}x{hw[0]} (the smallest must be at least "
             f"{min_size} px on each side); the run uses {fit}")


def _ready(args, cfg, hw: tuple[int, int], out, what: str):
    """What dream and zoom do once their output is checked: the size and memory check, then
    ``--dry-run``'s line (None), or the image read and the Dreamer made (weights loaded)."""
    from jaxdream import media

    from .command import enable_compilation_cache
    check_dream_size(args, cfg, hw)
    if args.dry_run:
        dry_run_done(what, hw, out)
        return None
    image = media.load_image(args.input, size=args.size)
    enable_compilation_cache()
    return image, make_dreamer(args, cfg)


def cmd_dream(args, observer=None) -> int:
    from jaxdream import media

    single_process("dream")
    cfg = dream_config(args)
    out = Path(args.output) if args.output else Path(args.input).with_name(Path(args.input).stem + "_dream.png")
    hw = output_size(args.input, args.size)
    media.check_output(out, inputs=[args.input, args.guide, cfg.mask])
    media.check_space(out, hw[0] * hw[1] * 3 + (1 << 16), "the dream")
    ready = _ready(args, cfg, hw, out, f"dream ({cfg.octaves} octaves x {cfg.steps} steps)")
    if ready is None:
        return 0
    image, dreamer = ready
    settings = cfg.to_dict() | {"input": str(args.input), "weights_sha256": dreamer.net.weights_id,
                                "jaxdream": "dream"}
    start = time.perf_counter()

    def on_stop(image, step: int) -> None:
        media.save_image(out, image, settings | {"interrupted_at_step": step})
        print(f"jaxdream: interrupted; wrote the current image to {out}", file=sys.stderr)

    result = observer.dream(dreamer, image, on_stop) if observer is not None else None
    if result is None:
        result = _dream_with_bar(dreamer, image, cfg, args.quiet)
    media.save_image(out, result, settings)
    if not args.quiet:
        spent = timing(time.perf_counter() - start, dreamer.compile_seconds, "dreaming")
        print(f"wrote {out} ({result.shape[1]}x{result.shape[0]}, {spent})", file=sys.stderr)
    return 0


def _dream_with_bar(dreamer, image, cfg, quiet: bool):
    """:meth:`jaxdream.dream.Dreamer.run` with a progress bar of its octaves."""
    from jaxdream.progress import bar
    with bar(total=cfg.octaves, desc="octaves", unit="oct", disable=True if quiet else None) as pbar:
        def progress(p):
            pbar.total = p.octaves
            pbar.set_postfix_str(f"{p.shape[1]}x{p.shape[0]}")
            pbar.update(1)
        return dreamer.run(image, progress)


def cmd_zoom(args, observer=None) -> int:
    from jaxdream import media
    from jaxdream import zoom as zoom_loop
    from jaxdream.media import frames

    single_process("zoom")
    cfg = dream_config(args)
    zs = zoom_loop.ZoomSettings(frames=args.frames, zoom=args.zoom, rotate=args.rotate,
                              translate=args.translate, steps_per_frame=args.steps_per_frame,
                              fps=args.fps, loop=args.loop)
    zs.validate()
    schedule = zoom_loop.parse_layer_schedule(args.layer_schedule)
    hw = output_size(args.input, args.size)
    out, kind = media.check_animation_output(args.output, inputs=[args.input, args.guide, cfg.mask])
    frames.check_work_folder(frames.work_folder(out, kind), args.resume, args.overwrite)
    total = zs.frames + zs.loop_overlap()  # PNG frames, the last states, then the output
    media.check_space(frames.work_folder(out, kind), total * hw[0] * hw[1] * 3 * (2 if kind != "frames" else 1)
                      + 2 * hw[0] * hw[1] * 12, f"a zoom of {total} frames")
    ready = _ready(args, cfg, hw, out, f"zoom ({zs.frames} frames)")
    if ready is None:
        return 0
    image, dreamer = ready
    start = time.perf_counter()
    from jaxdream.progress import bar
    total = zs.frames + zs.loop_overlap()
    with bar(total=total, desc="frames", unit="frame", disable=True if args.quiet else None) as pbar:
        def progress(p):
            pbar.n = p.frame
            pbar.refresh()
            if observer is not None:
                observer.frame(p, frames.work_folder(out, kind))
        try:
            zoom_loop.zoom(dreamer, image, out, zs, schedule, resume=args.resume, overwrite=args.overwrite,
                         progress=progress,
                         metadata={"input": str(args.input), "input_sha256": media.file_sha256(args.input),
                                   "weights_sha256": dreamer.net.weights_id})
        except KeyboardInterrupt as e:
            report_interrupt(e, FRAMES_KEPT)
    if not args.quiet:
        spent = timing(time.perf_counter() - start, dreamer.compile_seconds, "dreaming")
        print(f"wrote {out} ({zs.frames} frames, {spent})", file=sys.stderr)
    return 0
