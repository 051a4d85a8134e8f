"""Quarantine rules over constructed messages and verdicts (the authentication step lands later)."""

from __future__ import annotations

import pytest

from mxgate.message.model import Address, Attachment, ParsedMessage
from mxgate.routing.quarantine import (
    AuthVerdicts,
    Match,
    QuarantineRule,
    facts_of,
    quarantine_rule,
)


def attachment(filename: str | None, content_type: str = "application/octet-stream") -> Attachment:
    return Attachment(
        filename=filename,
        content_type=content_type,
        size=10,
        sha256="0" * 64,
        disposition="attachment",
    )


def message(*attachments: Attachment, sender: str = "a@shop.example") -> ParsedMessage:
    return ParsedMessage.model_validate(
        {"from": [Address(address=sender)], "attachments": list(attachments)}
    )


RULES = [
    QuarantineRule(name="dmarc-reject", when=Match(dmarc=["fail"], dmarc_policy=["reject"])),
    QuarantineRule(name="spf-fail", when=Match(spf=["fail"]), unless=Match(dkim=["pass"])),
    QuarantineRule(
        name="executable", when=Match(attachment_name=["*.exe", "*.scr"]), routes=["workspace"]
    ),
    QuarantineRule(name="exe-type", when=Match(attachment_type=["application/x-ms*"])),
]


def decide(parsed: ParsedMessage, verdicts: AuthVerdicts | None = None, route: str = "workspace"):
    found = quarantine_rule(RULES, route, facts_of(parsed, verdicts))
    return None if found is None else found[0].name


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (AuthVerdicts(dmarc="fail", dmarc_policy="reject"), "dmarc-reject"),
        (AuthVerdicts(dmarc="FAIL", dmarc_policy="reject"), "dmarc-reject"),
        (AuthVerdicts(dmarc="fail", dmarc_policy="quarantine"), None),
        (AuthVerdicts(dmarc="pass", dmarc_policy="reject"), None),
        (AuthVerdicts(spf="fail"), "spf-fail"),
        (AuthVerdicts(spf="fail", dkim="pass"), None),  # the unless holds
        (AuthVerdicts(spf="softfail"), None),
        (AuthVerdicts(spf="temperror"), None),
        (None, None),  # nothing known: nothing matches
    ],
)
def test_verdict_rules(verdicts, expected):
    assert decide(message(), verdicts) == expected


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("setup.exe", "executable"),
        ("SETUP.EXE", "executable"),
        ("invoice.pdf.exe", "executable"),
        ("invoice.exe. ", "executable"),  # Windows drops trailing dots and spaces
        ("screen.scr", "executable"),
        ("invoice.pdf", None),
        ("exe.txt", None),
        (None, None),
    ],
)
def test_attachment_names(filename, expected):
    assert decide(message(attachment(filename))) == expected


def test_attachment_type_and_route_scope():
    assert decide(message(attachment("x.bin", "application/x-msdownload"))) == "exe-type"
    # the name rule only covers workspace; the type rule covers every route
    assert decide(message(attachment("setup.exe")), route="orders") is None
    assert (
        decide(message(attachment("x", "application/x-msdownload")), route="orders") == "exe-type"
    )


def test_first_matching_rule_wins_and_says_why():
    parsed = message(attachment("a.exe"))
    found = quarantine_rule(
        RULES, "workspace", facts_of(parsed, AuthVerdicts(dmarc="fail", dmarc_policy="reject"))
    )
    assert found is not None
    rule, reason = found
    assert rule.name == "dmarc-reject"
    assert reason == "dmarc=fail, dmarc_policy=reject"
    rule, reason = quarantine_rule(RULES, "workspace", facts_of(parsed)) or (None, "")
    assert rule is not None
    assert rule.name == "executable"
    assert reason == "attachment a.exe (application/octet-stream)"


def test_from_domain_globs():
    rules = [QuarantineRule(name="lookalike", when=Match(from_domain=["*.nutrition-co.example"]))]
    hit = facts_of(message(sender="ceo@mail.nutrition-co.example"))
    miss = facts_of(message(sender="ceo@nutrition.co"))
    assert quarantine_rule(rules, "workspace", hit) is not None
    assert quarantine_rule(rules, "workspace", miss) is None
