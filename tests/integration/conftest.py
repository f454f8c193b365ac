"""Fixtures for the online proofs: a live uvicorn on Redis, and a second artifact whose feature
spec exercises every kind of online statistic (windows, item × context) with a random, feature-
sensitive model (a trained tiny model is nearly constant; random weights make any skew visible)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import torch

from tests.conftest import REPO, free_port, synthetic_labels_at_once

TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def windowed_features(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.build_features import build_features
    from recsys.spec import parse_spec

    data = synthetic_labels_at_once()
    data["features"].update({
        "user_last_day": {"type": "statistic", "key": ["user_id"], "window": "1d", "window_buckets": 24},
        "item_last_week": {"type": "statistic", "key": ["item_id"], "window": "7d", "window_buckets": 7},
        "item_device_2d": {"type": "statistic", "key": ["item_id", "device"], "window": "2d", "window_buckets": 2},
        "user_creator": {"type": "statistic", "key": ["user_id", "creator_id"]},
    })
    out = tmp_path_factory.mktemp("wfeatures") / "features"
    build_features(parse_spec(data), tiny_raw, out, log=lambda _: None, progress=False)
    return out


def random_artifact(features_dir: Path, out: Path) -> Path:
    """An artifact with random, feature-sensitive weights over `features_dir` (a trained tiny model
    is nearly constant; random weights make any skew visible)."""
    from pipelines.train import load_features, popular_items
    from recsys.artifact import save_artifact
    from recsys.features.splits import read_split
    from recsys.model import WideDeep, WideDeepConfig

    spec, pipeline, _ = load_features(features_dir)
    torch.manual_seed(0)
    model = WideDeep(WideDeepConfig.from_layout(pipeline.layout, spec.model))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    _, train_meta = read_split(features_dir, "train")
    save_artifact(out, pipeline, model.eval(), {"popular_items": popular_items(train_meta, spec)})
    return out


@pytest.fixture(scope="session")
def windowed_artifact(windowed_features: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_artifact(windowed_features, tmp_path_factory.mktemp("wartifact") / "model")


@pytest.fixture(scope="session")
def shipped_features(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped synthetic spec as it is (labels known 10 minutes late) over the tiny raw tables."""
    from pipelines.build_features import build_features
    from recsys.spec import load_spec

    out = tmp_path_factory.mktemp("sfeatures") / "features"
    build_features(load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml"), tiny_raw, out, log=lambda _: None,
                   progress=False)
    return out


@pytest.fixture(scope="session")
def shipped_artifact(shipped_features: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_artifact(shipped_features, tmp_path_factory.mktemp("sartifact") / "model")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("uvicorn did not become ready")


def start_uvicorn(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`uvicorn --factory service.app:create_app` configured only by environment, as deployed."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log"],
        env={**os.environ, **env}, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"service failed to start; log:\n{log.read_text()[-3000:]}") from None
    return proc, url


@pytest.fixture
def live_service(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    """Factory: start a live uvicorn with the given environment; stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> str:
        proc, url = start_uvicorn(env, tmp_path / f"uvicorn-{len(procs)}.log")
        procs.append(proc)
        return url

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)
