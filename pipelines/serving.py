"""serve: run the FastAPI service on an artifact with uvicorn (the `recsys serve` / demo entry).

Everything that can refuse a start is checked before uvicorn runs, so that a bad setting, a bad
artifact or an unreachable Redis is one line and exit 2 (`pipelines.cli.main`), never uvicorn's
traceback and exit 3: the settings (by creating the app, which validates them), the address (one
bind), the artifact (full validation, servability, a cold-row forward) and the store (one PING).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
from pathlib import Path
from typing import Any, Callable

import uvicorn

__all__ = ["serve_model", "try_it"]


def _base_url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def try_it(host: str, port: int, user_id: str) -> str:
    """A copy-paste curl for the running service."""
    body = json.dumps({"user_id": user_id, "k": 5})
    return (f"curl -s {_base_url(host, port)}/v1/recommendations -H 'content-type: application/json' "
            f"-d {shlex.quote(body)}")


def _hint(host: str, port: int, user_id: str) -> str:
    closed = "" if os.environ.get("RECSYS_ADMIN_TOKEN") else (
        "\nPOST /v1/events, /v1/labels, /admin/reload and `explain` answer 403 until RECSYS_ADMIN_TOKEN is set "
        "(16+ characters)")
    return f"\ntry it:\n  {try_it(host, port, user_id)}\nAPI docs: {_base_url(host, port)}/docs{closed}\n"


class _Server(uvicorn.Server):
    """uvicorn.Server that calls `on_ready` once the app has started (its lifespan is done)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_ready()


def _check_address(host: str, port: int) -> None:
    """Bind the address once as uvicorn will (SO_REUSEADDR): a port in use or a host that is not an
    address of this machine is one line here, not uvicorn's error after the app has started."""
    from recsys.errors import RecsysError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as err:
        raise RecsysError(f"cannot listen on {host}:{port}: {err.strerror or err} (fix: stop what uses the port or "
                          f"pass another --port; --host must be an address of this machine)") from None


def _check_before_start(model_dir: str | Path, redis_url: str | None, raw_dir: str | Path | None) -> None:
    from recsys.artifact import load_artifact
    from recsys.errors import DataError
    from recsys.io import find_table
    from recsys.online import Ranker
    from recsys.store.factory import build_store

    artifact = load_artifact(model_dir)
    Ranker(artifact).warm_up(rows=8)  # the worker repeats this; a bad folder fails here
    if redis_url is None:
        raw = Path(raw_dir or os.environ["RECSYS_RAW_DIR"])
        if not raw.is_dir():
            raise DataError(f"raw tables folder {raw} not found (fix: pass --raw DIR with the tables the model "
                            f"was trained on)")
        for stem in artifact.pipeline.spec.tables.values():
            find_table(raw, stem)  # every file readable: a missing, empty or corrupt table is one line here
        return

    async def ping() -> None:
        store = build_store(redis_url)
        try:
            await store.ping()
        finally:
            await store.close()

    asyncio.run(ping())


def serve_model(model_dir: str | Path, raw_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
                redis_url: str | None = None, workers: int = 1, threads: int | None = None,
                prefix: str | None = None, access_log: bool = False, example_user: str | None = None) -> None:
    """Serve `model_dir`. With `redis_url` (or REDIS_URL) features come from Redis (run `recsys
    materialize` first); without, the embedded store is filled from `raw_dir` at start-up.

    Settings not given here come from the RECSYS_* environment (service/settings.py). Several
    workers need the factory form of uvicorn, so the overrides travel as environment variables;
    each worker gets `threads` torch threads (default 1: keep workers × threads ≤ cores, DESIGN §6).
    Once the service is up it prints a curl to try (with `example_user`, else any id: unknown users
    are cold starts)."""
    from recsys.errors import RecsysError

    redis_url = redis_url or os.environ.get("REDIS_URL") or os.environ.get("RECSYS_REDIS_URL")
    if redis_url is None and raw_dir is None and not os.environ.get("RECSYS_RAW_DIR"):
        raise RecsysError("without Redis the embedded store is filled from the raw tables: pass --raw DIR "
                          "(or --redis-url URL after `recsys materialize`)")
    if redis_url is None and workers > 1:
        print("warning: each worker holds its own embedded store; events reach one worker only (use Redis)")
    env = {
        "RECSYS_MODEL_DIR": str(model_dir),
        "RECSYS_RAW_DIR": None if raw_dir is None else str(raw_dir),
        "RECSYS_REDIS_URL": redis_url,
        "RECSYS_KEY_PREFIX": prefix,
        "RECSYS_TORCH_THREADS": None if threads is None else str(threads),
    }
    os.environ.update({k: v for k, v in env.items() if v is not None})
    options: dict[str, Any] = dict(factory=True, host=host, port=port, workers=workers, access_log=access_log,
                                   log_level="info")
    config = uvicorn.Config("service.app:create_app", **options)
    config.load()  # creates the app, which validates the settings: SettingsError, one line
    _check_address(host, port)
    _check_before_start(model_dir, redis_url, raw_dir)
    hint = _hint(host, port, example_user or "any-user-id")
    if workers > 1:  # uvicorn's supervisor: no start-up hook to wait for
        print(f"(once the workers are up){hint}", flush=True)
        uvicorn.run("service.app:create_app", **options)
        return
    server = _Server(config, on_ready=lambda: print(hint, flush=True))
    server.run()
    if not server.started:  # a failure inside the app's start-up, logged above in one line
        raise SystemExit(2)
