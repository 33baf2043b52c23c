"""How a run's iterations are driven: one ``lax.fori_loop`` inside ``jit`` (GPU, TPU) or a
Python loop over a jitted one-iteration program (CPU)."""

from __future__ import annotations

import jax

__all__ = ["in_jit_loop_default"]


def in_jit_loop_default() -> bool:
    """Whether iterations run as one ``lax.fori_loop`` inside ``jit`` (default: not on CPU).

    Used by style transfer's chunks and DeepDream's ascent steps. On XLA:CPU (jax 0.10.2) a
    VGG loss-and-gradient inside a while loop ran about 3.5 times slower than the same
    computation as a top-level jitted call (0.70 s -> 2.46 s per evaluation at 128 px), and a
    GoogLeNet dream gradient 1.6 times slower (0.58 s -> 0.35 s per 512 px step), each measured
    in one run; so on CPU the loop is a Python loop over the jitted one-iteration step (same
    compiled program every call, dispatch costs microseconds). On GPU and TPU the whole loop
    runs inside ``jit``.
    """
    return jax.default_backend() != "cpu"


