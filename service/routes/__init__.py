"""HTTP routes, thin: parse, check, call the Ranker, shape the response.

Each module's `build(...)` makes a fresh router per app, because the request models carry that
app's limits (`service.schemas.bounded_requests`): FastAPI reads a body's model from the endpoint's
annotation, so `with_body` puts the app's bounded model there while mypy checks the static one.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from pydantic import BaseModel

from service.schemas import ErrorBody

__all__ = ["with_body", "errors"]

F = TypeVar("F", bound=Callable[..., Any])


def with_body(endpoint: F, model: type[BaseModel]) -> F:
    endpoint.__annotations__["body"] = model
    return endpoint


_MEANING = {
    401: "missing or wrong admin token",
    403: "no admin token is configured (RECSYS_ADMIN_TOKEN), or (reload) a folder outside RECSYS_MODELS_ROOT",
    409: "the artifact was refused; the served model is unchanged",
    413: "request body larger than RECSYS_MAX_BODY_BYTES",
    422: "invalid request: the message and `fields` name each bad field",
    429: "too many event posts in flight on this worker: nothing was read; retry after `Retry-After` seconds",
    503: "the feature store failed; nothing was written",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these refusals, all in the one error shape."""
    return {s: {"model": ErrorBody, "description": _MEANING[s]} for s in statuses}
