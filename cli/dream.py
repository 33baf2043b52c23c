"""``jaxdream dream`` and ``jaxdream zoom``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxdream.dream import DreamConfig
from jaxdream.errors import SettingsError

from .basic import positive_int

_D = DreamConfig()


def _float_pair(text: str) -> tuple[float, float]:
    try:
        dx, dy = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DX,DY like 2,-1, got '{text}'") from None
    return dx, dy


def add_dream_options(p: argparse.ArgumentParser, steps: int = _D.steps, octaves: int = _D.octaves) -> None:
    """The DeepDream options shared by ``dream``, ``zoom`` and ``video --dream``."""
    g = p.add_argument_group("dream")
    g.add_argument("--model", default=_D.model, help=f"network (default {_D.model})")
    g.add_argument("--weights", help="weights file (default: the cache, downloading if needed)")
    g.add_argument("--layers", default=f"{_D.layers[0][0]}",
                   help="layers with optional weights, e.g. inception_4c/output:1,inception_4d/output:0.5 "
                        f"(default {_D.layers[0][0]})")
    g.add_argument("--channels", help="channel(s) to amplify on every layer: 139, 10,20 or 10-19")
    g.add_argument("--class", dest="class_index", metavar="CLASS",
                   help="dream an ImageNet class: index (285) or name ('Egyptian cat')")
    g.add_argument("--guide", help="guide image: push features toward the guide's (objective_guide)")
    g.add_argument("--guide-size", type=positive_int, default=_D.guide_size,
                   help=f"longest side the guide is scaled to (default {_D.guide_size})")
    g.add_argument("--steps", type=int, default=steps, help=f"ascent steps per octave (default {steps})")
    g.add_argument("--octaves", type=int, default=octaves, help=f"number of octaves (default {octaves})")
    g.add_argument("--octave-scale", type=float, default=_D.octave_scale,
                   help=f"size ratio between octaves (default {_D.octave_scale})")
    g.add_argument("--step-size", type=float, default=_D.step_size, help=f"(default {_D.step_size})")
    g.add_argument("--jitter", type=int, default=_D.jitter, help=f"max random shift in px (default {_D.jitter})")
    g.add_argument("--normalize", choices=("mean", "std", "lapnorm"), default=_D.normalize,
                   help="gradient normalisation (default mean: step / mean|g|)")
    g.add_argument("--lapnorm", type=int, metavar="LEVELS",
                   help="Laplacian pyramid normalisation with this many levels (sets --normalize lapnorm)")
    g.add_argument("--tile-size", type=int, default=_D.tile_size,
                   help=f"gradients of larger images are computed in tiles (default {_D.tile_size})")
    g.add_argument("--seed", type=int, default=_D.seed, help=f"random seed (default {_D.seed})")
    g.add_argument("--size", type=positive_int, help="scale the input so its longest side is N px first")
    g.add_argument("--quiet", action="store_true", help="no progress output")


def dream_config(args):
    from jaxdream.dream import make_config
    normalize = "lapnorm" if args.lapnorm else args.normalize
    return make_config(model=args.model, layers=args.layers, channels=args.channels,
                       class_index=args.class_index, guide=args.guide, guide_size=args.guide_size,
                       steps=args.steps, octaves=args.octaves, octave_scale=args.octave_scale,
                       step_size=args.step_size, jitter=args.jitter, normalize=normalize,
                       lapnorm_levels=args.lapnorm or _D.lapnorm_levels, tile_size=args.tile_size,
                       seed=args.seed)


def make_dreamer(args, cfg):
    from jaxdream import media
    from jaxdream.dream import Dreamer
    guide = media.load_image(args.guide) if args.guide else None
    return Dreamer(cfg, weights=args.weights, guide_image=guide)


def register(sub) -> None:
    p = sub.add_parser("dream", help="DeepDream an image",
                       description="DeepDream an image (google/deepdream defaults on BVLC GoogLeNet).")
    p.add_argument("input", help="image to dream on")
    p.add_argument("-o", "--output", help="output image (default: INPUT_dream.png)")
    add_dream_options(p)
    p.set_defaults(func=cmd_dream)

    p = sub.add_parser("zoom", help="infinite-zoom DeepDream animation (GIF, MP4 or frames folder)")
    p.add_argument("input", help="start image")
    p.add_argument("-o", "--output", required=True, help="out.gif, out.mp4 or a folder/ for PNG frames")
    p.add_argument("--frames", type=int, default=120, help="number of frames (default 120)")
    p.add_argument("--zoom", type=float, default=1.05, help="zoom factor per frame (default 1.05)")
    p.add_argument("--rotate", type=float, default=0.0, help="degrees per frame, counter-clockwise")
    p.add_argument("--translate", type=_float_pair, default=(0.0, 0.0), metavar="DX,DY",
                   help="pixels per frame")
    p.add_argument("--steps-per-frame", type=int, default=5, help="dream steps per frame (default 5)")
    p.add_argument("--fps", type=float, default=24.0, help="frames per second (default 24)")
    p.add_argument("--loop", action="store_true", help="cross-fade the end into the start for a seamless loop")
    p.add_argument("--layer-schedule", help="switch layers during the run: '0:inception_4c/output,60:inception_4d/output'")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last frame")
    add_dream_options(p)
    p.set_defaults(func=cmd_zoom)


def cmd_dream(args) -> int:
    from jaxdream import media

    from .main import enable_compilation_cache
    cfg = dream_config(args)
    out = Path(args.output) if args.output else Path(args.input).with_name(Path(args.input).stem + "_dream.png")
    media.check_output(out)
    image = media.load_image(args.input, size=args.size)
    enable_compilation_cache()
    dreamer = make_dreamer(args, cfg)
    dreamer.net.spec.check_size(*image.shape[:2], dreamer.layer_names)
    from jaxdream.progress import bar
    start = time.perf_counter()
    with bar(total=cfg.octaves, desc="octaves", unit="oct", disable=True if args.quiet else None) as pbar:
        def progress(p):
            pbar.total = p.octaves
            pbar.set_postfix_str(f"{p.shape[1]}x{p.shape[0]}")
            pbar.update(1)
        result = dreamer.run(image, progress)
    settings = cfg.to_dict() | {"input": str(args.input), "weights_sha256": dreamer.net.weights_id,
                                "jaxdream": "dream"}
    media.save_image(out, result, settings)
    if not args.quiet:
        print(f"wrote {out} ({result.shape[1]}x{result.shape[0]}, {time.perf_counter() - start:.1f} s)",
              file=sys.stderr)
    return 0


def cmd_zoom(args) -> int:
    from jaxdream import animate, media

    from .main import enable_compilation_cache
    cfg = dream_config(args)
    zs = animate.ZoomSettings(frames=args.frames, zoom=args.zoom, rotate=args.rotate,
                              translate=args.translate, steps_per_frame=args.steps_per_frame,
                              fps=args.fps, loop=args.loop)
    zs.validate()
    schedule = animate.parse_layer_schedule(args.layer_schedule)
    out, _ = media.check_animation_output(args.output)
    image = media.load_image(args.input, size=args.size or 512)
    enable_compilation_cache()
    dreamer = make_dreamer(args, cfg)
    dreamer.net.spec.check_size(*image.shape[:2], dreamer.layer_names)
    from jaxdream.progress import bar
    total = zs.frames + zs.loop_overlap()
    with bar(total=total, desc="frames", unit="frame", disable=True if args.quiet else None) as pbar:
        def progress(p):
            pbar.n = p.frame
            pbar.refresh()
        try:
            animate.zoom(dreamer, image, out, zs, schedule, resume=args.resume, progress=progress,
                         metadata={"input": str(args.input), "weights_sha256": dreamer.net.weights_id})
        except KeyboardInterrupt:
            print(f"jaxdream: interrupted; finished frames are kept, continue with the same command "
                  f"and --resume", file=sys.stderr)
            return 130
    if not args.quiet:
        print(f"wrote {out} ({zs.frames} frames)", file=sys.stderr)
    return 0
