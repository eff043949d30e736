"""schemathesis against the gateway's own OpenAPI schema: no generated request may cause a 5xx,
and every error answer uses the one /api error shape."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.servers import GatewayProcess, MockUpstream, create_key


@pytest.fixture(scope="module")
def schema_gateway(tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("schema") / "data", mock_upstream.url)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def schema_key(schema_gateway: GatewayProcess) -> str:
    key = create_key(schema_gateway.data_dir, "schema-org")
    for n in range(5):  # some data so list and detail routes have something to chew on
        httpx.post(schema_gateway.url + "/v1/chat/completions", timeout=30,
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"schema {n}"}]},
                   headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": f"schema-user-{n}",
                            "Helicone-Property-Plan": "pro"})
    schema_gateway.wait_for_requests(key, 5)
    return key


@pytest.fixture(scope="module")
def api_schema(schema_gateway: GatewayProcess) -> schemathesis.BaseSchema:
    document = httpx.get(schema_gateway.url + "/openapi.json", timeout=30).json()
    # Only the JSON API: the proxy and dashboard routes are not described as an API contract.
    document["paths"] = {p: v for p, v in document["paths"].items() if p.startswith("/api/")}
    return schemathesis.openapi.from_dict(document)


def test_api_never_answers_5xx(
    api_schema: schemathesis.BaseSchema, schema_gateway: GatewayProcess, schema_key: str
) -> None:
    # schemathesis' pytest plugin does not load under this pytest; drive its strategies directly.
    checked = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=schema_gateway.url, headers={"Authorization": f"Bearer {schema_key}"},
                                 timeout=30)
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
            content_type = str(response.headers.get("content-type", ""))  # schemathesis gives lists
            if response.status_code >= 400 and "application/json" in content_type:
                error = response.json().get("error")
                assert isinstance(error, dict) and {"status", "message", "param"} <= set(error), (where, response.text[:300])

        run()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert "GET /api/requests" in checked, checked


def test_openapi_docs_are_served(schema_gateway: GatewayProcess) -> None:
    assert httpx.get(schema_gateway.url + "/docs", timeout=30).status_code == 200
    paths = httpx.get(schema_gateway.url + "/openapi.json", timeout=30).json()["paths"]
    assert "/api/requests" in paths


