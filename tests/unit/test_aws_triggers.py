"""What may start the Process function, read with the powertools parser models."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mxgate.adapters.aws.triggers import read_trigger
from mxgate.errors import PermanentError
from mxgate.workflow.object_created import object_created_event
from tests.awsstack import canonical_event

RAW_BUCKET, RAW_PREFIX = "mxgate-rawmailbucket", "raw/"
KEY = "raw/01KB7Y4M3N8Q2W5R6T9V0XZ1AB"


@pytest.mark.parametrize("name", ["process", "s3-object-created", "ses-receiving"])
def test_every_canonical_trigger_names_the_stored_message(name):
    trigger = read_trigger(canonical_event(name), RAW_BUCKET, RAW_PREFIX)
    assert (trigger.request.bucket, trigger.request.key) == (RAW_BUCKET, KEY)
    assert (trigger.envelope is not None) == (name == "ses-receiving")


def test_the_ses_receiving_event_carries_the_smtp_envelope():
    trigger = read_trigger(canonical_event("ses-receiving"), RAW_BUCKET, RAW_PREFIX)
    assert trigger.envelope is not None
    assert trigger.envelope.message_id == "01KB7Y4M3N8Q2W5R6T9V0XZ1AB"
    assert trigger.envelope.mail_from == "facilities@nutrition.co"
    assert trigger.envelope.recipients[-1] == "bob@nutrition.co"  # in no header: a Bcc
    assert trigger.envelope.source == "envelope"


def test_an_s3_action_in_the_receipt_names_the_object_itself():
    event = canonical_event("ses-receiving")
    event["Records"][0]["ses"]["receipt"]["action"] = {
        "type": "S3",
        "bucketName": "other-bucket",
        "objectKey": "mail/abc",
    }
    request = read_trigger(event, RAW_BUCKET, RAW_PREFIX).request
    assert (request.bucket, request.key) == ("other-bucket", "mail/abc")


def test_the_local_runtime_starts_executions_with_an_event_the_parser_reads():
    event = object_created_event(RAW_BUCKET, KEY, 483, datetime(2026, 11, 30, tzinfo=UTC))
    assert read_trigger(event, RAW_BUCKET, RAW_PREFIX).request.key == KEY


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update({"detail-type": "Object Deleted"}), "not an S3 Object Created event"),
        (lambda e: e["detail"].pop("bucket"), "not an event the Process function reads"),
        (lambda e: e.update({"time": "yesterday"}), "not an event the Process function reads"),
    ],
)
def test_an_event_of_another_kind_is_a_permanent_error(change, message):
    event = canonical_event("s3-object-created")
    change(event)
    with pytest.raises(PermanentError, match=message):
        read_trigger(event, RAW_BUCKET, RAW_PREFIX)


def test_an_ses_event_without_recipients_is_refused():
    event = canonical_event("ses-receiving")
    event["Records"][0]["ses"]["receipt"]["recipients"] = []
    with pytest.raises(PermanentError):
        read_trigger(event, RAW_BUCKET, RAW_PREFIX)


def test_a_document_with_more_than_bucket_and_key_is_refused():
    with pytest.raises(PermanentError):
        read_trigger({"bucket": RAW_BUCKET, "key": KEY, "extra": 1}, RAW_BUCKET, RAW_PREFIX)
