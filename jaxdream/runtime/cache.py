"""The persistent compilation cache: compiled XLA programs kept on disk, so that a second run
of the same shapes loads its programs instead of compiling them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import jax

from ..weights.store import cache_dir

__all__ = ["enable_compilation_cache", "compile_ahead"]


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs in ``$JAXDREAM_HOME/xla`` so a second run does not recompile."""
    folder = cache_dir() / "xla"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # caching is an optimisation; an unwritable cache only costs time
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


#: Signatures of the programs :func:`compile_ahead` compiled in this process.
_COMPILED: set = set()


def _signature(fn, args, kwargs):
    """What a jitted call's program depends on: the function, the static values and the shapes
    and dtypes of the arrays (their values do not matter)."""
    def leaf(x):
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return tuple(x.shape), str(x.dtype)
        try:
            hash(x)
            return x
        except TypeError:
            return repr(x)
    leaves, tree = jax.tree.flatten((args, kwargs), is_leaf=lambda x: x is None)
    return fn, tree, tuple(leaf(x) for x in leaves)


def compile_ahead(programs) -> float:
    """Lower and compile ``(jitted function, args, kwargs)`` calls, concurrently (XLA compiles
    outside the GIL), before any of them runs; a call whose program this process compiled ahead
    already is skipped, so a driver that prepares its programs on every run (a video's frames)
    traces them once. Later calls of the functions with the same shapes find them compiled (or
    in the persistent cache). Returns the seconds spent."""
    todo = {}
    for fn, args, kwargs in programs:
        key = _signature(fn, args, kwargs)
        if key not in _COMPILED:
            todo.setdefault(key, (fn, args, kwargs))
    if not todo:
        return 0.0
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        list(pool.map(lambda p: p[0].lower(*p[1], **p[2]).compile(), todo.values()))
    _COMPILED.update(todo)
    return time.perf_counter() - start
