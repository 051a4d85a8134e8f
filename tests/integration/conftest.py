"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.delivery_harness import BenchFactory, bench_factory


@pytest.fixture
def benches(tmp_path: Path) -> Iterator[BenchFactory]:
    yield from bench_factory(tmp_path)
