"""The web studio behind ``jaxdream serve``: a local page to run dreams, styles, zooms and videos.

Pieces, each small and testable on its own:

* :mod:`.forms`: the page's options, read from the command line's own argparse parser (one
  definition: defaults, ranges, choices and help come from :mod:`jaxdream.jobs`), and a
  submitted form turned back into a command line for that same parser;
* :mod:`.uploads`: uploads checked like command-line inputs and stored under random names;
* :mod:`.jobs`: one job folder per run and the worker that runs the jobs one at a time;
* :mod:`.runner`: what runs inside a job's process (the command, with previews and progress);
* :mod:`.app`: the Starlette application (needs the ``web`` extra: ``pip install "jaxdream[web]"``).

Everything the studio keeps lives in :func:`studio_home` (``$JAXDREAM_HOME/studio/``).
"""

from __future__ import annotations

from pathlib import Path

from .. import options

#: Numbers of ``jaxdream serve`` (defined with every other number in :mod:`jaxdream.options`).
PORT = options.get("port")
MAX_UPLOAD_MB = options.get("max-upload-mb")

#: Default ceiling of one upload, in MB (an image or a clip).
DEFAULT_MAX_UPLOAD_MB = 200


def studio_home() -> Path:
    """The studio's folder: ``studio/`` in the jaxdream cache (``$JAXDREAM_HOME``, else
    ``$XDG_CACHE_HOME/jaxdream``, else ``~/.cache/jaxdream``); not created here."""
    from jaxdream.weights.store import cache_dir
    return cache_dir() / "studio"
