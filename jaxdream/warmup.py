"""Compile the programs a dream will run before it runs (``jaxdream warmup``).

A first DeepDream of a new image size spends most of its time compiling: one XLA program per
octave shape (``benchmarks/compile_bench.py`` measures the share). With the persistent
compilation cache on (the command line turns it on), a program compiled once is loaded by every
later process. :func:`compile_dream` compiles exactly the programs :meth:`Dreamer.run` will call
for an image size and settings, from the network's parameter shapes alone: no weights are read,
and nothing is computed.

Example:
    >>> from jaxdream.dream import make_config
    >>> compile_dream(make_config(octaves=2), [(240, 320)])  # doctest: +SKIP
    [((240, 320), [(171, 229), (240, 320)], 9.1)]
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from .dream import DreamConfig, Dreamer, octave_shapes
from .errors import SettingsError
from .nets import get_spec
from .nets.network import Network, param_tree

__all__ = ["abstract_network", "compile_dream", "aspect_sizes"]

#: Aspect ratios (width:height) ``jaxdream warmup`` prepares when given no images.
ASPECTS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16")


def abstract_network(model: str, pooling: str = "max") -> Network:
    """A :class:`Network` whose parameters are shapes only (``jax.ShapeDtypeStruct``)."""
    tree = param_tree(model, lambda name, shape: jax.ShapeDtypeStruct(shape, jnp.float32))
    return Network(get_spec(model), tree, pooling, {"source_sha256": "shapes-only"})


def aspect_sizes(size: int, aspects: Sequence[str] = ASPECTS) -> list[tuple[int, int]]:
    """(height, width) with the longest side ``size`` for each ``W:H`` aspect ratio."""
    sizes = []
    for text in aspects:
        try:
            w, h = (float(v) for v in text.split(":"))
            if not (0 < w < float("inf") and 0 < h < float("inf")):
                raise ValueError
        except ValueError:
            raise SettingsError(f"an aspect ratio is written like 4:3, got '{text}'") from None
        scale = size / max(w, h)
        sizes.append((max(1, round(h * scale)), max(1, round(w * scale))))
    return sizes


def _compile_octave(dreamer: Dreamer, hw: tuple[int, int], octave: int) -> None:
    """Compile (or load from the cache) the program :meth:`Dreamer.step` runs for one octave."""
    fn, args, kwargs = dreamer.program(jax.ShapeDtypeStruct((*hw, 3), jnp.float32),
                                       jax.random.fold_in(dreamer.key, octave))
    fn.lower(*args, **kwargs).compile()


def compile_dream(cfg: DreamConfig, sizes: Sequence[tuple[int, int]], mask=None,
                  progress: Callable[[tuple[int, int], tuple[int, int]], None] | None = None) -> list:
    """Compile every octave program a dream with ``cfg`` runs on images of these (h, w) sizes.

    Returns ``[(size, octave shapes, seconds)]``. Guided dreams are not prepared (their
    programs depend on the guide image's features). ``progress(size, shape)`` is called before
    each octave's program.
    """
    if cfg.guide:
        raise SettingsError("warmup prepares unguided dreams; leave out --guide")
    dreamer = Dreamer(cfg, network=abstract_network(cfg.model, cfg.pooling), mask=mask)
    done = []
    for hw in sizes:
        dreamer.net.spec.check_size(hw[0], hw[1], dreamer.layer_names)
        start = time.perf_counter()
        shapes = octave_shapes(hw[0], hw[1], cfg.octaves, cfg.octave_scale, dreamer.min_size)
        for octave, shape in enumerate(shapes):
            if progress is not None:
                progress(hw, shape)
            _compile_octave(dreamer, shape, octave)
        done.append((hw, shapes, time.perf_counter() - start))
    return done
