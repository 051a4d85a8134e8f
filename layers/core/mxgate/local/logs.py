"""Logs shaped like Mail Manager's vended logs, as JSON lines under $MXGATE_HOME/logs/.

ingress.jsonl: one record per accepted message; traffic-policy.jsonl: one per recipient with
each statement's evaluation; rule-set.jsonl: one per message per action. Each record is one
write() of one line in append mode, so several processes can share a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mxgate.adapters.local.files import append_line

INGRESS = "ingress.jsonl"
TRAFFIC_POLICY = "traffic-policy.jsonl"
RULE_SET = "rule-set.jsonl"


class VendedLogs:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, record: Mapping[str, object]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str)
        # bytes that were not UTF-8 (kept as surrogates) become JSON's \udcXX escapes
        append_line(self.directory / name, line.encode("utf-8", "backslashreplace"))
