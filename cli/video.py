"""``jaxdream video``: temporally consistent style transfer or DeepDream of a clip."""

from __future__ import annotations

from jaxdream.errors import SettingsError

from .common import FRAMES_KEPT, add_frames_flags, dry_run_done, number, numbers, report_interrupt, single_process
from .dream import add_dream_options, dream_config, make_dreamer
from .style import _names, add_style_options


def register(sub) -> None:
    from jaxdream import video as vd
    p = sub.add_parser(
        "video", help="stylise (--style) or dream (--dream) a video, frame by frame with optical flow",
        description="Stylise a clip with --style (Ruder et al.: each frame starts from the previous "
                    "stylised frame warped by the optical flow, plus a temporal loss outside "
                    "occlusions) or DeepDream it with --dream (each frame starts from the warped "
                    "previous dream blended with the new frame). Writes MP4 (H.264, the source's "
                    "audio copied), GIF or a folder of PNG frames.")
    p.add_argument("input", help="video file (anything ffmpeg reads)")
    p.add_argument("-o", "--output", required=True, help="out.mp4, out.gif or a folder/ for PNG frames")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--style", "-s", action="append", metavar="IMAGE",
                      help="style image (repeat to blend several)")
    mode.add_argument("--dream", action="store_true", help="DeepDream the clip instead")
    v = p.add_argument_group("video")
    v.add_argument("--start", type=number("start"), default=0, help="first frame to use (default 0)")
    v.add_argument("--end", type=number("end"), help="frame to stop before (default: the end)")
    v.add_argument("--frames", type=number("frames"), help="number of frames from --start")
    v.add_argument("--fps", type=number("fps"), help="output frame rate (default: the clip's)")
    v.add_argument("--init", default="prev-warped", choices=vd.INITS,
                   help="how frames after the first start (default prev-warped)")
    v.add_argument("--no-motion-boundaries", action="store_true",
                   help="only occlusions (not motion boundaries) are excluded from the temporal loss")
    add_frames_flags(v)
    v.add_argument("--compare-independent", action="store_true",
                   help="also process every frame independently (not written) and print its "
                        "temporal error next to this run's")
    s = p.add_argument_group("style (with --style)")
    s.add_argument("--iterations-first", type=number("iterations-first"), default=400,
                   help="iterations for the first frame (default 400)")
    s.add_argument("--iterations", type=number("iterations"), default=100,
                   help="iterations for each later frame (default 100)")
    s.add_argument("--temporal-weight", type=number("temporal-weight"), default=1e3,
                   help="weight of the temporal loss, artistic-videos' scale (default 1e3)")
    s.add_argument("--first-init", default="content",
                   help="init of the first frame: content (default), random or an image file")
    s.add_argument("--scales-first", type=numbers("scales"), metavar="S1,S2,..",
                   help="coarse-to-fine longest sides for the first frame (the last one = --size)")
    add_style_options(s, sweep=False)
    d = p.add_argument_group("dream frames (with --dream)")
    d.add_argument("--blend", type=number("blend"), default=0.6,
                   help="share of the warped previous dream in each new frame's start (default 0.6)")
    d.add_argument("--steps-per-frame", type=number("steps-per-frame"), default=5,
                   help="dream steps for each frame after the first (default 5)")
    add_dream_options(p)
    p.set_defaults(func=cmd_video)


def _style_settings(args) -> dict:
    """The ``stylize`` settings of every frame (one definition for the check and the run)."""
    return dict(style_blend_weights=args.style_blend_weights, content_weight=args.content_weight,
                style_weight=args.style_weight, tv_weight=args.tv_weight,
                content_layers=_names(args.content_layers), style_layers=_names(args.style_layers),
                optimizer=args.optimizer.lower(), learning_rate=args.learning_rate,
                lbfgs_num_correction=args.lbfgs_num_correction, pooling=args.pooling,
                style_scale=args.style_scale, original_colors=args.original_colors,
                color_transfer=args.color_transfer, seed=args.seed, precision=args.precision)


