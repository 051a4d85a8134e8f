"""`make sam-build`: the layer carries the mxgate package and its dependencies built for the
functions' architecture, each function its app.py, and every module its hash-based bytecode for
the runtime's Python (SAM's zip dates files 1980: timestamp bytecode would never validate).

Without Docker, sam build needs the runtime's own Python (python3.13) on PATH (TOOLING.md);
where it or the SAM CLI is missing, this test is skipped and says which.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mxgate.config_files import read_document
from mxgate.mailmanager.template import read_template
from tests.awsstack import TEMPLATE
from tests.support import REPO

ELF_MACHINE = {"arm64": 183, "x86_64": 62}  # e_machine of an ELF shared object


def runtime_python() -> Path | None:
    """A python3.13 that really is 3.13 (a pyenv shim may run another version)."""
    candidates = [*sorted(Path("/root/.pyenv/versions").glob("3.13*/bin/python3.13"))]
    found = shutil.which("python3.13")
    candidates += [Path(found)] if found else []
    for candidate in candidates:
        version = subprocess.run(
            [str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if version.stdout.strip() == "(3, 13)":
            return candidate
    return None


def sam_cli() -> Path | None:
    local = REPO / ".venv-sam" / "bin" / "sam"
    found = local if local.exists() else shutil.which("sam")
    return Path(found) if found else None


@pytest.mark.timeout(600)
def test_sam_build_packs_the_layer_and_the_functions(tmp_path):
    python, sam = runtime_python(), sam_cli()
    if sam is None:
        pytest.skip("sam build not run: no SAM CLI (.venv-sam/bin/sam; `make test` installs it)")
    if python is None:
        pytest.skip("sam build not run: python3.13 not found (PATH or /root/.pyenv/versions)")
    build = tmp_path / "build"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAKE")},  # not make test's
        "SAM_CLI_TELEMETRY": "0",
    }
    result = subprocess.run(
        ["make", "sam-build", f"SAM_BUILD_DIR={build}", f"PY313_BIN={python.parent}"],
        cwd=REPO,  # samconfig.toml: cached, parallel; the cache stays in .aws-sam/cache
        env=environment,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    template = read_template(TEMPLATE)
    architecture = template["Globals"]["Function"]["Architectures"][0]
    layer = build / "CoreLayer" / "python"
    assert (layer / "mxgate" / "workflow" / "steps.py").exists()
    assert (layer / "aws_lambda_powertools").is_dir()
    (extension,) = (layer / "pydantic_core").glob("_pydantic_core.*.so")
    assert "cpython-313" in extension.name
    header = extension.read_bytes()[:20]
    assert int.from_bytes(header[18:20], "little") == ELF_MACHINE[architecture]

    built = yaml.safe_load(
        (build / "template.yaml").read_text().replace("!", "")  # tags are not needed here
    )
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            code = build / built["Resources"][name]["Properties"]["CodeUri"]
            assert (code / "app.py").exists(), name
    config_layer = built["Resources"]["ConfigLayer"]["Properties"]["ContentUri"]
    assert (build / config_layer / "routes.yaml").exists()
    assert read_document(build / config_layer / "routes.json", "routes") == read_document(
        REPO / "config" / "routes.yaml", "routes"
    )

    unhashed = subprocess.run(
        [str(python), "-c", UNHASHED, str(build)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert not unhashed, f"{len(unhashed)} modules without hash-based bytecode: {unhashed[:5]}"


# Run by the runtime's Python: every module under the build directory whose bytecode is missing,
# for another Python, timestamp-based or checked at import, or not of the module's source as it is.
UNHASHED = """
import importlib.util, sys
from pathlib import Path
UNCHECKED_HASH = 0b01  # the pyc flags: hash-based, source not checked at import
modules = sorted(Path(sys.argv[1]).rglob("*.py"))
assert len(modules) > 100, modules
for module in modules:
    try:
        header = Path(importlib.util.cache_from_source(str(module))).read_bytes()[:16]
    except OSError:
        header = b""
    if (
        header[:4] != importlib.util.MAGIC_NUMBER
        or int.from_bytes(header[4:8], "little") != UNCHECKED_HASH
        or header[8:16] != importlib.util.source_hash(module.read_bytes())
    ):
        print(module)
"""
