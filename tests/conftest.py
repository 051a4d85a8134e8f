"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import RunningGateway, local_config, start_gateway


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[RunningGateway] = []

    def start(**config_overrides: Any) -> RunningGateway:
        home = tmp_path / f"home{len(started)}"
        config_dir = tmp_path / f"config{len(started)}"
        config_dir.mkdir()
        gateway = start_gateway(home, local_config(config_dir, **config_overrides))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
