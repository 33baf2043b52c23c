"""Entry point of the ``jaxdream`` command.

Every command module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``. Errors a user can act on (:class:`jaxdream.errors.JaxdreamError`) end as
one line on stderr and exit status 1; Ctrl-C ends with status 130 after the command has saved
what it finished.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
import warnings

from jaxdream._version import __version__
from jaxdream.errors import JaxdreamError

#: Modules of ``jaxdream.cli`` that add commands, in help order.
COMMAND_MODULES = ("basic", "dream", "style", "video", "warmup", "serve")


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    print(f"jaxdream: warning: {message}", file=sys.stderr if file is None else file)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other jaxdream error."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"jaxdream: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxdream",
        description="DeepDream and neural style transfer in JAX, with zoom animations and video.")
    parser.add_argument("--version", action="version", version=f"jaxdream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"jaxdream.cli.{name}").register(sub)
    return parser


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk so a second run does not recompile."""
    import jax

    from jaxdream.weights.store import cache_dir
    folder = cache_dir() / "xla"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # caching is an optimisation; an unwritable cache only costs time
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds exactly like Ctrl-C: finished work is
    kept, temp files are removed; the exit status is 143 instead of 130."""


def interrupt_status(exc: BaseException) -> int:
    """Exit status of an interrupt: 143 (128 + SIGTERM) or 130 (128 + SIGINT)."""
    return 143 if isinstance(exc, Terminated) else 130


def _record_into(received: list[int]) -> dict:
    """Make SIGINT and SIGTERM append their number to ``received`` instead of raising; return
    the handlers they had. A signal ignored when jaxdream started (a background job) stays
    ignored; outside the main thread nothing changes (and ``{}`` is returned)."""
    previous = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            handler = signal.getsignal(s)
            if handler is not signal.SIG_IGN:
                signal.signal(s, lambda signum, frame: received.append(signum))
                previous[s] = handler
        except ValueError:  # not the main thread
            break
    return previous


def _exit_code(e: SystemExit) -> int:
    """argparse's SystemExit as an exit status (--help and --version: 0, a usage error: 2)."""
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM while the block runs (importing JAX), then act on them.

    Python code that JAX runs while it starts can catch a KeyboardInterrupt raised in the middle
    of it (and carry on, or fail with a traceback); a signal that arrives while the block runs is
    raised as KeyboardInterrupt (or :class:`Terminated`) once it is over. A signal whose handler
    was ``SIG_IGN`` (a background job) stays ignored.
    """
    pending: list[int] = []
    previous = _record_into(pending)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if pending:
        raise Terminated() if pending[0] == signal.SIGTERM else KeyboardInterrupt()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (argparse exits with status 2 and one line on a usage error)."""
    warnings.showwarning = _one_line_warnings
    # JAX warns on any fork; ffmpeg subprocesses exec at once, so the warning is noise here
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with signals_deferred():
        parser = build_parser()  # imports JAX
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        raise SystemExit(2)
    return args


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; returns the exit status."""
    from .common import setup_devices
    try:
        setup_devices(args)
        return int(args.func(args) or 0)
    except JaxdreamError as e:
        print(f"jaxdream: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if not getattr(e, "reported", False):
            print("jaxdream: interrupted", file=sys.stderr)
        return interrupt_status(e)
    except BrokenPipeError:
        return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line in this thread; returns the exit status (used by tests and
    ``python -m``; the console script is :func:`entry`)."""
    try:
        args = parse(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return _exit_code(e)
    return run(args)


#: Seconds an interrupted command gets to unwind (save the current image, remove temp files)
#: before the process ends without it.
INTERRUPT_GRACE_S = 5.0


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in ``thread`` at its next Python instruction."""
    import ctypes
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def _record_signals() -> list[int]:
    """The list SIGINT and SIGTERM are recorded into for the rest of the process.

    A handler that raises can have its KeyboardInterrupt land inside a callback that swallows
    it (seen: JAX's ``_xla_gc_callback``, run by the garbage collector, printed "Exception
    ignored" and the run went on to exit 0); one that only records cannot lose the signal.
    """
    received: list[int] = []
    _record_into(received)
    return received


def _raise_again_if_swallowed(unraisable, default=sys.unraisablehook) -> None:
    """``sys.unraisablehook`` while a command runs: an interrupt that landed in code whose
    exceptions Python cannot propagate (a garbage-collector callback such as JAX's
    ``_xla_gc_callback``, a ``__del__``) is raised again in its thread at the next instruction,
    instead of being printed as "Exception ignored ... Traceback" and lost."""
    if isinstance(unraisable.exc_type, type) and issubclass(unraisable.exc_type, KeyboardInterrupt):
        # from another thread, a moment later: raised from here it would land in this hook,
        # which is still inside the code that cannot propagate it
        timer = threading.Timer(0.05, _raise_in, (threading.current_thread(), unraisable.exc_type))
        timer.daemon = True
        timer.start()
        return
    default(unraisable)


def _status_of(signum: int) -> int:
    return 143 if signum == signal.SIGTERM else 130


def run_interruptibly(args: argparse.Namespace, received: list[int]) -> int:
    """Run a command in a worker thread so that Ctrl-C and SIGTERM are answered at once.

    Python runs signal handlers in the main thread only between bytecodes, so a command whose
    main thread sits in a long XLA call (compiling a program takes tens of seconds) used to
    answer Ctrl-C only when that call returned, and an interrupt could be lost inside library
    code. Here the main thread only waits, polling ``received`` (filled by
    :func:`_record_signals`): on a signal it raises KeyboardInterrupt (or :class:`Terminated`)
    in the worker, which unwinds as before (the current image saved, frames kept, temp files
    removed); if the worker has not finished after :data:`INTERRUPT_GRACE_S` (still inside
    XLA), the command's abandon hooks run here (style saves its last image) and the process
    ends without it: every finished frame is already on disk.
    """
    outcome: dict[str, int] = {}
    finished = threading.Event()

    def work() -> None:
        try:
            outcome["status"] = run(args)
        finally:
            finished.set()  # an unexpected exception is printed by the thread's hook (status 1)

    default_hook = threading.excepthook

    def hook(info):  # an interrupt raised into the worker just as it ended is not an error
        if not issubclass(info.exc_type, KeyboardInterrupt):
            default_hook(info)

    threading.excepthook = hook
    sys.unraisablehook = _raise_again_if_swallowed
    worker = threading.Thread(target=work, name="jaxdream-command", daemon=True)
    worker.start()
    while not finished.wait(0.1):
        if received:
            break
    if not received or finished.is_set():
        return outcome.get("status", 1)
    status = _status_of(received[0])
    _raise_in(worker, Terminated if status == 143 else KeyboardInterrupt)
    deadline = time.monotonic() + INTERRUPT_GRACE_S
    while not finished.wait(0.1) and time.monotonic() < deadline and len(received) < 2:
        pass  # a second signal: stop waiting
    if finished.is_set():
        return outcome.get("status", status) if outcome.get("status") in (130, 143) else status
    from .common import run_abandon_hooks
    run_abandon_hooks()
    print("jaxdream: interrupted (while XLA was busy: what was finished is kept)", file=sys.stderr)
    return status


def entry() -> None:
    """The ``jaxdream`` console script: :func:`main` with Ctrl-C (exit 130) and SIGTERM (143)
    answered at once (:func:`run_interruptibly`).

    After an interrupt the process ends with ``os._exit``: XLA may still be running a
    computation in its own threads, and tearing the interpreter down under it can crash the
    process (seen as a segmentation fault after "interrupted"). Everything worth keeping was
    written while the interrupt unwound.
    """
    received = _record_signals()
    args, status = None, 1
    try:
        args = parse()
    except KeyboardInterrupt as e:  # a signal while importing (parse defers, then raises it)
        received.append(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    except SystemExit as e:  # argparse: --help, --version or a usage error
        status = _exit_code(e)
    if received:
        print("jaxdream: interrupted", file=sys.stderr)
        status = _status_of(received[0])
    elif args is not None:
        status = run_interruptibly(args, received)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if status in (130, 143):
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
