"""Stored messages and their SMTP envelopes: object keys, and the envelope the local emulator
keeps beside each object it stores (`envelopes/<object key>.json`), which its workflow passes
in the execution input. On AWS the envelope comes from Mail Manager's InvokeLambda event
instead (workflow.arrival); the header fields never stand in for it.
"""

from __future__ import annotations

import posixpath

from mxgate.ports import ObjectStore
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


def read_envelope(objects: ObjectStore, bucket: str, key: str) -> Envelope:
    """The envelope the local emulator stored beside the object at `key`."""
    return Envelope.model_validate_json(objects.get(bucket, envelope_key(key)))
