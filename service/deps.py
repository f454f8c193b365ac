"""Typed dependencies: routes declare what they need instead of reaching into globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.auth import BEARER, is_admin
from service.errors import Forbidden, Unauthorized
from service.state import ServiceState

__all__ = ["StateDep", "AdminDep", "require_admin"]


async def get_state(request: Request) -> ServiceState:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def require_admin(request: Request, state: StateDep) -> None:
    """Bearer token check for routes that change what the service serves or read stored data.
    Without a configured token they are closed, not open: a forgotten setting must not expose
    model swaps to anyone."""
    if state.settings.admin_token is None:
        raise Forbidden("this needs the admin token, and none is configured (fix: set RECSYS_ADMIN_TOKEN "
                        "and send 'Authorization: Bearer <token>')")
    if not is_admin(request, state.settings):
        raise Unauthorized("missing or wrong admin token (fix: send 'Authorization: Bearer <RECSYS_ADMIN_TOKEN>')")


AdminDep = [Depends(BEARER), Depends(require_admin)]
