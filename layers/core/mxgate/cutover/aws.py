"""The deployed side of a cutover (`mxgate check --aws`): the stack's outputs, the SES identity
of the domain and its DKIM CNAMEs, and the Mail Manager ingress point, judged from what the AWS
APIs describe (plain dicts, as boto3 returns them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mxgate.cutover.model import Check, Status
from mxgate.ports import DnsAnswer, DnsFailure, Resolver

SES_DKIM_ZONE = "dkim.amazonses.com"  # where SES's DKIM CNAMEs point, unless SigningHostedZone


def stack_check(stack: str, outputs: Mapping[str, str], error: str = "") -> Check:
    wanted = ("MxTarget", "StateTableName", "RawMailBucketName")
    missing = [name for name in wanted if name not in outputs]
    evidence = [f"{k} = {v}" for k, v in sorted(outputs.items())]
    if error or missing:
        return Check(
            name="aws.stack",
            subject=stack,
            status=Status.FAIL,
            summary=error or f"the stack has no output {', '.join(missing)}",
            evidence=evidence,
            fix="deploy template.yaml (sam deploy) and name the stack with --stack",
        )
    return Check(
        name="aws.stack",
        subject=stack,
        status=Status.PASS,
        summary=f"stack {stack}: MX target {outputs['MxTarget']}",
        evidence=evidence,
    )


def _cname(resolver: Resolver, name: str) -> tuple[str, ...] | str:
    try:
        answer: DnsAnswer = resolver.query(name, "CNAME")
    except DnsFailure as error:
        return str(error)
    return tuple(x.lower().rstrip(".") for x in answer.records)


def ses_identity_check(
    domain: str,
    identity: Mapping[str, Any] | None,
    app_domains: Sequence[str],
    resolver: Resolver,
    error: str = "",
) -> Check:
    """The domain is a verified SES identity (DKIM CNAMEs published), which also covers the
    application subdomain (SES: subdomains inherit their parent's verification)."""
    if identity is None:
        return Check(
            name="aws.ses-identity",
            subject=domain,
            status=Status.FAIL,
            summary=error or f"{domain} is not an SES identity",
            fix="deploy the stack: its EmployeeIdentity resource creates it",
        )
    dkim = identity.get("DkimAttributes") or {}
    verification = str(identity.get("VerificationStatus", "NOT_STARTED"))
    dkim_status = str(dkim.get("Status", "NOT_STARTED"))
    zone = str(dkim.get("SigningHostedZone") or SES_DKIM_ZONE)
    evidence = [f"VerificationStatus {verification}", f"DKIM {dkim_status}"]
    unpublished = []
    for token in dkim.get("Tokens") or []:
        name, target = f"{token}._domainkey.{domain}", f"{token}.{zone}"
        found = _cname(resolver, name)
        evidence.append(f"{name} CNAME {found if isinstance(found, str) else ', '.join(found)}")
        if isinstance(found, str) or target not in found:
            unpublished.append(f"{name} CNAME {target}")
    covered = [a for a in app_domains if a.lower().endswith(f".{domain.lower()}")]
    evidence += [f"{a} inherits the verification of {domain}" for a in covered]
    problems = []
    if verification != "SUCCESS":
        problems.append(f"the identity is {verification}")
    if dkim_status != "SUCCESS":
        problems.append(f"DKIM is {dkim_status}")
    if unpublished:
        problems.append(f"{len(unpublished)} DKIM CNAME(s) not published")
    uncovered = [a for a in app_domains if a not in covered and a.lower() != domain.lower()]
    if problems or uncovered:
        fix = "; ".join(
            [f"publish {record}" for record in unpublished]
            + [f"verify {a} as its own SES identity" for a in uncovered]
        )
        return Check(
            name="aws.ses-identity",
            subject=domain,
            status=Status.FAIL,
            summary="SES identity: "
            + "; ".join(problems + [f"{a} is not covered" for a in uncovered]),
            evidence=evidence,
            fix=fix or "publish the stack's DkimRecords output and wait for SES to verify",
        )
    return Check(
        name="aws.ses-identity",
        subject=domain,
        status=Status.PASS,
        summary=f"{domain} is a verified SES identity (DKIM published)"
        + (f", covering {', '.join(covered)}" if covered else ""),
        evidence=evidence,
    )


def ingress_point_check(
    point: Mapping[str, Any] | None, mx_target: str | None, error: str = ""
) -> Check:
    if point is None:
        return Check(
            name="aws.ingress-point",
            subject="Mail Manager",
            status=Status.FAIL,
            summary=error or "no ingress point found",
            fix="deploy the stack; its IngressPointId output names the ingress point",
        )
    subject = str(point.get("IngressPointId", "ingress point"))
    status_value = str(point.get("Status", ""))
    record = str(point.get("ARecord", "")).lower().rstrip(".")
    evidence = [
        f"{k} {point[k]}"
        for k in ("IngressPointName", "Type", "Status", "ARecord", "TlsPolicy")
        if k in point
    ]
    problems = []
    if status_value != "ACTIVE":
        problems.append(f"it is {status_value or 'in no known state'}, not ACTIVE")
    if point.get("Type") != "OPEN":
        problems.append(
            f"its type is {point.get('Type')}, not OPEN (an MX target takes any sender)"
        )
    if mx_target and record != mx_target.lower().rstrip("."):
        problems.append(f"its A record {record} is not the MX target {mx_target}")
    if problems:
        return Check(
            name="aws.ingress-point",
            subject=subject,
            status=Status.FAIL,
            summary="ingress point: " + "; ".join(problems),
            evidence=evidence,
            fix="look at the ingress point in the Mail Manager console",
        )
    return Check(
        name="aws.ingress-point",
        subject=subject,
        status=Status.PASS,
        summary=f"ingress point {subject} is ACTIVE at {record}",
        evidence=evidence,
    )
