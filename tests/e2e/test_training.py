"""`recsys train` as a user runs it: overrides validated like the spec, quiet logs in files, a killed
run resumed to the same result, two processes training the same model as one, a dead rank failing
the job (or restarted by the elastic agent), and warm start from an artifact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from recsys.artifact import load_artifact
from recsys.features.splits import read_split
from recsys.inference import Predictor
from recsys.metrics import auc

from .helpers import finish, run_cli, run_ok, start_cli

pytestmark = pytest.mark.slow

BAD_OVERRIDES = {
    "zero epochs": (["--epochs", "0"], "--epochs 0: Input should be greater than or equal to 1"),
    "zero batch": (["--batch-size", "0"], "--batch-size 0"),
    "unknown optimizer": (["--optimizer", "rmsprop"], "--optimizer 'rmsprop': Input should be 'sgd', 'adagrad'"),
    "zero learning rate": (["--lr", "0"], "--lr 0.0: Input should be greater than 0"),
    "negative learning rate": (["--lr", "-1"], "--lr -1.0"),
    "unknown data mode": (["--data", "disk"], "--data 'disk'"),
    "shards not divisible": (["--nproc", "3"], "data_shards 8 is not a multiple of the 3 processes"),
    "resume without checkpoint": (["--resume"], "no checkpoint to resume"),
    "warm start from nothing": (["--init-from", "/nonexistent/model"], "--init-from /nonexistent/model"),
}


@pytest.fixture(scope="module")
def bad_override_runs(tiny_features: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every case at once (each process spends most of its time importing)."""
    root = tmp_path_factory.mktemp("bad-overrides")
    outs = {case: root / f"model{i}" for i, case in enumerate(BAD_OVERRIDES)}
    started = {case: (start_cli("train", "--features", tiny_features, "--out", outs[case], *args), outs[case])
               for case, (args, _) in BAD_OVERRIDES.items()}
    return {case: (finish(proc), out) for case, (proc, out) in started.items()}


@pytest.mark.parametrize("case", BAD_OVERRIDES, ids=list(BAD_OVERRIDES))
def test_bad_training_options_exit_2_with_one_line_and_write_nothing(case: str, bad_override_runs):
    result, out = bad_override_runs[case]
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and BAD_OVERRIDES[case][1] in lines[0], result.stderr
    assert not out.exists() and not out.with_name(f"{out.name}.checkpoints").exists()


def test_logs_written_to_a_pipe_carry_no_progress_bars(tiny_features: Path, tmp_path: Path):
    result = run_ok("train", "--features", tiny_features, "--out", tmp_path / "model", "--epochs", 2)
    assert "\r" not in result.stderr and "batch/s" not in result.stderr, result.stderr[-500:]
    assert "epoch 2:" in result.stdout and "data: in memory" in result.stdout


def _wait_for(predicate, proc: subprocess.Popen[str], what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}:\n{proc.stderr.read() if proc.stderr else ''}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _latest(checkpoints: Path) -> str:
    try:
        return str(json.loads((checkpoints / "LATEST").read_text())["name"])
    except (OSError, ValueError):
        return ""


def _history(model: Path) -> list[tuple[float, float]]:
    meta = json.loads((model / "metadata.json").read_text())
    return [(h["train_logloss"], h["valid_auc"]) for h in meta["history"]]


def test_a_run_killed_mid_epoch_and_resumed_ends_like_an_uninterrupted_one(tiny_features: Path, tmp_path: Path):
    args = ["--features", tiny_features, "--epochs", 4, "--batch-size", 64, "--threads", 1, "--checkpoint-every", 50,
            "--quiet"]
    straight = start_cli("train", *args, "--out", tmp_path / "straight")
    killed = start_cli("train", *args, "--out", tmp_path / "model")
    checkpoints = tmp_path / "model.checkpoints"
    # 250 steps an epoch: kill once a checkpoint inside epoch 2 exists, somewhere in the middle of it
    _wait_for(lambda: _latest(checkpoints).startswith("e0002-s"), killed, "a checkpoint in epoch 2")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "model").exists()
    refused = run_cli("train", *args, "--out", tmp_path / "model")  # a fresh start would lose the run's work
    assert refused.returncode == 2 and "pass --resume to continue it" in refused.stderr
    resumed = run_ok("train", *args[:-1], "--out", tmp_path / "model", "--resume")
    assert "resuming from step" in resumed.stdout and "of epoch 2" in resumed.stdout
    assert finish(straight).returncode == 0
    assert _history(tmp_path / "model") == _history(tmp_path / "straight")
    assert not checkpoints.exists()  # removed once the artifact is written


