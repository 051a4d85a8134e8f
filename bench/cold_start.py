"""Cold start of each Lambda function, in a fresh interpreter each run: its module's import, its
first invoke's initialisation (the composition root: settings, routes, adapters, and
`import boto3`, which the first AWS call makes), and where events/ holds the function's event,
the handler's first parse of it (the input model's first validation: models are built on first
use). Against the reference: a bare function's `from aws_lambda_powertools import Logger,
Metrics`, `import boto3`, `Logger()` and `Metrics()`, in a fresh interpreter too.

Left out of both sides: client creation and AWS calls (any function that calls AWS pays them,
on its first call; reading a secret is one), and the step's own work.

Both sides run from compiled bytecode, as pip leaves installed packages: a first pass, not
counted, compiles everything into a temporary cache (PYTHONPYCACHEPREFIX), so mxgate's sources
are not compiled on every run while powertools' and boto3's come compiled.

Figures are CPU time (`time.process_time`), which load from other users of a shared machine
moves far less than wall time; wall time is printed beside it. Passes alternate (reference,
then a function, then the reference again ...) so load falls on both sides; each figure is the
median of `--runs` passes. The floor line is the reference plus `from pydantic import BaseModel`
and one small model validated: what a function that reads its event with pydantic cannot go
under.

With `--layer-bytecode`, the layer as Lambda unzips it instead: the core layer's packages
(layers/core/requirements.txt and what they require, and mxgate) and the functions copied into a
directory, every file dated 1980 as SAM's zip dates it, bytecode not written; passes alternate
that tree without bytecode (what `sam build` ships: every cold start compiles each module it
imports) and the same tree with the hash-based bytecode `make sam-build` compiles. boto3 comes
compiled on both sides, as the runtime's does. The floor runs from the same trees (pydantic is
in the layer), so each function is read against the reference and against the floor.

    .venv/bin/python bench/cold_start.py [--runs 5] [--json] [--layer-bytecode]
"""

from __future__ import annotations

import argparse
import compileall
import importlib.metadata
import json
import os
import py_compile
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from scratch import scratch

REPO = Path(__file__).resolve().parent.parent

# Each program prints CPU seconds, then wall seconds, at each of its marks.
CLOCKS = """
import time
cpu, wall = time.process_time(), time.perf_counter()
def mark():
    print(time.process_time() - cpu, time.perf_counter() - wall, end=" ")
"""

REFERENCE = (
    CLOCKS
    + """
from aws_lambda_powertools import Logger, Metrics
import boto3
Logger()
Metrics()
mark()
"""
)

FLOOR = (
    REFERENCE
    + """
from pydantic import BaseModel
class Floor(BaseModel):
    name: str
    count: int = 0
Floor.model_validate({"name": "x"})
mark()
"""
)

FUNCTION = (
    CLOCKS
    + """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
mark()
{init}
import boto3
mark()
if len(sys.argv) > 2:
    event = json.loads(open(sys.argv[2]).read())
    {first_event}
mark()
"""
)


@dataclass(frozen=True)
class FirstInvoke:
    """What a function's first invoke builds before its first AWS call, and how its handler
    reads its event (`event`) when events/ has one."""

    init: str = "module.services()"
    event: str | None = None
    first_event: str = "pass"


FIRST_INVOKE = {
    "dead_letter": FirstInvoke(
        event="dead-letter.json", first_event="module.DEAD_LETTER_INPUT.validate_python(event)"
    ),
    "defer": FirstInvoke(),
    "deliver": FirstInvoke(
        event="deliver.json", first_event="module.DeliverInput.model_validate(event)"
    ),
    "process": FirstInvoke(
        event="process.json", first_event="module.ProcessInput.model_validate(event)"
    ),
    "provider_events": FirstInvoke(
        event="ses-delivery.json", first_event="module.provider_event(event)"
    ),
    # the common path: a half of a message (services() is the arrival checks')
    "start": FirstInvoke(
        init="module.arrival_join(); module.settings()",
        event="s3-object-created.json",
        first_event="module.read_arrival(event, module.settings().mail_manager_hosts)",
    ),
    "redeliver": FirstInvoke(init="module.consumer()"),
    # downloads() reads the link key's secret first: an AWS call
    "download": FirstInvoke(init="from mxgate.adapters.aws.settings import settings\nsettings()"),
    # the routes file, before the address list is read (an AWS call)
    "recipients_sync": FirstInvoke(
        init=(
            "from mxgate.adapters.aws.settings import settings\n"
            "from mxgate.adapters.aws.address_lists import MailManagerAddressLists\n"
            "from mxgate.routing.recipients import sync_directory\n"
            "from mxgate.routing.routes import load_routes\n"
            "load_routes(settings().routes_file, settings().routes_parameters)"
        )
    ),
    # the routes file checked against the stack's domains, before the response is sent
    "routes_check": FirstInvoke(
        init=(
            "config = module.settings()\n"
            "module.load_checked_routes(config.routes_file, config.routes_parameters, {})"
        )
    ),
}


