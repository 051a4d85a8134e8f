"""The ingress as the seed tests it with `openssl s_client -starttls smtp`: greeting, EHLO,
STARTTLS with a certificate that matches, the advertised SIZE, and `250` to a test message;
then, for a message sent, its terminal state and the headers it was delivered with.

The probe's results are plain data (an adapter fills them in); everything here is pure."""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Sequence
from datetime import datetime

from pydantic import Field

from mxgate.cutover.model import Check, Frozen, Status
from mxgate.message.parse import header_values, parse_header_section


class Reply(Frozen):
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class Certificate(Frozen):
    subject: str
    issuer: str
    dns_names: list[str] = Field(default_factory=list)
    ip_addresses: list[str] = Field(default_factory=list)
    not_after: datetime
    self_signed: bool
    chain_error: str = ""  # why a client that verifies would refuse it; empty: it verifies


class SmtpProbe(Frozen):
    host: str
    port: int
    error: str = ""  # the session broke off: why
    greeting: Reply | None = None
    ehlo: Reply | None = None
    extensions: dict[str, str] = Field(default_factory=dict)  # before STARTTLS
    starttls: Reply | None = None
    tls_version: str | None = None
    cipher: str | None = None
    certificate: Certificate | None = None
    extensions_tls: dict[str, str] = Field(default_factory=dict)  # after STARTTLS
    mail: Reply | None = None
    rcpt: Reply | None = None
    data: Reply | None = None  # only when a test message was sent

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def name_matches(certificate: Certificate, name: str) -> bool:
    """RFC 6125: the name against the subjectAltNames (a wildcard covers one label)."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is not None:
        return str(address) in certificate.ip_addresses
    wanted = name.lower().rstrip(".")
    parent = wanted.split(".", 1)[1] if "." in wanted else ""
    for listed in certificate.dns_names:
        pattern = listed.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and parent and fnmatch.fnmatchcase(parent, pattern[2:]):
            return True
    return False


def _check(
    probe: SmtpProbe,
    name: str,
    status: Status,
    summary: str,
    *,
    evidence: Sequence[str] = (),
    fix: str = "",
) -> Check:
    return Check(
        name=f"smtp.{name}",
        subject=probe.where,
        status=status,
        summary=summary,
        evidence=list(evidence),
        fix=fix,
    )


def smtp_checks(
    probe: SmtpProbe,
    *,
    expected_name: str,
    expected_size: int | None,
    now: datetime,
    sent: bool,
) -> list[Check]:
    """One check per step of the session, as far as it went."""
    checks: list[Check] = []
    if probe.greeting is None or probe.greeting.code != 220:
        shown = [str(probe.greeting)] if probe.greeting else []
        checks.append(
            _check(
                probe,
                "greeting",
                Status.FAIL,
                "no 220 greeting" + (f": {probe.error}" if probe.error else ""),
                evidence=shown,
                fix="check the host, the port and the ingress point's status",
            )
        )
        return checks
    checks.append(_check(probe, "greeting", Status.PASS, str(probe.greeting)))
    if probe.ehlo is None or probe.ehlo.code != 250:
        checks.append(
            _check(probe, "ehlo", Status.FAIL, f"EHLO refused: {probe.ehlo or probe.error}")
        )
        return checks
    checks.append(
        _check(
            probe,
            "ehlo",
            Status.PASS,
            "EHLO accepted",
            evidence=[f"{k} {v}".strip() for k, v in probe.extensions.items()],
        )
    )
    checks += _tls_checks(probe, expected_name, now)
    if probe.starttls is None or probe.tls_version is None:
        return checks
    checks.append(_size_check(probe, expected_size))
    checks.append(_message_check(probe, sent))
    return checks


def _tls_checks(probe: SmtpProbe, expected_name: str, now: datetime) -> list[Check]:
    if "starttls" not in probe.extensions:
        return [
            _check(
                probe,
                "starttls",
                Status.FAIL,
                "STARTTLS is not offered",
                fix="senders' mail would travel in the clear: the ingress point must offer it",
            )
        ]
    if probe.starttls is None or probe.starttls.code != 220 or probe.tls_version is None:
        return [
            _check(
                probe,
                "starttls",
                Status.FAIL,
                f"STARTTLS failed: {probe.starttls or ''} {probe.error}".strip(),
            )
        ]
    old = probe.tls_version in ("TLSv1", "TLSv1.1", "SSLv3")
    checks = [
        _check(
            probe,
            "starttls",
            Status.WARN if old else Status.PASS,
            f"STARTTLS: {probe.tls_version}, {probe.cipher}",
            evidence=[str(probe.starttls)],
            fix="allow TLS 1.2 and 1.3 only" if old else "",
        )
    ]
    certificate = probe.certificate
    if certificate is None:
        return checks
    evidence = [
        f"subject {certificate.subject}, issuer {certificate.issuer}",
        f"names {', '.join(certificate.dns_names + certificate.ip_addresses) or '(none)'}",
        f"valid until {certificate.not_after.isoformat()}",
    ]
    if certificate.chain_error:
        evidence.append(f"verification: {certificate.chain_error}")
    if certificate.not_after < now:
        status, summary = Status.FAIL, "the certificate has expired"
        fix = "renew it"
    elif not name_matches(certificate, expected_name):
        status, summary = Status.FAIL, f"the certificate does not match {expected_name}"
        fix = f"present a certificate for {expected_name} (the MX target)"
    elif certificate.self_signed or certificate.chain_error:
        status = Status.WARN
        summary = f"the certificate matches {expected_name} but does not verify"
        fix = (
            "senders that verify (MTA-STS, DANE) will refuse it; Mail Manager's ingress points "
            "present a certificate that verifies, the local gateway a self-signed one"
        )
    else:
        status, summary, fix = Status.PASS, f"the certificate matches {expected_name}", ""
    checks.append(_check(probe, "certificate", status, summary, evidence=evidence, fix=fix))
    return checks


def _size_check(probe: SmtpProbe, expected: int | None) -> Check:
    advertised = probe.extensions_tls.get("size", probe.extensions.get("size"))
    if advertised is None:
        return _check(
            probe,
            "size",
            Status.WARN,
            "no SIZE advertised: senders learn the limit only after sending the whole message",
        )
    evidence = [f"SIZE {advertised}"]
    if expected is not None and advertised.strip() != str(expected):
        return _check(
            probe,
            "size",
            Status.WARN,
            f"SIZE {advertised}, the template says {expected}",
            evidence=evidence,
            fix="deploy the template (MaxMessageSizeBytes), or check the right host",
        )
    return _check(probe, "size", Status.PASS, f"SIZE {advertised} advertised", evidence=evidence)


def queued_id(reply: Reply) -> str | None:
    """The id in `250 2.0.0 Ok: queued as ID`, if the reply says one."""
    _, marker, rest = reply.text.partition("queued as ")
    return rest.split()[0] if marker and rest.split() else None


def _message_check(probe: SmtpProbe, sent: bool) -> Check:
    steps = [str(x) for x in (probe.mail, probe.rcpt, probe.data) if x is not None]
    last = probe.data if sent else probe.rcpt
    if last is None:
        return _check(
            probe,
            "message",
            Status.FAIL,
            f"the test transaction broke off: {probe.error or steps[-1:]}",
            evidence=steps,
        )
    if last.code == 250:
        summary = (
            f"the test message was accepted: {last}"
            if sent
            else ("the test recipient is accepted (nothing sent; --send-test sends a message)")
        )
        return _check(probe, "message", Status.PASS, summary, evidence=steps)
    status = Status.WARN if 400 <= last.code < 500 else Status.FAIL
    return _check(
        probe,
        "message",
        status,
        f"the test {'message' if sent else 'recipient'} was refused: {last}",
        evidence=steps,
        fix="check the traffic policy (mxgate rules explain) and the recipient's domain",
    )


# ----------------------------------------------------------------------------- after delivery


class Settled(Frozen):
    """A recipient's terminal state, as the timeline gives it."""

    recipient: str
    outcome: str
    route: str = ""
    detail: str = ""


