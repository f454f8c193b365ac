"""Every refusal in one JSON shape, mapped in one place:

    {"error": {"code": "...", "message": "field 'candidates': ... (fix: ...)", "fields": [...]}}

Library errors carry their own HTTP status (`RecsysError.http_status`); request validation gives 422
naming the first offending field; anything unexpected is logged and answered 500 without internals.
A 5xx message (e.g. a store error naming the Redis address) is logged in full and shown in full only
to a caller with the admin token; anonymous callers get its code and a generic message.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.errors import RecsysError, StoreError
from service.auth import is_admin

__all__ = ["register_exception_handlers", "invalid", "error_body", "Forbidden", "Unauthorized"]

log = logging.getLogger("uvicorn.error")  # printed by uvicorn's configured handler

# pydantic puts the union member it tried into an error's location ("str", "constrained-str",
# "function-after[...]", "list[...]"): a type's name, never a field's.
_UNION_MEMBERS = {"str", "int", "float", "bool", "none", "list", "dict"}
_UNION_MEMBER_PREFIXES = ("constrained-", "function-", "list[", "dict[", "nullable[", "json-or-python[")


def _is_union_member(part: str) -> bool:
    return part in _UNION_MEMBERS or part.startswith(_UNION_MEMBER_PREFIXES)


class Forbidden(RecsysError):
    """A token-protected route was called while no admin token is configured."""

    http_status = 403


class Unauthorized(RecsysError):
    """A token-protected route was called without the right token."""

    http_status = 401


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
    parts = [str(p) for p in loc[1:] if not _is_union_member(str(p))] if loc and loc[0] == "body" else \
        [str(p) for p in loc]
    return ".".join(parts) or "body"


_TYPE_NAMES = {"string_type": "a string", "int_type": "an integer", "float_type": "a number",
               "bool_type": "a boolean", "none_required": "null", "list_type": "a list",
               "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object"}


def _union_message(errors: list[dict[str, Any]]) -> str:
    """One message for a union's member errors: the constraint a value of the right type broke
    (e.g. a string too long), else the types it may have."""
    broken = [e for e in errors if e.get("type") not in _TYPE_NAMES]
    if broken:
        return str(broken[0].get("msg", "invalid")).removeprefix("Value error, ")
    names = list(dict.fromkeys(_TYPE_NAMES[str(e["type"])] for e in errors))
    return f"must be {', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else f"must be {names[0]}"


def _fields(errors: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for e in errors:
        if e.get("type") == "json_invalid":  # loc holds a character position, not a field
            err = (e.get("ctx") or {}).get("error", "")
            grouped["body"] = [{"msg": f"not valid JSON ({err} at character {e.get('loc', ('', '?'))[-1]})"}]
            continue
        grouped.setdefault(_field(e.get("loc", ())), []).append(e)
    return [{"field": name, "message": _union_message(errs) if len(errs) > 1 else
             str(errs[0].get("msg", "invalid")).removeprefix("Value error, ")} for name, errs in grouped.items()]


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
        state = getattr(request.app.state, "service", None)
        if isinstance(exc, StoreError) and state is not None:
            state.metrics.store_errors.inc()
        message = str(exc)
        if exc.http_status >= 500:
            log.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
            if state is None or not is_admin(request, state.settings):
                message = "the service could not complete this request (details in the service log)"
        return JSONResponse(error_body(type(exc).__name__, message), status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not decode the body (e.g. not UTF-8): like bad JSON, a 422
            message = "not valid JSON (fix: send a UTF-8 JSON object)"
            return JSONResponse(error_body("invalid_request", f"field 'body': {message}",
                                           [{"field": "body", "message": message}]), status_code=422)
        return JSONResponse(error_body(f"http_{exc.status_code}", str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "unexpected server error; see the service log"),
                            status_code=500)
