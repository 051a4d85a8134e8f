"""Every SMTP reply docs/mail-manager.md lists is the one the ingress points really give: each
row of its "SMTP replies" table is provoked over real SMTP, so the manual cannot drift."""

from __future__ import annotations

import re
import shutil
import smtplib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mxgate.mailmanager.template import read_template
from tests.support import REPO, TEMPLATE, RunningGateway, connect, local_config, start_gateway
from tests.templates import gateway_template

pytestmark = pytest.mark.e2e

DOC = REPO / "docs" / "mail-manager.md"
USER, PASSWORD = "SubmissionIngressPoint", "local-submission-password"
SIZE = 4096
PLAIN_USER = "AFN1Ym1pc3Npb25JbmdyZXNzUG9pbnQAd3Jvbmc="  # \0SubmissionIngressPoint\0wrong


def documented() -> dict[str, str]:
    """The table's rows: what the client sends -> the documented reply."""
    text = DOC.read_text()
    table = text[text.index("**SMTP replies.**") :].split("\n\n")[1]
    rows = {}
    for line in table.splitlines()[2:]:
        when, reply = (cell.strip() for cell in line.strip("|").split("|"))
        rows[when] = reply.strip("`")
    return rows


def as_pattern(reply: str) -> re.Pattern[str]:
    parts = re.split(r"<[^>]+>", reply)
    return re.compile(".+".join(re.escape(part) for part in parts))


class Gateways:
    def __init__(self, shipped: RunningGateway, optional: RunningGateway) -> None:
        self.shipped = shipped  # the repository's template, a 4 KB size limit
        self.optional = optional  # its AUTH ingress point with TlsPolicy OPTIONAL


def line(reply: tuple[int, bytes]) -> str:
    return f"{reply[0]} {reply[1].decode()}"


def open_port(g: Gateways) -> int:
    return g.shipped.smtp_port


def auth_port(gateway: RunningGateway) -> int:
    return gateway.ports["smtp_auth"]


def bare_ehlo(g: Gateways) -> str:
    with smtplib.SMTP("127.0.0.1", open_port(g), timeout=30) as smtp:
        return line(smtp.docmd("EHLO"))


def bad_ehlo(g: Gateways) -> str:
    with smtplib.SMTP("127.0.0.1", open_port(g), timeout=30) as smtp:
        return line(smtp.docmd("EHLO", "client\x01example"))


def mail_before_starttls(g: Gateways) -> str:
    with connect(open_port(g), tls=False) as smtp:
        return line(smtp.docmd("MAIL", "FROM:<buyer@shop.example>"))


def auth_before_starttls(gateway: RunningGateway) -> str:
    with connect(auth_port(gateway), tls=False) as smtp:
        return line(smtp.docmd("AUTH", f"PLAIN {PLAIN_USER}"))


def auth_to_open(g: Gateways) -> str:
    with connect(open_port(g), tls=True) as smtp:
        return line(smtp.docmd("AUTH", f"PLAIN {PLAIN_USER}"))


def mail_without_auth(g: Gateways) -> str:
    with connect(auth_port(g.shipped), tls=True) as smtp:
        return line(smtp.docmd("MAIL", "FROM:<app@customer-support.nutrition.co>"))


def auth_with(password: str) -> Callable[[Gateways], str]:
    def provoke(g: Gateways) -> str:
        with connect(auth_port(g.shipped), tls=True) as smtp:
            try:
                return line(smtp.login(USER, password))
            except smtplib.SMTPAuthenticationError as refused:
                return line((refused.smtp_code, refused.smtp_error))

    return provoke


def mail_with_size(g: Gateways) -> str:
    with connect(open_port(g), tls=True) as smtp:
        return line(smtp.docmd("MAIL", f"FROM:<buyer@shop.example> SIZE={SIZE + 1}"))


def refused_rcpt(g: Gateways) -> str:
    with connect(open_port(g), tls=True) as smtp:
        smtp.mail("buyer@shop.example")
        return line(smtp.rcpt("someone@elsewhere.example"))


def unknown_user(g: Gateways) -> str:
    with connect(open_port(g), tls=True) as smtp:
        smtp.mail("buyer@shop.example")
        return line(smtp.rcpt("no-such-user@nutrition.co"))


def bad_bytes(command: str) -> Callable[[Gateways], str]:
    def provoke(g: Gateways) -> str:
        with connect(open_port(g), tls=True) as smtp:
            if command == "RCPT":
                smtp.mail("buyer@shop.example")
            smtp.send(f"{command} {'TO' if command == 'RCPT' else 'FROM'}:<bo".encode())
            smtp.send(b"\x07b@nutrition.co>\r\n")
            return line(smtp.getreply())

    return provoke


def starttls_again(g: Gateways) -> str:
    with connect(open_port(g), tls=True) as smtp:
        return line(smtp.docmd("STARTTLS"))


def unknown_command(g: Gateways) -> str:
    with connect(open_port(g), tls=True) as smtp:
        return line(smtp.docmd("XYZZY"))


