"""`recsys serve`: a start it must refuse is one line on stderr and exit 2 (never uvicorn's traceback
and exit 3); a start that works prints a curl to try once the service answers."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port

GOOD_TOKEN = "a-token-of-sixteen-chars"


def _env(**extra: str) -> dict[str, str]:
    drop = ("REDIS_URL", "RECSYS_REDIS_URL", "RECSYS_ADMIN_TOKEN")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    port = [] if "--port" in args else ["--port", str(free_port())]
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", *args, *port],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def refusals(tiny_artifact: Path, tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, tuple[subprocess.CompletedProcess[str], tuple[str, ...]]]:
    """Every start `recsys serve` must refuse, run side by side (each process spends seconds importing)."""
    tmp = tmp_path_factory.mktemp("refusals")
    edited = tmp / "edited"
    edited.mkdir()
    for f in tiny_artifact.iterdir():
        (edited / f.name).write_bytes(f.read_bytes())
    meta = json.loads((edited / "metadata.json").read_text())
    meta["popular_items"] = ["planted"]
    (edited / "metadata.json").write_text(json.dumps(meta))
    model, raw = ["--model", str(tiny_artifact)], ["--raw", str(tiny_raw)]
    busy = socket.create_server(("127.0.0.1", 0))  # listening until the refusals are collected
    empty_raw = tmp / "empty-raw"
    empty_raw.mkdir()
    for f in ("users.parquet", "items.parquet"):
        (empty_raw / f).write_bytes((tiny_raw / f).read_bytes())
    (empty_raw / "impressions.parquet").write_bytes(b"")
    cases = {
        "short admin token": ([*model, *raw], _env(RECSYS_ADMIN_TOKEN="short"), ("RECSYS_ADMIN_TOKEN", "16")),
        "invalid setting": ([*model, *raw], _env(RECSYS_MAX_K="lots"), ("RECSYS_MAX_K",)),
        "edited artifact": (["--model", str(edited), *raw], _env(), ("model_version does not match",)),
        "no artifact": (["--model", str(tmp / "missing"), *raw], _env(), ("recsys train",)),
        "unreachable redis": ([*model, "--redis-url", f"redis://127.0.0.1:{free_port()}/0"], _env(),
                              ("cannot connect to redis",)),
        "missing raw folder": ([*model, "--raw", str(tmp / "nowhere")], _env(), ("--raw",)),
        "port in use": ([*model, *raw, "--port", str(busy.getsockname()[1])], _env(), ("cannot listen", "--port")),
        "port out of range": ([*model, *raw, "--port", "70000"], _env(), ("--port", "65535")),
        "host not of this machine": ([*model, *raw, "--host", "192.0.2.1"], _env(), ("cannot listen", "--host")),
        "empty raw table": ([*model, "--raw", str(empty_raw)], _env(), ("impressions.parquet", "empty")),
    }
    started = {case: (_start(args, env), needles) for case, (args, env, needles) in cases.items()}
    out = {}
    for case, (proc, needles) in started.items():
        try:
            stdout, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:  # it served instead of refusing
            proc.kill()
            stdout, stderr = proc.communicate()
        out[case] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), needles)
    busy.close()
    return out


CASES = ["short admin token", "invalid setting", "edited artifact", "no artifact", "unreachable redis",
         "missing raw folder", "port in use", "port out of range", "host not of this machine", "empty raw table"]


@pytest.mark.parametrize("case", CASES)
def test_a_refused_start_is_one_line_and_exit_2(refusals, case: str) -> None:  # type: ignore[no-untyped-def]
    r, needles = refusals[case]
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    assert "Traceback" not in r.stderr and all(n in lines[0] for n in needles), lines[0]


@pytest.mark.parametrize("token", [None, GOOD_TOKEN], ids=["no token", "token"])
def test_once_up_it_prints_a_curl_that_works(tiny_artifact: Path, tiny_raw: Path, tmp_path: Path,
                                             token: str | None) -> None:
    port = free_port()
    log = tmp_path / "serve.out"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(tiny_artifact), "--raw",
                             str(tiny_raw), "--port", str(port)], stdout=log.open("w"), stderr=subprocess.DEVNULL,
                            cwd=REPO, env=_env(**({"RECSYS_ADMIN_TOKEN": token} if token else {})))
    try:
        deadline = time.time() + 120
        while "curl" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.2)
        out = log.read_text()
        curl = next(line.strip() for line in out.splitlines() if line.strip().startswith("curl "))
        args = shlex.split(curl)
        assert args[2] == f"http://127.0.0.1:{port}/v1/recommendations"
        r = httpx.post(args[2], content=args[args.index("-d") + 1], headers={"content-type": "application/json"})
        assert r.status_code == 200 and len(r.json()["items"]) == 5
        assert ("RECSYS_ADMIN_TOKEN" in out) == (token is None)  # the 403 hint only while no token is set
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_refused_start_under_plain_uvicorn_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    """`uvicorn --factory service.app:create_app` (no preflight): the app's start-up reports the
    refusal itself, in one line."""
    r = subprocess.run([sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--port",
                        str(free_port())], capture_output=True, text=True, timeout=120, cwd=REPO,
                       env=_env(RECSYS_MODEL_DIR=str(tmp_path / "missing"), RECSYS_RAW_DIR=str(tmp_path)))
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1 and "no artifact at" in errors[0], r.stderr
