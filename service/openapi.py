"""The published API description: an OpenAPI schema that follows the loaded model, and /docs and
/redoc served from this process (no CDN: they work without internet).

The request models carry the limits from settings (`schemas.bounded_requests`). What depends on the
artifact, the context fields the loaded model reads and their JSON types, is written into the
`Context` component here from the same table the requests are checked with
(`validation.CONTEXT_TYPES`), and the schema is rebuilt after each reload.

The Swagger UI and ReDoc bundles come from the `fastapi-offline` package; their licenses are served
beside them (service/static/, where each bundle's header points: `<bundle>.LICENSE.txt`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from recsys.online import OnlinePlan
from service.schemas import MAX_TEXT
from service.validation import CONTEXT_TYPES

__all__ = ["install_docs", "context_schema"]

ASSETS = "/docs-assets"
_LICENSES = Path(__file__).parent / "static"


def context_schema(plan: OnlinePlan, base: dict[str, Any], model_version: str) -> dict[str, Any]:
    """The `Context` component for this model: `timestamp` plus each context column with the JSON
    types it accepts, nothing else (unknown fields are refused)."""
    props = {"timestamp": base["properties"]["timestamp"]}
    for column in plan.context_columns:
        types = CONTEXT_TYPES[plan.kind(column)]
        props[column] = {"anyOf": [{"type": t, **({"maxLength": MAX_TEXT} if t == "string" else {})}
                                   for t in types],
                         "title": column.replace("_", " ").capitalize(),
                         "description": f"context column of model {model_version}; null or absent = missing"}
    return {**base, "properties": props, "additionalProperties": False,
            "description": f"{base.get('description', '')}\n\nFields of the loaded model {model_version}: "
                           f"{', '.join(['timestamp', *plan.context_columns])}."}


def install_docs(app: FastAPI) -> None:
    """Replace FastAPI's schema and docs pages (create the app with docs_url=None, redoc_url=None)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes,
                             description=app.description)
        state = getattr(app.state, "service", None)
        if state is None:  # before start-up: no model to describe yet, so nothing is cached
            return schema
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Context" in components:
            components["Context"] = context_schema(state.ranker.plan, components["Context"], state.ranker.version)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS, StaticFiles(directory=_LICENSES, packages=[("fastapi_offline", "static")]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS}/favicon.png", with_google_fonts=False)
