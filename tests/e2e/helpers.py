"""Run the real `recsys` console script in a subprocess, as a user would.

PYTHONPATH puts this checkout first, so the script runs the code under test even when the
installed (editable) distribution points at another clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def recsys_command() -> str:
    beside = Path(sys.executable).parent / "recsys"
    found = str(beside) if beside.is_file() else shutil.which("recsys")
    if found is None:
        pytest.fail("the `recsys` console script is not installed (fix: bash scripts/setup.sh)")
    return found


def start_cli(*args: object) -> subprocess.Popen[str]:
    """Start `recsys ARGS` without waiting (several can run side by side)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([recsys_command(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tempfile.gettempdir())  # stray relative outputs: not in the repo


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_cli(*args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return finish(start_cli(*args), timeout)


def run_ok(*args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a step that must succeed; on failure show its stderr, not just the exit code."""
    result = run_cli(*args, timeout=timeout)
    command = " ".join(map(str, args))
    assert result.returncode == 0, f"recsys {command} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result
