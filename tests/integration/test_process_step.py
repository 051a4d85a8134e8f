"""The process step with the local adapters and a loopback DNS server: the stored message is
streamed, its attachments kept by digest, its sender authenticated for the rule set and the
routes, and a message that cannot be understood is quarantined with the reason."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from mxgate.adapters.dns import DnsPythonResolver
from mxgate.adapters.local.appevents import FileAppEvents
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.adapters.local.state import SqliteState
from mxgate.authn.arc import load_sealer
from mxgate.authn.check import Authenticator, check_signatures
from mxgate.authn.model import DmarcPolicy, Result, Verdict
from mxgate.authn.resolver import CachingResolver
from mxgate.clock import SystemClock
from mxgate.errors import TransientError
from mxgate.local.addresslists import FileAddressBook
from mxgate.local.facts import message_facts
from mxgate.mailmanager.models import RuleSet
from mxgate.mailmanager.rules import ActionContext, run_rule_set
from mxgate.message.headers import prepend_headers
from mxgate.message.model import ParseLimits
from mxgate.message.raw import RawMessage
from mxgate.records import Envelope, Outcome
from mxgate.workflow.model import ProcessInput
from mxgate.workflow.process import process
from mxgate.workflow.services import Services
from tests.dnsserver import Zone, ZoneServer, dkimpy_dnsfunc, silent_port
from tests.mailtools import Keys, make_keys
from tests.support import shipped_routes

BUCKET = "raw-mail"
SENDER_IP = "192.0.2.10"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return make_keys()


@pytest.fixture(scope="module")
def dns(keys: Keys) -> Iterator[ZoneServer]:
    zone = Zone()
    zone.add("shop.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add("_dmarc.shop.test", "TXT", "v=DMARC1; p=reject")
    zone.add("sel._domainkey.shop.test", "TXT", f"v=DKIM1; p={keys.public}")
    # our own domain: its mail leaves from 203.0.113.0/24, signed with s=ours
    zone.add("nutrition.co", "TXT", "v=spf1 ip4:203.0.113.0/24 -all")
    zone.add("_dmarc.nutrition.co", "TXT", "v=DMARC1; p=quarantine")
    zone.add("ours._domainkey.nutrition.co", "TXT", f"v=DKIM1; p={keys.public}")
    zone.add("arc._domainkey.nutrition.co", "TXT", f"v=DKIM1; k=rsa; p={keys.public}")
    server = ZoneServer(zone)
    yield server
    server.stop()


def services(home: Path, dns: ZoneServer, **overrides) -> Services:
    state = SqliteState(home / "state.db")
    overrides.setdefault("routes", shipped_routes())
    return Services(
        objects=FileObjectStore(home / "objects"),
        timeline=state,
        idempotency=state,
        transports={},
        app_events=FileAppEvents(home / "events"),
        dead_letters=state,
        clock=SystemClock(),
        gateway_host="mxgate.test",
        resolver=CachingResolver(dns.resolver()),
        **overrides,
    )


def stored(
    services: Services,
    raw: bytes,
    message_id: str,
    recipients: list[str],
    **envelope_fields: str,
) -> ProcessInput:
    key = f"raw/{message_id}"
    services.objects.put(BUCKET, key, raw)
    envelope = Envelope.model_validate(
        {
            "message_id": message_id,
            "mail_from": "orders@shop.test",
            "recipients": recipients,
            "helo": "mail.shop.test",
            "source_ip": SENDER_IP,
            **envelope_fields,
        }
    )
    return ProcessInput(bucket=BUCKET, key=key, envelope=envelope)


def signed_order(keys: Keys) -> bytes:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 64
    raw = (
        b"From: Shop <orders@shop.test>\r\nTo: alice@nutrition.co\r\nSubject: your invoice\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n'
        b"--x\r\nContent-Type: text/plain\r\n\r\nInvoice attached.\r\n"
        b"--x\r\nContent-Type: application/pdf; name=invoice.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(pdf)
        + b"--x--\r\n"
    )
    return (
        dkim.sign(raw, b"sel", b"shop.test", keys.private, include_headers=[b"from", b"subject"])
        + raw
    )


def test_process_authenticates_stores_attachments_and_prepends_results(tmp_path, dns, keys):
    ports = services(tmp_path, dns)
    raw = signed_order(keys)
    output = process(stored(ports, raw, "01ORDER", ["alice@nutrition.co"]), ports)

    assert output.message.digest == hashlib.sha256(raw).hexdigest()
    assert output.message.size == len(raw)
    authentication = output.authentication
    assert authentication is not None
    assert authentication.spf_mail_from.result is Result.PASS
    assert [c.result for c in authentication.dkim] == [Result.PASS]
    assert authentication.dmarc.result is Result.PASS
    [delivery] = output.deliveries
    name, value = delivery.prepend[0]
    assert name == "Authentication-Results"
    assert value.startswith("mxgate.test;")
    assert "dkim=pass" in value
    assert delivery.prepend[1][0] == "Received"

    pdf_digest = hashlib.sha256(b"%PDF-1.4\n" + bytes(range(256)) * 64).hexdigest()
    assert ports.objects.get(BUCKET, f"attachments/{pdf_digest}").startswith(b"%PDF-1.4")
    events = ports.timeline.events("01ORDER")
    assert any("dkim=pass(shop.test)" in e.detail for e in events)


@pytest.mark.parametrize(
    ("body", "eight_bit"),
    [("caf\u00e9\r\n".encode(), True), (b"cafe\r\n", False)],
    ids=["8bit", "ascii"],
)
@pytest.mark.parametrize("size", [100, 60_000], ids=["inline", "stored"])
def test_process_records_whether_the_message_is_8bit(tmp_path, dns, body, eight_bit, size):
    """The Process step (both runtimes run it) keeps the 8-bit flag in the message's record,
    so a delivery knows it without reading the message (message.raw.RawMessage.referenced)."""
    ports = services(tmp_path, dns)
    raw = b"From: Shop <orders@shop.test>\r\nTo: alice@nutrition.co\r\nSubject: x\r\n\r\n"
    raw += body * (size // len(body))
    output = process(stored(ports, raw, "01EIGHT", ["alice@nutrition.co"]), ports)
    assert output.message.eight_bit is eight_bit
    [delivery] = output.deliveries
    assert delivery.message.eight_bit is eight_bit
    assert (delivery.message.inline is None) is (size > 48 * 1024)


def test_verdicts_reach_the_rule_set(tmp_path, dns, keys):
    """The local Mail Manager authenticates before its rules: SPF, DKIM and the DMARC policy
    are conditions like any other."""
    ports = services(tmp_path, dns)
    rule_set = RuleSet.model_validate(
        {
            "Rules": [
                {
                    "Name": "drop-dmarc-reject",
                    "Conditions": [
                        {"DmarcExpression": {"Operator": "EQUALS", "Values": ["REJECT"]}}
                    ],
                    "Actions": [{"Drop": {}}],
                },
                {
                    "Name": "tag-spf-pass",
                    "Conditions": [
                        {
                            "VerdictExpression": {
                                "Evaluate": {"Attribute": "SPF"},
                                "Operator": "EQUALS",
                                "Values": ["PASS"],
                            }
                        }
                    ],
                    "Actions": [{"AddHeader": {"HeaderName": "X-Spf", "HeaderValue": "pass"}}],
                },
            ]
        }
    )

    class NoActions:
        def execute(self, action: object, context: ActionContext) -> str:
            raise AssertionError("Drop and AddHeader need no executor")

    assert ports.resolver is not None
    authenticator = Authenticator(ports.resolver, "mxgate.test")
    book = FileAddressBook(tmp_path / "address-lists")

    def outcome(raw: bytes, ip: str):
        envelope = Envelope(
            message_id="m",
            mail_from="orders@shop.test",
            recipients=["alice@nutrition.co"],
            helo="mail.shop.test",
            source_ip=ip,
        )
        checked = authenticator.authenticate(
            io.BytesIO(raw), client_ip=ip, mail_from=envelope.mail_from, helo=envelope.helo
        )
        facts = message_facts(envelope, RawMessage.of(raw), checked)
        return facts, run_rule_set(rule_set, facts, envelope.recipients, book, NoActions())

    unsigned = b"From: orders@shop.test\r\nTo: alice@nutrition.co\r\nSubject: x\r\n\r\nbody\r\n"
    facts, good = outcome(signed_order(keys), SENDER_IP)
    assert (facts.spf, facts.dkim, facts.dmarc_policy) == (Verdict.PASS, Verdict.PASS, None)
    assert good.trail("alice@nutrition.co").dropped_by is None
    assert good.trail("alice@nutrition.co").added_headers == [("X-Spf", "pass")]

    facts, spoofed = outcome(unsigned, "198.51.100.9")
    assert (facts.spf, facts.dkim, facts.dmarc_policy) == (
        Verdict.FAIL,
        Verdict.GRAY,
        DmarcPolicy.REJECT,
    )
    assert spoofed.trail("alice@nutrition.co").dropped_by == "rule drop-dmarc-reject: Drop"
    blank = Envelope(message_id="m", mail_from="", recipients=[])
    assert message_facts(blank, RawMessage.of(unsigned)).spf is (
        Verdict.PROCESSING_FAILED  # not checked at all: never a PASS by default
    )


@pytest.mark.parametrize(
    ("raw", "limits", "reason"),
    [
        (
            b"Subject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 5
            + b"--b--\r\n",
            ParseLimits(max_parts=3),
            "limit exceeded: more than 3 MIME parts",
        ),
        (b"\x00\x01\x02 not mail at all", ParseLimits(), "no header fields: not a message"),
    ],
)
def test_a_message_not_understood_is_quarantined_with_the_reason(
    tmp_path, dns, raw, limits, reason
):
    ports = services(tmp_path, dns, message_limits=limits)
    recipients = ["alice@nutrition.co", "orders@customer-support.nutrition.co"]
    output = process(stored(ports, raw, "01ODD", recipients), ports)
    assert output.deliveries == []
    states = {s.recipient: s for s in ports.timeline.states("01ODD")}
    assert set(states) == set(recipients)
    for state in states.values():
        assert state.outcome is Outcome.QUARANTINED
        assert state.detail == f"message not understood: {reason}"


CEO_MAIL = (
    b"From: CEO <ceo@nutrition.co>\r\nTo: alice@nutrition.co\r\nSubject: urgent wire\r\n"
    b"\r\nPlease wire 48,000 EUR today.\r\n"
)
OUTSIDE = {
    "mail_from": "ceo@nutrition.co",
    "helo": "mx.elsewhere.example",
    "source_ip": "198.51.100.9",
}


def test_own_domain_spoofing_from_outside_is_quarantined_with_the_reason(tmp_path, dns):
    ports = services(tmp_path, dns)
    output = process(stored(ports, CEO_MAIL, "01SPOOF", ["alice@nutrition.co"], **OUTSIDE), ports)
    assert output.deliveries == []
    assert output.quarantined == ["alice@nutrition.co"]
    (state,) = ports.timeline.states("01SPOOF")
    assert state.outcome is Outcome.QUARANTINED
    assert state.route == "quarantine:own-domain-spoofing"
    # SPF was judged against the real connecting IP from the envelope
    assert "From is our domain nutrition.co" in state.detail
    assert "dmarc=fail" in state.detail
    assert output.authentication is not None
    assert output.authentication.spf_mail_from.result is Result.FAIL
    terminal = [e.detail for e in ports.timeline.events("01SPOOF") if e.stage.value == "terminal"]
    assert any("own-domain-spoofing" in detail for detail in terminal)


@pytest.mark.parametrize(
    "how",
    ["aligned-dkim", "aligned-spf", "submission", "routes-deliver"],
)
def test_own_domain_mail_that_proves_itself_or_comes_from_inside_is_delivered(
    tmp_path, dns, keys, how
):
    overrides: dict[str, object] = {}
    raw, envelope = CEO_MAIL, dict(OUTSIDE)
    if how == "aligned-dkim":  # a service that signs for our domain
        raw = (
            dkim.sign(raw, b"ours", b"nutrition.co", keys.private, include_headers=[b"from"]) + raw
        )
    elif how == "aligned-spf":  # from one of our own sending addresses (the envelope's IP)
        envelope["source_ip"] = "203.0.113.7"
    elif how == "submission":  # our own AUTH ingress point: mail from inside
        envelope["ingress_point"] = "SubmissionIngressPoint"
        envelope["authenticated"] = "true"  # SMTP AUTH succeeded
    else:
        routes = shipped_routes()
        # (and no spf-fail rule, which would hold the same message for its own reason)
        overrides["routes"] = routes.model_copy(
            update={"own_domain_spoofing": "deliver", "quarantine": []}
        )
    ports = services(tmp_path, dns, **overrides)
    output = process(stored(ports, raw, "01OURS", ["alice@nutrition.co"], **envelope), ports)
    assert [d.recipients for d in output.deliveries] == [["alice@nutrition.co"]]
    assert output.quarantined == []


def test_own_domain_mail_is_not_judged_while_dmarc_cannot_be_checked(tmp_path):
    """A DNS failure holds nothing: Process fails transiently, to be retried and deferred."""
    ports = services(tmp_path, ZoneServer(Zone()))
    down = CachingResolver(DnsPythonResolver(["127.0.0.1"], port=silent_port(), timeout=0.2))
    ports = dataclasses.replace(ports, resolver=down)
    with pytest.raises(TransientError, match="DMARC could not be checked"):
        process(stored(ports, CEO_MAIL, "01DNSDOWN", ["alice@nutrition.co"], **OUTSIDE), ports)
    assert ports.timeline.states("01DNSDOWN") == []


def test_process_seals_mailbox_deliveries_when_it_has_a_key(tmp_path, dns, keys):
    """With a sealer, the trace on top is our ARC set, then Authentication-Results; dkimpy's
    own ARC verifier finds the chain valid, and the AAR carries our verdicts."""
    sealer = load_sealer("nutrition.co", "arc", keys.private.decode())
    ports = services(tmp_path, dns, sealer=sealer)
    raw = signed_order(keys)
    output = process(stored(ports, raw, "01SEALED", ["alice@nutrition.co"]), ports)
    [delivery] = output.deliveries
    names = [name for name, _ in delivery.prepend]
    assert names == [
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
        "Authentication-Results",
        "Received",
    ]
    fields = dict(delivery.prepend)
    assert fields["ARC-Authentication-Results"] == "i=1; " + fields["Authentication-Results"]
    assert "cv=none" in fields["ARC-Seal"]
    delivered = prepend_headers(raw, delivery.prepend)
    resolver = dns.resolver()
    cv, _, reason = dkim.arc_verify(delivered, dnsfunc=dkimpy_dnsfunc(resolver))
    assert cv == b"pass", reason
    again = check_signatures(io.BytesIO(delivered), resolver, now=0).arc
    assert (again.result, again.sealers) == (Result.PASS, ["nutrition.co"])


def test_no_sealer_no_arc_set(tmp_path, dns, keys):
    ports = services(tmp_path, dns)
    output = process(stored(ports, signed_order(keys), "01PLAIN", ["alice@nutrition.co"]), ports)
    assert [name for name, _ in output.deliveries[0].prepend] == [
        "Authentication-Results",
        "Received",
    ]
