"""The ObjectStore port: in memory, in files, on S3 (the template's raw-mail bucket)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.errors import PermanentError
from mxgate.message.headers import prepend_headers
from mxgate.message.raw import RawMessage
from mxgate.ports import ObjectInfo
from tests.contracts.conftest import unique
from tests.fakes import MemoryObjectStore

BUCKET = "mxgate-rawmailbucket"  # the template's RawMailBucket, as both runtimes name it


@pytest.fixture(params=["memory", "files", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "s3":
        stack = request.getfixturevalue("aws")
        assert stack.resource("RawMailBucket") == BUCKET
        return S3ObjectStore(LazyClient("s3"))
    if request.param == "files":
        return FileObjectStore(tmp_path / "objects")
    return MemoryObjectStore()


def test_what_is_put_comes_back_by_get_open_and_head(objects):
    key = f"raw/{unique('m')}"
    body = b"Subject: hi\r\n\r\n" + bytes(range(256)) * 40
    info = objects.put(BUCKET, key, body, {"content-type": "message/rfc822"})
    assert info == ObjectInfo(BUCKET, key, len(body), {"content-type": "message/rfc822"})
    assert objects.get(BUCKET, key) == body
    with objects.open(BUCKET, key) as stream:
        assert stream.read() == body
    head = objects.head(BUCKET, key)
    assert (head.size, dict(head.metadata)) == (len(body), {"content-type": "message/rfc822"})
    assert objects.exists(BUCKET, key)
    assert isinstance(objects.link(BUCKET, key), str)
    until = datetime.now(UTC) + timedelta(days=7)  # a route's link_lifetime
    assert isinstance(objects.link(BUCKET, key, until), str)


def test_a_message_put_from_its_stream_comes_back_whole(objects):
    """WriteToS3 and Archive copy a message to the store in chunks, never whole in memory."""
    key = f"raw/{unique('m')}"
    body = b"Subject: big\r\n\r\n" + bytes(range(256)) * 1000  # several chunks
    message = RawMessage.of(body)
    message = message.with_header(prepend_headers(message.header, [("X-Rule", "added")]))
    with message.open() as stream:
        info = objects.put(BUCKET, key, stream)
    assert info.size == message.size == len(body) + len(b"X-Rule: added\r\n")
    assert objects.get(BUCKET, key) == b"X-Rule: added\r\n" + body


def test_a_put_replaces_the_object(objects):
    key = f"envelopes/raw/{unique('m')}.json"
    objects.put(BUCKET, key, b"first")
    objects.put(BUCKET, key, b"second")
    assert objects.get(BUCKET, key) == b"second"
    assert objects.head(BUCKET, key).size == len(b"second")


def test_a_deleted_object_is_gone_and_deleting_it_again_is_no_error(objects):
    key = f"quarantine/{unique('m')}"
    objects.put(BUCKET, key, b"held")
    objects.delete(BUCKET, key)
    assert not objects.exists(BUCKET, key)
    objects.delete(BUCKET, key)


def test_a_missing_object_is_a_permanent_error_and_does_not_exist(objects):
    key = f"raw/{unique('missing')}"
    assert not objects.exists(BUCKET, key)
    for read in (objects.get, objects.open, objects.head):
        with pytest.raises(PermanentError):
            read(BUCKET, key)


def test_a_copy_holds_the_same_bytes_and_each_is_deleted_alone(objects):
    """WriteToS3 and Archive of one message: the second object is a copy of the first (a hard
    link in files, CopyObject on S3); deleting one leaves the other readable."""
    source, copy = f"mxgate-archive/{unique('m')}.eml", f"raw/{unique('m')}"
    body = b"Subject: kept twice\r\n\r\n" + bytes(range(256)) * 300
    objects.put(BUCKET, source, body, {"content-type": "message/rfc822"})
    objects.copy(BUCKET, source, BUCKET, copy)
    assert objects.get(BUCKET, copy) == body
    assert dict(objects.head(BUCKET, copy).metadata) == {"content-type": "message/rfc822"}
    objects.delete(BUCKET, source)
    assert objects.get(BUCKET, copy) == body
    objects.put(BUCKET, source, b"another")  # and a put to one name changes only that one
    assert objects.get(BUCKET, copy) == body
    objects.copy(BUCKET, copy, BUCKET, source)  # a copy over an object replaces it
    assert objects.get(BUCKET, source) == body
    objects.delete(BUCKET, copy)
    assert objects.get(BUCKET, source) == body


def test_a_copy_of_a_missing_object_is_a_permanent_error(objects):
    with pytest.raises(PermanentError):
        objects.copy(BUCKET, f"raw/{unique('missing')}", BUCKET, f"raw/{unique('m')}")
