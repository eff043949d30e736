from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import GatewayProcess, MockUpstream, create_key


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[MockUpstream]:
    mock = MockUpstream()
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def gateway_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gw") / "data"


@pytest.fixture(scope="module")
def gateway(gateway_dir: Path, mock_upstream: MockUpstream) -> Iterator[GatewayProcess]:
    """One gateway per test module, pointed at the shared mock upstream."""
    gw = GatewayProcess(gateway_dir, mock_upstream.url)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(gateway: GatewayProcess) -> str:
    return create_key(gateway.data_dir)
