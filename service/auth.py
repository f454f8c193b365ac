"""The admin token: who may change what is served or read stored data.

The token comes from RECSYS_ADMIN_TOKEN (settings refuse an empty or short one) and travels as
`Authorization: Bearer <token>`. `is_admin` is the one comparison (constant time), used by the
route guard (`deps.require_admin`) and by the parts that show internals to the admin only
(`/readyz` details, 5xx messages)."""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import HTTPBearer

from service.settings import ServiceSettings

__all__ = ["BEARER", "is_admin"]

# Declares the bearer scheme in the OpenAPI schema (Swagger UI's "Authorize" button); the check
# itself is `is_admin`, so that every refusal keeps the one JSON error shape.
BEARER = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                    description="RECSYS_ADMIN_TOKEN, sent as `Authorization: Bearer <token>`")


def _given_token(request: Request) -> str:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def is_admin(request: Request, settings: ServiceSettings) -> bool:
    """True when the request carries the configured admin token; never for an empty credential."""
    token, given = settings.admin_token, _given_token(request)
    return bool(token is not None and given and hmac.compare_digest(given.encode(),
                                                                    token.get_secret_value().encode()))
