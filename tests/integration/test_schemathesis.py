"""schemathesis against every route of a live service on Redis, all of its checks (server errors,
status codes, content types, response schemas and headers, negative data refused, positive data
accepted, auth not ignored, unsupported methods): zero failures. The published schema is the
contract; this proves the service keeps it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import TOKEN
from .redis_proc import fill

pytestmark = pytest.mark.redis

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_no_failure_on_any_route(redis_url: str, tiny_artifact: Path, tiny_raw: Path,
                                                    tmp_path: Path, live_service: Any) -> None:
    asyncio.run(fill(redis_url, tiny_artifact, tiny_raw, prefix="fuzz"))
    url = live_service({"RECSYS_MODEL_DIR": str(tiny_artifact), "REDIS_URL": redis_url, "RECSYS_KEY_PREFIX": "fuzz",
                        "RECSYS_ADMIN_TOKEN": TOKEN, "RECSYS_MAX_CANDIDATES": "100", "RECSYS_MAX_K": "100",
                        "RECSYS_MAX_EVENTS": "100"})
    r = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color", "run",
         f"{url}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-20000:] + r.stderr[-3000:]
    print(r.stdout[-1500:])  # the summary: operations, phases, test cases generated
