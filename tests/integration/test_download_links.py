"""Download links that live as long as they say: signed with the stack's key, opened by the
Download function (as a Function URL invokes it) with a fresh presigned URL while their time
lasts, refused when forged or late. The handlers run in process against moto."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

from mxgate.adapters.aws.links import LinkRefusedError, SignedLinks
from mxgate.sandbox.stack import MOTO_CONFIG, REGION, Stack
from tests.awsstack import EVENTS, canonical_event, create_stack

KEY = b"the stack's link key"


def test_a_link_opens_until_its_time_and_never_for_another_key_or_bucket():
    links = SignedLinks("https://download.example/", KEY)
    until = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    link = links.link("raw-bucket", "raw/01ABC", until)
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert links.opened(query, until - timedelta(days=6), "raw-bucket") == (
        "raw-bucket",
        "raw/01ABC",
    )
    with pytest.raises(LinkRefusedError) as late:
        links.opened(query, until + timedelta(seconds=1), "raw-bucket")
    assert (late.value.status, late.value.reason) == (
        410,
        "this link stopped working on 2026-12-07 09:00 UTC",
    )
    for forged in (
        {**query, "e": str(int(until.timestamp()) + 86400)},  # stretched
        {**query, "k": "raw/01OTHER"},
        {k: v for k, v in query.items() if k != "s"},
    ):
        with pytest.raises(LinkRefusedError) as refused:
            links.opened(forged, until - timedelta(days=1), "raw-bucket")
        assert refused.value.status == 403
    with pytest.raises(LinkRefusedError):
        SignedLinks("https://download.example/", b"another key").opened(query, until, "raw-bucket")
    with pytest.raises(LinkRefusedError):
        links.opened(query, until - timedelta(days=1), "another-bucket")


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws(config=MOTO_CONFIG):
        created = create_stack()
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=created.resource("RawMailBucket"),
            Key=canonical_event("process")["key"],
            Body=(EVENTS / "stored-message.eml").read_bytes(),
        )
        yield created
        created.close()


def function_url_event(link: str) -> dict:
    """What a Lambda Function URL hands the function for a GET (payload format 2.0)."""
    parts = urlsplit(link)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "queryStringParameters": {k: v[0] for k, v in parse_qs(parts.query).items()},
        "headers": {"host": parts.netloc, "user-agent": "Mozilla/5.0"},
        "requestContext": {
            "accountId": "anonymous",
            "domainName": parts.netloc,
            "http": {
                "method": "GET",
                "path": parts.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.50",
            },
            "requestId": "3c1f0e2d-0b9a-4f8e-9d7c-6b5a4f3e2d1c",
            "stage": "$default",
            "timeJson": 1796108400000,
        },
        "isBase64Encoded": False,
    }


def test_a_claim_check_link_says_its_end_and_opens_until_then(stack):
    """A claim check made on the Deliver function: its link is the Download function's, signed,
    working for the route's link_lifetime (7 days), and the stub says until when."""
    planned = stack.invoke("process", canonical_event("process"))
    delivery = planned["deliveries"][0]
    module = stack.function_by_code("deliver")
    stack.invoke("deliver", {"delivery": {**delivery, "delivery_id": "warm-up"}})  # builds services
    assert module.module is not None
    services = module.module.services()
    until = datetime.now(UTC) + timedelta(days=7)
    link = services.objects.link(delivery["message"]["bucket"], delivery["message"]["key"], until)
    url = stack.properties("DeliverFunction")["Environment"]["Variables"]["MXGATE_DOWNLOAD_URL"]
    assert link.startswith(url)

    answer = stack.invoke("download", function_url_event(link))
    assert answer["statusCode"] == 302
    location = urlsplit(answer["headers"]["Location"])
    assert location.path.endswith(delivery["message"]["key"])
    redirect = parse_qs(location.query)
    assert redirect["X-Amz-Expires"] == ["300"]  # fresh, short: the link itself carries its end
    assert "attachment" in redirect["response-content-disposition"][0]

    forged = link.replace("k=raw", "k=attachments")
    assert stack.invoke("download", function_url_event(forged))["statusCode"] == 403
    past = services.objects.link(
        delivery["message"]["bucket"],
        delivery["message"]["key"],
        datetime.now(UTC) - timedelta(minutes=1),
    )
    late = stack.invoke("download", function_url_event(past))
    assert late["statusCode"] == 410
    assert "stopped working" in late["body"]


def test_the_claim_check_stub_says_until_when_its_link_works(stack):
    from mxgate.delivery.claimcheck import claim_check_stub  # noqa: PLC0415
    from mxgate.message.parse import parse_message  # noqa: PLC0415

    until = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    stub = claim_check_stub(
        parse_message((EVENTS / "stored-message.eml").read_bytes()),
        size=50_000_000,
        limit=40_000_000,
        link="https://download.example/?b=x",
        gateway_host="mxgate.test",
        link_expires=until,
    )
    text = message_from_bytes(stub, policy=policy.default).get_content()
    assert "The link works until Monday 07 December 2026, 09:00 UTC." in text
