"""The two-tower learns a planted taste, reaches cold items through their content, and its part of
the artifact round-trips and is refused when broken."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys.artifact import load_artifact
from recsys.errors import ArtifactError, SpecError
from recsys.features.splits import read_split
from recsys.retrieval import Retriever
from recsys.retrieval.evaluation import make_queries, popular_top, recall_at, unseen_top
from recsys.retrieval.index import ann_recall, build_index, exact_top_k, read_index, write_index
from recsys.spec import parse_spec
from tests.conftest import reseal_artifact
from tests.e2e.helpers import run_cli
from tests.retrieval.conftest import CATEGORIES, ITEMS_PER, taste_spec


def _test_queries(world: dict[str, Any]) -> tuple[Retriever, Any, np.ndarray]:
    artifact = load_artifact(world["model"])
    retriever = Retriever.from_artifact(artifact)
    assert retriever is not None
    spec = artifact.pipeline.spec
    enc, meta = read_split(world["features"], "test")
    earlier = [read_split(world["features"], s)[1] for s in ("train", "valid")]
    q = make_queries(meta, spec, retriever.item_ids, earlier)
    return retriever, q, retriever.user_vectors(enc.take(q.rows))


def test_two_tower_learns_the_planted_user_category_taste(taste_world: dict[str, Any]) -> None:
    retriever, q, queries = _test_queries(taste_world)
    _, idx = retriever.search(queries, ITEMS_PER)
    cat = np.array([taste_world["item_category"][i] for i in retriever.item_ids], dtype=object)
    wanted = np.array([taste_world["user_category"][u] for u in q.users], dtype=object)
    precision = float((cat[idx] == wanted[:, None]).mean())
    assert precision > 0.45, f"top-{ITEMS_PER} share of the user's category {precision:.3f} (random: {1 / CATEGORIES})"
    top = unseen_top(idx, q, ITEMS_PER)
    positives = np.zeros(len(retriever.item_ids))  # popularity alone knows no taste: near random here
    positives[: len(positives) - CATEGORIES] = 1.0
    assert recall_at(top, q, ITEMS_PER) > 2 * recall_at(popular_top(positives, q, ITEMS_PER), q, ITEMS_PER)


def test_a_cold_item_is_retrieved_through_its_content_features(taste_world: dict[str, Any]) -> None:
    retriever, q, queries = _test_queries(taste_world)
    _, idx = retriever.search(queries, len(retriever.item_ids))
    ranks = []
    for row, user in enumerate(q.users):
        cold = f"cold{taste_world['user_category'][user][1:]}"
        ranks.append(int(np.flatnonzero(retriever.item_ids[idx[row]] == cold)[0]))
    # Among 408 items a random rank has median ~204; the user's category holds 51.
    assert np.median(ranks) < 2 * ITEMS_PER, f"cold items ranked {np.median(ranks)} (median)"


def test_the_index_round_trips_and_ivf_reaches_exact_recall(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6000, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    built = build_index(vectors, queries, "ivf_flat", target_recall=0.95, log=lambda _: None)
    write_index(built.index, tmp_path / "retrieval" / "index.faiss")
    again = read_index(tmp_path / "retrieval" / "index.faiss", 6000, 16, built.description["nprobe"])
    assert (built.index.search(queries, 20)[1] == again.search(queries, 20)[1]).all()
    assert ann_recall(again, exact_top_k(vectors, queries, 100), queries, 100) >= 0.95


def test_the_artifact_round_trips_the_retriever(taste_world: dict[str, Any]) -> None:
    a, _, qa = _test_queries(taste_world)
    b, _, qb = _test_queries(taste_world)
    assert np.array_equal(a.search(qa, 30)[1], b.search(qb, 30)[1])
    assert load_artifact(taste_world["model"]).metadata["files"]["retrieval/index.faiss"]


def test_a_broken_index_is_refused_even_when_the_hashes_are_resealed(taste_world: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(taste_world["model"], copy)
    (copy / "retrieval" / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(ArtifactError, match="index.faiss does not match its hash"):
        load_artifact(copy)
    reseal_artifact(copy)
    with pytest.raises(ArtifactError, match="not a readable faiss index"):
        Retriever.from_artifact(load_artifact(copy))


def test_the_spec_refuses_a_feature_in_the_wrong_tower() -> None:
    spec = taste_spec()
    spec["retrieval"]["user_features"] = ["user_id", "category"]
    with pytest.raises(SpecError, match="feature 'category' cannot feed the user tower"):
        parse_spec(spec)
    spec["retrieval"]["user_features"] = ["nope"]
    with pytest.raises(SpecError, match="unknown feature 'nope'"):
        parse_spec(spec)


def test_index_and_train_retrieval_refuse_bad_input_in_one_line(tiny_artifact: Path, tiny_raw: Path) -> None:
    errors = {}
    for args in (("index", "--model", tiny_artifact, "--raw", tiny_raw),  # no towers yet
                 ("train-retrieval", "--features", tiny_raw, "--model", tiny_artifact)):  # not a features folder
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        errors[args[0]] = result.stderr
    assert "recsys train-retrieval" in errors["index"] and "build-features" in errors["train-retrieval"]