def _check_frames(args, hw: tuple[int, int]) -> None:
    """Before any weights load: every setting, the style images, the frame size against the
    layers and the memory the per-frame program needs."""
    import numpy as np

    from jaxdream.style import plan_style

    from .dream import _check_dream_size
    if args.dream:
        _check_dream_size(args, dream_config(args), hw)
        return
    if args.model not in ("googlenet", "vgg19"):  # --model belongs to the dream options
        raise SettingsError(f"style transfer uses vgg19, not '{args.model}'")
    size = max(hw)
    plan_style(np.zeros((*hw, 3), np.float32), args.style, size=size,
               scales=args.scales_first or (), num_iterations=args.iterations_first, **_style_settings(args))


def _maker(args):
    from jaxdream import video as vd
    if args.dream:
        cfg = dream_config(args)
        return vd.DreamFrames(make_dreamer(args, cfg), blend=args.blend, steps_per_frame=args.steps_per_frame)
    return vd.StyleFrames(args.style, iterations_first=args.iterations_first, iterations=args.iterations,
                          temporal_weight=args.temporal_weight, first_init=args.first_init,
                          scales_first=args.scales_first, weights=args.weights,
                          mesh=getattr(args, "mesh", None), **_style_settings(args))


def cmd_video(args) -> int:
    from jaxdream import media
    from jaxdream import video as vd
    from jaxdream.progress import bar

    from .main import enable_compilation_cache
    single_process("video")
    if args.frames is not None:
        if args.end is not None:
            raise SettingsError("give either --end or --frames, not both")
        args.end = args.start + args.frames
    settings = vd.VideoSettings(size=args.size, start=args.start, end=args.end, init=args.init,
                                motion_boundaries=not args.no_motion_boundaries, fps=args.fps)
    settings.validate()
    out, kind = media.check_animation_output(args.output, inputs=[args.input])
    from jaxdream.animate import check_work_folder, work_folder
    check_work_folder(work_folder(out, kind), args.resume, args.overwrite)
    # a bad clip, range, size or setting fails before any weights load
    reader = media.VideoReader(args.input, args.size, args.start, args.end)
    hw = reader.frame_size[::-1]
    _check_frames(args, hw)
    if args.dry_run:
        return dry_run_done(f"{'dream' if args.dream else 'style'} {reader.frames} frames", hw, out)
    enable_compilation_cache()
    maker = _maker(args)
    quiet = args.quiet
    pbar = None

    def progress(p: vd.VideoProgress):
        nonlocal pbar
        if pbar is None:
            pbar = bar(total=p.frames, desc="frames", unit="frame", disable=True if quiet else None)
            pbar.update(p.frame - 1)
        parts = [f"{p.seconds:.1f} s"]
        if p.loss is not None:
            parts.append(f"loss {p.loss:.4g}")
        if p.temporal_error is not None:
            parts.append(f"temporal error {p.temporal_error:.4g}")
        pbar.set_postfix_str(", ".join(parts))
        pbar.update(1)
        if pbar.disable and not quiet:
            print(f"frame {p.frame}/{p.frames}: " + ", ".join(parts), flush=True)

    try:
        result = vd.process(args.input, args.output, maker, settings, resume=args.resume,
                            overwrite=args.overwrite, compare_independent=args.compare_independent,
                            progress=progress)
    except KeyboardInterrupt as e:
        report_interrupt(e, FRAMES_KEPT)
    finally:
        if pbar is not None:
            pbar.close()
    if not quiet:
        later = result.seconds_per_frame[1:]
        timing = f", {sum(later) / len(later):.2f} s per frame after the first" if later else ""
        print(f"wrote {result.path} ({result.frames} frames at {result.fps:g} fps{timing})")
    if result.temporal_error is not None:
        print(f"temporal error (mean squared warping error between consecutive frames over "
              f"reliable pixels): {result.temporal_error:.4g}")
    if result.independent_error is not None:
        ratio = result.temporal_error / result.independent_error if result.independent_error else float("nan")
        print(f"temporal error of independent per-frame processing: {result.independent_error:.4g} "
              f"(this run / independent = {ratio:.3f})")
    return 0
