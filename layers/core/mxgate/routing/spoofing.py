"""Own-domain spoofing: mail from outside that claims, in From, to come from one of our own
domains. Pure.

Nobody outside may write as us: mail of our domains comes from our own people through the
submission (AUTH) ingress point, or from services we authorised, which then pass DMARC with
alignment (they DKIM-sign for our domain, or send from an SPF-listed address of it). Mail
that reaches the MX claiming one of our domains and does not pass DMARC is the classic
CEO-fraud message, and SES would sign it for our domain on the way out: it is held.

A DMARC check that could not be made (a DNS failure: `temperror`) decides nothing: the
message is processed again later (a transient failure), never held for what we could not
find out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

RULE = "own-domain-spoofing"  # the name a held recipient's route carries: quarantine:<RULE>


class Spoofing(StrEnum):
    NOT_OURS = "not_ours"  # From is not one of our domains, or the mail is from inside
    GENUINE = "genuine"  # ours, and DMARC passed with alignment
    SPOOFED = "spoofed"  # ours, from outside, and DMARC did not pass
    UNDECIDED = "undecided"  # ours, from outside, and DMARC could not be checked


@dataclass(frozen=True, slots=True)
class SpoofingVerdict:
    verdict: Spoofing
    reason: str = ""


def is_own_domain(domain: str, own_domains: Iterable[str]) -> bool:
    """One of our domains, or a subdomain of one (`mail.nutrition.co` is ours too)."""
    domain = domain.casefold().rstrip(".")
    return any(domain == d or domain.endswith(f".{d}") for d in (o.casefold() for o in own_domains))


def own_domain_spoofing(
    *,
    from_domain: str | None,
    own_domains: Iterable[str],
    from_outside: bool,
    dmarc: str | None,
    dmarc_reason: str = "",
) -> SpoofingVerdict:
    """Whether a message spoofs one of our domains. `dmarc` is its DMARC result (RFC 8601
    words), None when no authentication ran on this runtime (nothing is decided then)."""
    if not from_outside or not from_domain or not is_own_domain(from_domain, own_domains):
        return SpoofingVerdict(Spoofing.NOT_OURS)
    if dmarc is None:
        return SpoofingVerdict(Spoofing.NOT_OURS, "no sender authentication on this runtime")
    if dmarc == "pass":
        return SpoofingVerdict(Spoofing.GENUINE, f"DMARC passed for {from_domain}")
    because = f" ({dmarc_reason})" if dmarc_reason else ""
    if dmarc == "temperror":
        return SpoofingVerdict(
            Spoofing.UNDECIDED,
            f"From is our domain {from_domain} and DMARC could not be checked{because}",
        )
    return SpoofingVerdict(
        Spoofing.SPOOFED,
        f"From is our domain {from_domain}, the message came from outside, and DMARC did not "
        f"pass with alignment: dmarc={dmarc}{because}",
    )
