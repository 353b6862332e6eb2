"""The dashboard at `/ui/`: hand-written HTML, CSS and JavaScript shipped in the package.

The page is a client of the REST API and nothing more: it reads `/instances`, watches
`/events` and `/traffic` (Server-Sent Events), and edits through the same routes as `curl` or
the CLI, with the same auth (the middleware wraps these routes too). Nothing is fetched from
anywhere else at run time (hosts are often offline): the Content-Security-Policy allows this
origin only, so a stray external URL would fail loudly in a test instead of working on a
developer's laptop. No build step: the files in `static/` are what the browser runs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tei_reconciler.api.errors import ApiError

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_ASSET = re.compile(r"[a-z0-9][a-z0-9-]*\.(?:html|js|css|svg)")

#: This origin only; no inline script or style, no framing, no form posts elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag): an upgrade shows at the next load
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def assets() -> dict[str, Asset]:
    """Every file of `static/`, read once from the installed package."""
    found: dict[str, Asset] = {}
    for entry in resources.files("tei_reconciler.api").joinpath("static").iterdir():
        name = entry.name
        if not entry.is_file() or _ASSET.fullmatch(name) is None:
            continue
        body = entry.read_bytes()
        suffix = name[name.rindex(".") :]
        digest = hashlib.sha256(body).hexdigest()[:20]
        found[name] = Asset(body=body, media_type=_TYPES[suffix], etag=f'"{digest}"')
    return found


def _serve(request: Request, name: str) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise ApiError(404, "NOT_FOUND", f"no route for {request.url.path}")
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


async def to_dashboard(request: Request) -> Response:
    """`/` and `/ui` lead to the dashboard (relative, so it works behind a path prefix)."""
    return RedirectResponse("ui/", status_code=307)


async def page(request: Request) -> Response:
    return _serve(request, "index.html")


async def asset(request: Request) -> Response:
    return _serve(request, request.path_params["file"])


ROUTES = [
    Route("/", to_dashboard, methods=["GET"]),
    Route("/ui", to_dashboard, methods=["GET"]),
    Route("/ui/", page, methods=["GET"]),
    Route("/ui/{file}", asset, methods=["GET"]),
]
