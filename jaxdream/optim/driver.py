"""How a run's iterations are driven: in chunks, each one ``lax.fori_loop`` inside ``jit`` (GPU,
TPU) or a Python loop over a jitted one-iteration program (CPU), with the host reading only
what its consumer needs between chunks; on an accelerator the next chunk is dispatched before
the last one's results are read, so the device never waits for Python."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Sequence

import jax

__all__ = ["in_jit_loop_default", "chunk_sizes", "drive", "loop_guard"]

#: ``JAXDREAM_TRANSFER_GUARD``: the ``jax.transfer_guard`` level inside the iteration loops
#: (``allow`` by default; the tests run with ``disallow``, so a transfer nobody named fails).
TRANSFER_GUARD_ENV = "JAXDREAM_TRANSFER_GUARD"


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


def loop_guard():
    """``jax.transfer_guard`` at the level :data:`TRANSFER_GUARD_ENV` names (``allow`` unset):
    wraps the loops, whose only transfers are explicit (``jax.device_put``/``device_get``)."""
    level = os.environ.get(TRANSFER_GUARD_ENV, "allow")
    return contextlib.nullcontext() if level == "allow" else jax.transfer_guard(level)


def chunk_sizes(total: int, chunk: int, every: int = 0) -> list[int]:
    """Iterations of each chunk of a run of ``total``: ``chunk`` at most, cut at every multiple
    of ``every`` (where a stopping rule compares the loss; 0: none)."""
    sizes, done = [], 0
    while done < total:
        n = min(chunk, total - done)
        if every:
            n = min(n, every - done % every)
        sizes.append(n)
        done += n
    return sizes


def drive(state, advance: Callable[[Any, int], Any], snapshot: Callable[[Any], Any],
          consume: Callable[[int, Any], bool], sizes: Sequence[int], pipeline: bool = False,
          read: Callable[[Any], Any] = jax.device_get, guard: bool = True):
    """Run an optimiser's chunks; returns ``(iterations done, host snapshot)`` of the last chunk
    consumed.

    Args:
        state: the optimiser state (a pytree of device arrays).
        advance: ``(state, n) -> state`` dispatches ``n`` iterations (the state may be donated).
        snapshot: ``state -> pytree`` of device arrays the consumer reads (with ``pipeline``,
            copies: the state is donated to the next chunk before they are read).
        consume: ``(iterations done, host snapshot) -> stop``, after every chunk.
        sizes: the chunks' iteration counts (:func:`chunk_sizes`).
        pipeline: dispatch chunk k+1 before reading chunk k (an accelerator then never waits for
            the host; a stop after chunk k discards chunk k+1's work, so a run that stops early
            by rule leaves it off).
        read: device snapshot -> host values (the one transfer; default ``jax.device_get``).
        guard: run under :func:`loop_guard` (False for loops that pass host values on purpose:
            the band-by-band objective hands each band's offsets from the host).
    """
    done, last, pending = 0, None, None
    with loop_guard() if guard else contextlib.nullcontext():
        for n in sizes:
            state = advance(state, n)
            done += n
            ready, pending = pending, (done, snapshot(state))
            if not pipeline:
                ready, pending = pending, None
            if ready is not None:
                last = (ready[0], read(ready[1]))
                if consume(*last):
                    return last
        if pending is not None:
            last = (pending[0], read(pending[1]))
            consume(*last)
    return last
