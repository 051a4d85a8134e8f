"""Scratch directories for the benches: removed when the bench is done with them, or kept when
MXGATE_BENCH_KEEP names a directory to make them in (`make bench` keeps every script's until the
last script has run, then removes them all).

Why keep them: on ext4 without a journal (this machine's) a new file's inode search steps over
every inode of its block group freed in the last minute or so, so a bench that ran right after
another removed its homes paid up to 1 ms of system time a new file instead of ~50 us
(docs/benchmarks.md, "Files a message"). Removing each script's directories as it ends put that
cost on the next script's figures, and more on mxgate's (2 new files a message) than on
Postfix's. What `make bench` leaves is removed in one go at its end: do not start a measurement
in the minute after.

Each directory is also marked the top of a directory hierarchy (`chattr +T`): ext4's allocator
then puts each directory made in it (a gateway's home, Postfix's queue) in a block group of its
own, instead of next to its parent's with every other directory under /tmp. Without it Postfix's
passes freed their queue files' inodes in the group the mxgate passes made their files in next.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KEEP = "MXGATE_BENCH_KEEP"


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A new directory for one bench's files, gone at the end unless MXGATE_BENCH_KEEP is set."""
    keep = os.environ.get(KEEP)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield _top(Path(tempfile.mkdtemp(prefix=prefix, dir=keep)))
        return
    directory = _top(Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _top(directory: Path) -> Path:
    """`directory`, marked the top of a hierarchy where the file system knows the flag (ext2-4;
    elsewhere the mark is skipped and nothing else changes)."""
    subprocess.run(
        ["chattr", "+T", str(directory)],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return directory
