"""Output folders (`recsys.io.output_folder`): a command replaces only what it wrote itself, never an
input, the working directory or a folder of someone else's files, and a reader of the output always
finds the old or the new folder, never none."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from recsys.errors import OutputError
from recsys.io import OUTPUT_MARKER, _renameat2, check_output, claim_folder, output_folder, output_kind, remove_output
from recsys.training.checkpoint import CheckpointStore

from .helpers import assert_refused, run_main


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def raw_copy(tiny_raw: Path, tmp_path: Path) -> Path:
    """The tiny raw tables in a folder of the user's (no marker), with a file of theirs beside."""
    raw = tmp_path / "work" / "raw"
    shutil.copytree(tiny_raw, raw, ignore=shutil.ignore_patterns(OUTPUT_MARKER))
    (tmp_path / "work" / "notes.txt").write_text("the user's own file")
    return raw


# ---------------------------------------------------------------- the cases, through the CLI
def test_build_features_refuses_a_folder_of_unrelated_files_and_leaves_them(
        raw_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    code, err = run_main(["build-features", "--spec", "synthetic", "--raw", raw_copy, "--out", mine, "--quiet"],
                         monkeypatch, capsys)
    assert_refused(code, err, str(mine), "did not write", "fix: pass a new or empty folder")
    assert snapshot(mine) == {"thesis.tex": b"months of work"}


@pytest.mark.parametrize("out", [".", ".."], ids=["the working directory", "a folder above it"])
def test_out_at_or_above_the_working_directory_is_refused(
        out: str, raw_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    work = raw_copy.parent
    monkeypatch.chdir(raw_copy)
    before = snapshot(work)
    code, err = run_main(["build-features", "--spec", "synthetic", "--raw", raw_copy, "--out", out, "--quiet"],
                         monkeypatch, capsys)
    assert_refused(code, err, "working directory")
    assert snapshot(work) == before


@pytest.mark.parametrize("out", ["{raw}", "{raw}/features"], ids=["equal", "inside"])
def test_out_equal_to_or_inside_raw_is_refused(
        out: str, raw_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(raw_copy)
    code, err = run_main(["build-features", "--spec", "synthetic", "--raw", raw_copy, "--out",
                          out.format(raw=raw_copy), "--quiet"], monkeypatch, capsys)
    assert_refused(code, err, "--raw", "the input")
    assert snapshot(raw_copy) == before


def test_train_refuses_the_features_folder_the_working_directory_and_foreign_folders(
        tiny_features: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.csv").write_text("a,b\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    cases = {tiny_features: "--features", tiny_features / "model": "--features", ".": "working directory",
             foreign: "did not write"}
    before = snapshot(tiny_features)
    for out, needle in cases.items():
        code, err = run_main(["train", "--features", tiny_features, "--out", out, "--epochs", 1, "--quiet"],
                             monkeypatch, capsys)
        assert_refused(code, err, needle)
    code, err = run_main(["train", "--features", tiny_features, "--out", tmp_path / "model", "--checkpoint-dir",
                          foreign, "--epochs", 1, "--quiet"], monkeypatch, capsys)
    assert_refused(code, err, "--checkpoint-dir", "did not write")
    assert snapshot(tiny_features) == before and snapshot(foreign) == {"keep.csv": b"a,b\n"}
    assert not (tmp_path / "model").exists()


def test_evaluate_and_import_refuse_their_inputs_and_other_kinds_of_output(
        tiny_artifact: Path, tiny_features: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(tiny_artifact)
    code, err = run_main(["evaluate", "--model", tiny_artifact, "--features", tiny_features, "--out", tiny_artifact,
                          "--quiet"], monkeypatch, capsys)
    assert_refused(code, err, "--model")
    reports = tmp_path / "reports"
    with output_folder(reports, "features"):
        pass
    code, err = run_main(["evaluate", "--model", tiny_artifact, "--features", tiny_features, "--out", reports,
                          "--quiet"], monkeypatch, capsys)
    assert_refused(code, err, "holds recsys features, not evaluation")
    ml = tmp_path / "ml-100k"
    ml.mkdir()
    code, err = run_main(["import-movielens", ml, "--out", ml / "raw"], monkeypatch, capsys)
    assert_refused(code, err, "PATH")
    code, err = run_main(["generate", "--out", tmp_path / "ml-100k" / "..", "--impressions", 10], monkeypatch, capsys)
    assert_refused(code, err, "did not write")
    assert snapshot(tiny_artifact) == before


# ---------------------------------------------------------------- the helper itself
def test_a_rebuilt_output_replaces_only_our_old_one_and_leaves_no_temporary_folders(tmp_path: Path) -> None:
    out = tmp_path / "features"
    with output_folder(out, "features") as tmp:
        (tmp / "a.txt").write_text("old")
    (out / "stale.txt").write_text("left by the old run")
    with output_folder(out, "features") as tmp:
        (tmp / "a.txt").write_text("new")
    assert snapshot(out) == {OUTPUT_MARKER: (out / OUTPUT_MARKER).read_bytes(), "a.txt": b"new"}
    assert output_kind(out) == "features" and [p.name for p in tmp_path.iterdir()] == ["features"]


def test_an_empty_existing_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with output_folder(tmp_path / "out", "evaluation") as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert (tmp_path / "out" / "metrics.json").is_file() and len(list(tmp_path.iterdir())) == 1


def test_a_failed_write_removes_its_temporary_folder_and_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with output_folder(out, "artifact") as tmp:
        (tmp / "w").write_text("v1")
    with pytest.raises(RuntimeError), output_folder(out, "artifact") as tmp:
        (tmp / "w").write_text("half of v2")
        raise RuntimeError("disk full")
    assert (out / "w").read_text() == "v1" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_file_or_a_folder_holding_an_input_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output(tmp_path / "file", "features")
    with pytest.raises(OutputError, match="holds the input --raw"):
        check_output(tmp_path, "features", {"--raw": tmp_path / "data" / "raw"})


@pytest.mark.skipif(_renameat2() is None, reason="an atomic exchange needs Linux renameat2")
def test_a_reader_always_finds_the_old_or_the_new_output(tmp_path: Path) -> None:
    out = tmp_path / "features"
    with output_folder(out, "features") as tmp:
        (tmp / "manifest.json").write_text("0")
    seen: set[str] = set()
    missing: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add((out / "manifest.json").read_text())
            except FileNotFoundError:
                missing.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 200):
            with output_folder(out, "features") as tmp:
                (tmp / "manifest.json").write_text(str(i))
    finally:
        stop.set()
        reader.join()
    assert not missing and len(seen) > 1


def test_a_checkpoint_folder_is_claimed_only_when_ours_or_empty_and_removed_only_when_ours(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.bin").write_bytes(b"\x00")
    with pytest.raises(OutputError, match="--checkpoint-dir"):
        CheckpointStore(foreign).claim()
    remove_output(foreign, "checkpoints")
    assert (foreign / "data.bin").is_file()
    store = CheckpointStore(tmp_path / "ckpt")
    store.claim()
    store.claim()  # its own folder again: fine
    assert output_kind(store.root) == "checkpoints"
    claim_folder(tmp_path / "ckpt", "checkpoints")
    store.remove()
    assert not store.root.exists()
