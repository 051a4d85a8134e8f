"""The DNS side of a cutover: MX, SPF, DMARC and DKIM of the domain, judged from the answers
of the Resolver port (the gateway's own DNS client, or a test's server)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mxgate.authn.dmarc import parse_record as tag_list  # RFC 6376 3.2 and RFC 7489 6.4 alike
from mxgate.authn.model import Result
from mxgate.authn.spf import check_host
from mxgate.cutover.model import Check, Status, worst
from mxgate.ports import DnsAnswer, DnsFailure, Resolver

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

# What each mailbox provider's own outbound mail needs in the domain's records.
PROVIDER_SPF = {
    "Google Workspace": "_spf.google.com",
    "Microsoft 365": "spf.protection.outlook.com",
}
PROVIDER_DKIM = {"Google Workspace": ("google",), "Microsoft 365": ("selector1", "selector2")}

LOW_TTL = 3600  # seconds: an MX that is about to change should not be cached longer
MAX_SPF_LOOKUPS = 10  # RFC 7208 4.6.4


def _name(host: str) -> str:
    return host.lower().rstrip(".")


def _query(resolver: Resolver, name: str, rrtype: str) -> DnsAnswer | str:
    """The answer, or why there is none (a DNS failure)."""
    try:
        return resolver.query(name, rrtype)
    except DnsFailure as error:
        return str(error)


def _lookup_failed(name: str, domain: str, what: str, error: str) -> Check:
    return Check(
        name=name,
        subject=domain,
        status=Status.FAIL,
        summary=f"the {what} lookup failed",
        evidence=[error],
        fix="make the domain's name servers answer, then check again",
    )


def addresses_of(resolver: Resolver, host: str) -> list[str]:
    """The A and AAAA records of a host; nothing when it has none or DNS fails."""
    found: list[str] = []
    for rrtype in ("A", "AAAA"):
        answer = _query(resolver, host, rrtype)
        if isinstance(answer, DnsAnswer):
            found += answer.records
    return found


# ----------------------------------------------------------------------------- MX


@dataclass(frozen=True, slots=True)
class MxFinding:
    check: Check
    live: bool  # every MX of the domain is the gateway: mail flows through it now


def mx_check(resolver: Resolver, domain: str, expected: str | None) -> MxFinding:
    """The domain's MX against the ingress point's host name (`expected`), with the TTL."""
    name = "mx"
    answer = _query(resolver, domain, "MX")
    if isinstance(answer, str):
        return MxFinding(_lookup_failed(name, domain, "MX", answer), live=False)
    exchanges = [_name(x) for x in answer.records]
    evidence = [f"MX {x} (TTL {answer.ttl:g}s)" for x in exchanges] or ["no MX record"]
    target = _name(expected) if expected else None
    publish = f"publish `{domain}. MX 10 {target or '<the MX target>'}.`"
    if not exchanges:
        check = Check(
            name=name,
            subject=domain,
            status=Status.FAIL,
            summary="the domain has no MX record",
            evidence=evidence,
            fix=publish,
        )
        return MxFinding(check, live=False)
    if target is None:
        return MxFinding(
            Check(
                name=name,
                subject=domain,
                status=Status.WARN,
                summary="no ingress point to compare with",
                evidence=evidence,
                fix="give --mx-target HOST (the stack's MxTarget output) or --aws --stack NAME",
            ),
            live=False,
        )
    others = [x for x in exchanges if x != target]
    ttl_note = (
        f"; lower its TTL ({answer.ttl:g}s) to 300 a day ahead, so a change (or a rollback) "
        "takes effect in minutes"
        if answer.ttl > LOW_TTL
        else ""
    )
    if not others:
        check = Check(
            name=name,
            subject=domain,
            status=Status.PASS,
            summary=f"MX points at the ingress point {target}",
            evidence=evidence,
        )
        return MxFinding(check, live=True)
    if len(others) < len(exchanges):
        summary = f"MX also points elsewhere ({', '.join(others)}): that mail bypasses the gateway"
        fix = f"remove the other MX records, keep only {target}"
    else:
        summary = f"MX points elsewhere ({', '.join(others)}), not at the ingress point {target}"
        fix = publish + ttl_note
    return MxFinding(
        Check(
            name=name,
            subject=domain,
            status=Status.FAIL,
            summary=summary,
            evidence=evidence,
            fix=fix,
        ),
        live=False,
    )


def subdomain_trial_check(domain: str, live: bool, tried: Sequence[str]) -> Check:
    """The seed's advice: change the MX of a test subdomain first, and check it end to end."""
    evidence = [f"tried: {t}" for t in tried] or ["no subdomain of the domain passed a --send-test"]
    advice = (
        f"point a test subdomain's MX (e.g. test.{domain}) at the ingress point, then run "
        f"`mxgate check --domain test.{domain} --smtp HOST:25 --send-test` until it passes"
    )
    if tried:
        return Check(
            name="test-subdomain",
            subject=domain,
            status=Status.PASS,
            summary=f"a test subdomain was tried first ({tried[-1]})",
            evidence=evidence,
        )
    if live:
        return Check(
            name="test-subdomain",
            subject=domain,
            status=Status.WARN,
            summary="the cutover is live, but no test subdomain was tried first",
            evidence=evidence,
            fix=advice,
        )
    return Check(
        name="test-subdomain",
        subject=domain,
        status=Status.WARN,
        summary="no test subdomain tried yet: try one before changing the domain's MX",
        evidence=evidence,
        fix=advice,
    )


# ----------------------------------------------------------------------------- SPF


