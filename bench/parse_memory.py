"""Peak memory for one large message: a generated 40 MB message with a 30 MB attachment.

Each measurement runs in a fresh process and reports its peak RSS growth over the baseline
taken just before the message is touched:
  mxgate parse      streamed from the local object store, the attachment stored by digest
  mxgate process    the whole process step: streamed parse, attachment stored, SPF, DKIM
                    (the message is signed) and DMARC against a DNS server on loopback
  stdlib            email.message_from_bytes of the same file (read whole, as it must be)

    .venv/bin/python bench/parse_memory.py [--attachment-mb 30]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scratch import scratch

BUCKET = "raw-mail"
KEY = "raw/BIG"
DOMAIN = "bench.example"


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Start the peak afresh (Linux: clear_refs 5), so imports and setup do not count."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass


def generate(directory: Path, attachment_bytes: int) -> tuple[Path, str]:
    """The message, DKIM-signed, written as the local object store keeps it; and the key's
    public half for the DNS zone."""
    import dkim  # noqa: PLC0415 -- only the parent signs
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    attachment = os.urandom(attachment_bytes)
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    raw = (
        (
            f"From: Sender <sender@{DOMAIN}>\r\nTo: alice@nutrition.co\r\nSubject: large\r\n"
            f"Message-ID: <big@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="big-boundary"\r\n\r\n'
            "--big-boundary\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe data, attached.\r\n"
            "--big-boundary\r\nContent-Type: application/octet-stream; name=data.bin\r\n"
            "Content-Disposition: attachment; filename=data.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + encoded
        + b"--big-boundary--\r\n"
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = dkim.sign(
        raw, b"bench", DOMAIN.encode(), private, include_headers=[b"from", b"subject"]
    )
    path = directory / "objects" / BUCKET / KEY
    path.parent.mkdir(parents=True)
    path.write_bytes(signature + raw)
    return path, base64.b64encode(public).decode()


def _dns_server(public_key: str) -> tuple[object, int]:
    from dnslib.server import DNSLogger, DNSServer  # noqa: PLC0415
    from dnslib.zoneresolver import ZoneResolver  # noqa: PLC0415

    chunks = " ".join(f'"{public_key[i : i + 200]}"' for i in range(0, len(public_key), 200))
    zone = (
        f'{DOMAIN}. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
        f'_dmarc.{DOMAIN}. 300 IN TXT "v=DMARC1; p=reject"\n'
        f'bench._domainkey.{DOMAIN}. 300 IN TXT "v=DKIM1; k=rsa; p=" {chunks}\n'
    )
    server = DNSServer(
        ZoneResolver(zone), address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda *_: None)
    )
    server.start_thread()
    return server, server.server.server_address[1]


def measure(mode: str, home: Path, public_key: str) -> dict[str, float | str]:
    """In this (fresh) process: one mode's peak RSS growth."""
    from mxgate.adapters.local.objects import FileObjectStore  # noqa: PLC0415

    objects = FileObjectStore(home / "objects")
    started = 0.0
    if mode == "stdlib":
        import email  # noqa: PLC0415

        baseline = _status("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        message = email.message_from_bytes(objects.get(BUCKET, KEY))
        detail = f"{len(message.get_payload())} parts"
    elif mode == "mxgate parse":
        from mxgate.message.attachments import ObjectStoreAttachments  # noqa: PLC0415
        from mxgate.message.parse import parse_stream  # noqa: PLC0415

        store = ObjectStoreAttachments(objects, BUCKET)
        baseline = _status("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        with objects.open(BUCKET, KEY) as stream:
            parsed = parse_stream(stream, store=store)
        detail = f"attachment {parsed.attachments[0].size} bytes stored"
    else:
        from mxgate.adapters.local.appevents import FileAppEvents  # noqa: PLC0415
        from mxgate.adapters.local.state import SqliteState  # noqa: PLC0415
        from mxgate.clock import SystemClock  # noqa: PLC0415
        from mxgate.local.bootstrap import build_resolver  # noqa: PLC0415
        from mxgate.local.config import DnsConfig  # noqa: PLC0415
        from mxgate.mailmanager.template import (  # noqa: PLC0415
            Resolver,
            read_samconfig_parameters,
            read_template,
            routes_parameters,
        )
        from mxgate.records import Envelope  # noqa: PLC0415
        from mxgate.routing.routes import load_routes  # noqa: PLC0415
        from mxgate.workflow.model import ProcessInput  # noqa: PLC0415
        from mxgate.workflow.process import process  # noqa: PLC0415
        from mxgate.workflow.services import Services  # noqa: PLC0415

        _, port = _dns_server(public_key)
        repo = Path(__file__).resolve().parent.parent
        state = SqliteState(home / f"state-{os.getpid()}.db")
        services = Services(
            objects=objects,
            timeline=state,
            idempotency=state,
            transports={},
            app_events=FileAppEvents(home / "events"),
            dead_letters=state,
            routes=load_routes(
                repo / "config" / "routes.yaml",
                routes_parameters(
                    Resolver(
                        read_template(repo / "template.yaml"),
                        read_samconfig_parameters(repo / "samconfig.toml"),
                    )
                ),
            ),
            clock=SystemClock(),
            resolver=build_resolver(DnsConfig(nameservers=["127.0.0.1"], port=port)),
        )
        envelope = Envelope(
            message_id="BIG",
            mail_from=f"sender@{DOMAIN}",
            recipients=["alice@nutrition.co"],
            helo=f"mail.{DOMAIN}",
            source_ip="127.0.0.1",
        )
        baseline = _status("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        output = process(ProcessInput(bucket=BUCKET, key=KEY, envelope=envelope), services)
        assert output.authentication is not None
        detail = output.authentication.summary()
    seconds = time.perf_counter() - started
    return {"growth": _status("VmHWM") - baseline, "seconds": seconds, "detail": detail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attachment-mb", type=float, default=30.0)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--public-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.home, args.public_key)))
        return
    with scratch("mxgate-bench-") as directory:
        home = Path(directory)
        path, public_key = generate(home, int(args.attachment_mb * 1_000_000))
        size = path.stat().st_size
        print(
            f"message: {size / 1e6:.1f} MB with a {args.attachment_mb:.0f} MB attachment "
            "(base64), DKIM-signed"
        )
        results = {}
        for mode in ("mxgate parse", "mxgate process", "stdlib"):
            completed = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    mode,
                    "--home",
                    str(home),
                    "--public-key",
                    public_key,
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
        stdlib = float(results["stdlib"]["growth"])
        print(
            f"{'run':<16} {'peak RSS growth':>16} {'x message':>10} {'vs stdlib':>10} {'seconds':>8}  detail"
        )
        for mode, result in results.items():
            growth = float(result["growth"])
            print(
                f"{mode:<16} {growth / 1e6:>13.1f} MB {growth / size:>9.2f}x "
                f"{growth / stdlib:>9.2f}x {float(result['seconds']):>8.2f}  {result['detail']}"
            )


if __name__ == "__main__":
    main()
