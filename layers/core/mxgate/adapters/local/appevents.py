"""Application events as files: `<root>/<app>/<event id>.json`, one per message and recipient."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from mxgate.adapters.local.files import safe_name, write_atomically


class FileAppEvents:
    """An event is the app's copy of the message once its recipient is `handed_to_app`, so it
    is on disk before that is recorded, and so is what it points at (the message's objects,
    made durable by `before_publish` first): the spool file goes once the record is durable."""

    def __init__(self, root: Path, before_publish: Callable[[], None] | None = None) -> None:
        self.root = root
        self.before_publish = before_publish

    def publish(self, app: str, event_id: str, event: Mapping[str, object]) -> str:
        path = self.root / safe_name(app) / f"{safe_name(event_id)}.json"
        if self.before_publish is not None:
            self.before_publish()
        body = json.dumps(event, indent=2, ensure_ascii=False).encode()
        write_atomically(path, body, durable=True)
        return str(path)
