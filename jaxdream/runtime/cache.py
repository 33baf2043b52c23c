"""The persistent compilation cache: compiled XLA programs kept on disk, so that a second run
of the same shapes loads its programs instead of compiling them."""

from __future__ import annotations

import jax

from ..weights.store import cache_dir

__all__ = ["enable_compilation_cache"]


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
