"""The AppEvents port on EventBridge: application mail as events on a bus."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mxgate.adapters.aws.failures import transient_failures
from mxgate.errors import TransientError

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

SOURCE = "mxgate"
DETAIL_TYPE = "Application mail"


class EventBridgeAppEvents:
    def __init__(self, client: EventBridgeClient, bus: str = "default") -> None:
        self.client = client
        self.bus = bus

    def publish(self, app: str, event_id: str, event: Mapping[str, object]) -> str:
        with transient_failures(f"EventBridge event for {app}"):
            response = self.client.put_events(
                Entries=[
                    {
                        "Source": SOURCE,
                        "DetailType": DETAIL_TYPE,
                        "EventBusName": self.bus,
                        "Resources": [f"mxgate:app:{app}"],
                        "Detail": json.dumps(event),
                    }
                ]
            )
        entry = response["Entries"][0]
        if response.get("FailedEntryCount", 0) or "EventId" not in entry:
            raise TransientError(f"EventBridge refused the event: {entry.get('ErrorCode', '')}")
        return f"eventbridge:{self.bus}:{entry['EventId']}"
