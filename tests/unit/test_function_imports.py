"""A function's module does no work at import (a cold start pays only for imports): no settings
read, no routes loaded, no boto3 client made. Each app.py is imported in a fresh interpreter
with neither MXGATE_* nor AWS_* in its environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import REPO

IMPORT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps({"boto3": "boto3" in sys.modules, "handler": callable(module.handler)}))
"""


@pytest.mark.parametrize(
    "app", sorted((REPO / "functions").glob("*/app.py")), ids=lambda p: p.parent.name
)
def test_importing_a_function_reads_nothing_and_creates_no_client(app):
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MXGATE_", "AWS_", "POWERTOOLS_"))
    }
    result = subprocess.run(
        [sys.executable, "-c", IMPORT, str(app)],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"boto3": false, "handler": true}'
