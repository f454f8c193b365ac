"""A service on the tiny artifact with the embedded store, shared by the API tests of a module."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings

TOKEN = "service-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def settings(tiny_artifact: Path, tiny_raw: Path) -> ServiceSettings:
    return ServiceSettings(model_dir=tiny_artifact, raw_dir=tiny_raw, admin_token=TOKEN, max_candidates=50,
                           max_k=20, max_body_bytes=64 * 1024, max_events=100)


@pytest.fixture(scope="module")
def client(settings: ServiceSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c
