"""When Redis goes away the service answers 503 with the reason (and counts it), never crashes, and
recovers by itself when Redis is back."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from recsys.artifact import load_artifact
from recsys.store.keys import KeySpace
from recsys.store.materialize import materialize
from recsys.store.redis import RedisStore
from service.app import create_app
from service.settings import ServiceSettings
from tests.conftest import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
BODY = {"user_id": "u1", "candidates": ["v1", "v2"], "context": {"timestamp": 1_767_225_769}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


async def test_redis_outage_is_a_503_with_the_reason_and_service_recovers(
        tiny_artifact: Path, tiny_raw: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = _redis(port, tmp_path)
    try:
        artifact = load_artifact(tiny_artifact)
        store = RedisStore(url)
        await materialize(artifact.pipeline.spec, tiny_raw, store, KeySpace("rec", artifact.feature_version),
                          log=lambda _: None)
        await store.close()
        app = create_app(ServiceSettings(model_dir=tiny_artifact, redis_url=url))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            assert (await client.post("/v1/recommendations", json=BODY)).status_code == 200
            proc.terminate()
            proc.wait(timeout=10)
            down = await client.post("/v1/recommendations", json=BODY)
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "StoreError" and str(port) in down.json()["error"]["message"]
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
            assert (await client.get("/healthz")).status_code == 200
            assert "recsys_store_errors_total 1.0" in (await client.get("/metrics")).text
            proc = _redis(port, tmp_path)  # an empty Redis: cold starts, still answered
            await asyncio.sleep(0)
            back = await client.post("/v1/recommendations", json=BODY)
            assert back.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
