"""The key layout is a contract with every writer and reader of the store: pin it."""

from __future__ import annotations

import pytest

from recsys.store.keys import KeySpace


def test_keys_carry_prefix_feature_version_and_entity() -> None:
    ks = KeySpace("rec", "abc123")
    assert ks.user("u1") == "rec:vabc123:{u:u1}"  # the braces: a Redis Cluster hash tag (the entity)
    assert ks.item("v:9") == "rec:vabc123:{i:v:9}"
    assert ks.meta == "rec:vabc123:meta"
    assert ks.popular == "{rec:vabc123:popular}"
    assert ks.users(["a", "b"]) == ["rec:vabc123:{u:a}", "rec:vabc123:{u:b}"]
    assert ks.items(["x"]) == [ks.item("x")]


def test_two_feature_versions_never_share_a_key() -> None:
    assert KeySpace("rec", "v1").user("u") != KeySpace("rec", "v2").user("u")


@pytest.mark.parametrize("prefix", ["", "has space", "a{b}"])
def test_prefix_must_be_a_single_token(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        KeySpace(prefix, "x")
