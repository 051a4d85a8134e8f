"""An SMTP client that walks an ingress the way the seed's `openssl s_client -starttls smtp`
test does, and writes down every reply: the greeting, EHLO, STARTTLS and the certificate, EHLO
again (SIZE), then MAIL and RCPT, and DATA when a test message is to be sent."""

from __future__ import annotations

import smtplib
import ssl
from datetime import UTC

from cryptography import x509

from mxgate.cutover.smtp import Certificate, Reply, SmtpProbe


def _reply(code: int, text: bytes | str) -> Reply:
    shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return Reply(code=code, text=" ".join(shown.split()))


def _certificate(der: bytes, chain_error: str) -> Certificate:
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = [str(n) for n in names.get_values_for_type(x509.DNSName)]
        ip_addresses = [str(a) for a in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns_names, ip_addresses = [], []
    return Certificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        not_after=cert.not_valid_after_utc.astimezone(UTC),
        self_signed=cert.subject == cert.issuer,
        chain_error=chain_error,
    )


def _chain_error(address: str, port: int, helo: str, timeout: float) -> str:
    """Why a client that verifies certificates (against the system's CAs) would refuse."""
    context = ssl.create_default_context()
    context.check_hostname = False  # the name is judged on its own, against the MX target
    try:
        with smtplib.SMTP(address, port, helo, timeout=timeout) as client:
            client.starttls(context=context)
    except ssl.SSLCertVerificationError as error:
        return str(error.verify_message)
    except (OSError, smtplib.SMTPException) as error:
        return f"{type(error).__name__}: {error}"
    return ""


def probe_ingress(
    address: str,
    port: int,
    *,
    shown_host: str,
    helo: str,
    mail_from: str,
    recipient: str,
    message: bytes | None,
    timeout: float = 30.0,
) -> SmtpProbe:
    """One session against `address:port`; `message` is sent only when given."""
    found: dict[str, object] = {"host": shown_host, "port": port}
    client = smtplib.SMTP(timeout=timeout)
    # the name STARTTLS sends (SNI): only the constructor sets it, and it would connect
    client._host = address  # type: ignore[attr-defined]
    try:
        found["greeting"] = _reply(*client.connect(address, port))
        found["ehlo"] = _reply(*client.ehlo(helo))
        found["extensions"] = dict(client.esmtp_features)
        if "starttls" not in client.esmtp_features:
            return SmtpProbe.model_validate(found)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # look at whatever it presents; judged below
        found["starttls"] = _reply(*client.starttls(context=context))
        sock = client.sock
        assert isinstance(sock, ssl.SSLSocket)
        found["tls_version"] = sock.version()
        cipher = sock.cipher()
        found["cipher"] = cipher[0] if cipher else None
        der = sock.getpeercert(binary_form=True)
        if der:
            found["certificate"] = _certificate(der, _chain_error(address, port, helo, timeout))
        client.ehlo(helo)
        found["extensions_tls"] = dict(client.esmtp_features)
        found["mail"] = _reply(*client.mail(mail_from))
        found["rcpt"] = accepted = _reply(*client.rcpt(recipient))
        if message is not None and accepted.code == 250:
            found["data"] = _reply(*client.data(message))
        else:
            client.rset()
        client.quit()
    except smtplib.SMTPResponseException as error:
        found["error"] = str(_reply(error.smtp_code, error.smtp_error))
    except (OSError, smtplib.SMTPException) as error:
        found["error"] = f"{type(error).__name__}: {error}"
    finally:
        client.close()
    return SmtpProbe.model_validate(found)
