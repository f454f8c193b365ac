"""The versioned model artifact: a folder of data files, no pickle.

    model.safetensors   weights (state_dict)
    spec.yaml           the feature spec as used
    transforms.json     FeaturePipeline.to_dict(): vocabularies, normalizers, layout
    metadata.json       format_version, model_version, feature_version, model config, metrics,
                        popular items, data fingerprint, library versions, and `files`: the
                        sha256 of every other file in the folder, subfolders included
    (anything else)     files a caller adds through `save_artifact(..., extra_files=...)`, e.g. a
                        retrieval index under a subfolder: hashed and verified like the rest

`model_version` is a content hash of metadata.json without its own `model_version` field, hence of
every file (through `files`) and every metadata field: any edited byte anywhere in the folder is
detected at load, and the same content saved twice gets the same version. The folder is written
under a temporary name and renamed, so a half-written artifact is never loadable.

`load_artifact` validates an artifact fully before anything can serve it, and refuses it with an
ArtifactError naming the file and the fix: a file missing, unlisted, a symlink or not matching its
hash; a stale version; a file that does not parse; weights that are not finite; a smoke forward
whose scores are not finite. Format 2 (this one) added the metadata and subfolders to the hash;
format-1 artifacts are refused with "retrain".
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
from typing import Any, Callable, Mapping

import numpy as np
import safetensors.torch
import torch
import yaml

from recsys.errors import ArtifactError
from recsys.features.batch import Batch, Encoded
from recsys.features.pipeline import FeaturePipeline
from recsys.io import OUTPUT_MARKER, output_folder
from recsys.model import WideDeep, WideDeepConfig
from recsys.spec import parse_spec

__all__ = ["ARTIFACT_FORMAT", "Artifact", "save_artifact", "update_artifact", "load_artifact", "write_json_atomic",
           "file_hashes", "content_version"]

ARTIFACT_FORMAT = 2
REQUIRED_FILES = ("model.safetensors", "spec.yaml", "transforms.json")
METADATA = "metadata.json"
_SMOKE_ROWS = 4


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


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below `root` except metadata.json and the folder's output marker (where
    it came from, not what it holds), keyed by its relative POSIX path, sorted. A symlink is refused:
    it could make the artifact read a file outside its folder."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ArtifactError(f"artifact {root}: {rel} is a symlink; an artifact holds only its own files "
                                f"(fix: copy the file in and save the artifact again)")
        if path.is_file() and rel not in (METADATA, OUTPUT_MARKER):
            out[rel] = _sha256(path)
        elif not path.is_file() and not path.is_dir():
            raise ArtifactError(f"artifact {root}: {rel} is not a regular file")
    return out


def content_version(metadata: Mapping[str, Any]) -> str:
    """The model_version that `metadata` (as written to metadata.json) must carry: a hash of every
    field but `model_version`, so of every file's hash too."""
    body = {k: v for k, v in metadata.items() if k != "model_version"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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


def _check_weights(state: Mapping[str, torch.Tensor], where: str) -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(f"{where}: weight tensor '{name}' holds NaN or infinite values "
                                f"(fix: retrain; training diverged or the file was forged)")


def _smoke_forward(pipeline: FeaturePipeline, model: WideDeep, where: str) -> None:
    """One forward on cold rows shaped by the fitted layout: proves the weights, the model config
    and transforms.json fit together, and that the scores are finite numbers."""
    layout = pipeline.layout
    n = _SMOKE_ROWS
    enc = Encoded(sparse=np.zeros((n, len(layout.sparse_fields)), np.int64),
                  multi=np.zeros((n, sum(m for _, m in layout.multi_fields)), np.int64),
                  dense=np.zeros((n, len(layout.dense_fields)), np.float32),
                  wide=np.zeros((n, len(layout.wide_fields)), np.int64))
    try:
        with torch.inference_mode():
            logits = model(Batch.from_encoded(enc))
    except (RuntimeError, IndexError, ValueError) as err:
        raise ArtifactError(f"{where}: the model does not run on its own transforms' layout: {err}") from None
    if logits.shape != (n,) or not bool(torch.isfinite(logits).all()):
        raise ArtifactError(f"{where}: a smoke forward gave {'non-finite' if logits.shape == (n,) else 'misshaped'} "
                            f"scores (fix: retrain)")


def save_artifact(
    out_dir: str | Path,
    pipeline: FeaturePipeline,
    model: WideDeep,
    extra_metadata: dict[str, Any] | None = None,
    extra_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write the artifact to `out_dir` atomically (replacing an older artifact there, never a folder
    this project did not write: `recsys.io.output_folder`). Returns its path.

    `extra_files(folder)` may write more files (subfolders allowed) into the artifact before it is
    hashed, e.g. a retrieval index; `load_artifact` then verifies them like the standard four.
    Weights that are not finite are refused here already: they could never be served."""
    out_dir = Path(out_dir)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    _check_weights(state, f"artifact {out_dir}")
    with output_folder(out_dir, "artifact") as tmp:
        safetensors.torch.save_file(state, str(tmp / "model.safetensors"))
        (tmp / "spec.yaml").write_text(pipeline.spec.to_yaml())
        (tmp / "transforms.json").write_text(json.dumps(pipeline.to_dict(), sort_keys=True, default=_json_default))
        if extra_files is not None:
            extra_files(tmp)
        metadata = {
            "format_version": ARTIFACT_FORMAT,
            "feature_version": pipeline.to_dict()["spec_hash"],
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_config": model.config.to_dict(),
            "files": file_hashes(tmp),
            "libraries": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
            **(extra_metadata or {}),
        }
        # The version is computed from the metadata as it reads back from JSON, as load_artifact sees it.
        metadata = json.loads(json.dumps(metadata, default=_json_default))
        write_json_atomic(tmp / METADATA, {"model_version": content_version(metadata), **metadata})
    return out_dir


# metadata fields save_artifact derives itself: never carried over from an older save
_DERIVED = ("model_version", "format_version", "feature_version", "created_at", "model_config", "files", "libraries")


def update_artifact(path: str | Path, metadata: dict[str, Any], write: Callable[[Path], None],
                    drop: tuple[str, ...] = ()) -> Path:
    """Save a valid artifact again with `metadata` fields added or replaced and more files written
    by `write(folder)` (e.g. the retrieval part): its weights, spec and transforms as they are, every
    other file copied over except those under a `drop` prefix (files `write` makes stale), then
    hashed and renamed like a first save."""
    art = load_artifact(path)
    kept = {k: v for k, v in art.metadata.items() if k not in _DERIVED}

    def extra(tmp: Path) -> None:
        for rel in art.metadata["files"]:
            if rel in REQUIRED_FILES or rel.startswith(drop):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(art.path / rel, tmp / rel)
        write(tmp)

    return save_artifact(art.path, art.pipeline, art.model, {**kept, **metadata}, extra)


def _verify_files(path: Path, metadata: Mapping[str, Any]) -> None:
    listed = metadata.get("files")
    if not isinstance(listed, dict):
        raise ArtifactError(f"artifact {path}: metadata.json has no `files` table (fix: save the artifact again)")
    present = file_hashes(path)
    for name in sorted(set(REQUIRED_FILES) | set(listed)):
        if name not in present:
            raise ArtifactError(f"artifact {path}: {name} is missing")
        if present[name] != listed.get(name):
            raise ArtifactError(f"artifact {path}: {name} does not match its hash in metadata.json (corrupt or edited)")
    unlisted = sorted(set(present) - set(listed))
    if unlisted:
        raise ArtifactError(f"artifact {path}: {unlisted[0]} is not listed in metadata.json (fix: remove it, or "
                            f"write it through save_artifact(extra_files=...))")
    if content_version(metadata) != metadata.get("model_version"):
        raise ArtifactError(f"artifact {path}: model_version does not match the artifact's content "
                            f"(metadata.json was edited)")


def _parse(path: Path, problem: str, read: Callable[[], Any]) -> Any:
    """Run `read`; any failure becomes one ArtifactError saying `problem` and the cause, never an
    unexpected error: parsers raise their own types (yaml, safetensors, pydantic, torch)."""
    try:
        return read()
    except ArtifactError:
        raise
    except Exception as err:
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ArtifactError(f"artifact {path}: {problem} ({cause}) (fix: retrain, or restore the file)") from None


def load_artifact(path: str | Path) -> Artifact:
    """Load and fully validate an artifact (see the module docstring); raise ArtifactError naming
    what is wrong and what to do. Paths the filesystem cannot hold (too long, undecodable) are
    ArtifactErrors too."""
    path = Path(path)
    try:
        return _load(path)
    except (OSError, UnicodeError, ValueError) as err:
        raise ArtifactError(f"artifact {str(path)[:200]!r} cannot be read: {err}") from None


def _load(path: Path) -> Artifact:
    meta_path = path / METADATA
    if not meta_path.is_file():
        raise ArtifactError(f"no artifact at {path}: metadata.json missing (fix: run `recsys train` first)")
    try:
        metadata = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"artifact {path}: metadata.json is corrupt ({err})") from None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"artifact {path}: metadata.json is not a JSON object")
    if metadata.get("format_version") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"artifact {path}: format_version {metadata.get('format_version')!r} is not supported "
            f"(this code reads {ARTIFACT_FORMAT}); retrain with this version"
        )
    _verify_files(path, metadata)
    spec = _parse(path, "spec.yaml is not a valid feature spec",
                  lambda: parse_spec(yaml.safe_load((path / "spec.yaml").read_text())))
    pipeline = _parse(path, "transforms.json is incompatible with this code or the spec",
                      lambda: FeaturePipeline.from_dict(spec, json.loads((path / "transforms.json").read_text())))
    model = _parse(path, "metadata.json's model_config is incompatible with this code",
                   lambda: WideDeep(WideDeepConfig.from_dict(metadata["model_config"])))
    state = _parse(path, "model.safetensors is not a readable safetensors file",
                   lambda: safetensors.torch.load_file(str(path / "model.safetensors")))
    _check_weights(state, f"artifact {path}")
    _parse(path, "model.safetensors is incompatible with the model config",
           lambda: model.load_state_dict(state, strict=True))
    model.eval()
    _smoke_forward(pipeline, model, f"artifact {path}")
    return Artifact(path=path, pipeline=pipeline, model=model, metadata=metadata)
