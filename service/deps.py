"""Typed dependencies: routes declare what they need instead of reaching into globals."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from recsys.errors import RecsysError
from service.errors import Forbidden
from service.state import ServiceState

__all__ = ["StateDep", "AdminDep", "Unauthorized"]


class Unauthorized(RecsysError):
    http_status = 401


async def get_state(request: Request) -> ServiceState:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def require_admin(request: Request, state: StateDep) -> None:
    """Bearer token check for routes that change what the service serves. Without a configured
    token they are closed, not open: a forgotten setting must not expose model swaps to anyone."""
    token = state.settings.admin_token
    if token is None:
        raise Forbidden("this route is disabled: no admin token is configured (fix: set RECSYS_ADMIN_TOKEN "
                        "and send 'Authorization: Bearer <token>')")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise Unauthorized("missing or wrong admin token (fix: send 'Authorization: Bearer <RECSYS_ADMIN_TOKEN>')")


AdminDep = Depends(require_admin)
