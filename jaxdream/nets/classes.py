"""ImageNet class names (line N of the bundled synset list = class N)."""

from __future__ import annotations

import difflib
import functools
from importlib import resources

from ..errors import SettingsError


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names, short form (``Egyptian cat``)."""
    text = resources.files("jaxdream").joinpath("data/imagenet_synset_words.txt").read_text()
    return tuple(line.split(",")[0].strip() for line in text.splitlines() if line.strip())


def class_index(name_or_index: str | int) -> int:
    """A class given as an index or (part of) a name -> its index.

    Raises:
        SettingsError: out of range, or a name that matches no class or several equally.
    """
    names = class_names()
    text = str(name_or_index).strip()
    if text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < len(names):
            raise SettingsError(f"class index {idx} is out of range 0..{len(names) - 1}")
        return idx
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lowered, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(names[lowered.index(c)] for c in close)}?" if close else ""
    raise SettingsError(f"unknown class '{text}'{hint}")
