"""Quarantine rules of the routes file, and their evaluation. Pure.

A rule is written over what the process step knows about a message once it is parsed and
authenticated: the SPF, DKIM and DMARC results (RFC 8601 vocabulary), the DMARC policy the
sender's domain publishes, the From domain, and each attachment's file name and content type.
A fact that is not known (no authentication ran, no verdict) never matches: a message is
quarantined for what it is, never for what we could not find out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # the routes file's models need none of these: every function reads routes
    from mxgate.authn.model import Authentication
    from mxgate.message.model import Attachment, ParsedMessage

AuthResult = Literal[
    "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"
]
DmarcPolicy = Literal["none", "quarantine", "reject"]
Values = Annotated[list[str], Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class Match(Strict):
    """Conditions over one message. All the conditions given must hold (AND); the values of
    one condition are alternatives (OR). Patterns are shell globs, case-insensitive."""

    spf: Annotated[list[AuthResult], Field(min_length=1)] | None = Field(
        default=None, description="SPF result of the envelope sender"
    )
    dkim: Annotated[list[AuthResult], Field(min_length=1)] | None = Field(
        default=None, description="DKIM result (pass if any signature passes)"
    )
    dmarc: Annotated[list[AuthResult], Field(min_length=1)] | None = Field(
        default=None, description="DMARC result for the From domain"
    )
    dmarc_policy: Annotated[list[DmarcPolicy], Field(min_length=1)] | None = Field(
        default=None, description="the policy the From domain publishes (p=, or sp= for subdomains)"
    )
    from_domain: Values | None = Field(
        default=None, description="domain of the From address (globs: '*.example.com')"
    )
    attachment_name: Values | None = Field(
        default=None,
        description="any name an attachment carries (globs: '*.exe'): its filename and name "
        "parameters, each duplicate and RFC 2231 piece, with directories and NTFS stream "
        "suffixes (x.exe::$DATA) taken off",
    )
    attachment_type: Values | None = Field(
        default=None,
        description="any attachment's content type (globs: 'application/x-ms*'), as declared or "
        "as its first bytes show it (a PE executable named report.pdf is one)",
    )


class QuarantineRule(Strict):
    """Recipients whose route this rule covers are quarantined when `when` holds and
    `unless` does not. Rules are tried in order; the first that applies decides."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    routes: list[str] | None = Field(
        default=None, description="route names (destinations or apps) it covers; default: all"
    )
    when: Match
    unless: Match | None = None

    @model_validator(mode="after")
    def _has_conditions(self) -> Self:
        if not self.when.model_fields_set:
            raise ValueError(f"quarantine rule {self.name}: `when` needs at least one condition")
        return self


@dataclass(frozen=True, slots=True)
class AuthVerdicts:
    """Authentication results, once the authentication step provides them."""

    spf: str | None = None
    dkim: str | None = None
    dmarc: str | None = None
    dmarc_policy: str | None = None


@dataclass(frozen=True, slots=True)
class MessageFacts:
    verdicts: AuthVerdicts = AuthVerdicts()
    from_domain: str | None = None
    attachments: Sequence[Attachment] = field(default_factory=tuple)


def auth_verdicts(authentication: Authentication | None) -> AuthVerdicts | None:
    """The results quarantine rules test, in RFC 8601 words."""
    if authentication is None:
        return None
    dkim = [check.result.value for check in authentication.dkim]
    return AuthVerdicts(
        spf=authentication.spf_mail_from.result.value,
        dkim="pass" if "pass" in dkim else (dkim[0] if dkim else "none"),
        dmarc=authentication.dmarc.result.value,
        dmarc_policy=authentication.dmarc.published.lower()
        if authentication.dmarc.published
        else None,
    )


def facts_of(parsed: ParsedMessage, verdicts: AuthVerdicts | None = None) -> MessageFacts:
    sender = parsed.from_[0].address if parsed.from_ else ""
    domain = sender.rpartition("@")[2].casefold() or None
    return MessageFacts(
        verdicts=verdicts or AuthVerdicts(),
        from_domain=domain,
        attachments=tuple(parsed.attachments),
    )


def _glob(value: str | None, patterns: Sequence[str]) -> bool:
    if not value:
        return False
    text = value.strip().rstrip(". ").casefold()  # "x.exe. " is still an .exe on Windows
    return any(fnmatchcase(text, p.casefold()) for p in patterns)


def _known(value: str | None, allowed: Sequence[str]) -> bool:
    return value is not None and value.casefold() in allowed


def holds(match: Match, facts: MessageFacts) -> tuple[bool, str]:
    """Whether every condition given holds, and a short reason naming what matched."""
    reasons: list[str] = []
    verdicts = facts.verdicts
    for name, value, allowed in (
        ("spf", verdicts.spf, match.spf),
        ("dkim", verdicts.dkim, match.dkim),
        ("dmarc", verdicts.dmarc, match.dmarc),
        ("dmarc_policy", verdicts.dmarc_policy, match.dmarc_policy),
    ):
        if allowed is None:
            continue
        if not _known(value, allowed):
            return False, ""
        reasons.append(f"{name}={value}")
    if match.from_domain is not None:
        if not _glob(facts.from_domain, match.from_domain):
            return False, ""
        reasons.append(f"from domain {facts.from_domain}")
    for patterns, facts_of_one, shown in (
        (match.attachment_name, _attachment_names, _name_reason),
        (match.attachment_type, _attachment_types, _type_reason),
    ):
        if patterns is None:
            continue
        hit = next(
            (
                (attachment, value)
                for attachment in facts.attachments
                for value in facts_of_one(attachment)
                if _glob(value, patterns)
            ),
            None,
        )
        if hit is None:
            return False, ""
        attachment, value = hit
        reasons.append(
            f"attachment {attachment.filename or '(unnamed)'} ({shown(attachment, value)})"
        )
    return bool(reasons), ", ".join(reasons)


def _attachment_names(attachment: Attachment) -> list[str]:
    from mxgate.message.attachments import file_names  # noqa: PLC0415 -- Process's, with the parser

    return file_names([*attachment.names, *([attachment.filename] if attachment.filename else [])])


def _name_reason(attachment: Attachment, name: str) -> str:
    """The declared type, and the name that matched when it is not the one a client shows."""
    if name == attachment.filename:
        return attachment.content_type
    return f"named {name}, {attachment.content_type}"


def _type_reason(attachment: Attachment, content_type: str) -> str:
    if content_type == attachment.content_type:
        return content_type
    return f"sniffed {content_type}, declared {attachment.content_type}"


def _attachment_types(attachment: Attachment) -> list[str]:
    return [t for t in (attachment.content_type, attachment.sniffed_type) if t]


def quarantine_rule(
    rules: Sequence[QuarantineRule], route: str, facts: MessageFacts
) -> tuple[QuarantineRule, str] | None:
    """The first rule that quarantines mail for `route`, with the reason; None if none."""
    for rule in rules:
        if rule.routes is not None and route not in rule.routes:
            continue
        applies, reason = holds(rule.when, facts)
        if not applies:
            continue
        if rule.unless is not None and holds(rule.unless, facts)[0]:
            continue
        return rule, reason
    return None
