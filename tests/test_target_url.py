"""Helicone-Target-URL: only allow-listed bases, never internal addresses by surprise, no redirects."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import GatewayProcess, MockUpstream, create_key


@pytest.fixture(scope="module")
def target_gateway(tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("target") / "data"
    host_alias = f"http://{socket.gethostname()}:{mock_upstream.port}"
    gw = GatewayProcess(
        data, "http://127.0.0.1:9", "--allow-target", mock_upstream.url + "/", "--allow-target", host_alias,
    )
    yield gw
    gw.stop()


def _post(gw: GatewayProcess, key: str, target: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions", timeout=30,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "via target"}]},
        headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Target-URL": target, "Helicone-User-Id": "t-user"},
    )


def test_allow_listed_literal_target_is_proxied_and_recorded(target_gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    key = create_key(target_gateway.data_dir, "target-org")
    mock_upstream.clear()
    response = _post(target_gateway, key, mock_upstream.url)
    assert response.status_code == 200  # default OpenAI base is a closed port: it went to the target
    assert [r["path"] for r in mock_upstream.received()] == ["/v1/chat/completions"]
    assert not any(h.startswith("helicone-") for h in mock_upstream.received()[0]["headers"])
    row = target_gateway.wait_for_requests(key, 1, user_id="t-user")[0]
    assert row["status"] == 200 and row["prompt_tokens"] > 0


def test_allow_listed_name_resolving_to_loopback_is_refused(target_gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    key = create_key(target_gateway.data_dir, "target-org")
    response = _post(target_gateway, key, f"http://{socket.gethostname()}:{mock_upstream.port}")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Helicone-Target-URL"


@pytest.mark.parametrize("target", ["http://169.254.169.254", "http://10.0.0.1", "ftp://x", "not a url"],
                         ids=["metadata", "private", "scheme", "garbage"])
def test_targets_off_the_list_are_400(target_gateway: GatewayProcess, target: str) -> None:
    key = create_key(target_gateway.data_dir, "target-org")
    response = _post(target_gateway, key, target)
    assert response.status_code == 400 and "allow-list" in response.json()["error"]["message"]


def test_redirects_are_not_followed(target_gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    key = create_key(target_gateway.data_dir, "target-org")
    response = httpx.post(
        target_gateway.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []},
        headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Target-URL": mock_upstream.url, "X-Mock-Status": "307"},
    )
    assert response.status_code == 307  # passed back as the upstream said, never followed


def test_bad_allow_target_setting_is_a_clear_error(tmp_path: Path) -> None:
    from tests.servers import cli

    result = cli("serve", "--allow-target", "not a url", "--port", "1", data_dir=tmp_path, check=False)
    assert result.returncode == 1
    assert "allowed_targets" in result.stderr and "Traceback" not in result.stderr
