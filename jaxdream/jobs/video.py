"""``jaxdream video``: temporally consistent style transfer or DeepDream of a clip."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from jaxdream import options
from jaxdream.errors import MediaError, SettingsError

from .common import FRAMES_KEPT, add, add_frames_flags, dry_run_done, report_interrupt, single_process
from .dream import add_dream_options, dream_config, make_dreamer
from .style import _names, add_style_options, mask_settings, optimiser_settings

#: Longest side frames are processed at unless --size says otherwise (a smaller clip keeps its
#: own size): a 16:9 clip runs at 256x144, where a later frame (100 L-BFGS iterations) takes
#: about 47 s on a 2-core CPU (93 CPU-seconds measured on bigbuckbunny.mp4 with the real VGG-19).
DEFAULT_SIZE = options.default("size", "video")

#: Seconds per pixel and iteration (style: VGG-19 L-BFGS iteration) or step (dream: GoogLeNet
#: ascent step) on two cores, measured at DEFAULT_SIZE with the real weights, and the compiling
#: a run starts with: the estimate printed before the first frame (after it, measured frame
#: times take over).
CPU_SECONDS = {"style": 1.3e-5, "dream": 4e-6}
COMPILE_SECONDS = 30


FULL = "full"


def register(sub) -> None:
    p = sub.add_parser(
        "video", help="stylise (--style) or dream (--dream) a video, frame by frame with optical flow",
        description="Stylise a clip with --style (Ruder et al.: each frame starts from the previous "
                    "stylised frame warped by the optical flow, plus a temporal loss outside "
                    "occlusions) or DeepDream it with --dream (each frame starts from the warped "
                    "previous dream blended with the new frame). Writes MP4 (H.264 with the "
                    "clip's audio, all its channels, cut to the frames written), GIF or a folder "
                    "of PNG frames. Every frame is used once with its own timestamp (a variable "
                    "frame rate is kept); non-square pixels are resized to the display aspect.")
    p.add_argument("input", help="video file (anything ffmpeg reads)")
    add(p, "video", "output")
    add(p.add_mutually_exclusive_group(required=True), "video", "style", "dream")
    v = p.add_argument_group("video")
    add(v, "video", "start", "end", "frames", "fps", "size", "frame-init", "no-motion-boundaries")
    add_frames_flags(v, "video")
    add(v, "video", "compare-independent")
    both = p.add_argument_group("both modes (--style and --dream)")
    s = p.add_argument_group("style (with --style)")
    add(s, "video", "iterations-first", "iterations", "temporal-weight", "init", "scales-first", "temporal-frames",
        "long-term-weights", "passes", "blend-weight")
    add_style_options(s, "video")
    d = p.add_argument_group("dream frames (with --dream)")
    add(d, "video", "blend", "steps-per-frame")
    add_dream_options(p, "video", shared=both, title="dream (with --dream)")
    p.set_defaults(func=cmd_video)


def _style_settings(args) -> dict:
    """The ``stylize`` settings of every frame (one definition for the check and the run)."""
    return dict(style_blend_weights=args.style_blend_weights, content_weight=args.content_weight,
                style_weight=args.style_weight, tv_weight=args.tv_weight,
                content_layers=_names(args.content_layers), style_layers=_names(args.style_layers),
                optimizer=args.optimizer, learning_rate=args.learning_rate,
                lbfgs_num_correction=args.lbfgs_num_correction, pooling=args.pooling,
                style_scale=args.style_scale, original_colors=args.original_colors,
                color_transfer=args.color_transfer, seed=args.seed, precision=args.precision,
                **mask_settings(args))


def _check_frames(args, hw: tuple[int, int], frames: range) -> None:
    """Before any weights load: every setting, the style images, the masks (pictures, or videos
    with a mask for each of ``frames``), the frame size against the layers and the memory the
    per-frame program needs."""
    import numpy as np

    from jaxdream import video as vd
    from jaxdream.media.masks import MaskFrames, mask_name
    from jaxdream.style import plan_style

    from .dream import check_dream_size
    if args.dream:
        cfg = dream_config(args)
        check_dream_size(args, cfg, hw)
        if cfg.mask is not None:
            MaskFrames(cfg.mask, mask_name(cfg.mask)).check(hw, frames, "the clip's frames")
        return
    style = _style_settings(args)
    vd.check_mask_count(style, len(args.style))
    first_masks = vd.masks_at(vd.frame_masks(style, hw, frames), 0)
    plan_style(np.zeros((*hw, 3), np.float32), args.style, size=max(hw),
               scales=args.scales_first or (), num_iterations=args.iterations_first, **(style | first_masks))


def _maker(args):
    from jaxdream import video as vd
    if args.dream:
        cfg = dream_config(args)
        return vd.DreamFrames(make_dreamer(args, cfg, with_mask=False), blend=args.blend,
                              steps_per_frame=args.steps_per_frame, mask=cfg.mask)
    return vd.StyleFrames(args.style, iterations_first=args.iterations_first, iterations=args.iterations,
                          temporal_weight=args.temporal_weight, first_init=args.init,
                          scales_first=args.scales_first, weights=args.weights,
                          mesh=getattr(args, "mesh", None), **optimiser_settings(args), **_style_settings(args))


def _output(args):
    """Where the video goes: ``-o``, or CLIP_styled.mp4 / CLIP_dream.mp4 beside the clip, which
    is never replaced without --overwrite (or --resume of the run that writes it)."""
    from jaxdream import media
    from jaxdream.media.frames import STATE_FILE, check_work_folder, work_folder
    if args.output is not None:
        out, kind = media.check_animation_output(args.output, inputs=[args.input])
        check_work_folder(work_folder(out, kind), args.resume, args.overwrite)
        return out, kind
    clip = Path(args.input)
    out = clip.with_name(f"{clip.stem}_{'dream' if args.dream else 'styled'}.mp4")
    try:
        out, kind = media.check_animation_output(out, inputs=[args.input])
    except MediaError as e:
        raise MediaError(f"{e} (the default output goes beside the clip; name another with -o)") from None
    work = work_folder(out, kind)
    resuming = check_work_folder(work, args.resume, args.overwrite) and (work / STATE_FILE).is_file()
    if out.exists() and not args.overwrite and not resuming:
        raise MediaError(f"{out} already exists; replace it with --overwrite or name another output with -o")
    return out, kind


def _clock(seconds: float) -> str:
    """45 s, 12 min, 2 h 05 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class _Eta:
    """Time left: from a cost model before the first frame (CPU only), then from the frames
    measured (the first frame's time scaled by its share of the work until later frames have
    been timed, then the mean of the last few later frames)."""

    def __init__(self, args, reader):
        import jax
        w, h = reader.frame_size
        self.frames = reader.frames
        if args.dream:
            octave_px = sum(w * h / args.octave_scale ** (2 * k) for k in range(args.octaves))
            self.first, self.later = args.steps * octave_px, args.steps_per_frame * w * h
        else:
            self.first, self.later = args.iterations_first * w * h, args.iterations * w * h
        self.prior = None
        if jax.default_backend() == "cpu":  # measured on 2 cores; more cores help, sublinearly
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
            rate = CPU_SECONDS["dream" if args.dream else "style"] * (2 / max(cores, 1)) ** 0.7
            passes = 1 if args.dream else args.passes
            self.prior = COMPILE_SECONDS + rate * (self.first + (self.frames * passes - 1) * self.later)
        self.first_seconds, self.later_seconds = None, []

    def left(self, p) -> float:
        """Seconds left after progress report ``p``."""
        if p.frame == 1:
            self.first_seconds = p.seconds
        else:
            self.later_seconds.append(p.seconds)
        recent = self.later_seconds[-5:]
        per_frame = sum(recent) / len(recent) if recent else self.first_seconds * self.later / self.first
        return (p.frames - p.frame) * per_frame


