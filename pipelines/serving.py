"""serve: run the FastAPI service on an artifact with uvicorn (the `recsys serve` / demo entry)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["serve_model"]


def serve_model(model_dir: str | Path, raw_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
                redis_url: str | None = None, workers: int = 1, threads: int | None = None,
                prefix: str | None = None, access_log: bool = False) -> None:
    """Serve `model_dir`. With `redis_url` (or REDIS_URL) features come from Redis (run `recsys
    materialize` first); without, the embedded store is filled from `raw_dir` at start-up.

    Settings not given here come from the RECSYS_* environment (service/settings.py). Several
    workers need the factory form of uvicorn, so the overrides travel as environment variables;
    each worker gets `threads` torch threads (default 1: keep workers × threads ≤ cores, DESIGN §6)."""
    import uvicorn

    from recsys.artifact import load_artifact
    from recsys.errors import RecsysError

    load_artifact(model_dir)  # a bad folder fails here with one line, not inside a worker's traceback
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
    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=workers,
                access_log=access_log, log_level="info")
