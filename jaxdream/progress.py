"""Progress bars: shown on a terminal, silent when output is piped or ``--quiet`` is given."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def bar(*, total=None, desc: str = "", unit: str = "it", disable: bool | None = None, **kwargs):
    """A tqdm bar on stderr; ``disable=None`` hides it when stderr is not a terminal."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, leave=False, **kwargs)


def download_bar(**kwargs):
    """Factory the weights store calls for a download's byte counter."""
    return bar(**kwargs)
