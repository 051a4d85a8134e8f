"""What Google Workspace and Microsoft 365 must be told about the gateway: settings no API of
ours can read, printed with the values to enter (MAIL_MANAGER.md, "Receiving side")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mxgate.cutover.model import ChecklistItem

GOOGLE = "Google Workspace"
MICROSOFT = "Microsoft 365"

_PROVIDER_SUFFIXES = {
    GOOGLE: ("google.com", "googlemail.com", "google-a.com"),
    MICROSOFT: ("outlook.com", "onmicrosoft.com"),
}


def providers_of(hosts: Iterable[str]) -> list[str]:
    """The mailbox providers that relay hosts or routing domains belong to, in a fixed order."""
    names = [h.lower().rstrip(".") for h in hosts]
    return [
        provider
        for provider, suffixes in _PROVIDER_SUFFIXES.items()
        if any(n == s or n.endswith(f".{s}") for n in names for s in suffixes)
    ]


def provider_checklist(providers: Sequence[str], gateway_ips: Sequence[str]) -> list[ChecklistItem]:
    ips = ", ".join(gateway_ips) or "(resolve the MX target: dig +short <MxTarget>)"
    senders = (
        "and the addresses that deliver to you: with DirectMode Mail Manager's relay, "
        "otherwise SES sending (a dedicated IP pool gives a fixed list); read them from the "
        "Received field of a test message"
    )
    items: list[ChecklistItem] = []
    if GOOGLE in providers:
        where = "Admin console > Apps > Google Workspace > Gmail > Spam, phishing and malware"
        items += [
            ChecklistItem(
                provider=GOOGLE,
                where=where,
                setting="Inbound gateway: Gateway IPs",
                value=f"{ips}, {senders}",
            ),
            ChecklistItem(
                provider=GOOGLE,
                where=where,
                setting="Inbound gateway: Automatically detect external IP",
                value="on (Gmail then judges SPF and DMARC on the original sender)",
            ),
            ChecklistItem(
                provider=GOOGLE,
                where=where,
                setting="Inbound gateway: Require TLS for connections from the email gateways",
                value="on",
            ),
            ChecklistItem(
                provider=GOOGLE,
                where=where,
                setting="Inbound gateway: Reject all mail not from gateway IPs",
                value="on, once the MX points at the gateway",
            ),
        ]
    if MICROSOFT in providers:
        items += [
            ChecklistItem(
                provider=MICROSOFT,
                where="Exchange admin center > Mail flow > Connectors",
                setting="Connector from Partner organization to Office 365, identified by IP",
                value=f"{ips}, {senders}",
            ),
            ChecklistItem(
                provider=MICROSOFT,
                where="Exchange admin center > Mail flow > Connectors",
                setting="Reject email messages if they aren't sent over TLS",
                value="on",
            ),
            ChecklistItem(
                provider=MICROSOFT,
                where="Defender portal > Email & collaboration > Policies & rules > "
                "Threat policies > Enhanced filtering",
                setting="Enhanced Filtering for Connectors on that connector",
                value="Automatically detect and skip the last IP address (365 then evaluates "
                "SPF, DKIM and DMARC against the original sender)",
            ),
        ]
    return items