def _announce(args, reader, kind: str, eta: _Eta) -> None:
    """The line printed before the first frame: frames, size, duration, audio, time estimate."""
    w, h = reader.frame_size
    audio = reader.audio
    sound = ", no audio" if audio is None else (
        f", {audio.layout or 'the'} audio kept" if kind == "mp4" else f", audio dropped ({kind} output)")
    rate = "variable frame rate" if reader.vfr else f"{reader.fps:g} fps"
    estimate = (f"about {_clock(eta.prior)} on this CPU (estimated; refined as frames finish)"
                if eta.prior is not None else "time left is shown once the first frame is done")
    print(f"{Path(args.input).name}: {reader.frames} frames ({float(reader.duration):.2f} s, {rate}) at "
          f"{w}x{h}{sound}; {estimate}", flush=True)


def cmd_video(args, observer=None) -> int:
    from jaxdream import media
    from jaxdream import video as vd
    from jaxdream.media import frames

    from .command import enable_compilation_cache
    single_process("video")
    settings = _video_settings(args)
    out, kind = _output(args)
    if args.output is None:
        args.output = str(out)
    # a bad clip, range, size or setting fails before any weights load; the default size
    # never enlarges a smaller clip
    reader = media.VideoReader(args.input, settings.size, args.start, args.end, even=kind == "mp4",
                               upscale=options.given(args, "size"))
    settings = dataclasses.replace(settings, size=reader.size)
    hw = reader.frame_size[::-1]
    _check_frames(args, hw, range(reader.start, reader.end))
    states = reader.frames if getattr(args, "passes", 1) > 1 else max(getattr(args, "temporal_frames", [1]) or [1])
    media.check_space(frames.work_folder(out, kind), hw[0] * hw[1] * (3 * reader.frames * (1 if kind == "frames" else 2)
                                                                     + 12 * (states + 1)), f"the video of {reader.frames} frames")
    if args.dry_run:
        return dry_run_done(f"{'dream' if args.dream else 'style'} {reader.frames} frames", hw, out)
    eta = _Eta(args, reader)
    if not args.quiet:
        _announce(args, reader, kind, eta)
    enable_compilation_cache()
    maker = _maker(args)
    progress = _Progress(eta, args.quiet, observer, frames.work_folder(out, kind))
    try:
        result = vd.process(args.input, args.output, maker, settings, resume=args.resume,
                            overwrite=args.overwrite, compare_independent=args.compare_independent,
                            progress=progress)
    except KeyboardInterrupt as e:
        report_interrupt(e, FRAMES_KEPT)
    finally:
        progress.close()
    _report(result, args.quiet)
    return 0


