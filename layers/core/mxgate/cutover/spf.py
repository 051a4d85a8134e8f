"""The SPF side of a cutover: the domain's record must not authorise the gateway's addresses
or a range other companies send from too, and should still authorise the company's senders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mxgate.authn.model import Result
from mxgate.authn.spf import check_host
from mxgate.authn.spf_record import SpfError, SpfRecord, Token, parse_record
from mxgate.cutover.dns import lookup_failed, name_of, txt_records
from mxgate.cutover.model import Check, Status
from mxgate.ports import Resolver

# Includes (and any name under them) that authorise addresses other companies send from too.
# A domain's SPF that names one lets their mail pass SPF as ours; the seed's warning is the
# Mail Manager case: never put its addresses in the domain's SPF record.
SHARED_SPF = {
    "amazonses.com": "SES sending's include, shared by every SES customer (SES Developer Guide, "
    "'Authenticating Email with SPF in Amazon SES': it belongs in a custom MAIL FROM domain's "
    "record, not the domain's own)",
    "amazonaws.com": "AWS service names, shared by every AWS customer (Mail Manager ingress "
    "points, SES receiving endpoints inbound-smtp.<region>.amazonaws.com)",
}

# What each mailbox provider's own outbound mail needs in the domain's SPF record.
PROVIDER_SPF = {
    "Google Workspace": "_spf.google.com",
    "Microsoft 365": "spf.protection.outlook.com",
}

MAX_SPF_LOOKUPS = 10  # RFC 7208 4.6.4


@dataclass
class _SpfWalk:
    """Every include: and redirect= reached from a record, as far as the lookup limit goes."""

    reached: list[tuple[str, str]]  # (the record's domain, the name it includes)
    problems: list[str]


def walk_spf(resolver: Resolver, domain: str, record: str) -> _SpfWalk:
    walk = _SpfWalk([], [])
    pending = [(domain, record)]
    lookups = 0
    seen = {domain}
    while pending:
        owner, text = pending.pop(0)
        try:
            targets = _included(parse_record(text))
        except SpfError as error:
            walk.problems.append(f"{owner}: the record is a permerror ({error.reason})")
            continue
        for target in targets:
            walk.reached.append((owner, target))
            if "%{" in target or target in seen:
                continue  # a macro depends on the sender; a name seen is not asked twice
            seen.add(target)
            lookups += 1
            if lookups > MAX_SPF_LOOKUPS:
                walk.problems.append(f"more than {MAX_SPF_LOOKUPS} includes: stopped looking")
                return walk
            found = txt_records(resolver, target, "v=spf1")
            if isinstance(found, str):
                walk.problems.append(f"{target}: {found}")
            elif found:
                pending.append((target, found[0]))
    return walk


def _included(record: SpfRecord) -> list[str]:
    """The names a record's include: mechanisms and redirect= send a check on to, in order."""
    domains = [m.domain for m in record.mechanisms if m.name == "include" and m.domain]
    if record.redirect is not None:
        domains.append(record.redirect)
    return [name_of("".join(_written(t) for t in domain)) for domain in domains]


def _written(token: Token) -> str:
    """A macro as the record wrote it (it depends on the sender, so it is never looked up)."""
    if isinstance(token, str):
        return token
    keep = "" if token.keep is None else str(token.keep)
    return f"%{{{token.letter}{keep}{'r' if token.reverse else ''}{token.delimiters}}}"


def _shared(name: str) -> str | None:
    for suffix, why in SHARED_SPF.items():
        if name == suffix or name.endswith(f".{suffix}"):
            return why
    return None


def spf_check(
    resolver: Resolver, domain: str, gateway_ips: Sequence[str], providers: Sequence[str]
) -> Check:
    """SPF must not authorise the gateway's addresses or a shared SES / Mail Manager range,
    and should still authorise the providers the company sends through."""
    found = txt_records(resolver, domain, "v=spf1")
    if isinstance(found, str):
        return lookup_failed("spf", domain, "SPF", found)
    expected = [PROVIDER_SPF[p] for p in providers if p in PROVIDER_SPF]
    suggested = " ".join(["v=spf1", *(f"include:{x}" for x in expected), "-all"])
    if not found:
        return Check(
            name="spf",
            subject=domain,
            status=Status.WARN,
            summary="no SPF record: receivers cannot tell the company's real senders",
            evidence=["no TXT record starting with v=spf1"],
            fix=f'publish `{domain}. TXT "{suggested}"`',
        )
    if len(found) > 1:
        return Check(
            name="spf",
            subject=domain,
            status=Status.FAIL,
            summary=f"{len(found)} SPF records: every SPF check of the domain is a permerror",
            evidence=[f"TXT {r}" for r in found],
            fix="merge them into one record",
        )
    record = found[0]
    evidence = [f"TXT {record}"]
    failures: list[str] = []
    warnings: list[str] = []
    for ip in gateway_ips:
        result, reason, _ = check_host(resolver, ip, domain, f"postmaster@{domain}", domain)
        evidence.append(f"check_host({ip}, {domain}) = {result.value}: {reason}")
        if result is Result.PASS:
            failures.append(f"authorises the gateway's address {ip}")
        elif result in (Result.PERMERROR, Result.TEMPERROR):
            failures.append(f"evaluates to {result.value} ({reason})")
    walk = walk_spf(resolver, domain, record)
    for owner, target in walk.reached:
        why = _shared(target)
        if why is not None:
            where = "" if owner == domain else f" (through {owner})"
            failures.append(f"includes the shared range {target}{where}: {why}")
    warnings += walk.problems
    reached = {target for _, target in walk.reached}
    for provider in providers:
        include = PROVIDER_SPF.get(provider)
        if include is None:
            continue
        if include in reached:
            evidence.append(f"{provider} is authorised (include:{include})")
        else:
            warnings.append(f"does not authorise {provider}'s senders (no include:{include})")
    if failures:
        return Check(
            name="spf",
            subject=domain,
            status=Status.FAIL,
            summary="SPF " + "; ".join(dict.fromkeys(failures)),
            evidence=evidence + warnings,
            fix="take the gateway's addresses and shared AWS includes out of the record: the "
            f"gateway receives, it never sends as {domain}; e.g. `{suggested}`",
        )
    if warnings:
        return Check(
            name="spf",
            subject=domain,
            status=Status.WARN,
            summary="SPF " + "; ".join(dict.fromkeys(warnings)),
            evidence=evidence,
            fix=f"authorise the company's senders, e.g. `{suggested}`",
        )
    return Check(
        name="spf",
        subject=domain,
        status=Status.PASS,
        summary="SPF authorises the company's senders and not the gateway",
        evidence=evidence,
    )
