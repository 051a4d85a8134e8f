"""The Authentication-Results header field (RFC 8601) for what the gateway checked."""

from __future__ import annotations

import re

from mxgate.authn.model import ArcCheck, Authentication, DkimCheck, SpfCheck

HEADER = "Authentication-Results"
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]+")  # RFC 2045 token, plus "@" and "."


def _value(text: str) -> str:
    """A property value: as it is when it is a plain token, else a quoted string."""
    if _TOKEN.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _comment(text: str) -> str:
    text = text.encode("ascii", "replace").decode("ascii")
    text = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({' '.join(text.split())[:200]})"


def _ascii(address: str) -> str:
    """A header value must stay ASCII here: a UTF-8 local part gives way to its domain."""
    if address.isascii():
        return address
    domain = address.rpartition("@")[2]
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "unknown"


def _spf(check: SpfCheck) -> str:
    identity = (
        f"smtp.mailfrom={_value(_ascii(check.sender))}"
        if check.identity == "mailfrom"
        else f"smtp.helo={_value(_ascii(check.domain) or 'unknown')}"
    )
    return f"spf={check.result} {_comment(check.reason)} {identity}"


def _dkim(check: DkimCheck) -> str:
    properties = [f"header.d={_value(_ascii(check.domain) or 'unknown')}"]
    if check.selector:
        properties.append(f"header.s={_value(_ascii(check.selector))}")
    if check.identity:
        properties.append(f"header.i={_value(_ascii(check.identity))}")
    if check.algorithm:
        properties.append(f"header.a={_value(check.algorithm)}")
    if check.signature:
        properties.append(f"header.b={_value(check.signature[:8])}")
    return f"dkim={check.result} {_comment(check.reason)} {' '.join(properties)}"


def _arc(check: ArcCheck) -> str:
    """RFC 8617 7.2: the chain validation status."""
    return f"arc={check.result} {_comment(check.reason)}"


def authentication_results(authentication: Authentication) -> str:
    """The field's value, folded one result per line."""
    dmarc = authentication.dmarc
    details = [dmarc.reason]
    if dmarc.published:
        details.append(f"p={dmarc.published.upper()} pct={dmarc.pct}")
    if dmarc.policy is not None:
        details.append(f"dis={dmarc.policy}")
    dmarc_text = f"dmarc={dmarc.result} {_comment('; '.join(details))}"
    if dmarc.from_domain:
        dmarc_text += f" header.from={_value(_ascii(dmarc.from_domain))}"
    results = [
        _spf(authentication.spf_mail_from),
        _spf(authentication.spf_helo),
        *(_dkim(check) for check in authentication.dkim),
        *([] if authentication.dkim else ["dkim=none (no signature)"]),
        dmarc_text,
        _arc(authentication.arc),
    ]
    return f"{authentication.authserv_id};\r\n\t" + ";\r\n\t".join(results)
