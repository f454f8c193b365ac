"""Service settings, from the environment (pydantic-settings), built inside `create_app`.

Every field is read from `RECSYS_<FIELD>` (e.g. `RECSYS_MODEL_DIR`); the Redis URL also from the
conventional `REDIS_URL`. `recsys serve` sets the same fields from its flags.

RECSYS_MODEL_DIR (runs/demo/model)
    artifact folder to serve (`recsys train --out`).
REDIS_URL or RECSYS_REDIS_URL (unset)
    Redis feature store, e.g. redis://127.0.0.1:6379/0; unset = the embedded in-process store.
RECSYS_RAW_DIR (unset)
    raw tables that fill the embedded store at start-up (required without Redis).
RECSYS_AS_OF (unset)
    embedded store only: statistics from events strictly before this unix time (replays, backtests).
RECSYS_KEY_PREFIX (rec)
    first part of every store key: {prefix}:v{feature_version}:u:{id} (recsys/store/keys.py).
RECSYS_REDIS_TIMEOUT_MS (200)
    a store round trip longer than this fails the request with 503. Healthy is ~1 ms; 200 catches
    a hung server without failing requests on a busy machine.
RECSYS_REDIS_POOL_SIZE (16)
    connections per worker process.
RECSYS_TTL_S (unset)
    expiry that events give the records they touch (materialize has its own --ttl).
RECSYS_TORCH_THREADS (1)
    torch intra-op threads per worker; keep workers x threads <= cores (DESIGN §6).
RECSYS_MAX_CANDIDATES (2000)
    candidates per /v1/recommendations and rows per /v1/score.
RECSYS_MAX_K (1000)
    largest k a request may ask for.
RECSYS_MAX_EVENTS (10000)
    events per POST /v1/events.
RECSYS_MAX_BODY_BYTES (1048576)
    larger request bodies are refused with 413 before parsing.
RECSYS_POPULAR_CANDIDATES (200)
    how many popular items are ranked when a request brings no candidates: the store's top items
    by positive events (materialized, then counted by /v1/events), else the artifact's list.
RECSYS_POPULAR_REFRESH_S (10)
    how often each worker re-reads that top list from the store; 0 = only at start-up and reload.
RECSYS_ADMIN_TOKEN (unset)
    bearer token for /admin/reload and /v1/events; unset = both refuse with 403.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore", populate_by_name=True,
                                      protected_namespaces=())

    model_dir: Path = Path("runs/demo/model")
    redis_url: str | None = Field(None, validation_alias=AliasChoices("RECSYS_REDIS_URL", "REDIS_URL", "redis_url"))
    raw_dir: Path | None = None
    as_of: int | None = None
    key_prefix: str = Field("rec", min_length=1, pattern=r"^\S+$")
    redis_timeout_ms: float = Field(200.0, gt=0)
    redis_pool_size: int = Field(16, ge=1)
    ttl_s: int | None = Field(None, ge=1)
    torch_threads: int = Field(1, ge=1)
    max_candidates: int = Field(2000, ge=1)
    max_k: int = Field(1000, ge=1)
    max_events: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(1 << 20, ge=1024)
    popular_candidates: int = Field(200, ge=1)
    popular_refresh_s: float = Field(10.0, ge=0)
    admin_token: SecretStr | None = None
