"""Every refusal in one JSON shape, mapped in one place:

    {"error": {"code": "...", "message": "field 'candidates': ... (fix: ...)", "fields": [...]}}

Library errors carry their own HTTP status (`RecsysError.http_status`); request validation gives 422
naming the first offending field; anything unexpected is logged and answered 500 without internals.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.errors import RecsysError, StoreError

__all__ = ["register_exception_handlers", "invalid", "error_body", "Forbidden"]

log = logging.getLogger("uvicorn.error")  # printed by uvicorn's configured handler

_UNION_MEMBERS = {"str", "int", "float", "bool", "none", "list[str]", "list", "dict"}


class Forbidden(RecsysError):
    """A token-protected route was called without the right token (or none is configured)."""

    http_status = 403


def error_body(code: str, message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if fields:
        err["fields"] = fields
    return {"error": err}


def invalid(field: str, message: str) -> RequestValidationError:
    """A 422 for a check that needs settings or the artifact (the schema cannot express it)."""
    loc = ("body", *[int(p) if p.isdigit() else p for p in field.split(".")])
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error", "input": None}])


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc[1:] if str(p) not in _UNION_MEMBERS] if loc and loc[0] == "body" else \
        [str(p) for p in loc]
    return ".".join(parts) or "body"


def _fields(errors: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    out: dict[str, str] = {}
    for e in errors:
        if e.get("type") == "json_invalid":  # loc holds a character position, not a field
            err = (e.get("ctx") or {}).get("error", "")
            out["body"] = f"not valid JSON ({err} at character {e.get('loc', ('', '?'))[-1]})"
            continue
        name = _field(e.get("loc", ()))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if name in out:  # one union member per type: say it once
            if e.get("type", "").endswith("_type"):
                out[name] = "must be a string, a number, a boolean or null"
            continue
        out[name] = msg
    return [{"field": k, "message": v} for k, v in out.items()]


def register_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _fields(exc.errors())
        first = fields[0] if fields else {"field": "body", "message": "invalid request"}
        more = f" (+{len(fields) - 1} more)" if len(fields) > 1 else ""
        return JSONResponse(error_body("invalid_request", f"field '{first['field']}': {first['message']}{more}",
                                       fields), status_code=422)

    @app.exception_handler(RecsysError)
    async def _recsys(request: Request, exc: RecsysError) -> JSONResponse:
        if isinstance(exc, StoreError) and hasattr(request.app.state, "service"):
            request.app.state.service.metrics.store_errors.inc()
        if exc.http_status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(f"http_{exc.status_code}", str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "unexpected server error; see the service log"),
                            status_code=500)
