"""Where the pipeline keeps and finds a message's SMTP envelope.

Mail Manager's WriteToS3 stores the MIME message only (what else it stores is not
documented), so the envelope travels beside it: the local emulator writes
`envelopes/<object key>.json` in the same bucket. When that is missing, the recipients are
taken from the To and Cc header fields on our own domains, and the envelope says so.
"""

from __future__ import annotations

from mxgate.message.model import ParsedMessage
from mxgate.ports import ObjectStore
from mxgate.records import Envelope, envelope_key, message_id_of
from mxgate.routing.routes import Routes


def store_envelope(objects: ObjectStore, bucket: str, envelope: Envelope, key: str) -> None:
    body = envelope.model_dump_json().encode()
    objects.put(bucket, envelope_key(key), body, {"content-type": "application/json"})


def read_envelope(
    objects: ObjectStore,
    bucket: str,
    key: str,
    parsed: ParsedMessage | None,
    routes: Routes,
    *,
    look_beside: bool = True,
) -> Envelope:
    """The envelope stored beside the message (when this runtime writes one), else the headers."""
    message_id = message_id_of(key)
    sidecar = envelope_key(key)
    if look_beside and objects.exists(bucket, sidecar):
        return Envelope.model_validate_json(objects.get(bucket, sidecar))
    if parsed is None:
        return Envelope(message_id=message_id, mail_from="", recipients=[], source="headers")
    ours = {d.casefold() for d in (*routes.employee_domains, *routes.app_domains)}
    recipients = [
        a.address
        for a in (*parsed.to, *parsed.cc)
        if a.address.rpartition("@")[2].casefold() in ours
    ]
    sender = parsed.from_[0].address if parsed.from_ else ""
    return Envelope(
        message_id=message_id,
        mail_from=sender,
        recipients=list(dict.fromkeys(recipients)),
        source="headers",
    )
