"""The studio's web application (Starlette) and :func:`serve`, which ``jaxdream serve`` runs.

Routes:

* ``GET /``: the page; ``/static/...``: its script and style sheet (package data, no build step);
* ``GET /api/options``: the forms, read from the command line's parser (:mod:`.forms`);
* ``POST /api/uploads?name=FILE``: the file's bytes as the body (:mod:`.uploads`);
* ``POST /api/jobs``: ``{"command", "files": {role: [upload ids]}, "values": {option: text}}``;
* ``GET /api/jobs``, ``GET /api/jobs/ID``, ``POST /api/jobs/ID/cancel``, ``DELETE /api/jobs/ID``
  (a finished job and its files);
* ``GET /api/events``: server-sent events with the queue and the running job's progress,
  sent whenever they change;
* ``GET /files/PATH``: a file of the studio folder (``?download=1`` to save it), nothing else.

Requests that change something must carry the header ``X-Jaxdream: 1``, which a page of another
site cannot send without the browser asking first (and the studio never says yes), and every
request must name this machine as its host (so a rebound DNS name cannot reach the studio).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import mimetypes
import os
import socket
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import JaxdreamError, SettingsError
from . import forms
from .jobs import SETTINGS, Studio, read_json
from .uploads import Incoming, UploadError

STATIC = Path(__file__).with_name("static")

#: Seconds between two looks at the queue and the running job's progress, per open page.
EVENT_POLL_S = 0.2

#: Headers of every page and file: nothing is loaded from elsewhere, nothing is sniffed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                               "object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _refused(e: JaxdreamError) -> JSONResponse:
    """The answer to a refused request: its status (400 unless the error says), the one-line
    message, and the form's field it is about (``field``: None when it is about no one field)."""
    status = getattr(e, "status", 400)
    return JSONResponse({"error": str(e), "field": getattr(e, "field", None)}, status_code=status)


def _guard(request: Request) -> None:
    """Refuse a request that changes something unless it came from the studio's own page."""
    if request.headers.get("x-jaxdream") != "1":
        raise UploadError("refused: requests that change something must come from the studio's page", 403)


def create_app(studio: Studio, allowed_hosts=("127.0.0.1", "localhost")) -> Starlette:
    """The studio's web application over ``studio``."""
    options = forms.describe()
    handlers = {JaxdreamError: lambda request, e: _refused(e)}
    app = Starlette(routes=_routes(), exception_handlers=handlers,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))])
    app.state.studio, app.state.options = studio, options
    return app


