"""The web dashboard: the page at `/` and its files under `/ui/`, shipped in the package.

The files (server/ui/) are read once, on the first request, and kept in memory with a gzip copy
and an ETag; nothing is built at run time and nothing comes from a CDN. The front-end libraries
in server/ui/vendor/ are copied from the npm registry by scripts/vendor-ui.sh.

These routes need no API key: they are the same files for everyone, and hold no data. The page
asks for the key once, keeps it in the browser's local storage and sends it as a bearer header
with every API call (never a cookie, so another site's page cannot make the browser use it);
the Guard's Host and Origin rules apply to these routes as to every other. The answers forbid
framing and inline scripts (Content-Security-Policy).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePosixPath

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

__all__ = ["install"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",
}
# the page's own files only; style attributes are set from scripts (CSSOM), which CSP allows
_SECURITY = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # always revalidated (by ETag): an upgrade shows at once
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    compressed: bytes
    etag: str
    media_type: str


@cache
def assets() -> dict[str, Asset]:
    """Every file under server/ui/, by its path there (`index.html`, `vendor/uPlot.js`)."""
    root = resources.files("modelctl.server").joinpath("ui")
    found: dict[str, Asset] = {}

    def walk(folder: resources.abc.Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            name = f"{prefix}{entry.name}"
            if entry.is_dir():
                walk(entry, name + "/")
                continue
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            kind = _TYPES.get(PurePosixPath(name).suffix, "application/octet-stream")
            found[name] = Asset(body, gzip.compress(body, 9, mtime=0), etag, kind)

    walk(root, "")
    return found


def _answer(request: Request, asset: Asset) -> Response:
    headers = dict(_SECURITY, etag=asset.etag, vary="Accept-Encoding")
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("accept-encoding", "") and len(asset.compressed) < len(body):
        body, headers["content-encoding"] = asset.compressed, "gzip"
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        return Response(status_code=200, headers=headers, media_type=asset.media_type)
    return Response(body, headers=headers, media_type=asset.media_type)


async def root(request: Request) -> Response:
    """The dashboard for a browser; for a program (Ollama's clients check that the server
    answers here), one line of text."""
    if "text/html" in request.headers.get("accept", ""):
        answer = _answer(request, assets()["index.html"])
    else:
        answer = PlainTextResponse("" if request.method == "HEAD" else "modelctl is running\n")
    answer.headers["vary"] = "Accept, Accept-Encoding"  # one address, two answers
    return answer


async def asset(request: Request) -> Response:
    """A file of the page (its own addresses are in the fragment: `/#/models/ID`)."""
    path = request.path_params["path"]
    found = assets().get(path)
    if found is None:
        return PlainTextResponse(f"no such file of the dashboard: {path[:100]}\n", 404)
    return _answer(request, found)


def install(app: object) -> None:
    """Add the routes, outside the API key's dependency (Starlette routes, not FastAPI's);
    the files are read and compressed now, not on the event loop at the first request."""
    assets()
    app.add_route("/", root, methods=["GET", "HEAD"], include_in_schema=False)  # type: ignore[attr-defined]
    app.add_route("/ui/{path:path}", asset, methods=["GET", "HEAD"], include_in_schema=False)  # type: ignore[attr-defined]
