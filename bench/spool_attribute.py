"""What the envelope's extended attribute costs a spool file: the spool's own writes (file with
no name, envelope, bytes, the links into the spool and the history, the fsyncs `250` waits
for), in blocks that take turns with the attribute on and off (the older format, the envelope
line first), into one spool in one run, so both see the same disk and the same load.

It prints the CPU time a file (user + system) of each, and their ratio. No file is removed
until the run is over: freed inodes would make the next files' allocation slower
(docs/benchmarks.md, "Files a message").

    .venv/bin/python bench/spool_attribute.py [--files 2000] [--block 100] [--size 5120]
"""

from __future__ import annotations

import argparse
import resource
from datetime import UTC, datetime

from harness import load
from scratch import scratch
from worker_cpu import SENDER, message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="files written with each format")
    parser.add_argument("--block", type=int, default=100, help="files a turn")
    parser.add_argument("--size", type=int, default=5120)
    args = parser.parse_args()

    from mxgate.ids import new_message_id  # noqa: PLC0415
    from mxgate.local.history import History  # noqa: PLC0415
    from mxgate.local.spool import Spool  # noqa: PLC0415
    from mxgate.records import Envelope  # noqa: PLC0415

    spent = {True: [0.0, 0.0], False: [0.0, 0.0]}  # attribute on/off: user, system seconds
    with scratch("mxgate-spool-attribute-") as temporary:
        history = History(temporary / "history", keep_seconds=86400)
        spool = Spool(temporary / "spool", history.keep)
        raw = message(args.size, 0)
        for turn in range(2 * args.files // args.block):
            attribute = turn % 2 == 0
            before = resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(args.block):
                spool.attributes = attribute
                now = datetime.now(UTC)
                envelope = Envelope(
                    message_id=new_message_id(now),
                    mail_from=SENDER,
                    recipients=["someone@nutrition.co"],
                    helo="load.example",
                    source_ip="127.0.0.1",
                    received_at=now,
                    ingress_point="inp-0123456789abcdef0123456789",
                )
                spool.write(envelope, raw)
            after = resource.getrusage(resource.RUSAGE_SELF)
            spent[attribute][0] += after.ru_utime - before.ru_utime
            spent[attribute][1] += after.ru_stime - before.ru_stime
        envelope_size = len(envelope.model_dump_json())
    each = 1e6 / args.files  # us a file
    for attribute, (user, system) in spent.items():
        what = "attribute" if attribute else "envelope line (reference)"
        print(
            f"{what}: {(user + system) * each:.1f} us a file "
            f"(user {user * each:.1f}, system {system * each:.1f})"
        )
    on, off = sum(spent[True]), sum(spent[False])
    print(
        f"attribute / envelope line: {on / off:.2f}x CPU, system {spent[True][1] / spent[False][1]:.2f}x; "
        f"{args.files} files each, {envelope_size}-byte envelope, {args.size}-byte messages; {load()}"
    )


if __name__ == "__main__":
    main()