def _routes() -> list:
    """The studio's routes (listed in the module's docstring)."""
    return [
        Route("/", _index),
        Route("/api/options", _get_options),
        Route("/api/uploads", _upload, methods=["POST"]),
        Route("/api/jobs", _list_jobs),
        Route("/api/jobs", _submit, methods=["POST"]),
        Route("/api/jobs/{job}", _get_job),
        Route("/api/jobs/{job}", _delete_job, methods=["DELETE"]),
        Route("/api/jobs/{job}/cancel", _cancel, methods=["POST"]),
        Route("/api/events", _events),
        Route("/files/{path:path}", _files),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def _studio(request: Request) -> Studio:
    """The studio that the request's application serves."""
    return request.app.state.studio


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


async def _get_options(request: Request) -> Response:
    return JSONResponse(request.app.state.options)


async def _upload(request: Request) -> Response:
    _guard(request)
    studio = _studio(request)
    incoming = Incoming(studio.uploads, request.query_params.get("name", ""), studio.max_upload_bytes)
    try:
        await _receive(request, incoming)
        received = await run_in_threadpool(incoming.finish)
    finally:
        incoming.abort()
    return JSONResponse(asdict(received), status_code=201)


async def _receive(request: Request, incoming: Incoming) -> None:
    """Write the request's body into ``incoming``; raise the first refusal once the body is read."""
    refused = None
    length = request.headers.get("content-length")
    try:
        incoming.check_length(int(length) if length and length.isdigit() else None)
    except UploadError as e:
        refused = e
    async for chunk in request.stream():  # read to the end even when refused, so that
        if refused is None:               # the browser gets the answer, not a reset
            try:
                incoming.write(chunk)
            except UploadError as e:
                refused = e
    if refused is not None:
        raise refused


async def _submit(request: Request) -> Response:
    _guard(request)
    body = await _job_body(request)
    job = await run_in_threadpool(_studio(request).submit, str(body.get("command")), body.get("files") or {},
                                  {str(k): v for k, v in (body.get("values") or {}).items()})
    return JSONResponse(job.summary(), status_code=201)


#: The deepest nesting a job submission may have (a real one is 3 deep); deeper JSON is
#: refused before it is parsed (Python's parser recurses, and a deep enough body exhausts it).
MAX_JSON_DEPTH = 16


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets in strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


async def _job_body(request: Request) -> dict:
    """The JSON body of a job submission, refused unless it is ``{command, files, values}``."""
    raw = await request.body()
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise UploadError(f"the request nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise UploadError("the request is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("values", {}), dict) \
            or not isinstance(body.get("files", {}), dict):
        raise UploadError("expected {command, files, values}")
    return body


async def _list_jobs(request: Request) -> Response:
    studio = _studio(request)
    return JSONResponse({"gallery": studio.gallery(), "live": studio.live()})


async def _get_job(request: Request) -> Response:
    job = _studio(request).job(request.path_params["job"])
    return JSONResponse(job.summary(progress=True) | {"argv": read_json(job.folder / SETTINGS, {}).get("argv")})


async def _delete_job(request: Request) -> Response:
    _guard(request)
    return JSONResponse({"deleted": await run_in_threadpool(_studio(request).delete, request.path_params["job"])})


async def _cancel(request: Request) -> Response:
    _guard(request)
    return JSONResponse(_studio(request).cancel(request.path_params["job"]).summary())


async def _events(request: Request) -> Response:
    return StreamingResponse(_live_events(_studio(request)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _live_events(studio: Studio):
    """Server-sent events: the queue and the running job's progress whenever they change, and a
    comment after 15 quiet seconds."""
    last, quiet = None, 0.0
    while True:
        data = json.dumps(studio.live())
        if data != last:
            last, quiet = data, 0.0
            yield f"data: {data}\n\n"
        elif quiet > 15:
            quiet = 0.0
            yield ": still here\n\n"
        await asyncio.sleep(EVENT_POLL_S)
        quiet += EVENT_POLL_S


#: Files up to this size are answered from memory, read from one open file: a preview or a
#: ``progress.json`` that a run replaces while it is being sent still arrives whole, its length
#: that of the bytes sent. Larger ones (results, which are written once) are streamed with ranges.
IN_MEMORY_BYTES = 8 << 20


async def _files(request: Request) -> Response:
    studio = _studio(request)
    path = studio.file(request.path_params["path"])
    headers = dict(SECURITY_HEADERS, **{"Cache-Control": "no-cache"})
    filename = None
    if request.query_params.get("download"):
        filename = "jaxdream_" + "_".join(path.relative_to(studio.home.resolve()).parts)
    data = await run_in_threadpool(_small_file, path)
    if data is None:
        return FileResponse(path, headers=headers, filename=filename)
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Response(data, media_type=kind, headers=headers)


def _small_file(path: Path) -> bytes | None:
    """The bytes of ``path`` read from one open file, or None when it is over
    :data:`IN_MEMORY_BYTES`."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > IN_MEMORY_BYTES:
                return None
            return f.read(IN_MEMORY_BYTES + 1)
    except OSError:
        raise UploadError("no such file", 404) from None


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as e:
        raise SettingsError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(False)
    return sock


def _loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def serve(host: str, port: int, home: Path, max_upload_bytes: int) -> int:
    """Serve the studio until interrupted; the running job is asked to stop (it keeps what it
    finished) when the server stops."""
    import uvicorn
    sock = _bind(host, port)
    local = _loopback(sock)
    if not local:
        print(f"jaxdream: warning: the studio listens on {host}: anyone who can reach this machine can "
              f"upload files and start runs (there is no login); use --host 127.0.0.1 to keep it local",
              file=sys.stderr, flush=True)
    studio = Studio(home, max_upload_bytes=max_upload_bytes).start()
    hosts = ["127.0.0.1", "localhost", "[::1]"] if local else ["*"]
    config = uvicorn.Config(create_app(studio, hosts), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="jaxdream-studio-http",
                              daemon=True)
    thread.start()
    shown = f"[{host}]" if ":" in host else host
    print(f"jaxdream studio: http://{shown}:{sock.getsockname()[1]}/ (jobs and results in {home}; "
          f"Ctrl-C to stop)", flush=True)
    try:
        while thread.is_alive():
            thread.join(0.2)
    finally:
        server.should_exit = True
        studio.shutdown()
        thread.join(2)
    return 0
