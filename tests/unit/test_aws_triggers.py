"""What reaches the Start function, read into the halves of the arrival join."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mxgate.adapters.aws.triggers import is_arrival_check, read_arrival
from mxgate.errors import PermanentError
from mxgate.workflow.object_created import object_created_event
from tests.awsstack import canonical_event

RAW_BUCKET = "mxgate-rawmailbucket"
KEY = "raw/01KB7Y4M3N8Q2W5R6T9V0XZ1AB"
MESSAGE_ID = "01KB7Y4M3N8Q2W5R6T9V0XZ1AB"


def ses_event(headers=None, recipients=None):
    event = canonical_event("ses-receiving")
    ses = event["Records"][0]["ses"]
    if headers is not None:
        ses["mail"]["headers"] = headers
    if recipients is not None:
        ses["receipt"]["recipients"] = recipients
    return event


def test_the_s3_event_is_the_stored_half_of_the_message():
    arrival = read_arrival(canonical_event("s3-object-created"))
    assert arrival.message_id == MESSAGE_ID
    assert arrival.stored is not None
    assert (arrival.stored.bucket, arrival.stored.key) == (RAW_BUCKET, KEY)
    assert arrival.envelope is None


def test_the_invoke_lambda_event_is_the_envelope_half_every_rcpt_to_included():
    arrival = read_arrival(canonical_event("ses-receiving"))
    envelope = arrival.envelope
    assert arrival.message_id == MESSAGE_ID
    assert arrival.stored is None
    assert envelope is not None
    assert envelope.mail_from == "facilities@nutrition.co"
    assert envelope.recipients[-1] == "bob@nutrition.co"  # in no header: a Bcc
    # from Mail Manager's own Received field (its `by` host is Mail Manager's)
    assert (envelope.helo, envelope.source_ip, envelope.tls_protocol) == (
        "mail.nutrition.co",
        "198.51.100.25",
        "TLS1_3",
    )
    assert (envelope.tls_cipher, envelope.tls_cipher_bits) == ("TLS_AES_256_GCM_SHA384", 256)
    assert not envelope.authenticated  # ESMTPS: no SMTP AUTH


def test_a_received_field_the_sender_wrote_never_gives_the_connecting_ip():
    forged = "from trusted.example ([192.0.2.1]) by mx.trusted.example with ESMTP; Mon, 30 Nov 2026"
    envelope = read_arrival(ses_event(headers=[{"name": "Received", "value": forged}])).envelope
    assert envelope is not None
    assert (envelope.helo, envelope.source_ip, envelope.tls_protocol) == ("", "", None)


def test_mail_destination_from_the_header_fields_is_never_the_recipient_list():
    event = ses_event(recipients=["list-member@nutrition.co"])
    envelope = read_arrival(event).envelope
    assert envelope is not None
    assert envelope.recipients == ["list-member@nutrition.co"]


def test_the_local_runtime_s3_event_reads_the_same():
    event = object_created_event(RAW_BUCKET, KEY, 483, datetime(2026, 11, 30, tzinfo=UTC))
    arrival = read_arrival(event)
    assert arrival.stored is not None
    assert arrival.stored.key == KEY


def test_an_arrival_check_is_told_apart_from_the_two_halves():
    check = {"Records": [{"eventSource": "aws:sqs", "body": '{"arrival_check": "x"}'}]}
    assert is_arrival_check(check)
    assert not is_arrival_check(canonical_event("ses-receiving"))
    assert not is_arrival_check(canonical_event("s3-object-created"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update({"detail-type": "Object Deleted"}), "not an S3 Object Created event"),
        (lambda e: e["detail"].pop("bucket"), "not an event the Start function reads"),
        (lambda e: e.update({"time": "yesterday"}), "not an event the Start function reads"),
    ],
)
def test_an_event_of_another_kind_is_a_permanent_error(change, message):
    event = canonical_event("s3-object-created")
    change(event)
    with pytest.raises(PermanentError, match=message):
        read_arrival(event)


def test_an_invoke_lambda_event_without_recipients_is_refused():
    with pytest.raises(PermanentError):
        read_arrival(ses_event(recipients=[]))


def test_a_document_of_another_shape_is_refused():
    with pytest.raises(PermanentError, match="expected S3 Object Created"):
        read_arrival({"bucket": RAW_BUCKET, "key": KEY})
