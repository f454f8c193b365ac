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
from recsys.artifact import ARTIFACT_FORMAT, content_version, load_artifact, save_artifact
from recsys.errors import ArtifactError
from recsys.features import Batch, FeaturePipeline
from recsys.inference import Predictor
from recsys.io import OUTPUT_MARKER
from recsys.model import WideDeep
from recsys.spec import parse_spec
from tests.conftest import reseal_artifact

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


rehash = reseal_artifact


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
    assert sorted(p.name for p in saved.iterdir()) == sorted([*FILES, OUTPUT_MARKER])  # the marker: not hashed


def test_model_version_is_a_content_hash_of_every_file_and_metadata_field(trained, tmp_path: Path):
    pipeline, model, _ = trained
    a = load_artifact(save_artifact(tmp_path / "a", pipeline, model)).version
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert a == content_version(meta) and set(meta["files"]) == set(FILES) - {"metadata.json"}
    save_artifact(tmp_path / "b", pipeline, model)  # the same model, saved again: only the time may differ
    meta_b = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert content_version({**meta_b, "created_at": meta["created_at"]}) == a
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


@pytest.mark.parametrize("version", [0, 1, 3, "2", None])
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


def _nan_weights(path: Path) -> None:
    state = safetensors.torch.load_file(str(path / "model.safetensors"))
    safetensors.torch.save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                 for k, v in state.items()}, str(path / "model.safetensors"))


def _garbage_weights(path: Path) -> None:
    (path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not js")


def _broken_spec(path: Path) -> None:
    (path / "spec.yaml").write_text("features: [unclosed\n  - : :\n")


def _spec_that_parses_but_is_invalid(path: Path) -> None:
    (path / "spec.yaml").write_text("name: x\nfeatures: 7\n")


# Each forgery recomputes every hash and the version: only the deeper checks can catch it.
FORGERIES = {
    "all-NaN weights": (_nan_weights, "NaN or infinite"),
    "corrupt safetensors": (_garbage_weights, "model.safetensors is not a readable safetensors file"),
    "malformed spec.yaml": (_broken_spec, "spec.yaml is not a valid feature spec"),
    "invalid spec.yaml": (_spec_that_parses_but_is_invalid, "spec.yaml is not a valid feature spec"),
}


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_a_rehashed_but_broken_artifact_is_refused_with_a_clear_error(saved: Path, forgery: str):
    damage, message = FORGERIES[forgery]
    damage(saved)
    rehash(saved)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(saved)


def test_an_edited_metadata_field_is_refused(saved: Path):
    meta = json.loads((saved / "metadata.json").read_text())
    meta["popular_items"] = ["forged-item"]
    (saved / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="model_version does not match"):
        load_artifact(saved)


def test_non_finite_weights_are_refused_at_save(trained, tmp_path: Path):
    pipeline, model, _ = trained
    broken = WideDeep(model.config)
    with torch.no_grad():
        broken.bias.fill_(float("inf"))
    with pytest.raises(ArtifactError, match="NaN or infinite"):
        save_artifact(tmp_path / "model", pipeline, broken)
    assert list(tmp_path.iterdir()) == []


def _write_index(folder: Path) -> None:
    (folder / "retrieval").mkdir()
    (folder / "retrieval" / "index.bin").write_bytes(b"\x00" * 64)


def test_files_added_by_the_caller_are_hashed_and_verified_recursively(trained, tmp_path: Path):
    pipeline, model, _ = trained
    path = save_artifact(tmp_path / "model", pipeline, model, extra_files=_write_index)
    assert "retrieval/index.bin" in json.loads((path / "metadata.json").read_text())["files"]
    load_artifact(path)
    (path / "retrieval" / "index.bin").write_bytes(b"\x01" * 64)
    with pytest.raises(ArtifactError, match="retrieval/index.bin does not match its hash"):
        load_artifact(path)
    (path / "retrieval" / "index.bin").unlink()
    with pytest.raises(ArtifactError, match="retrieval/index.bin is missing"):
        load_artifact(path)


def test_an_unlisted_file_or_a_symlink_in_the_folder_is_refused(saved: Path, tmp_path: Path):
    (saved / "notes").mkdir()
    (saved / "notes" / "extra.txt").write_text("not from save_artifact")
    with pytest.raises(ArtifactError, match="notes/extra.txt is not listed"):
        load_artifact(saved)
    (saved / "notes" / "extra.txt").unlink()
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (saved / "notes" / "link.json").symlink_to(outside)
    with pytest.raises(ArtifactError, match="symlink"):
        load_artifact(saved)


@pytest.mark.parametrize("path", ["/tmp/" + "x" * 300, "/tmp/\ud800model", "/tmp/a\x00b"],
                         ids=["300-character name", "lone surrogate", "NUL byte"])
def test_a_path_the_filesystem_cannot_hold_is_an_artifact_error(path: str):
    with pytest.raises(ArtifactError):
        load_artifact(path)


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
