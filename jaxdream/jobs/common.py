"""Pieces every command uses: the options of :data:`jaxdream.options.OPTIONS` (numeric types,
the run flags ``--dry-run``, ``--resume``, ``--overwrite``, the device flags), the size check
done before any image is loaded, and the interrupt message of the animation commands."""

from __future__ import annotations

import argparse
import contextlib
import sys

from jaxdream import options
from jaxdream.errors import SettingsError


def add(group, command: str, *names: str) -> None:
    """Add the options ``names`` of ``command`` to a parser or group, each from its one
    definition in :data:`jaxdream.options.OPTIONS`."""
    for name in names:
        options.add(group, name, command)


def add_dry_run(p: argparse.ArgumentParser, command: str) -> None:
    options.add(p, "dry-run", command)


def add_frames_flags(p, command: str) -> None:
    """``--resume`` and ``--overwrite`` of the commands that write frames as they go."""
    add(p, command, "resume", "overwrite")


def output_size(path, size: int | None, what: str = "input", flag: str = "--size") -> tuple[int, int]:
    """(height, width) an input image will have after ``flag`` (``--size``, ``--guide-size``),
    from its header alone; checks the pixel ceiling so that nothing too large is ever decoded or
    resized."""
    from jaxdream import media
    from jaxdream.runtime import memory
    h, w = media.image_shape(path)
    if size is not None:
        h, w = media.fit_size(h, w, size)
    memory.check_pixels(h, w, f"{what} {path}" + (f" at {flag} {size}" if size is not None else ""))
    return h, w


class Observer:
    """Progress hooks a command calls besides its own output: what the web studio's job
    process passes (:class:`jaxdream.studio.runner.Reporter`) to watch a run. Each hook does
    nothing here; a command line run has no observer."""

    def dream(self, dreamer, image, on_stop):
        """Run ``dreamer`` on ``image`` and return the result, or None to let the command run
        it (``on_stop(image, step)`` writes the image of a stopped run)."""
        return None

    def style_plan(self, plan) -> None:
        """The checked plan of a style run, before its first iteration."""

    def style(self, progress) -> None:
        """After every chunk of style iterations (:class:`jaxdream.style.StyleProgress`)."""

    def frame(self, progress, folder) -> None:
        """After every finished frame of a zoom or video (its frames are in ``folder``)."""


def timing(seconds: float, compiling: float, verb: str) -> str:
    """``12.3 s: 4.1 s compiling, 8.2 s dreaming``: a run's time with its compiling apart."""
    return f"{seconds:.1f} s: {compiling:.1f} s compiling, {max(seconds - compiling, 0.0):.1f} s {verb}"


def report_interrupt(exc: KeyboardInterrupt, message: str) -> None:
    """Print the command's own interrupt line (main then prints nothing more) and re-raise."""
    print(f"jaxdream: interrupted; {message}", file=sys.stderr)
    exc.reported = True
    raise exc


def dry_run_done(what: str, hw: tuple[int, int], out) -> int:
    """The line ``--dry-run`` ends with when every check passed (exit status 0)."""
    print(f"dry run: {what} at {hw[1]}x{hw[0]} into {out}; settings, inputs and output are fine")
    return 0


FRAMES_KEPT = "finished frames are kept, continue with the same command and --resume"


def add_device_flags(p: argparse.ArgumentParser, command: str) -> None:
    """``--devices`` and the multi-host flags: the mesh a command computes on."""
    add(p.add_argument_group("devices"), command, "devices", "coordinator", "num-processes", "process-id")


def setup_devices(args) -> None:
    """Join the cluster (if asked or detected) and build the mesh ``args.mesh``, before anything
    touches JAX's devices; bad settings end in one line."""
    from jaxdream.runtime import parallel
    if not hasattr(args, "devices"):
        return
    given = [args.coordinator, args.num_processes, args.process_id]
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise SettingsError("give --coordinator, --num-processes and --process-id together")
    parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    args.mesh = parallel.mesh(args.devices)


def single_process(what: str) -> None:
    """Refuse a multi-host run of a command that does not split its work across hosts yet."""
    import jax
    if jax.process_count() > 1:
        raise SettingsError(f"{what} runs in one process (use --devices on one host); "
                            f"{jax.process_count()} processes were started")


#: What a command saves when it is interrupted while XLA keeps its thread busy (see
#: :func:`jaxdream.jobs.command.run_interruptibly`): the innermost registration runs.
_ABANDON: list = []


@contextlib.contextmanager
def on_abandon(save):
    """Register ``save()`` to run from the main thread if the command cannot unwind in time."""
    _ABANDON.append(save)
    try:
        yield
    finally:
        _ABANDON.remove(save)


def run_abandon_hooks() -> None:
    for save in reversed(list(_ABANDON)):
        try:
            save()
        except Exception as e:  # noqa: BLE001 - best effort while exiting
            print(f"jaxdream: warning: could not save on interrupt ({e})", file=sys.stderr)
