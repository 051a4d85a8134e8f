"""Sender authentication results: one per mechanism, with the reason, and their mapping to the
verdicts Mail Manager's rule set conditions test."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Result(StrEnum):
    """RFC 8601 result names (RFC 7208 for SPF; DKIM and DMARC use a subset)."""

    PASS = "pass"  # noqa: S105 -- a result, not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    POLICY = "policy"  # DKIM: signed, but in a way the gateway does not accept (RFC 8301)


class Verdict(StrEnum):
    """The verdicts Mail Manager's rule set conditions test (SPF, DKIM)."""

    PASS = "PASS"  # noqa: S105 -- a verdict, not a password
    FAIL = "FAIL"
    GRAY = "GRAY"
    PROCESSING_FAILED = "PROCESSING_FAILED"


class DmarcPolicy(StrEnum):
    """A domain's published DMARC policy, in Mail Manager's spelling."""

    NONE = "NONE"
    QUARANTINE = "QUARANTINE"
    REJECT = "REJECT"


class Frozen(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")


class SpfCheck(Frozen):
    identity: Literal["mailfrom", "helo"]
    domain: str  # the domain whose SPF record was checked ("" when there was none to check)
    sender: str  # the identity checked: the MAIL FROM address, or postmaster@<helo>
    result: Result
    reason: str
    explanation: str = ""  # what the domain's exp= says of a fail (RFC 7208 6.2), expanded


class DkimCheck(Frozen):
    domain: str  # d=
    selector: str  # s=
    identity: str = ""  # i=
    algorithm: str = ""  # a=
    signature: str = ""  # the first characters of b=, to tell signatures apart (RFC 6008)
    result: Result
    reason: str


class DmarcCheck(Frozen):
    result: Result
    reason: str
    from_domain: str = ""  # the RFC 5322 From domain
    policy_domain: str = ""  # where the record was found: the From domain or its organization's
    published: str | None = None  # the policy that applies to this domain: p, or sp for subdomains
    pct: int = 100
    policy: DmarcPolicy | None = None  # what to do with this message: only when DMARC failed
    aligned: list[Literal["dkim", "spf"]] = Field(default_factory=list)


class ArcCheck(Frozen):
    """The chain a message arrived with (RFC 8617 5.2): cv= none, pass or fail."""

    result: Result
    reason: str
    instances: int = 0  # ARC sets on the message
    sealers: list[str] = Field(default_factory=list)  # d= of each seal, oldest first


class Verdicts(Frozen):
    """What Mail Manager's rule set tests: SPF and DKIM verdicts, and the DMARC policy."""

    spf: Verdict
    dkim: Verdict
    dmarc: Verdict
    dmarc_policy: DmarcPolicy | None


# RFC 7208 result -> Mail Manager verdict. GRAY is "no policy to judge by" (none, and neutral,
# where the domain explicitly says nothing); softfail is a failure the owner is unsure of,
# still a failure; PROCESSING_FAILED is anything that kept us from judging.
_SPF_VERDICT = {
    Result.PASS: Verdict.PASS,
    Result.FAIL: Verdict.FAIL,
    Result.SOFTFAIL: Verdict.FAIL,
    Result.NEUTRAL: Verdict.GRAY,
    Result.NONE: Verdict.GRAY,
    Result.TEMPERROR: Verdict.PROCESSING_FAILED,
    Result.PERMERROR: Verdict.PROCESSING_FAILED,
}
_DMARC_VERDICT = {
    Result.PASS: Verdict.PASS,
    Result.FAIL: Verdict.FAIL,
    Result.NONE: Verdict.GRAY,
    Result.TEMPERROR: Verdict.PROCESSING_FAILED,
    Result.PERMERROR: Verdict.PROCESSING_FAILED,
}


def spf_verdict(check: SpfCheck | None) -> Verdict:
    return Verdict.PROCESSING_FAILED if check is None else _SPF_VERDICT[check.result]


def dkim_verdict(checks: list[DkimCheck]) -> Verdict:
    """One verdict for all signatures: any valid signature passes; unsigned mail is GRAY; a DNS
    failure keeps a message from failing (the signature might have verified)."""
    results = {check.result for check in checks}
    if not results:
        return Verdict.GRAY
    if Result.PASS in results:
        return Verdict.PASS
    if Result.TEMPERROR in results:
        return Verdict.PROCESSING_FAILED
    return Verdict.FAIL


def dmarc_verdict(check: DmarcCheck) -> Verdict:
    return _DMARC_VERDICT.get(check.result, Verdict.PROCESSING_FAILED)


class Authentication(Frozen):
    """Everything checked about who sent one message."""

    authserv_id: str
    spf_mail_from: SpfCheck
    spf_helo: SpfCheck
    dkim: list[DkimCheck] = Field(default_factory=list)
    dmarc: DmarcCheck
    arc: ArcCheck = ArcCheck(result=Result.NONE, reason="not checked")

    @property
    def verdicts(self) -> Verdicts:
        return Verdicts(
            spf=spf_verdict(self.spf_mail_from),
            dkim=dkim_verdict(self.dkim),
            dmarc=dmarc_verdict(self.dmarc),
            dmarc_policy=self.dmarc.policy,
        )

    def summary(self) -> str:
        """One line for logs and the timeline."""
        dkim = ",".join(f"{c.result}({c.domain})" for c in self.dkim) or "none"
        policy = f" policy={self.dmarc.policy}" if self.dmarc.policy else ""
        return (
            f"spf={self.spf_mail_from.result} helo={self.spf_helo.result} "
            f"dkim={dkim} dmarc={self.dmarc.result}{policy} arc={self.arc.result}"
        )
