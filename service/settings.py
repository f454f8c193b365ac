"""Service settings, from the environment (pydantic-settings), built inside `create_app`.

Every field is read from `RECSYS_<FIELD>` (e.g. `RECSYS_MODEL_DIR`); the Redis URL also from the
conventional `REDIS_URL`. `recsys serve` sets the same fields from its flags.

RECSYS_MODEL_DIR (runs/demo/model)
    artifact folder to serve (`recsys train --out`).
RECSYS_MODELS_ROOT (the parent folder of RECSYS_MODEL_DIR)
    POST /admin/reload loads only artifacts below this folder (after resolving `..` and symlinks).
REDIS_URL or RECSYS_REDIS_URL (unset)
    Redis feature store: redis://[user:password@]127.0.0.1:6379/0 (rediss:// for TLS), or a Redis Cluster:
    redis+cluster://host:port,host:port (any reachable nodes; docs/store.md); unset = the embedded store.
RECSYS_RAW_DIR (unset)
    raw tables that fill the embedded store at start-up (required without Redis).
RECSYS_AS_OF (unset)
    embedded store only: statistics from events strictly before this unix time (replays, backtests).
RECSYS_KEY_PREFIX (rec)
    first part of every store key: {prefix}:v{feature_version}:{u:<id>} (recsys/store/keys.py).
RECSYS_REDIS_TIMEOUT_MS (200)
    a store round trip longer than this fails the request with 503. Healthy is ~1 ms; 200 catches
    a hung server without failing requests on a busy machine.
RECSYS_TTL_S (unset)
    expiry that events give the records they touch (materialize has its own --ttl).
RECSYS_TORCH_THREADS (1)
    torch intra-op threads per worker; keep workers x threads <= cores (DESIGN §6).
RECSYS_STORE_BUDGET_MS (30)
    how long a ranking or scoring request waits for the store (connecting included) before it is
    answered in degraded mode from cold features (docs/service.md). Keep it well under the 50 ms
    budget: the forward pass and the network need the rest.
RECSYS_MAX_CANDIDATES (2000)
    candidates per /v1/recommendations and rows per /v1/score (published in the OpenAPI schema).
RECSYS_MAX_K (1000)
    largest k a request may ask for (published in the OpenAPI schema).
RECSYS_MAX_EVENTS (10000)
    events per POST /v1/events (published in the OpenAPI schema).
RECSYS_EVENTS_RETENTION_S (86400)
    how long an applied event id (and an applied label) is remembered: a batch posted again within
    it is reported as duplicates and changes nothing.
RECSYS_LABEL_WINDOW_S (604800)
    how long an impression posted without a label waits for its label (POST /v1/labels); a later
    label is answered as unknown.
RECSYS_EVENTS_MAX_INFLIGHT (4)
    event and label posts one worker admits at once (one applies, the others wait without using
    the CPU); more are answered 429 with Retry-After before their body is read.
RECSYS_EVENTS_LOOP_SHARE (0.5)
    the largest share of a worker's time event posts may take: after a post that took t seconds
    the next one waits t * (1 / share - 1). 1 = no pause.
RECSYS_MAX_BODY_BYTES (1048576)
    larger request bodies are refused with 413 before parsing.
RECSYS_POPULAR_CANDIDATES (200)
    how many popular items are ranked when a request brings no candidates: the store's top items
    by positive events (materialized, then counted by /v1/events), else the artifact's list.
RECSYS_POPULAR_REFRESH_S (10)
    how often each worker re-reads that top list from the store; 0 = only at start-up and reload.
RECSYS_ADMIN_TOKEN (unset)
    bearer token for /admin/reload, /v1/events and `explain` on /v1/score; unset = they refuse with
    403. At least 16 characters: an empty or short token refuses to start, never opens the routes.

Invalid settings raise `SettingsError`, one line naming the variable and the fix (`recsys serve`
prints it and exits 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.errors import RecsysError

__all__ = ["ServiceSettings", "SettingsError", "load_settings", "MIN_TOKEN_CHARS"]

MIN_TOKEN_CHARS = 16


class SettingsError(RecsysError):
    """A RECSYS_* setting is invalid: the service must not start."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore", populate_by_name=True,
                                      protected_namespaces=())

    model_dir: Path = Path("runs/demo/model")
    redis_url: str | None = Field(None, validation_alias=AliasChoices("RECSYS_REDIS_URL", "REDIS_URL", "redis_url"))
    raw_dir: Path | None = None
    as_of: int | None = None
    key_prefix: str = Field("rec", min_length=1, pattern=r"^[^\s{}]+$")
    redis_timeout_ms: float = Field(200.0, gt=0)
    ttl_s: int | None = Field(None, ge=1)
    torch_threads: int = Field(1, ge=1)
    models_root: Path | None = None
    store_budget_ms: float = Field(30.0, gt=0)
    max_candidates: int = Field(2000, ge=1)
    max_k: int = Field(1000, ge=1)
    max_events: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(1 << 20, ge=1024)
    events_retention_s: int = Field(86_400, ge=1)
    label_window_s: int = Field(7 * 86_400, ge=1)
    events_max_inflight: int = Field(4, ge=1)
    events_loop_share: float = Field(0.5, gt=0, le=1)
    popular_candidates: int = Field(200, ge=1)
    popular_refresh_s: float = Field(10.0, ge=0)
    retrieve_n: int = Field(500, ge=1, le=10_000)  # ANN candidates of a request without candidates
    seen_limit: int = Field(1000, ge=0, le=100_000)  # a user's most engaged items a request filters out
    admin_token: SecretStr | None = None

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty token would make "Authorization: Bearer" (nothing after it) a valid credential.
        if token is None:
            return None
        value = token.get_secret_value()
        if len(value.strip()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters (fix: set a long random token, e.g. "
                             f"`openssl rand -hex 32`, or unset it to keep the admin routes closed)")
        if any(c.isspace() for c in value):  # a header cannot carry it intact
            raise ValueError("must not contain whitespace (fix: e.g. `openssl rand -hex 32`)")
        return token

    @property
    def reload_root(self) -> Path:
        """The folder /admin/reload may read below, resolved (symlinks followed)."""
        return (self.models_root or self.model_dir.absolute().parent).resolve()


def load_settings(**overrides: Any) -> ServiceSettings:
    """Settings from the environment (and `overrides`); an invalid one raises `SettingsError` naming
    its variable, instead of pydantic's multi-line report."""
    try:
        return ServiceSettings(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        name = "_".join(str(p) for p in first["loc"]).upper() or "settings"
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"setting RECSYS_{name}: {msg}") from None
