"""The envelope an earlier version of the local emulator kept beside each object it stored
(`envelopes/<object key>.json`): a failed execution's document written then may name a stored
message without its envelope. Now the envelope travels in the execution input, as the Start
function's join gives it on AWS (workflow.arrival); the header fields never stand in for it.
"""

from __future__ import annotations

from mxgate.ports import ObjectStore
from mxgate.records import Envelope, envelope_key


def read_envelope(objects: ObjectStore, bucket: str, key: str) -> Envelope:
    """The envelope an earlier version stored beside the object at `key`."""
    return Envelope.model_validate_json(objects.get(bucket, envelope_key(key)))
