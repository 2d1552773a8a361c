"""Interactive API docs that work offline, for pollhook and its sandbox.

FastAPI's /docs page loads Swagger UI from a CDN, and /redoc loads ReDoc, Google Fonts and
a logo from elsewhere. Here /docs loads Swagger UI's files from the pinned PyPI package
`fastapi-offline` (which vendors them), served by the app itself, and /redoc is not served.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

DOCS_URL = "/docs"
ASSETS_URL = f"{DOCS_URL}/assets"
ASSETS_DIR = Path(str(resources.files("fastapi_offline") / "static"))
# Swagger UI sends the document's URL to validator.swagger.io for a badge unless told not to.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def serve_docs_offline(app: FastAPI) -> None:
    """Replace the app's CDN-backed docs pages with a /docs whose every file it serves."""
    cdn_pages = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if not (isinstance(route, Route) and route.path in cdn_pages)
    ]
    app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url = DOCS_URL, None, None
    openapi_url = app.openapi_url or "/openapi.json"
    title = f"{app.title} - Swagger UI"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=title,
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), **SWAGGER_UI_PARAMETERS},
        )

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