def environment(scratch: Path, layer: Path | None = None) -> dict[str, str]:
    """What template.yaml sets on the functions (its plain Globals variables, and
    tests.support's offline settings: this repository's routes file in the JSON form the
    functions read, written into `scratch`, with samconfig.toml's parameters); no secrets:
    reading one is an AWS call, left out as client creation is. Bytecode is written to
    `scratch`, or with `layer` (its packages first on the path) never written, as on Lambda's
    read-only layers."""
    sys.path.insert(0, str(REPO))  # tests.support, as bench/cost.py imports tests
    from mxgate.mailmanager.template import read_template  # noqa: PLC0415 -- not in the runs
    from tests.support import offline_function_environment, routes_json  # noqa: PLC0415

    variables = read_template(REPO / "template.yaml")["Globals"]["Function"]["Environment"]
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {
        **inherited,
        **{k: v for k, v in variables["Variables"].items() if isinstance(v, str)},
        **offline_function_environment(routes_json(scratch)),
        **({"PYTHONPYCACHEPREFIX": str(scratch)} if layer is None else {}),
        **({"PYTHONPATH": str(layer), "PYTHONDONTWRITEBYTECODE": "1"} if layer else {}),
    }


SAM_ZIP_DATE = 315532800  # 1980-01-01 00:00 UTC, every file's date in SAM's zip


def layer_distributions() -> list[importlib.metadata.Distribution]:
    """The installed distributions the core layer ships: its requirements and theirs."""
    lines = (REPO / "layers" / "core" / "requirements.txt").read_text().splitlines()
    pending = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    found: dict[str, importlib.metadata.Distribution] = {}
    while pending:
        requirement = pending.pop()
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in found:
            continue
        found[name] = importlib.metadata.distribution(requirement.name)
        for text in found[name].requires or []:
            needed = Requirement(text)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                pending.append(needed)
    return list(found.values())


def layer_tree(root: Path) -> Path:
    """The layer's `python/` directory and the functions, as Lambda unzips them: no bytecode,
    each file dated 1980. Returns the `python/` directory (the functions are beside it)."""
    python = root / "python"
    python.mkdir(parents=True)
    no_bytecode = shutil.ignore_patterns("__pycache__", "*.pyc")
    for distribution in layer_distributions():
        base = Path(str(distribution.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in distribution.files or [] if ".." not in str(f)}
        for top in tops - {"__pycache__"}:
            source, target = base / top, python / top
            if source.is_dir() and not target.exists():
                shutil.copytree(source, target, ignore=no_bytecode)
            elif source.is_file() and source.suffix != ".pyc":
                shutil.copy2(source, target)
    shutil.copytree(REPO / "layers" / "core" / "mxgate", python / "mxgate", ignore=no_bytecode)
    shutil.copytree(REPO / "functions", root / "functions", ignore=no_bytecode)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (SAM_ZIP_DATE, SAM_ZIP_DATE), follow_symlinks=False)
    return python


def run(env: dict[str, str], code: str, *args: str) -> list[tuple[float, float]]:
    """The (CPU, wall) seconds at each of the program's marks."""
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: the run failed\n{completed.stderr}")
    numbers = [float(x) for x in completed.stdout.split()]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def function_program(name: str, app: Path) -> tuple[str, list[str]]:
    first = FIRST_INVOKE.get(name, FirstInvoke())
    code = FUNCTION.format(init=first.init, first_event=first.first_event)
    args = [str(app)] + ([str(REPO / "events" / first.event)] if first.event else [])
    return code, args


@dataclass
class Samples:
    cpu: list[list[float]]  # per run, the CPU seconds at each mark
    wall: list[float]  # per run, the wall seconds at the last mark

    def median(self, mark: int) -> float:
        return statistics.median(run[mark] for run in self.cpu)


def sample(samples: Samples, marks: list[tuple[float, float]]) -> None:
    samples.cpu.append([cpu for cpu, _ in marks])
    samples.wall.append(marks[-1][1])


