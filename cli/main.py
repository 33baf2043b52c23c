"""Entry point of the ``jaxdream`` command: the parser and runner of :mod:`jaxdream.jobs.command`
plus ``serve``, with one-line errors and exit statuses (1: an error a user can act on, 2: a
malformed command line, 130/143: Ctrl-C/SIGTERM after the command saved what it finished)."""

from __future__ import annotations

import os
import signal
import sys

from jaxdream.jobs.command import Terminated, exit_code, record_signals, status_of, parse, run, run_interruptibly

from . import serve

#: The commands the CLI adds to the library's.
EXTRA = (serve.register,)


def main(argv: list[str] | None = None) -> int:
    """Run the command line in this thread; returns the exit status (used by tests and
    ``python -m``; the console script is :func:`entry`)."""
    try:
        args = parse(argv, EXTRA)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return exit_code(e)
    return run(args)


def entry() -> None:
    """The ``jaxdream`` console script: :func:`main` with Ctrl-C (exit 130) and SIGTERM (143)
    answered at once (:func:`run_interruptibly`).

    After an interrupt the process ends with ``os._exit``: XLA may still be running a
    computation in its own threads, and tearing the interpreter down under it can crash the
    process (seen as a segmentation fault after "interrupted"). Everything worth keeping was
    written while the interrupt unwound.
    """
    received = record_signals()
    args, status = None, 1
    try:
        args = parse(extra=EXTRA)
    except KeyboardInterrupt as e:  # a signal while importing (parse defers, then raises it)
        received.append(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    except SystemExit as e:  # argparse: --help, --version or a usage error
        status = exit_code(e)
    if received:
        print("jaxdream: interrupted", file=sys.stderr)
        status = status_of(received[0])
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
