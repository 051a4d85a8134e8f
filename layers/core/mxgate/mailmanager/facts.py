"""What the emulator knows about a session and a message when it evaluates conditions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mxgate.authn.model import DmarcPolicy, Verdict
from mxgate.mailmanager.addons import AddonResult


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """Known at RCPT time, for the traffic policy."""

    sender_ip: str
    tls_protocol: str | None = None  # "TLS1_2", "TLS1_3", or None without STARTTLS
    addons: Mapping[str, AddonResult] = field(default_factory=dict)  # by add-on instance


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """Known after DATA, for the rule set. Header values are decoded text."""

    mail_from: str
    helo: str
    source_ip: str
    size: int
    tls: bool = False
    tls_wrapped: bool = False
    subject: str = ""
    from_addresses: Sequence[str] = ()
    sender_addresses: Sequence[str] = ()
    to_addresses: Sequence[str] = ()
    cc_addresses: Sequence[str] = ()
    raw_headers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    read_receipt_requested: bool = False
    spf: Verdict = Verdict.PROCESSING_FAILED
    dkim: Verdict = Verdict.PROCESSING_FAILED
    dmarc_policy: DmarcPolicy | None = None  # the published policy, present when DMARC failed

    def header(self, name: str) -> Sequence[str]:
        return self.raw_headers.get(name.lower(), ())
