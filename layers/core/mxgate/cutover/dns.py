"""The DNS side of a cutover: MX, DMARC and DKIM of the domain (SPF: cutover/spf.py), judged
from the answers of the Resolver port (the gateway's own DNS client, or a test's server)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mxgate.authn.dmarc import parse_record as dmarc_tags
from mxgate.authn.keys import MIN_RSA_BITS, KeyProblem, parse_key
from mxgate.cutover.model import Check, Status, worst
from mxgate.ports import DnsAnswer, DnsFailure, Resolver

# The selectors each mailbox provider signs the company's outbound mail with.
PROVIDER_DKIM = {"Google Workspace": ("google",), "Microsoft 365": ("selector1", "selector2")}

LOW_TTL = 3600  # seconds: an MX that is about to change should not be cached longer


def name_of(host: str) -> str:
    return host.lower().rstrip(".")


def _query(resolver: Resolver, name: str, rrtype: str) -> DnsAnswer | str:
    """The answer, or why there is none (a DNS failure)."""
    try:
        return resolver.query(name, rrtype)
    except DnsFailure as error:
        return str(error)


def lookup_failed(name: str, domain: str, what: str, error: str) -> Check:
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
        return MxFinding(lookup_failed(name, domain, "MX", answer), live=False)
    exchanges = [name_of(x) for x in answer.records]
    evidence = [f"MX {x} (TTL {answer.ttl:g}s)" for x in exchanges] or ["no MX record"]
    target = name_of(expected) if expected else None
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


def txt_records(resolver: Resolver, name: str, prefix: str = "") -> list[str] | str:
    """The TXT records at `name` that start with `prefix` (a version tag), or a DNS failure."""
    answer = _query(resolver, name, "TXT")
    if isinstance(answer, str):
        return answer
    if not prefix:
        return list(answer.records)
    pattern = re.compile(rf"{re.escape(prefix)}(\s|;|$)", re.IGNORECASE)
    return [r for r in answer.records if pattern.match(r.strip())]


# ----------------------------------------------------------------------------- DMARC, DKIM


def dmarc_check(resolver: Resolver, domain: str) -> Check:
    name = f"_dmarc.{domain}"
    found = txt_records(resolver, name, "v=DMARC1")
    fix = f'publish `{name}. TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"`, then tighten p='
    if isinstance(found, str):
        return lookup_failed("dmarc", domain, "DMARC", found)
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
    tags = dmarc_tags(found[0])
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


def dkim_key_problem(name: str, record: str) -> str | None:
    """Why the key record at `name` is no key the verifier could check a signature with, or
    None: it is read by the verifier's own parser, so the check and the gateway agree."""
    try:
        key = parse_key(name, record)
    except KeyProblem as problem:
        return str(problem)
    if key.kind == b"rsa" and key.bits < MIN_RSA_BITS:
        return f"the RSA key at {name} has {key.bits} bits: RFC 8301 asks for {MIN_RSA_BITS}"
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
        found = txt_records(resolver, name)
        if isinstance(found, str):
            broken.append(f"{name}: {found}")
            continue
        keys = [r for r in found if "p=" in r]
        if not keys:
            missing.append(name)
            evidence.append(f"{name}: no key record")
            continue
        problem = dkim_key_problem(name, keys[0])
        evidence.append(f"{name}: TXT {keys[0][:80]}{'...' if len(keys[0]) > 80 else ''}")
        if problem:
            broken.append(problem)
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
