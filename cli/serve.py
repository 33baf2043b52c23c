"""``jaxdream serve``: the web studio, a local page to dream, stylise, zoom and stylise clips."""

from __future__ import annotations

from jaxdream.errors import SettingsError
from jaxdream.studio import DEFAULT_MAX_UPLOAD_MB, MAX_UPLOAD_MB, PORT


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="a local web page to run dreams, styles, zooms and videos (the web studio)",
        description="Start the web studio: drop a photo or a clip on a local page, choose dream, "
                    "style, zoom or video and their options (the command line's), watch the image "
                    "form, stop a run, download results. Runs go one at a time through a queue; "
                    "jobs and results are kept in $JAXDREAM_HOME/studio/. Needs the web extra: "
                    "pip install \"jaxdream[web]\".")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; any other "
                        "lets everyone who reaches it use the studio, and says so)")
    p.add_argument("--port", type=PORT.parse, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--max-upload-mb", type=MAX_UPLOAD_MB.parse, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest upload accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB})")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from jaxdream.studio import studio_home
    try:
        from jaxdream.studio.app import serve
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("starlette", "uvicorn", "anyio"):
            raise SettingsError(f"jaxdream serve needs the web extra ({e.name} is missing): "
                                f"pip install \"jaxdream[web]\"") from None
        raise
    return serve(args.host, args.port, studio_home(), int(args.max_upload_mb * 1e6))
