"""`recsys materialize` (versioned raw records in Redis, idempotent, clear CLI) and `recsys serve`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys.artifact import load_artifact
from recsys.store.base import Record
from recsys.store.keys import KeySpace
from recsys.store.redis import RedisStore
from tests.conftest import items_by_positives

pytestmark = pytest.mark.redis


def _snapshot(redis_url: str, keys: KeySpace, users: list[str], items: list[str]) -> list[Record | None]:
    async def read() -> list[Record | None]:
        store = RedisStore(redis_url)
        records = await store.read(keys.users(users) + keys.items(items))
        await store.close()
        return records

    return asyncio.run(read())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, timeout=300)


def test_materialize_writes_raw_values_and_counters_and_is_idempotent(
        redis_url: str, tiny_raw: Path, tiny_artifact: Path) -> None:
    keys = KeySpace("mat", load_artifact(tiny_artifact).feature_version)
    users = pd.read_parquet(tiny_raw / "users.parquet")["user_id"].astype(str).tolist()
    items = pd.read_parquet(tiny_raw / "items.parquet")
    args = ["materialize", "--model", str(tiny_artifact), "--raw", str(tiny_raw), "--redis-url", redis_url,
            "--prefix", "mat", "--quiet"]
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert "records/s" in first.stdout
    before = _snapshot(redis_url, keys, users, items["item_id"].astype(str).tolist())
    assert _cli(*args).returncode == 0
    after = _snapshot(redis_url, keys, users, items["item_id"].astype(str).tolist())
    assert before == after
    item = before[len(users)]
    assert item is not None
    row = items.iloc[0]
    assert item["a"]["category"] == row["category"] and float(item["a"]["duration_s"]) == float(row["duration_s"])
    assert item["c"]["item_history:c"] >= item["c"].get("item_history:p", 0) >= 0
    assert _top(redis_url, keys.popular, 10) == items_by_positives(tiny_raw)[:10]


def test_a_materialize_rerun_keeps_the_counts_events_added_unless_told_to_replace_them(
        redis_cluster_url: str, tiny_raw: Path, tiny_artifact: Path) -> None:
    """Against a live store (here a cluster): a re-run merges, attributes from the tables and the
    counters events added since; `--counters replace` resets the counters to the log's totals."""
    keys = KeySpace("merge", load_artifact(tiny_artifact).feature_version)
    item = str(pd.read_parquet(tiny_raw / "items.parquet")["item_id"].iloc[0])
    args = ["materialize", "--model", str(tiny_artifact), "--raw", str(tiny_raw), "--redis-url", redis_cluster_url,
            "--prefix", "merge", "--quiet"]
    assert _cli(*args).returncode == 0
    (logged,) = _snapshot(redis_cluster_url, keys, [], [item])
    assert logged is not None

    async def event() -> None:  # what POST /v1/events does for one impression of the item
        store = RedisStore(redis_cluster_url)
        await store.increment([keys.item(item)], [{"item_history:c": 1}])
        await store.close()

    asyncio.run(event())
    rerun = _cli(*args)
    assert rerun.returncode == 0 and "merged" in rerun.stdout
    (merged,) = _snapshot(redis_cluster_url, keys, [], [item])
    assert merged is not None and merged["a"] == logged["a"]
    assert merged["c"]["item_history:c"] == logged["c"]["item_history:c"] + 1
    assert _cli(*args, "--counters", "replace").returncode == 0
    assert _snapshot(redis_cluster_url, keys, [], [item]) == [logged]
    bad = _cli(*args, "--counters", "sum")
    assert bad.returncode == 2 and "--counters must be keep or replace" in bad.stderr


def _top(redis_url: str, key: str, n: int) -> list[str]:
    async def read() -> list[str]:
        store = RedisStore(redis_url)
        try:
            return await store.top(key, n)
        finally:
            await store.close()

    return asyncio.run(read())


def test_materialize_without_redis_exits_2_with_one_line(tiny_raw: Path, tiny_artifact: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "materialize", "--model", str(tiny_artifact),
                        "--raw", str(tiny_raw)], capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "REDIS_URL"})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--redis-url" in r.stderr


def test_recsys_serve_starts_uvicorn_on_the_embedded_store(tiny_raw: Path, tiny_artifact: Path, tmp_path: Path) -> None:
    """The command the demo ends with: embedded store filled from --raw, ready, ranking."""
    import httpx

    from tests.conftest import free_port

    from .conftest import wait_ready

    port = free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(tiny_artifact), "--raw",
                             str(tiny_raw), "--port", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"})
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/recommendations", json={"user_id": "u1", "k": 3})
        assert r.status_code == 200 and len(r.json()["items"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "serving model" in log.read_text()
