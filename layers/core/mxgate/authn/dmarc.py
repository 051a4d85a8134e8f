"""DMARC (RFC 7489): does an SPF or DKIM pass align with the From domain, and what does the
From domain's owner ask receivers to do with mail that fails (p, sp for subdomains, pct)? From
DMARCbis, np: the policy for subdomains that do not exist at all.

The organizational domain comes from the Public Suffix List that the `publicsuffixlist` package
ships (no download at run time)."""

from __future__ import annotations

import hashlib
import re
from functools import cache, lru_cache
from typing import Literal

from publicsuffixlist import PublicSuffixList

from mxgate.authn.model import DkimCheck, DmarcCheck, DmarcPolicy, Result, SpfCheck
from mxgate.ports import DnsFailure, Resolver

_POLICIES = {
    "none": DmarcPolicy.NONE,
    "quarantine": DmarcPolicy.QUARANTINE,
    "reject": DmarcPolicy.REJECT,
}
# RFC 7489 6.6.4: a message left out by pct gets the next milder policy.
_MILDER = {
    DmarcPolicy.REJECT: DmarcPolicy.QUARANTINE,
    DmarcPolicy.QUARANTINE: DmarcPolicy.NONE,
    DmarcPolicy.NONE: DmarcPolicy.NONE,
}


@cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list the package ships: no download


@lru_cache(maxsize=4096)  # the list is fixed: a From domain's answer is the same each message
def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the registered domain under its public suffix."""
    domain = domain.lower().rstrip(".")
    return _public_suffixes().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    identifier = identifier.lower().rstrip(".")
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


def parse_record(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in text.split(";"):
        name, equals, value = item.partition("=")
        if equals:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


class _NoDecision(Exception):  # noqa: N818 -- ends the check with a result other than pass/fail
    def __init__(self, result: Result, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def _record_at(resolver: Resolver, domain: str) -> dict[str, str] | None:
    try:
        answer = resolver.query(f"_dmarc.{domain}", "TXT")
    except DnsFailure as error:
        raise _NoDecision(Result.TEMPERROR, f"DNS failure: {error}") from error
    records = [r for r in answer.records if re.match(r"v\s*=\s*DMARC1\s*(;|$)", r, re.IGNORECASE)]
    if len(records) > 1:
        raise _NoDecision(Result.PERMERROR, f"_dmarc.{domain} has {len(records)} DMARC records")
    return parse_record(records[0]) if records else None


def _subdomain_policy(resolver: Resolver, from_domain: str, record: dict[str, str]) -> str | None:
    """For a From domain under the organization's record: np= when the domain does not exist
    (DMARCbis; NXDOMAIN, which holds for every type), else sp=; None for neither."""
    np_policy = record.get("np", "").lower()
    if np_policy in _POLICIES:
        try:
            exists = resolver.query(from_domain, "A").exists
        except DnsFailure:
            exists = True  # not known to be missing: the subdomain policy holds
        if not exists:
            return np_policy
    sp_policy = record.get("sp", "").lower()
    return sp_policy if sp_policy in _POLICIES else None


def _sampled(pct: int, key: str) -> bool:
    """Whether this message is among the pct% the policy applies to: decided by the message
    itself, so a retry or a second look decides the same."""
    if pct >= 100:
        return True
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < pct


def check_dmarc(
    resolver: Resolver,
    from_domains: list[str],
    spf: SpfCheck,
    dkim: list[DkimCheck],
    sampling_key: str,
) -> DmarcCheck:
    domains = sorted({d.lower().rstrip(".") for d in from_domains if d})
    if not domains:
        return DmarcCheck(result=Result.NONE, reason="no From domain to check")
    if len(domains) > 1:
        return DmarcCheck(
            result=Result.PERMERROR,
            reason=f"From names several domains ({', '.join(domains)})",
            from_domain=domains[0],
        )
    from_domain = domains[0]
    try:
        return _evaluate(resolver, from_domain, spf, dkim, sampling_key)
    except _NoDecision as stop:
        return DmarcCheck(result=stop.result, reason=stop.reason, from_domain=from_domain)


def _evaluate(
    resolver: Resolver, from_domain: str, spf: SpfCheck, dkim: list[DkimCheck], sampling_key: str
) -> DmarcCheck:
    policy_domain = from_domain
    record = _record_at(resolver, from_domain)
    if record is None:
        policy_domain = organizational_domain(from_domain)
        if policy_domain != from_domain:
            record = _record_at(resolver, policy_domain)
    if record is None:
        return DmarcCheck(
            result=Result.NONE, reason=f"no DMARC record for {from_domain}", from_domain=from_domain
        )
    requested = record.get("p", "").lower()
    if requested not in _POLICIES:
        if not record.get("rua"):  # RFC 7489 6.6.3: a bad p= with no rua= discards the record
            raise _NoDecision(Result.PERMERROR, f"_dmarc.{policy_domain}: invalid p={requested!r}")
        requested = "none"
    published = requested
    if policy_domain != from_domain:
        published = _subdomain_policy(resolver, from_domain, record) or published
    try:
        pct = min(max(int(record.get("pct", "100")), 0), 100)
    except ValueError:
        pct = 100
    adkim = "s" if record.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if record.get("aspf", "r").lower() == "s" else "r"

    dkim_aligned = [c for c in dkim if aligned(c.domain, from_domain, adkim)]
    spf_aligned = bool(spf.domain) and aligned(spf.domain, from_domain, aspf)
    passed: list[Literal["dkim", "spf"]] = []
    if any(c.result is Result.PASS for c in dkim_aligned):
        passed.append("dkim")
    if spf_aligned and spf.result is Result.PASS:
        passed.append("spf")
    found = DmarcCheck(
        result=Result.FAIL,
        reason=f"neither SPF nor DKIM aligned with {from_domain} passed",
        from_domain=from_domain,
        policy_domain=policy_domain,
        published=published,
        pct=pct,
    )
    if passed:
        reason = f"{' and '.join(passed)} aligned with {from_domain}"
        return found.model_copy(update={"result": Result.PASS, "reason": reason, "aligned": passed})
    if any(c.result is Result.TEMPERROR for c in dkim_aligned) or (
        spf_aligned and spf.result is Result.TEMPERROR
    ):
        reason = "an aligned check failed on DNS: it might have passed"
        return found.model_copy(update={"result": Result.TEMPERROR, "reason": reason})
    policy = _POLICIES[published]
    if not _sampled(pct, sampling_key):
        policy = _MILDER[policy]
        reason = f"{found.reason} (outside pct={pct}: policy {policy.value.lower()})"
        return found.model_copy(update={"policy": policy, "reason": reason})
    return found.model_copy(update={"policy": policy})
