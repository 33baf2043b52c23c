"""``jaxdream warmup``: compile the programs of a dream ahead, into the compilation cache."""

from __future__ import annotations

import sys

from jaxdream import options

from .common import add, output_size
from .dream import add_dream_options, dream_config


def register(sub) -> None:
    p = sub.add_parser(
        "warmup", help="compile a dream's programs ahead so that the dream itself starts at once",
        description="Compile the XLA programs that 'jaxdream dream' with the same options will run, into "
                    "the compilation cache (no weights needed, nothing computed). With images: the "
                    "programs for their sizes (after --size). Without: the given --size (default "
                    f"{options.default('size', 'warmup')}) at the usual aspect ratios.")
    p.add_argument("images", nargs="*", help="images whose dreams to prepare")
    add(p, "warmup", "aspects")
    add_dream_options(p, "warmup")
    p.set_defaults(func=cmd_warmup)


def _sizes(args) -> list[tuple[int, int]]:
    from jaxdream.warmup import ASPECTS, aspect_sizes
    if args.images:
        if args.aspects:
            from jaxdream.errors import SettingsError
            raise SettingsError("--aspects is for a warmup without images; give one or the other")
        # the images' own sizes unless --size is given, as the dreams will have them
        size = args.size if options.given(args, "size") else None
        return list(dict.fromkeys(output_size(path, size) for path in args.images))
    aspects = args.aspects.split(",") if args.aspects else ASPECTS
    return list(dict.fromkeys(aspect_sizes(args.size, aspects)))


def _check_cache_writable() -> None:
    """A warmup exists to fill the compile cache: one it cannot write is an error, not "ready"."""
    import tempfile

    from jaxdream.errors import SettingsError
    from jaxdream.weights.store import cache_dir
    folder = cache_dir() / "xla"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as e:
        raise SettingsError(f"cannot write the compile cache in {folder} ({e.strerror or e}); "
                            f"a warmup there would prepare nothing (set JAXDREAM_HOME to a writable folder)") from None


def cmd_warmup(args) -> int:
    from jaxdream.runtime import memory
    from jaxdream.warmup import compile_dream

    from .dream import _read_mask
    from .command import enable_compilation_cache
    cfg = dream_config(args)
    if (args.devices or 1) > 1 or args.coordinator or args.num_processes:
        from jaxdream.errors import SettingsError
        raise SettingsError("warmup prepares one-device dreams; leave out --devices and the cluster flags")
    sizes = _sizes(args)
    for hw in sizes:  # the sizes a dream would refuse are not prepared either
        memory.check_pixels(*hw, f"warmup at {hw[1]}x{hw[0]}")
        memory.check_fits(memory.dream_bytes(*hw, cfg.tile_size, cfg.tile_batch), f"DeepDream at {hw[1]}x{hw[0]}")
    if args.dry_run:
        print("would compile the dream programs for " + ", ".join(f"{w}x{h}" for h, w in sizes), file=sys.stderr)
        return 0
    enable_compilation_cache()
    _check_cache_writable()

    def progress(size, shape):
        if not args.quiet:
            print(f"compiling {size[1]}x{size[0]}: octave {shape[1]}x{shape[0]}", file=sys.stderr, flush=True)
    done = compile_dream(cfg, sizes, mask=_read_mask(cfg.mask), progress=progress)
    if not args.quiet:
        total = sum(seconds for *_, seconds in done)
        print(f"ready: {sum(len(shapes) for _, shapes, _ in done)} programs for {len(done)} sizes "
              f"in {total:.1f} s", file=sys.stderr)
    return 0
