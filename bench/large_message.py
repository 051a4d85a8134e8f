"""One large message through the whole local path: a 40 MB message (a base64 attachment, a
DKIM signature) sent to `mxgate run` over SMTP, through the traffic policy, the spool, the
rule set (archive, WriteToS3), the parse, sender authentication and delivery to smtp-sink.

For each of the gateway's processes, the growth of its peak resident memory (VmHWM, started
afresh just before the message is sent) over its resident memory then, as a multiple of the
message's size; the reference is the size itself (1.0x). Repeated `--runs` times: median and
spread.

    .venv/bin/python bench/large_message.py [--mb 40] [--runs 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import smtplib
import time
from pathlib import Path

from harness import (
    RECIPIENT,
    Figures,
    load,
    mxgate,
    peak_growth,
    quiet_dns,
    reset_peaks,
    smtp_sink,
    wait_relayed,
)
from scratch import scratch


def large_message(size: int) -> bytes:
    """A message of about `size` bytes: a line of text and a base64 attachment, signed."""
    head = (
        b"From: Sender <sender@bench.invalid>\r\nTo: alice@nutrition.co\r\nSubject: large\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=bench.invalid; s=bench;\r\n"
        b" h=from:subject; bh=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=; b=AAAA\r\n"
        b"Message-ID: <large@bench.invalid>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe data, attached.\r\n"
        b"--b\r\nContent-Type: application/octet-stream; name=data.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    tail = b"--b--\r\n"
    raw = os.urandom((size - len(head) - len(tail)) * 57 // 78)
    encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return head + encoded + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=40.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    message = large_message(int(args.mb * 1_000_000))
    size = len(message)
    print(
        f"one {size / 1e6:.1f} MB message through mxgate to smtp-sink, median (spread) of "
        f"{args.runs} runs; peak RSS growth of each process as a multiple of the size "
        f"(reference 1.00x); {load()}",
        flush=True,
    )
    with (
        smtp_sink() as sink_port,
        scratch("mxgate-bench-") as directory,
        quiet_dns(Path(directory)) as dns_port,
        mxgate(
            Path(directory),
            "mxgate",
            workers=args.workers,
            sink_port=sink_port,
            dns_port=dns_port,
        ) as gateway,
    ):
        assert gateway.process is not None
        ingress_pid = gateway.process.pid
        ingress, worker, seconds = Figures(), Figures(), Figures()
        for _ in range(args.runs):
            before = gateway.done()
            baseline = reset_peaks(gateway.pids())
            started = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", gateway.port, timeout=300) as smtp:
                smtp.sendmail("sender@bench.invalid", [RECIPIENT], message)
            seconds.add(wait_relayed(gateway, before + 1, started, limit=300))
            growth = peak_growth(baseline)
            ingress.add(growth.pop(ingress_pid) / size)
            worker.add(max(growth.values()) / size)
        print(
            f"  ingress process   {ingress.median:5.2f}x ({ingress.spread:.2f})\n"
            f"  worker process    {worker.median:5.2f}x ({worker.spread:.2f})  (the busiest one)\n"
            f"  250 to delivered  {seconds.median:5.2f} s ({seconds.spread:.2f})",
            flush=True,
        )
    print(f"  ({load()} at the end)")


if __name__ == "__main__":
    main()
