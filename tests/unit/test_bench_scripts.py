"""Every bench script imports: `make bench` runs them one after another, so a name one takes
from another (outage.py from deferral.py) that is gone would otherwise show only at the end of
a long run."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCH.glob("*.py")))
def test_a_bench_script_imports(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # they import each other, as `make bench` runs them
    sys.modules.pop(script, None)
    assert importlib.import_module(script).__file__ == str(BENCH / f"{script}.py")