def _video_settings(args):
    """The checked :class:`jaxdream.video.VideoSettings` of the command line (``--frames``
    becomes ``--end``)."""
    from jaxdream import video as vd
    if args.frames is not None:
        if args.end is not None:
            raise SettingsError("give either --end or --frames, not both")
        args.end = args.start + args.frames
    settings = vd.VideoSettings(size=None if args.size == FULL else args.size,
                                start=args.start, end=args.end, init=args.frame_init,
                                motion_boundaries=not args.no_motion_boundaries, fps=args.fps,
                                temporal_frames=tuple(args.temporal_frames), passes=args.passes,
                                blend_weight=args.blend_weight, long_term_weights=args.long_term_weights)
    settings.validate()
    if args.dream and (args.passes > 1 or tuple(args.temporal_frames) != (1,)):
        raise SettingsError("--passes and --temporal-frames are for style transfer (--style); a dream "
                            "video runs one pass from the previous frame")
    return settings


class _Progress:
    """The frames' progress bar (opened at the first frame reported, so a resumed run starts
    where it stopped), its seconds, loss, temporal error and time left; one line per frame
    instead when the bar is off (not a terminal), nothing with --quiet."""

    def __init__(self, eta: _Eta, quiet: bool, observer=None, folder: Path | None = None):
        self.eta, self.quiet, self.pbar = eta, quiet, None
        self.observer, self.folder = observer, folder

    def __call__(self, p) -> None:
        from jaxdream.progress import bar
        if self.pbar is None:
            self.pbar = bar(total=p.frames, desc="frames", unit="frame", disable=True if self.quiet else None)
            self.pbar.update(p.frame - 1)
        parts = [f"{p.seconds:.1f} s"]
        if p.loss is not None:
            parts.append(f"loss {p.loss:.4g}")
        if p.temporal_error is not None:
            parts.append(f"temporal error {p.temporal_error:.4g}")
        if p.frame < p.frames:
            parts.append(f"about {_clock(self.eta.left(p))} left")
        self.pbar.set_postfix_str(", ".join(parts))
        self.pbar.update(1)
        if self.pbar.disable and not self.quiet:
            print(f"frame {p.frame}/{p.frames}: " + ", ".join(parts), flush=True)
        if self.observer is not None:
            self.observer.frame(p, self.folder)

    def close(self) -> None:
        if self.pbar is not None:
            self.pbar.close()


def _report(result, quiet: bool) -> None:
    """What a finished run prints: the file, frames and timing; the temporal errors measured."""
    if not quiet:
        later = result.seconds_per_frame[1:]
        timing = f", {sum(later) / len(later):.2f} s per frame after the first" if later else ""
        print(f"wrote {result.path} ({result.frames} frames at {result.fps:g} fps{timing}; "
              f"{result.compile_seconds:.1f} s of it compiling)")
    if result.temporal_error is not None:
        print(f"temporal error (mean squared warping error between consecutive frames over "
              f"reliable pixels): {result.temporal_error:.4g}")
    if result.independent_error is not None:
        ratio = result.temporal_error / result.independent_error if result.independent_error else float("nan")
        print(f"temporal error of independent per-frame processing: {result.independent_error:.4g} "
              f"(this run / independent = {ratio:.3f})")
