"""The published OpenAPI schema is strict and true: what it forbids is refused (422 naming the field),
what it allows is served, its limits are the enforced ones, and /docs works without internet."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings

from .conftest import AUTH

ROW = {"user_id": "u1", "item_id": "v1"}


def _schema(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()["components"]["schemas"]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/recommendations", {"user_id": "u1", "candidates": [0]}, "candidates.0"),
    ("/v1/recommendations", {"user_id": 7}, "user_id"),
    ("/v1/recommendations", {"user_id": "u1", "context": {"timestamp": True}}, "context.timestamp"),
    ("/v1/recommendations", {"user_id": "u1", "context": {"timestamp": "1767225769"}}, "context.timestamp"),
    ("/v1/recommendations", {"user_id": "u1", "k": "10"}, "k"),
    ("/v1/recommendations", {"user_id": "u1", "k": True}, "k"),
    ("/v1/recommendations", {"user_id": "u1", "k": 3.5}, "k"),  # 3.0 is an integer for JSON Schema: accepted
    ("/v1/score", {"rows": [ROW], "explain": "yes"}, "explain"),
    ("/v1/score", {"rows": [ROW], "explain": 1}, "explain"),
    ("/v1/score", {"rows": [{"user_id": "u1", "item_id": 1}]}, "rows.0.item_id"),
])
def test_values_of_another_json_type_are_refused_not_coerced(client: TestClient, path: str, body: dict,
                                                             field: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"][0]["field"] == field


def test_the_published_limits_are_the_enforced_ones(client: TestClient, settings: ServiceSettings) -> None:
    s = _schema(client)
    rec = s["RecommendRequest"]["properties"]
    assert rec["k"]["maximum"] == settings.max_k == 20
    assert rec["candidates"]["anyOf"][0]["maxItems"] == settings.max_candidates == 50
    assert rec["user_id"]["maxLength"] == 256
    assert s["ScoreRequest"]["properties"]["rows"]["maxItems"] == settings.max_candidates
    assert s["EventsRequest"]["properties"]["events"]["maxItems"] == settings.max_events
    k_max = {"user_id": "u1", "k": settings.max_k}
    assert client.post("/v1/recommendations", json=k_max).status_code == 200
    assert client.post("/v1/recommendations", json={**k_max, "k": settings.max_k + 1}).status_code == 422
    rows = [ROW] * settings.max_candidates
    assert client.post("/v1/score", json={"rows": rows}).status_code == 200
    assert client.post("/v1/score", json={"rows": [*rows, ROW]}).status_code == 422


def test_the_default_limits_are_published_too(tiny_artifact: Path, tiny_raw: Path) -> None:
    """k up to RECSYS_MAX_K (1000) is allowed by default, and said so (it once was refused above 20)."""
    with TestClient(create_app(ServiceSettings(model_dir=tiny_artifact, raw_dir=tiny_raw))) as c:
        assert _schema(c)["RecommendRequest"]["properties"]["k"]["maximum"] == 1000
        assert c.post("/v1/recommendations", json={"user_id": "u1", "k": 1000}).status_code == 200


def test_context_lists_the_fields_the_loaded_model_reads_with_their_types(client: TestClient) -> None:
    ctx = _schema(client)["Context"]
    assert set(ctx["properties"]) == {"timestamp", "device"} and ctx["additionalProperties"] is False
    assert {t["type"] for t in ctx["properties"]["device"]["anyOf"]} == {"string", "integer", "boolean", "null"}
    ok = client.post("/v1/recommendations", json={"user_id": "u1", "context": {"device": "ios", "timestamp": 5}})
    assert ok.status_code == 200
    r = client.post("/v1/recommendations", json={"user_id": "u1", "context": {"device": 1.5}})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "context.device"


@pytest.mark.parametrize(("body", "field"), [
    ({"user_id": "u" * 257}, "user_id"),
    ({"user_id": "u1", "candidates": ["v" * 257]}, "candidates.0"),
    ({"user_id": "u1", "context": {"device": "x" * 257}}, "context.device"),
    ({"user_id": "u1", "context": {f"f{i}": 1 for i in range(65)}}, "context"),
])
def test_every_string_and_list_is_bounded(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"][0]["field"] == field


def test_a_lone_surrogate_is_refused_as_invalid_text(client: TestClient) -> None:
    r = client.post("/v1/recommendations", content=b'{"user_id": "\\ud800"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "user_id"


@pytest.fixture(scope="module")
def default_client(tiny_artifact: Path, tiny_raw: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServiceSettings(model_dir=tiny_artifact, raw_dir=tiny_raw))) as c:
        yield c


def test_a_huge_context_string_with_many_candidates_is_refused_before_any_work(default_client: TestClient) -> None:
    """The attack of issue 10 item 4: 800,000 characters of context and 2,000 candidates, under the
    default 1 MiB body limit. It once took seconds of server time; now the schema refuses it."""
    body = {"user_id": "u1", "context": {"device": "x" * 800_000}, "candidates": [f"v{i}" for i in range(2000)]}
    r = default_client.post("/v1/recommendations", json=body)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "context.device"
    assert "at most 256" in r.json()["error"]["message"]


def test_repeated_candidates_come_back_once(client: TestClient) -> None:
    r = client.post("/v1/recommendations", json={"user_id": "u1", "candidates": ["v1", "v2", "v1", "v1"], "k": 4})
    ids = [i["item_id"] for i in r.json()["items"]]
    assert sorted(ids) == ["v1", "v2"]


def test_docs_and_redoc_load_their_assets_from_the_service(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert urls and all(u.startswith("/") for u in urls), urls
        for url in urls:
            assert client.get(url).status_code == 200, url
    for license_file in ("swagger-ui-bundle.js.LICENSE.txt", "redoc.standalone.js.LICENSE.txt",
                         "LICENSE-swagger-ui.txt"):
        assert client.get(f"/docs-assets/{license_file}").status_code == 200


def test_the_security_scheme_is_published_for_the_admin_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "AdminToken" in spec["components"]["securitySchemes"]
    assert spec["paths"]["/admin/reload"]["post"]["security"] == [{"AdminToken": []}]
    assert {} in spec["paths"]["/v1/score"]["post"]["security"]  # optional: only `explain` needs it
    assert client.post("/admin/reload", headers=AUTH, json={"model_dir": "../x"}).status_code == 403
