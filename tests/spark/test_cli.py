"""`build-features --engine spark` refuses what it cannot run with one line and exit code 2
(no Spark session needed: these checks come first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.errors import RecsysError
from recsys.features.engine.spark import parse_conf, require_spark

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=120)


def test_spark_options_without_the_spark_engine_exit_2_with_one_line(tmp_path: Path):
    done = _cli("build-features", "--spec", "synthetic", "--raw", str(tmp_path), "--out", str(tmp_path / "o"),
                "--master", "local[2]")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --master, --conf and --spark-config need --engine spark"


def test_missing_java_exits_2_with_the_fix(tmp_path: Path):
    pytest.importorskip("pyspark")
    raw = tmp_path / "raw"
    raw.mkdir()
    done = _cli("build-features", "--engine", "spark", "--spec", "synthetic", "--raw", str(raw), "--out",
                str(tmp_path / "o"), env={"JAVA_HOME": str(tmp_path / "no-java")})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Java 17 or 21" in done.stderr, done.stderr
    assert not (tmp_path / "o").exists()


def test_missing_pyspark_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark now raises ImportError
    with pytest.raises(RecsysError, match=r"pip install 'recsys-widedeep\[spark\]'"):
        require_spark()


def test_conf_options_must_be_key_value():
    assert parse_conf(["spark.driver.memory=6g", "a = b"]) == (("spark.driver.memory", "6g"), ("a", "b"))
    with pytest.raises(RecsysError, match="not key=value"):
        parse_conf(["spark.driver.memory"])