def layer_bytecode(runs: int, as_json: bool) -> None:
    """The reference and each function from the layer tree, without and with hash-based
    bytecode, alternating: the CPU time the bytecode saves each cold start."""
    with scratch("mxgate-layer-") as work:
        source = layer_tree(work / "source")
        hashed_root = work / "hash"
        shutil.copytree(source.parent, hashed_root, symlinks=True)
        compileall.compile_dir(
            hashed_root,
            quiet=1,
            force=True,
            workers=0,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        envs = {
            "source": environment(work, source),
            "hash": environment(work, hashed_root / "python"),
        }
        programs = {
            "reference": {kind: (REFERENCE, []) for kind in envs},
            "floor": {kind: (FLOOR, []) for kind in envs},
        } | {
            app.parent.name: {
                kind: function_program(
                    app.parent.name, root / "functions" / app.parent.name / "app.py"
                )
                for kind, root in (("source", source.parent), ("hash", hashed_root))
            }
            for app in sorted((REPO / "functions").glob("*/app.py"))
        }
        cpu: dict[str, dict[str, list[float]]] = {name: {k: [] for k in envs} for name in programs}
        for _ in range(runs):
            for name, by_kind in programs.items():
                for kind, (code, program_args) in by_kind.items():
                    cpu[name][kind].append(run(envs[kind], code, *program_args)[-1][0])
    rows = {
        name: {kind: statistics.median(samples) for kind, samples in by_kind.items()}
        for name, by_kind in cpu.items()
    }
    if as_json:
        print(json.dumps({"cold_start_s": rows}, indent=2))
        return
    print(
        f"cold start from the layer as Lambda unzips it (files dated 1980, no bytecode written), "
        f"CPU time, median of {runs} alternating passes"
    )
    base, floor = rows["reference"], rows["floor"]
    print(
        f"  {'':<16} {'no bytecode':>12} {'vs ref':>7} {'vs floor':>9} "
        f"{'hash bytecode':>14} {'vs ref':>7} {'vs floor':>9} {'saved':>8}"
    )
    for name, row in rows.items():
        print(
            f"  {name:<16} {row['source'] * 1000:>9.0f} ms {row['source'] / base['source']:>6.2f}x "
            f"{row['source'] / floor['source']:>8.2f}x "
            f"{row['hash'] * 1000:>11.0f} ms {row['hash'] / base['hash']:>6.2f}x "
            f"{row['hash'] / floor['hash']:>8.2f}x "
            f"{(row['source'] - row['hash']) * 1000:>5.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    parser.add_argument(
        "--layer-bytecode",
        action="store_true",
        help="the layer's files dated 1980: without and with hash-based bytecode",
    )
    args = parser.parse_args()
    if args.layer_bytecode:
        layer_bytecode(args.runs, args.json)
        return
    apps = sorted((REPO / "functions").glob("*/app.py"))
    with scratch("mxgate-bytecode-") as cache:
        env = environment(Path(cache))
        programs = {app.parent.name: function_program(app.parent.name, app) for app in apps}
        run(env, FLOOR)  # the first pass compiles; not counted
        for code, program_args in programs.values():
            run(env, code, *program_args)
        reference, floor = Samples([], []), Samples([], [])
        functions = {name: Samples([], []) for name in programs}
        for _ in range(args.runs):
            sample(floor, run(env, FLOOR))
            for name, (code, program_args) in programs.items():
                sample(reference, run(env, REFERENCE))
                sample(functions[name], run(env, code, *program_args))
    base, base_wall = reference.median(0), statistics.median(reference.wall)
    rows = {
        name: {
            "import_s": s.median(0),
            "init_s": s.median(1) - s.median(0),
            "first_event_s": s.median(2) - s.median(1),
            "cold_start_s": s.median(2),
            "spread_s": max(r[2] for r in s.cpu) - min(r[2] for r in s.cpu),
            "vs_reference": s.median(2) / base,
            "wall_s": statistics.median(s.wall),
            "wall_vs_reference": statistics.median(s.wall) / base_wall,
        }
        for name, s in functions.items()
    }
    floor_s = floor.median(1)
    if args.json:
        print(
            json.dumps(
                {
                    "reference_s": base,
                    "reference_wall_s": base_wall,
                    "floor_s": floor_s,
                    "floor_vs_reference": floor_s / base,
                    "functions": rows,
                },
                indent=2,
            )
        )
        return
    print(
        f"cold start, fresh interpreter, CPU time, median of {args.runs} alternating passes "
        f"(reference: powertools Logger + Metrics + boto3 import, {base * 1000:.0f} ms CPU, "
        f"spread {(max(r[0] for r in reference.cpu) - min(r[0] for r in reference.cpu)) * 1000:.0f}"
        f" ms; {base_wall * 1000:.0f} ms wall)"
    )
    print(
        f"  floor: reference + pydantic and one model validated   {floor_s * 1000:>5.0f} ms"
        f"  {floor_s / base:>5.2f}x"
    )
    print(
        f"  {'function':<16} {'import':>7} {'+ init':>7} {'+ event':>8} {'= CPU':>7} "
        f"{'spread':>7} {'vs ref':>7}   {'wall':>7} {'vs ref':>7}"
    )
    for name, row in rows.items():
        print(
            f"  {name:<16} {row['import_s'] * 1000:>4.0f} ms {row['init_s'] * 1000:>4.0f} ms "
            f"{row['first_event_s'] * 1000:>5.0f} ms {row['cold_start_s'] * 1000:>4.0f} ms "
            f"{row['spread_s'] * 1000:>4.0f} ms {row['vs_reference']:>6.2f}x   "
            f"{row['wall_s'] * 1000:>4.0f} ms {row['wall_vs_reference']:>6.2f}x"
        )


if __name__ == "__main__":
    main()
