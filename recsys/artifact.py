"""The versioned model artifact: a folder of data files, no pickle.

    model.safetensors   weights (state_dict)
    spec.yaml           the feature spec as used
    transforms.json     FeaturePipeline.to_dict(): vocabularies, normalizers, layout
    metadata.json       format_version, model_version, feature_version, model config, metrics,
                        data fingerprint, library versions, sha256 of every other file

`model_version` is a content hash of the three other files, so two identical trainings give the same
version and any edited byte is detected at load. The folder is written under a temporary name and
renamed, so a half-written artifact is never loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import yaml

from recsys.errors import ArtifactError, RecsysError
from recsys.features.pipeline import FeaturePipeline
from recsys.model import WideDeep, WideDeepConfig
from recsys.spec import parse_spec

__all__ = ["ARTIFACT_FORMAT", "Artifact", "save_artifact", "load_artifact", "write_json_atomic"]

ARTIFACT_FORMAT = 1
_FILES = ("model.safetensors", "spec.yaml", "transforms.json")


@dataclass
class Artifact:
    path: Path
    pipeline: FeaturePipeline
    model: WideDeep
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.metadata["model_version"])

    @property
    def feature_version(self) -> str:
        return str(self.metadata["feature_version"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version_of(hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(hashes[f] for f in _FILES).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON to a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=_json_default)
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def save_artifact(
    out_dir: str | Path,
    pipeline: FeaturePipeline,
    model: WideDeep,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact to `out_dir` atomically (replacing an older one there). Returns its path."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, str(tmp / "model.safetensors"))
        (tmp / "spec.yaml").write_text(pipeline.spec.to_yaml())
        (tmp / "transforms.json").write_text(json.dumps(pipeline.to_dict(), sort_keys=True, default=_json_default))
        hashes = {f: _sha256(tmp / f) for f in _FILES}
        metadata = {
            "format_version": ARTIFACT_FORMAT,
            "model_version": _version_of(hashes),
            "feature_version": pipeline.to_dict()["spec_hash"],
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_config": model.config.to_dict(),
            "files": hashes,
            "libraries": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
            **(extra_metadata or {}),
        }
        write_json_atomic(tmp / "metadata.json", metadata)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load_artifact(path: str | Path) -> Artifact:
    """Load and verify an artifact; raise ArtifactError naming what is wrong and what to do."""
    path = Path(path)
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise ArtifactError(f"no artifact at {path}: metadata.json missing (fix: run `recsys train` first)")
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"artifact {path}: metadata.json is corrupt ({err})") from None
    if metadata.get("format_version") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"artifact {path}: format_version {metadata.get('format_version')!r} is not supported "
            f"(this code reads {ARTIFACT_FORMAT}); retrain with this version"
        )
    for name in _FILES:
        f = path / name
        if not f.is_file():
            raise ArtifactError(f"artifact {path}: {name} is missing")
        if _sha256(f) != metadata.get("files", {}).get(name):
            raise ArtifactError(f"artifact {path}: {name} does not match its hash in metadata.json (corrupt or edited)")
    if _version_of(metadata["files"]) != metadata.get("model_version"):
        raise ArtifactError(f"artifact {path}: model_version does not match the files' hashes")
    try:
        spec = parse_spec(yaml.safe_load((path / "spec.yaml").read_text()))
        pipeline = FeaturePipeline.from_dict(spec, json.loads((path / "transforms.json").read_text()))
        config = WideDeepConfig.from_dict(metadata["model_config"])
        model = WideDeep(config)
        state = safetensors.torch.load_file(str(path / "model.safetensors"))
        model.load_state_dict(state, strict=True)
    except ArtifactError:
        raise
    except (RecsysError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ArtifactError(f"artifact {path} is incompatible with this code: {err}") from None
    model.eval()
    return Artifact(path=path, pipeline=pipeline, model=model, metadata=metadata)
