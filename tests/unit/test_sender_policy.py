"""The sender policy for SES: rewrite From (original bytes kept) or refuse."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any

import pytest

from mxgate.delivery.sender import apply_sender_policy
from mxgate.errors import PolicyError
from mxgate.routing.routes import Routes
from tests.support import shipped_routes_document

BODY = b"Hello,\r\nthe body is never touched.\r\n"


def routes(**delivery: Any) -> Routes:
    document = shipped_routes_document()
    document["delivery"] = {**document.get("delivery", {}), **delivery}
    return Routes.model_validate(document)


def raw(*fields: str, ending: bytes = b"\r\n") -> bytes:
    head = ending.join(f.encode() for f in fields)
    return head + ending + ending + BODY.replace(b"\r\n", ending)


def test_unverified_sender_is_rewritten_and_kept_in_reply_to():
    original = raw(
        "DKIM-Signature: v=1; a=rsa-sha256; d=shop.example; h=from:to:subject; b=abc",
        "From: Buyer Person <buyer@shop.example>",
        "To: alice@nutrition.co",
        "Subject: hi",
    )
    decision = apply_sender_policy(original, "workspace", routes())
    assert decision.rewritten
    assert decision.detail == "From buyer@shop.example rewritten to mxgate@nutrition.co"
    parsed = message_from_bytes(decision.raw, policy=policy.default)
    assert parsed["From"] == '"Buyer Person via nutrition.co" <mxgate@nutrition.co>'
    assert parsed["Reply-To"] == "Buyer Person <buyer@shop.example>"
    assert parsed["X-Original-From"] == "Buyer Person <buyer@shop.example>"
    assert parsed.get_all("From") == [parsed["From"]]  # one From only
    # everything after the renamed field name is the original bytes
    assert decision.raw.endswith(original.split(b"\r\nFrom:", 1)[1])
    assert decision.raw.endswith(BODY)


def test_existing_reply_to_is_kept_and_sender_fields_are_renamed():
    original = raw(
        "From: buyer@shop.example",
        "Sender: list-bounces@lists.shop.example",
        "Return-Path: <bounces@shop.example>",
        "Reply-To: support@shop.example",
        "Subject: hi",
    )
    parsed = message_from_bytes(
        apply_sender_policy(original, "workspace", routes()).raw, policy=policy.default
    )
    assert parsed.get_all("Reply-To") == ["support@shop.example"]
    assert parsed["Sender"] is None
    assert parsed["Return-Path"] is None
    assert parsed["X-Original-Sender"] == "list-bounces@lists.shop.example"
    assert parsed["X-Original-Return-Path"] == "<bounces@shop.example>"
    assert parsed["From"] == '"buyer@shop.example via nutrition.co" <mxgate@nutrition.co>'


def test_folded_from_and_bare_lf_messages():
    original = raw(
        "From: =?utf-8?q?J=C3=BCrgen?=",
        " <jurgen@shop.example>",
        "Subject: x",
        ending=b"\n",
    )
    decision = apply_sender_policy(original, "workspace", routes())
    assert b"\r\n" not in decision.raw  # the message's own line ending is kept
    parsed = message_from_bytes(decision.raw, policy=policy.default)
    assert str(parsed["From"]) == '"Jürgen via nutrition.co" <mxgate@nutrition.co>'
    assert str(parsed["X-Original-From"]) == "Jürgen <jurgen@shop.example>"


def test_verified_sender_goes_through_untouched():
    original = raw("From: ceo@nutrition.co", "Subject: internal")
    decision = apply_sender_policy(original, "workspace", routes())
    assert not decision.rewritten
    assert decision.raw == original


def test_a_refusing_route_dead_letters_by_policy():
    with pytest.raises(PolicyError, match="route workspace refuses"):
        apply_sender_policy(
            raw("From: buyer@shop.example"), "workspace", routes(unverified_sender="refuse")
        )


def test_configured_rewrite_address():
    decision = apply_sender_policy(
        raw("From: Buyer <buyer@shop.example>"), "m365", routes(rewrite_from="relay@nutrition.co")
    )
    assert decision.raw.startswith(b'From: "Buyer via nutrition.co" <relay@nutrition.co>\r\n')
