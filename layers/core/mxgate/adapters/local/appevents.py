"""Application events as files: `<root>/<app>/<event id>.json`, one per message and recipient."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mxgate.adapters.local.files import safe_name, write_atomically


class FileAppEvents:
    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, app: str, event_id: str, event: Mapping[str, object]) -> str:
        path = self.root / safe_name(app) / f"{safe_name(event_id)}.json"
        write_atomically(path, json.dumps(event, indent=2, ensure_ascii=False).encode())
        return str(path)
