"""Where the pipeline finds a message's SMTP envelope.

Mail Manager's WriteToS3 stores the MIME message only (what else it stores is not
documented), so the envelope travels beside it: the local emulator writes
`envelopes/<object key>.json` in the same bucket. When that is missing, the recipients are
taken from the To and Cc header fields on our own domains, and the envelope says so.
"""

from __future__ import annotations

import posixpath

from mxgate.message.model import ParsedMessage
from mxgate.ports import ObjectStore
from mxgate.routing.config import Routes
from mxgate.workflow.model import Envelope

ENVELOPE_PREFIX = "envelopes/"
# When AddHeader gives a message's recipients different versions, the local emulator stores
# each under `<key>.variant-<n>`: one object (and one workflow run) per version.
VARIANT = ".variant-"


def variant_key(key: str, variant: int) -> str:
    """The key of one version of a message (`variant` 0: the only one keeps `key`)."""
    return f"{key}{VARIANT}{variant}" if variant else key


def variant_of(key: str) -> str:
    """`.variant-<n>` for a version's key, else empty."""
    name = posixpath.basename(key).removesuffix(".eml")
    head, marker, number = name.rpartition(VARIANT)
    return f"{marker}{number}" if head and number.isdigit() else ""


def message_id_of(key: str) -> str:
    name = posixpath.basename(key).removesuffix(".eml")
    return name.removesuffix(variant_of(name))


def envelope_key(key: str) -> str:
    """The envelope of the object at `key` (one per stored object, prefixes kept apart)."""
    return f"{ENVELOPE_PREFIX}{key}.json"


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
