"""`sam build` of template.yaml, as `make sam-build` runs it: the layer carries the mxgate
package and its dependencies built for the functions' architecture, each function its app.py.

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
        **os.environ,
        "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}",
        "SAM_CLI_TELEMETRY": "0",
    }
    result = subprocess.run(
        [str(sam), "build", "--template", str(TEMPLATE), "--build-dir", str(build)],
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
