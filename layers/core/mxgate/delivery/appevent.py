"""The event an application receives for a message: the parsed message as JSON, with the raw
message and each attachment as object-store references (and links: presigned URLs on AWS).

Attachments are stored content-addressed (`attachments/<sha256>`) in the message's bucket, so
a message handed to two apps, or redelivered, stores each attachment once. An event larger than
EventBridge takes (256 KB an entry) is stored whole beside the message, and a slim event
without the bodies points to it: the same on both runtimes.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from mxgate.message.model import ParsedMessage
from mxgate.ports import ObjectStore
from mxgate.records import MessageRef

EVENT_VERSION = "1"
MAX_EVENT_BYTES = 250_000  # EventBridge: 256 KB per entry, with room for its envelope
EVENT_PREFIX = "app-events/"


def _reference(
    objects: ObjectStore, bucket: str, key: str, until: datetime | None
) -> dict[str, str]:
    return {"bucket": bucket, "key": key, "url": objects.link(bucket, key, until)}


def app_event(
    *,
    ref: MessageRef,
    parsed: ParsedMessage,
    fields: dict[str, str],
    recipients: list[str],
    objects: ObjectStore,
    received_at: str,
    links_until: datetime | None = None,
) -> dict[str, Any]:
    """`links_until`: when the links in the event stop working (the route's link_lifetime)."""
    message = parsed.model_dump(mode="json", by_alias=True)
    _link_attachments(message, objects, ref.bucket, links_until)
    return {
        "version": EVENT_VERSION,
        "message_id": ref.message_id,
        **fields,  # "app" and "recipient", or "hook" and "route"
        "recipients": recipients,
        "envelope_sender": ref.envelope_sender,
        "received_at": received_at,
        "raw": objects.link(ref.bucket, ref.key, links_until),
        "raw_object": {"bucket": ref.bucket, "key": ref.key},
        "links_expire_at": links_until.isoformat() if links_until else None,
        "message": message,
    }


def _link_attachments(
    message: dict[str, Any], objects: ObjectStore, bucket: str, until: datetime | None
) -> None:
    """Each stored attachment, attached messages' too, gets its object reference and a link."""
    for attachment in message["attachments"]:
        if attachment.get("key"):
            attachment["object"] = {"bucket": bucket, "key": attachment["key"]}
            attachment["url"] = objects.link(bucket, attachment["key"], until)
        if attachment.get("message"):
            _link_attachments(attachment["message"], objects, bucket, until)


def fit_event(
    event: dict[str, Any], *, objects: ObjectStore, bucket: str, name: str
) -> dict[str, Any]:
    """The event itself if small enough; otherwise a slim one pointing at the stored whole."""
    body = json.dumps(event, ensure_ascii=False).encode()
    if len(body) <= MAX_EVENT_BYTES:
        return event
    key = f"{EVENT_PREFIX}{name}.json"
    objects.put(bucket, key, body, {"content-type": "application/json"})
    until = event.get("links_expire_at")
    message = {k: v for k, v in event["message"].items() if k not in ("text", "html")}
    slim = {
        **event,
        "message": message,
        "truncated": True,
        "full_event": _reference(
            objects, bucket, key, datetime.fromisoformat(until) if isinstance(until, str) else None
        ),
    }
    if len(json.dumps(slim, ensure_ascii=False).encode()) > MAX_EVENT_BYTES:
        slim["message"] = {k: message[k] for k in ("message_id", "subject", "from", "to", "size")}
    return slim
