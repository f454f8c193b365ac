"""The artifact: save → load into new objects → identical scores; anything tampered is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

from pipelines.train import fit_model
from recsys import artifact as artifact_module
from recsys.artifact import ARTIFACT_FORMAT, load_artifact, save_artifact
from recsys.errors import ArtifactError
from recsys.features import Batch, FeaturePipeline
from recsys.inference import Predictor
from recsys.model import WideDeep
from recsys.spec import parse_spec

from .helpers import mini_columns, mini_spec_dict

REPO = Path(__file__).resolve().parents[2]
FILES = ("model.safetensors", "spec.yaml", "transforms.json", "metadata.json")


@pytest.fixture(scope="module")
def trained() -> tuple[FeaturePipeline, WideDeep, dict[str, np.ndarray]]:
    spec = parse_spec(mini_spec_dict())
    cols, label = mini_columns(600)
    pipeline = FeaturePipeline(spec).fit(cols, label)
    batch = Batch.from_encoded(pipeline.transform(cols), label)
    model, _ = fit_model(pipeline, spec, spec.training, batch, None, progress=False)
    return pipeline, model, cols


@pytest.fixture
def saved(trained, tmp_path: Path) -> Path:
    pipeline, model, _ = trained
    return save_artifact(tmp_path / "model", pipeline, model, {"metrics": {"valid.auc": 0.5}})


def rehash(path: Path, *, keep_version: bool = False) -> None:
    """Make metadata.json agree with edited files, as a careless hand-edit or a forgery would."""
    meta = json.loads((path / "metadata.json").read_text())
    meta["files"] = {f: artifact_module._sha256(path / f) for f in artifact_module._FILES}
    if not keep_version:
        meta["model_version"] = artifact_module._version_of(meta["files"])
    (path / "metadata.json").write_text(json.dumps(meta))


def test_loaded_artifact_scores_exactly_like_the_model_that_was_saved(trained, saved: Path):
    pipeline, model, cols = trained
    encoded = pipeline.transform(cols)
    original = Predictor(pipeline, model).score_encoded(encoded)
    loaded = load_artifact(saved)
    assert loaded.model is not model and loaded.pipeline is not pipeline
    predictor = Predictor.from_artifact(loaded)
    np.testing.assert_array_equal(predictor.score_encoded(encoded), original)
    np.testing.assert_array_equal(predictor.score(cols), original)  # raw rows through the loaded transforms
    assert predictor.version == loaded.version == loaded.metadata["model_version"]


def test_metadata_records_version_config_hashes_and_extra_fields(saved: Path):
    meta = json.loads((saved / "metadata.json").read_text())
    assert meta["format_version"] == ARTIFACT_FORMAT
    assert set(meta["files"]) == {"model.safetensors", "spec.yaml", "transforms.json"}
    assert {"model_version", "feature_version", "model_config", "libraries", "created_at"} <= set(meta)
    assert meta["metrics"] == {"valid.auc": 0.5}
    assert sorted(p.name for p in saved.iterdir()) == sorted(FILES)


def test_model_version_is_a_content_hash(trained, tmp_path: Path):
    pipeline, model, _ = trained
    a = load_artifact(save_artifact(tmp_path / "a", pipeline, model)).version
    b = load_artifact(save_artifact(tmp_path / "b", pipeline, model)).version
    assert a == b
    other = WideDeep(model.config)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.bias.add_(1.0)
    assert load_artifact(save_artifact(tmp_path / "c", pipeline, other)).version != a


def test_a_flipped_byte_in_the_weights_is_refused(saved: Path):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.safetensors"):
        load_artifact(saved)


def test_an_edited_transforms_file_is_refused(saved: Path):
    path = saved / "transforms.json"
    state = json.loads(path.read_text())
    state["prior"] = 0.99
    path.write_text(json.dumps(state, sort_keys=True))
    with pytest.raises(ArtifactError, match="transforms.json"):
        load_artifact(saved)


def test_an_edited_spec_is_refused(saved: Path):
    path = saved / "spec.yaml"
    path.write_text(path.read_text().replace("buckets: 16", "buckets: 17"))
    with pytest.raises(ArtifactError, match="spec.yaml"):
        load_artifact(saved)


def test_rehashed_files_with_a_stale_model_version_are_refused(saved: Path):
    path = saved / "transforms.json"
    path.write_text(path.read_text().replace('"prior": ', '"prior": 0.0, "_x": '))
    rehash(saved, keep_version=True)
    with pytest.raises(ArtifactError, match="model_version"):
        load_artifact(saved)


def test_consistent_but_incompatible_weights_are_refused_as_incompatible(saved: Path):
    state = safetensors.torch.load_file(str(saved / "model.safetensors"))
    state["wide.weight"] = torch.zeros(3, 1)
    safetensors.torch.save_file(state, str(saved / "model.safetensors"))
    rehash(saved)
    with pytest.raises(ArtifactError, match="incompatible"):
        load_artifact(saved)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_an_unsupported_format_version_is_refused(saved: Path, version: object):
    meta = json.loads((saved / "metadata.json").read_text())
    meta["format_version"] = version
    (saved / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="format_version"):
        load_artifact(saved)


def test_corrupt_metadata_is_refused(saved: Path):
    (saved / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="metadata.json"):
        load_artifact(saved)


@pytest.mark.parametrize("name", ["model.safetensors", "spec.yaml", "transforms.json"])
def test_a_missing_file_is_refused_by_name(saved: Path, name: str):
    (saved / name).unlink()
    with pytest.raises(ArtifactError, match=name):
        load_artifact(saved)


def test_a_folder_without_an_artifact_says_to_train_first(tmp_path: Path):
    with pytest.raises(ArtifactError, match="recsys train"):
        load_artifact(tmp_path / "nothing-here")


def test_saving_over_an_artifact_replaces_it_and_leaves_no_temporary_folders(trained, saved: Path):
    pipeline, model, _ = trained
    before = load_artifact(saved).version
    other = WideDeep(model.config)
    save_artifact(saved, pipeline, other)
    assert load_artifact(saved).version != before
    assert [p.name for p in saved.parent.iterdir()] == ["model"]


def test_a_failed_save_leaves_neither_a_partial_artifact_nor_temporary_folders(trained, tmp_path: Path, monkeypatch):
    pipeline, model, _ = trained

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError):
        save_artifact(tmp_path / "model", pipeline, model)
    assert list(tmp_path.iterdir()) == []


def test_weights_are_safetensors_and_no_file_is_a_pickle(saved: Path):
    with safetensors.safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        assert "wide.weight" in f.keys()
    for name in FILES:
        head = (saved / name).read_bytes()[:2]
        assert head[:1] != b"\x80", f"{name} starts like a pickle"


_PICKLE_USES = re.compile(
    r"^\s*(import\s+(c?pickle|dill|joblib|cloudpickle|shelve)\b"
    r"|from\s+(c?pickle|dill|joblib|cloudpickle|shelve)\b)"
    r"|torch\.save\(|\.to_pickle\(|read_pickle\(|allow_pickle\s*=\s*True"
    r"|torch\.load\((?![^)]*weights_only\s*=\s*True)",
    re.MULTILINE,
)


def test_no_pickle_anywhere_in_the_code():
    """Pickles run code on load and tie artifacts to class paths: data formats only (STYLE habit 4)."""
    offenders = []
    for folder in ("recsys", "pipelines", "service", "loadtest", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for match in _PICKLE_USES.finditer(path.read_text()):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0).strip()}")
    assert offenders == []
