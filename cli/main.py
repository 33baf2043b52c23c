"""Entry point of the ``jaxdream`` command.

Every command module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``. Errors a user can act on (:class:`jaxdream.errors.JaxdreamError`) end as
one line on stderr and exit status 1; Ctrl-C ends with status 130 after the command has saved
what it finished.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from jaxdream._version import __version__
from jaxdream.errors import JaxdreamError

#: Modules of ``jaxdream.cli`` that add commands, in help order.
COMMAND_MODULES = ("basic", "dream", "style", "video")


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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    warnings.showwarning = _one_line_warnings
    # JAX warns on any fork; ffmpeg subprocesses exec at once, so the warning is noise here
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except JaxdreamError as e:
        print(f"jaxdream: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jaxdream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
