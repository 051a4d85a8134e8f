"""Own-domain spoofing: which messages claim one of our domains from outside without passing
DMARC (routing/spoofing.py, pure)."""

from __future__ import annotations

import pytest

from mxgate.routing.spoofing import Spoofing, is_own_domain, own_domain_spoofing

OURS = ["nutrition.co", "customer-support.nutrition.co"]


@pytest.mark.parametrize(
    ("domain", "ours"),
    [
        ("nutrition.co", True),
        ("NUTRITION.CO", True),
        ("mail.nutrition.co", True),
        ("customer-support.nutrition.co", True),
        ("nutrition.co.", True),
        ("evilnutrition.co", False),
        ("nutrition.co.example", False),
        ("bistro.example", False),
    ],
)
def test_our_domains_include_their_subdomains(domain, ours):
    assert is_own_domain(domain, OURS) is ours


@pytest.mark.parametrize(
    ("from_domain", "outside", "dmarc", "verdict"),
    [
        ("nutrition.co", True, "fail", Spoofing.SPOOFED),
        ("nutrition.co", True, "none", Spoofing.SPOOFED),  # no DMARC record: no alignment either
        ("nutrition.co", True, "permerror", Spoofing.SPOOFED),
        ("mail.nutrition.co", True, "fail", Spoofing.SPOOFED),
        ("nutrition.co", True, "pass", Spoofing.GENUINE),  # e.g. a SaaS signing for us
        ("nutrition.co", True, "temperror", Spoofing.UNDECIDED),  # DNS failed: try again later
        ("nutrition.co", False, "fail", Spoofing.NOT_OURS),  # submission: from inside
        ("bistro.example", True, "fail", Spoofing.NOT_OURS),
        (None, True, "none", Spoofing.NOT_OURS),  # no From: DMARC has nothing to judge
        ("nutrition.co", True, None, Spoofing.NOT_OURS),  # no authentication here
    ],
)
def test_a_message_spoofs_our_domain_only_from_outside_and_without_dmarc_pass(
    from_domain, outside, dmarc, verdict
):
    found = own_domain_spoofing(
        from_domain=from_domain,
        own_domains=OURS,
        from_outside=outside,
        dmarc=dmarc,
        dmarc_reason="no aligned identifier passed",
    )
    assert found.verdict is verdict
    if verdict is Spoofing.SPOOFED:
        assert f"From is our domain {from_domain}" in found.reason
        assert f"dmarc={dmarc} (no aligned identifier passed)" in found.reason
