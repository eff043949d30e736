"""Static assets: our CSS/JS from `usagegate/static`, plotly.js from the installed plotly wheel.

Nothing is fetched from a CDN, so the dashboard works with no internet. URLs carry a version
(`?v=`), which lets browsers cache the 4.8 MB plotly bundle for a year.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

router = APIRouter()

STATIC = Path(__file__).resolve().parent.parent / "static"
LONG_CACHE = "public, max-age=31536000, immutable"
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


@cache
def plotly_js() -> Path:
    """plotly.min.js inside the installed plotly package (its offline bundle)."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall the 'plotly' package.")
    return path


@cache
def asset_version() -> str:
    """A short hash of our static files and the plotly version, for cache-busting URLs."""
    import plotly

    digest = hashlib.sha256(plotly.__version__.encode())
    for path in sorted(STATIC.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


@router.get("/static/plotly.min.js")
async def plotly_bundle() -> Response:
    return FileResponse(plotly_js(), media_type=TYPES[".js"], headers={"Cache-Control": LONG_CACHE})


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    path = STATIC / name
    # Only files that sit directly in static/ with a known type; no directory walking.
    if "/" in name or name.startswith(".") or path.suffix not in TYPES or not path.is_file():
        return Response("Not found", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type=TYPES[path.suffix], headers={"Cache-Control": LONG_CACHE})
