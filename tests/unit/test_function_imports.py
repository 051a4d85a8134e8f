"""A function's module does no work at import (a cold start pays only for imports): no settings
read, no routes loaded, no boto3 client made. Each app.py is imported in a fresh interpreter
with neither MXGATE_* nor AWS_* in its environment. Importing a function and building its
composition root imports its own step's modules, not those of the others or of the other
runtimes (no timed assertion: bench/cold_start.py measures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, offline_function_environment, routes_json

IMPORT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import gc
print(json.dumps({
    "boto3": "boto3" in sys.modules,
    "handler": callable(module.handler),
    "collecting": gc.isenabled(),
    "imports_frozen": gc.get_freeze_count() > 0,
}))
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
    # collection is paused during the imports and back on after them, with what they made
    # frozen (never scanned again): no full collection over boto3's objects at the first call
    assert json.loads(run_app(IMPORT, app, environment)) == {
        "boto3": False,
        "handler": True,
        "collecting": True,
        "imports_frozen": True,
    }


# What each function's import and first-invoke composition root build (bench/cold_start.py
# measures the same), in a fresh interpreter with the template's environment.
ROOTS = {
    "start": "module.arrival_join(); module.settings()",
    "redeliver": "module.consumer()",
    "download": "from mxgate.adapters.aws.settings import settings; settings()",
    "recipients_sync": (
        "from mxgate.adapters.aws.address_lists import MailManagerAddressLists; "
        "from mxgate.routing.recipients import sync_directory"
    ),
    "routes_check": "pass",
}
LOADED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
{root}
print(json.dumps(sorted(sys.modules)))
"""
# No function imports these: the other runtimes' and the operators' code, the whole table of
# steps, the powertools parser's event models, dnspython (at the first lookup, Process's),
# cryptography (when sealing) and PyYAML (they read the routes file's JSON form).
NO_FUNCTION = {
    "mxgate.local",
    "mxgate.cli",
    "mxgate.sandbox",
    "mxgate.desk",
    "mxgate.console",
    "mxgate.cutover",
    "mxgate.mailmanager.template",
    "mxgate.adapters.aws.operator",
    "mxgate.workflow.steps",
    "aws_lambda_powertools.utilities.parser.models",
    "dns",
    "cryptography",
    "yaml",
}
# The functions that run on the composition root's Services.
STEPS = {"dead_letter", "defer", "deliver", "process", "provider_events", "start"}
# Each step's own modules, imported by its function alone.
OWN = {
    "mxgate.workflow.process": {"process"},
    "mxgate.authn.model": {"process"},  # the sender checks: ProcessOutput's
    "mxgate.authn.check": set(),  # Process's, on its first message
    # a mailbox delivery reads the header section alone: Deliver imports the parser, the
    # sender policy (SES's), DSNs and app events on the paths that use them
    "mxgate.message.parse": {"process"},
    "mxgate.message.model": {"process"},
    "mxgate.delivery.sender": set(),
    "mxgate.delivery.appevent": set(),
    # the DSN builder (and the email package's policy and MIME classes): a bounce, or an
    # expiry's DSN (Defer, DeadLetter), when one is sent
    "mxgate.message.dsn": set(),
    "mxgate.workflow.deliver": {"deliver"},
    "mxgate.workflow.arrival": {"start"},
    "mxgate.adapters.aws.arrivals": {"start"},
    "aws_lambda_powertools.utilities.batch": {"redeliver"},  # Start's with its first check
    # the composition root's adapters, the routes file and the records: the functions that
    # build them (Download checks links, Redeliver starts executions)
    "mxgate.workflow.services": STEPS,
    "mxgate.routing.routes": STEPS | {"recipients_sync", "routes_check"},
    "mxgate.records": STEPS | {"redeliver"},
}


def run_app(code: str, app: Path, environment: dict[str, str]) -> str:
    """What `code` prints, run in a fresh interpreter on the function's app.py."""
    result = subprocess.run(
        [sys.executable, "-c", code, str(app)],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def loaded_by(app: Path, tmp_path: Path) -> set[str]:
    root = ROOTS.get(app.parent.name, "module.services()")
    environment = {**os.environ, **offline_function_environment(routes_json(tmp_path))}
    return set(json.loads(run_app(LOADED.format(root=root), app, environment)))


@pytest.mark.parametrize(
    "app", sorted((REPO / "functions").glob("*/app.py")), ids=lambda p: p.parent.name
)
def test_a_function_imports_its_own_step_and_nothing_it_does_not_run(app, tmp_path):
    modules = loaded_by(app, tmp_path)
    name = app.parent.name
    assert not {m for m in modules if any(m == p or m.startswith(f"{p}.") for p in NO_FUNCTION)}
    assert {m for m in OWN if m in modules} == {m for m, owners in OWN.items() if name in owners}
