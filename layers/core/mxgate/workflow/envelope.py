"""The envelope the local emulator keeps beside each object it stores (`envelopes/<object
key>.json`), which its workflow passes in the execution input. On AWS the envelope comes from
Mail Manager's InvokeLambda event instead (workflow.arrival); the header fields never stand in
for it.
"""

from __future__ import annotations

from mxgate.ports import ObjectStore
from mxgate.records import Envelope, envelope_key


def store_envelope(objects: ObjectStore, bucket: str, envelope: Envelope, key: str) -> None:
    body = envelope.model_dump_json().encode()
    objects.put(bucket, envelope_key(key), body, {"content-type": "application/json"})


def read_envelope(objects: ObjectStore, bucket: str, key: str) -> Envelope:
    """The envelope the local emulator stored beside the object at `key`."""
    return Envelope.model_validate_json(objects.get(bucket, envelope_key(key)))