def enhanced_codes_offered(g: Gateways) -> str:
    with connect(open_port(g), tls=True) as smtp:
        assert smtp.has_extn("pipelining")
        return "ENHANCEDSTATUSCODES" if smtp.has_extn("enhancedstatuscodes") else ""


def quit_reply(g: Gateways) -> str:
    with connect(open_port(g), tls=True) as smtp:
        return line(smtp.docmd("QUIT"))


def recipient_101(g: Gateways) -> str:
    with connect(open_port(g), tls=True) as smtp:
        smtp.mail("buyer@shop.example")
        for n in range(100):
            assert smtp.rcpt(f"alice+{n}@nutrition.co")[0] == 250
        return line(smtp.rcpt("bob@nutrition.co"))


def data(g: Gateways, body: bytes) -> str:
    with connect(open_port(g), tls=True) as smtp:
        smtp.mail("buyer@shop.example")
        smtp.rcpt("alice@nutrition.co")
        assert smtp.docmd("DATA")[0] == 354
        smtp.send(body + b"\r\n.\r\n")
        return line(smtp.getreply())


def too_much_data(g: Gateways) -> str:
    return data(g, b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * (SIZE // 78 + 10))


def bare_cr(g: Gateways) -> str:
    return data(g, b"Subject: hello\rBcc: everyone@nutrition.co\r\n\r\nhi\r\n")


def accepted(g: Gateways) -> str:
    return data(g, b"Subject: hello\r\n\r\nhi\r\n")


def spool_unwritable(g: Gateways) -> str:
    spool = g.shipped.home / "spool"
    shutil.rmtree(spool)
    spool.write_text("a file where the spool directory was: every spool write fails\n")
    try:
        return data(g, b"Subject: hello\r\n\r\nhi\r\n")
    finally:
        spool.unlink()
        spool.mkdir()


PROVOKE: dict[str, Callable[[Gateways], str]] = {
    "`EHLO` without a name (`HELO` likewise)": bare_ehlo,
    "`EHLO` with a name that is not one word of printable ASCII": bad_ehlo,
    "`MAIL` before STARTTLS (`TlsPolicy: REQUIRED`)": mail_before_starttls,
    "`AUTH` before STARTTLS (`TlsPolicy: REQUIRED`, as `SubmissionIngressPoint`)": (
        lambda g: auth_before_starttls(g.shipped)
    ),
    "`AUTH` before STARTTLS (`TlsPolicy: OPTIONAL`)": lambda g: auth_before_starttls(g.optional),
    "`AUTH` to an `OPEN` ingress point": auth_to_open,
    "`MAIL` to an `AUTH` ingress point without AUTH": mail_without_auth,
    "AUTH with a wrong user name or password": auth_with("wrong"),
    "AUTH with the right ones": auth_with(PASSWORD),
    "`MAIL FROM` with a `SIZE=` over `MaxMessageSizeBytes`": mail_with_size,
    "`RCPT` the traffic policy refuses": refused_rcpt,
    "`RCPT` for an address at our domains the directory does not list": unknown_user,
    "`RCPT` with bytes that are not UTF-8, or a control character": bad_bytes("RCPT"),
    "`MAIL FROM` with bytes that are not UTF-8, or a control character": bad_bytes("MAIL"),
    "`STARTTLS` once TLS is on": starttls_again,
    "a command the server does not know": unknown_command,
    "a 101st `RCPT` (Mail Manager takes 100 recipients)": recipient_101,
    "message data over `MaxMessageSizeBytes`": too_much_data,
    "message data with a NUL or a bare CR": bare_cr,
    "a message, accepted (the spool file fsynced)": accepted,
    "a message the gateway cannot store (a spool write fails)": spool_unwritable,
    "`QUIT`": quit_reply,
    "`EHLO`: the extensions it lists include": enhanced_codes_offered,
}


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    directory = tmp_path_factory.mktemp("replies")
    parameters: dict[str, Any] = {"SubmissionIngress": "true", "MaxMessageSizeBytes": str(SIZE)}
    submission = read_template(TEMPLATE)["Resources"]["SubmissionIngressPoint"]
    submission["Properties"]["TlsPolicy"] = "OPTIONAL"
    optional_template = gateway_template(
        directory / "optional", {"SubmissionIngressPoint": submission}
    )
    (directory / "a").mkdir()
    (directory / "b").mkdir()
    shipped = start_gateway(
        directory / "a" / "home", local_config(directory / "a", parameters=parameters)
    )
    try:
        optional = start_gateway(
            directory / "b" / "home",
            local_config(directory / "b", template=str(optional_template), parameters=parameters),
        )
        try:
            yield Gateways(shipped, optional)
        finally:
            optional.stop()
    finally:
        shipped.stop()


def test_every_documented_reply_has_a_way_to_provoke_it():
    assert list(documented()) == list(PROVOKE)


@pytest.mark.parametrize("when", list(PROVOKE))
def test_the_ingress_point_answers_as_documented(gateways: Gateways, when: str) -> None:
    reply = documented()[when]
    answer = PROVOKE[when](gateways)
    assert as_pattern(reply).fullmatch(answer), f"documented {reply!r}, answered {answer!r}"
