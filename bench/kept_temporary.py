"""Run a bench with its temporary directories kept, so that no run pays for the files the one
before it deleted: ext4 without a journal (this machine's) does not reuse an inode freed in the
last minutes, and each new inode's search looks at every such inode of its group (see
docs/benchmarks.md, "Files a message ... (issue 12, session 22)"). What it keeps goes under
`--under`; remove that once the A/B runs are over.

    .venv/bin/python bench/kept_temporary.py [--under DIR] bench/worker_cpu.py --messages 300
"""

from __future__ import annotations

import argparse
import runpy
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--under", type=Path, default=Path(tempfile.gettempdir(), "mxgate-kept"))
    parser.add_argument("script", type=Path)
    parser.add_argument("arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    args.under.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(args.under)
    # the clean-up of a TemporaryDirectory: its context's exit, cleanup() and the finalizer
    tempfile.TemporaryDirectory.__exit__ = lambda *_: None  # type: ignore[method-assign,assignment]
    tempfile.TemporaryDirectory.cleanup = lambda *_: None  # type: ignore[method-assign,assignment]
    tempfile.TemporaryDirectory._cleanup = classmethod(lambda *_, **__: None)  # type: ignore[attr-defined,assignment]
    sys.argv = [str(args.script), *args.arguments]
    sys.path.insert(0, str(args.script.resolve().parent))  # the bench's own imports (harness)
    runpy.run_path(str(args.script), run_name="__main__")


if __name__ == "__main__":
    main()