def _txt(resolver: Resolver, name: str, prefix: str = "") -> list[str] | str:
    """The TXT records at `name` that start with `prefix` (a version tag), or a DNS failure."""
    answer = _query(resolver, name, "TXT")
    if isinstance(answer, str):
        return answer
    if not prefix:
        return list(answer.records)
    pattern = re.compile(rf"{re.escape(prefix)}(\s|;|$)", re.IGNORECASE)
    return [r for r in answer.records if pattern.match(r.strip())]


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
        for term in text.split()[1:]:
            target = _included(term)
            if target is None:
                continue
            walk.reached.append((owner, target))
            if "%{" in target or target in seen:
                continue  # a macro depends on the sender; a name seen is not asked twice
            seen.add(target)
            lookups += 1
            if lookups > MAX_SPF_LOOKUPS:
                walk.problems.append(f"more than {MAX_SPF_LOOKUPS} includes: stopped looking")
                return walk
            found = _txt(resolver, target, "v=spf1")
            if isinstance(found, str):
                walk.problems.append(f"{target}: {found}")
            elif found:
                pending.append((target, found[0]))
    return walk


def _included(term: str) -> str | None:
    lowered = term.lower()
    for prefix in ("include:", "+include:", "redirect="):
        if lowered.startswith(prefix):
            return _name(term[len(prefix) :])
    return None


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
    found = _txt(resolver, domain, "v=spf1")
    if isinstance(found, str):
        return _lookup_failed("spf", domain, "SPF", found)
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
        result, reason = check_host(resolver, ip, domain, f"postmaster@{domain}", domain)
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


# ----------------------------------------------------------------------------- DMARC, DKIM


def dmarc_check(resolver: Resolver, domain: str) -> Check:
    name = f"_dmarc.{domain}"
    found = _txt(resolver, name, "v=DMARC1")
    fix = f'publish `{name}. TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"`, then tighten p='
    if isinstance(found, str):
        return _lookup_failed("dmarc", domain, "DMARC", found)
    if not found:
        return Check(
            name="dmarc",
            subject=domain,
            status=Status.FAIL,
            summary="no DMARC record",
            evidence=[f"no TXT record starting with v=DMARC1 at {name}"],
            fix=fix,
        )
    if len(found) > 1:
        return Check(
            name="dmarc",
            subject=domain,
            status=Status.FAIL,
            summary=f"{len(found)} DMARC records: receivers ignore them all (RFC 7489 6.6.3)",
            evidence=[f"TXT {r}" for r in found],
            fix="keep one",
        )
    tags = tag_list(found[0])
    evidence = [f"TXT {found[0]}"]
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Check(
            name="dmarc",
            subject=domain,
            status=Status.FAIL,
            summary=f"the DMARC record does not parse: p={tags.get('p', '(missing)')}",
            evidence=evidence,
            fix="p= must be none, quarantine or reject, right after v=DMARC1",
        )
    note = " (monitoring only)" if policy == "none" else ""
    return Check(
        name="dmarc",
        subject=domain,
        status=Status.PASS,
        summary=f"DMARC p={policy}{note}",
        evidence=evidence,
    )


def dkim_key_problem(record: str) -> str | None:
    """Why a DKIM key record (RFC 6376 3.6.1) does not parse, or None."""
    tags = tag_list(record)
    if tags.get("v", "DKIM1") != "DKIM1":
        return f"v={tags['v']} is not DKIM1"
    if tags.get("k", "rsa").lower() not in ("rsa", "ed25519"):
        return f"k={tags['k']} is not rsa or ed25519"
    key = re.sub(r"\s+", "", tags.get("p", ""))
    if "p" not in tags:
        return "no p= (public key)"
    if not key:
        return "p= is empty: the key is revoked"
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return "p= is not base64"
    return None


def dkim_check(resolver: Resolver, domain: str, selectors: Sequence[str]) -> Check:
    """The key records of the selectors the company signs with exist and parse."""
    if not selectors:
        return Check(
            name="dkim",
            subject=domain,
            status=Status.WARN,
            summary="no DKIM selector known to look up",
            evidence=[],
            fix="give --dkim-selector NAME (the s= of the company's own signatures)",
        )
    evidence, broken, missing, good = [], [], [], []
    for selector in selectors:
        name = f"{selector}._domainkey.{domain}"
        found = _txt(resolver, name)
        if isinstance(found, str):
            broken.append(f"{name}: {found}")
            continue
        keys = [r for r in found if "p=" in r]
        if not keys:
            missing.append(name)
            evidence.append(f"{name}: no key record")
            continue
        problem = dkim_key_problem(keys[0])
        evidence.append(f"{name}: TXT {keys[0][:80]}{'...' if len(keys[0]) > 80 else ''}")
        if problem:
            broken.append(f"{name}: {problem}")
        else:
            good.append(selector)
    statuses = [Status.FAIL if broken or not good else Status.PASS]
    if missing and good:
        statuses.append(Status.WARN)
    status = worst(statuses)
    if status is Status.PASS:
        summary = f"DKIM keys published and parse ({', '.join(good)})"
        fix = ""
    elif broken:
        summary = "DKIM key records do not parse: " + "; ".join(broken)
        fix = "publish the key the signing service gives (v=DKIM1; k=rsa; p=...)"
    elif not good:
        summary = f"no DKIM key record at {', '.join(missing)}"
        fix = "turn on DKIM signing at the mailbox providers and publish their keys"
    else:
        summary = f"DKIM keys for {', '.join(good)}; none at {', '.join(missing)}"
        fix = "publish the missing selectors' keys, or leave them out with --dkim-selector"
    return Check(
        name="dkim", subject=domain, status=status, summary=summary, evidence=evidence, fix=fix
    )