_GOOD = ("delivered", "handed_to_app")


def terminal_check(message_id: str, recipients: Sequence[str], settled: Sequence[Settled]) -> Check:
    by_recipient = {s.recipient.casefold(): s for s in settled}
    evidence = [
        f"{s.recipient}: {s.outcome}"
        + (f" ({s.route})" if s.route else "")
        + (f": {s.detail}" if s.detail else "")
        for s in settled
    ]
    missing = [r for r in recipients if r.casefold() not in by_recipient]
    bad = [s for s in settled if s.outcome not in _GOOD]
    if missing:
        status = Status.FAIL
        summary = f"{message_id}: not settled in time for {', '.join(missing)}"
        fix = f"look at `mxgate trace {message_id}`"
    elif bad:
        status = Status.FAIL
        summary = f"{message_id}: " + ", ".join(f"{s.recipient} {s.outcome}" for s in bad)
        fix = f"`mxgate trace {message_id}` says why"
    else:
        status = Status.PASS
        summary = f"{message_id}: " + ", ".join(f"{s.recipient} {s.outcome}" for s in settled)
        fix = ""
    return Check(
        name="delivery.terminal",
        subject=message_id,
        status=status,
        summary=summary,
        evidence=evidence,
        fix=fix,
    )


def delivered_header_checks(
    where: str, header_section: bytes, envelope_sender: str, authserv_id: str
) -> list[Check]:
    """The delivered copy keeps the envelope sender (Return-Path) and carries the gateway's
    Authentication-Results, as the seed's last test step reads them."""
    message = parse_header_section(header_section)
    return_paths = header_values(message, "return-path")
    results = header_values(message, "authentication-results")
    ours = [r for r in results if r.split(";", 1)[0].strip().lower() == authserv_id.lower()]
    wanted = f"<{envelope_sender}>"
    return [
        Check(
            name="delivery.return-path",
            subject=where,
            status=Status.PASS if return_paths[:1] == [wanted] else Status.FAIL,
            summary=(
                f"Return-Path {wanted} preserved"
                if return_paths[:1] == [wanted]
                else f"Return-Path is {return_paths[:1] or 'missing'}, not {wanted}"
            ),
            evidence=[f"Return-Path: {v}" for v in return_paths],
            fix="" if return_paths[:1] == [wanted] else "relay with MAIL FROM preserved",
        ),
        Check(
            name="delivery.authentication-results",
            subject=where,
            status=Status.PASS if ours else Status.FAIL,
            summary=(
                f"Authentication-Results of {authserv_id} present"
                if ours
                else f"no Authentication-Results of {authserv_id}"
            ),
            evidence=[f"Authentication-Results: {' '.join(v.split())[:200]}" for v in results],
            fix="" if ours else "the process step adds it: check that the message went through it",
        ),
    ]
