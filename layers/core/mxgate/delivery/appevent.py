"""The event an application receives for a message: the parsed message as JSON, with the raw
message and each attachment as object-store references (and links: presigned URLs on AWS).

Attachments are stored content-addressed (`attachments/<sha256>`) in the message's bucket, so
a message handed to two apps, or redelivered, stores each attachment once. An event larger than
EventBridge takes (256 KB an entry) is stored whole beside the message, and a slim event
without the bodies points to it: the same on both runtimes.
"""

from __future__ import annotations

import hashlib
import json
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from mxgate.message.model import ParsedMessage
from mxgate.ports import ObjectStore
from mxgate.workflow.model import MessageRef

EVENT_VERSION = "1"
MAX_EVENT_BYTES = 250_000  # EventBridge: 256 KB per entry, with room for its envelope
ATTACHMENT_PREFIX = "attachments/"
EVENT_PREFIX = "app-events/"


def _reference(objects: ObjectStore, bucket: str, key: str) -> dict[str, str]:
    return {"bucket": bucket, "key": key, "url": objects.link(bucket, key)}


def store_attachments(raw: bytes, objects: ObjectStore, bucket: str) -> dict[str, dict[str, str]]:
    """Each attachment's decoded bytes under `attachments/<sha256>`; references by sha256."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    stored: dict[str, dict[str, str]] = {}
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        digest = hashlib.sha256(data).hexdigest()
        if digest in stored:
            continue
        key = f"{ATTACHMENT_PREFIX}{digest}"
        if not objects.exists(bucket, key):
            objects.put(bucket, key, data, {"content-type": part.get_content_type()})
        stored[digest] = _reference(objects, bucket, key)
    return stored


def app_event(
    *,
    ref: MessageRef,
    parsed: ParsedMessage,
    fields: dict[str, str],
    recipients: list[str],
    attachments: dict[str, dict[str, str]],
    objects: ObjectStore,
    received_at: str,
) -> dict[str, Any]:
    message = parsed.model_dump(mode="json", by_alias=True)
    for attachment in message["attachments"]:
        where = attachments.get(attachment["sha256"])
        if where is not None:
            attachment["object"] = {"bucket": where["bucket"], "key": where["key"]}
            attachment["url"] = where["url"]
    return {
        "version": EVENT_VERSION,
        "message_id": ref.message_id,
        **fields,  # "app" and "recipient", or "hook" and "route"
        "recipients": recipients,
        "envelope_sender": ref.envelope_sender,
        "received_at": received_at,
        "raw": objects.link(ref.bucket, ref.key),
        "raw_object": {"bucket": ref.bucket, "key": ref.key},
        "message": message,
    }


def fit_event(
    event: dict[str, Any], *, objects: ObjectStore, bucket: str, name: str
) -> dict[str, Any]:
    """The event itself if small enough; otherwise a slim one pointing at the stored whole."""
    body = json.dumps(event, ensure_ascii=False).encode()
    if len(body) <= MAX_EVENT_BYTES:
        return event
    key = f"{EVENT_PREFIX}{name}.json"
    objects.put(bucket, key, body, {"content-type": "application/json"})
    message = {k: v for k, v in event["message"].items() if k not in ("text", "html")}
    slim = {
        **event,
        "message": message,
        "truncated": True,
        "full_event": _reference(objects, bucket, key),
    }
    if len(json.dumps(slim, ensure_ascii=False).encode()) > MAX_EVENT_BYTES:
        slim["message"] = {k: message[k] for k in ("message_id", "subject", "from", "to", "size")}
    return slim
