"""Cold start of each Lambda function: its module's import and its first invoke's initialisation
(the composition root: settings, routes, adapters; and `import boto3`, which the first AWS call
makes), each in a fresh interpreter, against the reference: a bare function's
`from aws_lambda_powertools import Logger, Metrics`, `import boto3`, `Logger()` and `Metrics()`
in a fresh interpreter too. Client creation is left out of both: any function that calls AWS
pays it, on its first call.

Passes alternate (reference, then each function, then the reference again ...), so load on a
shared machine falls on both sides; each figure is the median of `--runs` passes, with the
spread (max - min).

    .venv/bin/python bench/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

REFERENCE = """
import time
started = time.perf_counter()
from aws_lambda_powertools import Logger, Metrics
import boto3
Logger()
Metrics()
print(time.perf_counter() - started)
"""

# What each function's first invoke builds before its first AWS call.
FIRST_INVOKE = {
    "start": "module.arrival_join(); module.services()",
    "redeliver": "module.consumer()",
}

FUNCTION = """
import time
started = time.perf_counter()
import importlib.util, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
imported = time.perf_counter() - started
{first_invoke}
import boto3
print(imported, time.perf_counter() - started)
"""


def environment() -> dict[str, str]:
    """What template.yaml sets on the functions, with this repository's routes file and its
    placeholders' values from samconfig.toml (`sam deploy`'s); no secrets: reading one is an
    AWS call, left out as client creation is."""
    from mxgate.mailmanager.template import (  # noqa: PLC0415 -- the bench's process, not the runs
        Resolver,
        read_samconfig_parameters,
        read_template,
        routes_parameters,
    )

    resolver = Resolver(
        read_template(REPO / "template.yaml"), read_samconfig_parameters(REPO / "samconfig.toml")
    )
    return {
        **os.environ,
        "MXGATE_ROUTES_PARAMETERS": json.dumps(routes_parameters(resolver)),
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "mxgate",
        "POWERTOOLS_METRICS_NAMESPACE": "mxgate",
        "MXGATE_ROUTES_FILE": str(REPO / "config" / "routes.yaml"),
        "MXGATE_RAW_BUCKET": "raw-mail",
        "MXGATE_STATE_TABLE": "state",
        "MXGATE_DEAD_LETTER_QUEUE": "https://sqs.us-east-1.amazonaws.com/1/dead-letters",
        "MXGATE_DEFER_QUEUE": "https://sqs.us-east-1.amazonaws.com/1/defer",
        "MXGATE_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:1:stateMachine:pipeline",
        "MXGATE_ARRIVAL_CHECK_QUEUE": "https://sqs.us-east-1.amazonaws.com/1/arrival-check",
        "MXGATE_UNSTARTED_QUEUE": "https://sqs.us-east-1.amazonaws.com/1/unstarted",
    }


def run(code: str, *args: str) -> list[float]:
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=environment(),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [float(x) for x in completed.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    args = parser.parse_args()
    apps = sorted((REPO / "functions").glob("*/app.py"))
    reference: list[float] = []
    imports: dict[str, list[float]] = {a.parent.name: [] for a in apps}
    totals: dict[str, list[float]] = {a.parent.name: [] for a in apps}
    for _ in range(args.runs):
        for app in apps:
            reference.append(run(REFERENCE)[0])
            name = app.parent.name
            code = FUNCTION.format(first_invoke=FIRST_INVOKE.get(name, "module.services()"))
            imported, total = run(code, str(app))
            imports[name].append(imported)
            totals[name].append(total)
    base = statistics.median(reference)
    rows = {
        name: {
            "import_s": statistics.median(imports[name]),
            "cold_start_s": statistics.median(totals[name]),
            "spread_s": max(totals[name]) - min(totals[name]),
            "vs_reference": statistics.median(totals[name]) / base,
        }
        for name in imports
    }
    if args.json:
        print(json.dumps({"reference_s": base, "functions": rows}, indent=2))
        return
    print(
        f"cold start, fresh interpreter, median of {args.runs} alternating passes "
        f"(reference: powertools Logger + Metrics + boto3 import, {base * 1000:.0f} ms, "
        f"spread {(max(reference) - min(reference)) * 1000:.0f} ms)"
    )
    print(f"  {'function':<12} {'import':>9} {'+ init':>9} {'spread':>8} {'vs reference':>13}")
    for name, row in rows.items():
        print(
            f"  {name:<12} {row['import_s'] * 1000:>6.0f} ms {row['cold_start_s'] * 1000:>6.0f} ms "
            f"{row['spread_s'] * 1000:>5.0f} ms {row['vs_reference']:>12.2f}x"
        )


if __name__ == "__main__":
    main()
