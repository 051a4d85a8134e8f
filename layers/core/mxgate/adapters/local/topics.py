"""The Topics port on one machine: each SNS topic a JSON-lines file, `<root>/<topic>.jsonl`,
one notification a line, shaped as SNS delivers it to a subscriber."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from mxgate.adapters.local.files import append_line, safe_name
from mxgate.mailmanager.notifications import ses_timestamp
from mxgate.ports import Clock


class TopicFiles:
    def __init__(self, root: Path, clock: Clock) -> None:
        self.root = root
        self.clock = clock

    def publish(self, topic_arn: str, subject: str, message: str) -> str:
        record = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Subject": subject,
            "Message": message,
            "Timestamp": ses_timestamp(self.clock.now()),
        }
        path = self.root / f"{safe_name(topic_arn.rsplit(':', 1)[-1])}.jsonl"
        append_line(path, json.dumps(record, ensure_ascii=False).encode())
        return f"{self.root.name}/{path.name}"
