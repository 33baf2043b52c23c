"""The commands as a parser and a runner, shared by the console script (:mod:`jaxdream.cli`) and
the web studio's job processes (:mod:`jaxdream.studio.runner`).

Every command module of :mod:`jaxdream.jobs` exposes ``register(subparsers)``, which adds its
parser and sets ``func(args, observer=None) -> int`` (``observer``: the studio's progress hooks). Errors a user can act on (:class:`jaxdream.errors.JaxdreamError`) end as
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

#: Modules of ``jaxdream.jobs`` that add commands, in help order (``serve`` is added by the CLI).
COMMAND_MODULES = ("basic", "dream", "style", "video", "warmup")


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    print(f"jaxdream: warning: {message}", file=sys.stderr if file is None else file)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other jaxdream error."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"jaxdream: error: {message} (see '{self.prog} --help')\n")


def build_parser(extra=()) -> argparse.ArgumentParser:
    """The ``jaxdream`` parser: the commands of :data:`COMMAND_MODULES`, then each of ``extra``
    (``register`` functions)."""
    parser = _Parser(
        prog="jaxdream",
        description="DeepDream and neural style transfer in JAX, with zoom animations and video.")
    parser.add_argument("--version", action="version", version=f"jaxdream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"jaxdream.jobs.{name}").register(sub)
    for register in extra:
        register(sub)
    return parser


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk so a second run does not recompile
    (:func:`jaxdream.runtime.cache.enable_compilation_cache`; tests replace this one)."""
    from jaxdream.runtime import cache
    cache.enable_compilation_cache()


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


def exit_code(e: SystemExit) -> int:
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


def parse(argv: list[str] | None = None, extra=()) -> argparse.Namespace:
    """Parse the command line (argparse exits with status 2 and one line on a usage error)."""
    warnings.showwarning = _one_line_warnings
    # JAX warns on any fork; ffmpeg subprocesses exec at once, so the warning is noise here
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with signals_deferred():
        parser = build_parser(extra)  # imports JAX
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        raise SystemExit(2)
    return args


def run(args: argparse.Namespace, observer=None) -> int:
    """Run a parsed command (``observer``: progress hooks, :class:`jaxdream.jobs.common.Observer`);
    returns the exit status. An unexpected exception (a bug) ends in one line naming a log file
    that holds its traceback, not in a traceback cut short by the process's end."""
    from .common import setup_devices
    try:
        setup_devices(args)
        return int((args.func(args) if observer is None else args.func(args, observer=observer)) or 0)
    except JaxdreamError as e:
        print(f"jaxdream: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if not getattr(e, "reported", False):
            print("jaxdream: interrupted", file=sys.stderr)
        return interrupt_status(e)
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - a bug: one line here, the whole traceback in a log file
        print(f"jaxdream: error: unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              f"(a bug in jaxdream; {_log_traceback(e)})", file=sys.stderr)
        return 1


def _log_traceback(exc: BaseException) -> str:
    """Write ``exc``'s traceback to ``$JAXDREAM_HOME/logs/error-<time>-<pid>.log``; where it is
    (or the traceback itself, on stderr, when no log can be written)."""
    import traceback

    from jaxdream.weights.store import cache_dir
    text = "".join(traceback.format_exception(exc))
    try:
        folder = cache_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(text)
        return f"the traceback is in {path}"
    except OSError:
        print(text, file=sys.stderr, end="")
        return "its traceback is above"


#: Seconds an interrupted command gets to unwind (save the current image, remove temp files)
#: before the process ends without it.
INTERRUPT_GRACE_S = 5.0


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in ``thread`` at its next Python instruction."""
    import ctypes
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def record_signals() -> list[int]:
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


def status_of(signum: int) -> int:
    return 143 if signum == signal.SIGTERM else 130


def run_interruptibly(args: argparse.Namespace, received: list[int], observer=None) -> int:
    """Run a command in a worker thread so that Ctrl-C and SIGTERM are answered at once.

    Python runs signal handlers in the main thread only between bytecodes, so a command whose
    main thread sits in a long XLA call (compiling a program takes tens of seconds) used to
    answer Ctrl-C only when that call returned, and an interrupt could be lost inside library
    code. Here the main thread only waits, polling ``received`` (filled by
    :func:`record_signals`): on a signal it raises KeyboardInterrupt (or :class:`Terminated`)
    in the worker, which unwinds as before (the current image saved, frames kept, temp files
    removed); if the worker has not finished after :data:`INTERRUPT_GRACE_S` (still inside
    XLA), the command's abandon hooks run here (style saves its last image) and the process
    ends without it: every finished frame is already on disk.
    """
    outcome: dict[str, int] = {}
    finished = threading.Event()

    def work() -> None:
        try:
            outcome["status"] = run(args, observer)
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
    status = status_of(received[0])
    _raise_in(worker, Terminated if status == 143 else KeyboardInterrupt)
    deadline = time.monotonic() + INTERRUPT_GRACE_S
    while not finished.wait(0.1) and time.monotonic() < deadline and len(received) < 2:
        pass  # a second signal: stop waiting
    if finished.is_set():  # the worker's own status: interrupted, or finished its work (0) before
        return outcome.get("status", status) if outcome.get("status") in (0, 130, 143) else status
    from .common import run_abandon_hooks
    run_abandon_hooks()
    print("jaxdream: interrupted (while XLA was busy: what was finished is kept)", file=sys.stderr)
    return status
