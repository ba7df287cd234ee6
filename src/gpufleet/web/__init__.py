"""The web dashboard: plain JavaScript modules and CSS shipped inside the package (no CDN, no
build step), served at ``/`` under a strict Content-Security-Policy.

The page holds no data of its own: it signs in with an API key (or a Supabase access token),
keeps it in the browser's sessionStorage only, and reads the same ``/v1`` API as the CLI, so the
API's permission table decides what it may do; ``/ui/config.json`` hands it that table so it
leaves out the buttons a role cannot use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gpufleet import __version__
from gpufleet.config import Settings
from gpufleet.domain.tenancy import Role
from gpufleet.permissions import PERMISSIONS

# No inline script or style, nothing from elsewhere: what the page runs is what the package ships.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    # Assets are revalidated on each load (ETag), so an upgrade never serves a stale module.
    "cache-control": "no-cache",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _walk(node: Traversable, prefix: str = "") -> dict[str, Asset]:
    out: dict[str, Asset] = {}
    for child in node.iterdir():
        name = f"{prefix}{child.name}"
        if child.is_dir():
            out.update(_walk(child, f"{name}/"))
            continue
        suffix = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
        if suffix in TYPES:
            body = child.read_bytes()
            out[name] = Asset(body, TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return out


def assets() -> dict[str, Asset]:
    """Every shipped file under ``static/``, by its path there."""
    return _walk(resources.files(__package__) / "static")


def _serve(request: Request, asset: Asset) -> Response:
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers={**HEADERS, "etag": asset.etag})
    return Response(asset.body, media_type=asset.content_type, headers={**HEADERS, "etag": asset.etag})


def ui_config(settings: Settings) -> dict[str, object]:
    return {
        "version": __version__,
        "roles": [r.value for r in sorted(Role, key=lambda r: r.rank)],  # least first
        "permissions": {action: role.value for action, role in PERMISSIONS.items()},
        "supabase": settings.supabase_jwt_secret is not None or settings.supabase_jwks_url is not None,
    }


def install(app: FastAPI, settings: Settings) -> None:
    files = assets()
    body = json.dumps(ui_config(settings)).encode()
    config = Asset(body, TYPES[".json"], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    @app.get("/", include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        return _serve(request, files["index.html"])

    @app.get("/ui/config.json", include_in_schema=False)
    async def dashboard_config(request: Request) -> Response:
        return _serve(request, config)

    @app.get("/ui/{name:path}", include_in_schema=False)
    async def dashboard_asset(name: str, request: Request) -> Response:
        asset = files.get(name)
        if asset is None or name == "index.html":
            return Response(
                json.dumps({"type": "about:blank", "title": "Not Found", "status": 404, "detail": f"no asset {name}"}),
                status_code=404,
                media_type="application/problem+json",
                headers=HEADERS,
            )
        return _serve(request, asset)