def _test_auc(model: Path, features: Path) -> float:
    enc, meta = read_split(features, "test")
    return auc(meta["label"].to_numpy(), Predictor.from_artifact(load_artifact(model)).score_encoded(enc))


def test_two_processes_train_the_same_model_as_one(tiny_features: Path, tmp_path: Path):
    args = ["--features", tiny_features, "--epochs", 3, "--quiet"]
    one = start_cli("train", *args, "--out", tmp_path / "one", "--threads", 1)
    two = run_ok("train", *args, "--out", tmp_path / "two", "--nproc", 2)
    assert finish(one).returncode == 0
    assert "2 processes × 1 threads, gloo" in two.stdout
    meta = json.loads((tmp_path / "two" / "metadata.json").read_text())
    assert meta["training"]["processes"] == 2
    a, b = np.array(_history(tmp_path / "one")), np.array(_history(tmp_path / "two"))
    assert np.abs(a - b).max() < 1e-4  # the same batches; only the float sums' order differs
    assert abs(_test_auc(tmp_path / "one", tiny_features) - _test_auc(tmp_path / "two", tiny_features)) < 0.002


def _worker(launcher: int, rank: int) -> int | None:
    """The pid of a rank started (through the elastic agent) by `launcher`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            pid, chain = int(entry.name), []
            while pid > 1 and len(chain) < 6:
                pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
                chain.append(pid)
        except (OSError, ValueError, IndexError):
            continue
        if launcher in chain and f"RANK={rank}".encode() in env and any(
                e.startswith(b"TORCHELASTIC_RUN_ID=") for e in env):
            return int(entry.name)
    return None


def _kill_rank_after_first_checkpoint(proc: subprocess.Popen[str], checkpoints: Path, rank: int) -> None:
    _wait_for(lambda: _latest(checkpoints) != "", proc, "the first checkpoint")
    pid = _worker(proc.pid, rank)
    assert pid is not None, "rank process not found"
    os.kill(pid, signal.SIGKILL)


def test_a_rank_that_dies_fails_the_job_with_one_line_naming_it(tiny_features: Path, tmp_path: Path):
    args = ["--features", tiny_features, "--out", tmp_path / "model", "--nproc", 2, "--batch-size", 64,
            "--checkpoint-every", 20, "--quiet"]
    proc = start_cli("train", *args, "--epochs", 6)
    _kill_rank_after_first_checkpoint(proc, tmp_path / "model.checkpoints", rank=1)
    result = finish(proc)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training failed: rank 1 (pid ") and "was killed by SIGKILL" in last, last
    assert "rerun with --resume" in last and not (tmp_path / "model").exists()
    run_ok("train", *args, "--epochs", 2, "--resume")  # continues where the job stopped (more epochs: no matter)
    assert (tmp_path / "model" / "metadata.json").is_file()


def test_the_elastic_agent_restarts_a_dead_rank_and_the_job_resumes(tiny_features: Path, tmp_path: Path):
    proc = start_cli("train", "--features", tiny_features, "--out", tmp_path / "model", "--nproc", 2, "--epochs", 4,
                     "--batch-size", 64, "--checkpoint-every", 20, "--max-restarts", 1)
    _kill_rank_after_first_checkpoint(proc, tmp_path / "model.checkpoints", rank=0)
    result = finish(proc)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    assert len(_history(tmp_path / "model")) >= 1


def test_warm_start_from_an_artifact_keeps_every_row_of_the_same_vocabulary(tiny_features: Path, tiny_artifact: Path,
                                                                             tmp_path: Path):
    result = run_ok("train", "--features", tiny_features, "--out", tmp_path / "model", "--epochs", 1,
                    "--init-from", tiny_artifact, "--quiet")
    line = next(x for x in result.stdout.splitlines() if x.startswith("warm start from"))
    deep_kept, deep_rows = (int(x.replace(",", "")) for x in line.split("deep table ")[1].split(" rows")[0].split(
        " of "))
    assert deep_kept == deep_rows - 1  # every row but the padding row: the same features, the same ids
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert meta["training"]["init_from"] == str(tiny_artifact)
