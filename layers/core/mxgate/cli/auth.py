"""`mxgate auth`: what the gateway thinks of one sender, as `spfquery` and `dkimverify` answer.

`auth spf` checks SPF for an envelope; `auth check FILE` checks a whole message (SPF, every DKIM
signature, DMARC, the ARC chain) and shows the Authentication-Results field the gateway would
add. DNS goes to `--resolver HOST:PORT` (UDP, then TCP when an answer is truncated), else to the
system's resolver.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

from mxgate.adapters.dns import DnsPythonResolver
from mxgate.authn.check import Authenticator
from mxgate.authn.model import Authentication, SpfCheck
from mxgate.authn.resolver import CachingResolver
from mxgate.authn.results import authentication_results
from mxgate.authn.spf import check_helo, check_mail_from
from mxgate.cli import COMMANDS
from mxgate.cli.common import print_json, settings_from, table
from mxgate.errors import PermanentError


def resolver_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets, [::1]:5353), or HOST alone for port 53."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IP address") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{port!r} is not a port number")
    return host, int(port)


def _envelope_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ip", required=True, help="the connecting client's IP address")
    parser.add_argument(
        "--mail-from", required=True, help='the envelope sender (MAIL FROM; "" for a bounce)'
    )
    parser.add_argument("--helo", required=True, help="the name the client gave in HELO/EHLO")
    parser.add_argument(
        "--resolver",
        type=resolver_address,
        metavar="HOST:PORT",
        help="send every DNS query to this server (default: the system's resolver)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds for one DNS lookup")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "auth",
        help=COMMANDS["auth"].help,
        description="Ask what the gateway thinks of a sender, with the gateway's own "
        "evaluators. Results are in RFC 7208 / RFC 8601 words (pass, fail, softfail, neutral, "
        "none, temperror, permerror, policy).",
    )
    actions = parser.add_subparsers(dest="auth_command", metavar="CHECK", required=True)
    spf = actions.add_parser(
        "spf",
        help="SPF for an envelope sender (and the HELO name)",
        description="The SPF result for MAIL FROM (postmaster@HELO for a null sender) from --ip, "
        "and the HELO name's own result.",
    )
    _envelope_arguments(spf)
    spf.set_defaults(handler=auth_spf)
    check = actions.add_parser(
        "check",
        help="SPF, DKIM, DMARC and ARC for a message file",
        description="Authenticate FILE (a raw RFC 5322 message) as if it came from --ip: SPF, "
        "each DKIM signature, DMARC, the ARC chain, the Mail Manager verdicts, and the "
        "Authentication-Results field the gateway would add.",
    )
    check.add_argument("file", type=Path, metavar="FILE")
    _envelope_arguments(check)
    check.add_argument(
        "--hostname", help="authserv-id for Authentication-Results (default MXGATE_HOSTNAME)"
    )
    check.set_defaults(handler=auth_check)


def _resolver(args: argparse.Namespace) -> CachingResolver:
    if args.resolver is None:
        return CachingResolver(DnsPythonResolver(timeout=args.timeout))
    host, port = args.resolver
    return CachingResolver(DnsPythonResolver([host], port=port, timeout=args.timeout))


def _spf_document(check: SpfCheck) -> dict[str, Any]:
    document: dict[str, Any] = {
        "result": check.result.value,
        "reason": check.reason,
        "identity": check.identity,
        "domain": check.domain,
        "sender": check.sender,
    }
    if check.explanation:
        document["explanation"] = check.explanation
    return document


def auth_spf(args: argparse.Namespace) -> int:
    resolver = _resolver(args)
    mail_from = check_mail_from(resolver, args.ip, args.mail_from, args.helo)
    helo = check_helo(resolver, args.ip, args.helo)
    if args.json:
        print_json({**_spf_document(mail_from), "helo": _spf_document(helo)})
        return 0
    print(f"{mail_from.result.value} ({mail_from.reason})")
    if mail_from.explanation:
        print(f"explanation: {mail_from.explanation}")
    print(f"helo {helo.domain or '(none)'}: {helo.result.value} ({helo.reason})")
    return 0


def check_document(authentication: Authentication) -> dict[str, Any]:
    """The JSON of `auth check`: each mechanism with its result and reason."""
    return {
        "spf": _spf_document(authentication.spf_mail_from),
        "helo": _spf_document(authentication.spf_helo),
        "dkim": [check.model_dump(mode="json") for check in authentication.dkim],
        "dmarc": authentication.dmarc.model_dump(mode="json"),
        "arc": authentication.arc.model_dump(mode="json"),
        "verdicts": authentication.verdicts.model_dump(mode="json"),
        "authentication_results": authentication_results(authentication),
    }


def auth_check(args: argparse.Namespace) -> int:
    hostname = args.hostname or settings_from(args).hostname
    authenticator = Authenticator(_resolver(args), hostname)
    try:
        stream = args.file.open("rb")
    except OSError as error:
        raise PermanentError(f"{args.file}: {error.strerror}") from error
    with stream:
        authentication = authenticator.authenticate(
            stream, client_ip=args.ip, mail_from=args.mail_from, helo=args.helo
        )
    if args.json:
        print_json(check_document(authentication))
    else:
        print(describe_authentication(authentication))
    return 0


def describe_authentication(authentication: Authentication) -> str:
    spf, helo = authentication.spf_mail_from, authentication.spf_helo
    rows = [
        ["SPF", "mail from", spf.result.value, spf.reason],
        ["SPF", "helo", helo.result.value, helo.reason],
    ]
    rows += [
        ["DKIM", f"{c.domain} s={c.selector}", c.result.value, c.reason]
        for c in authentication.dkim
    ] or [["DKIM", "", "none", "no signature"]]
    dmarc = authentication.dmarc
    rows.append(["DMARC", dmarc.from_domain, dmarc.result.value, dmarc.reason])
    arc = authentication.arc
    rows.append(
        ["ARC", f"{arc.instances} sets" if arc.instances else "", arc.result.value, arc.reason]
    )
    verdicts = authentication.verdicts
    policy = verdicts.dmarc_policy.value if verdicts.dmarc_policy else "(DMARC did not fail)"
    return "\n".join(
        [
            table(rows, ["CHECK", "IDENTITY", "RESULT", "REASON"]),
            "",
            (
                f"Mail Manager verdicts: SPF {verdicts.spf.value}, DKIM {verdicts.dkim.value}, "
                f"DMARC policy {policy}"
            ),
            "Authentication-Results: "
            + authentication_results(authentication).replace("\r\n", "\n"),
        ]
    )
