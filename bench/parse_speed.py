"""Parse speed over the shared corpus: messages per second for mxgate's parser, next to the
`mail-parser` library and the standard library's `BytesParser(policy=policy.default)`, all
measured in the same run on the same messages (held in memory, so only parsing is timed).

The parsers take turns (`--rounds` rounds of a share of `--seconds` each), so load from other
users of the machine falls on all of them; each rate is the median of its rounds, with the
spread (max - min).

The plain standard-library parse is lazy: it splits the message but decodes nothing until
asked. The "stdlib + bodies + attachments" row asks for what mxgate's model holds (both
bodies as text, every attachment decoded), for a like-for-like figure.

    .venv/bin/python bench/parse_speed.py [--seconds 3] [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import mailparser

from mxgate.message.parse import parse_message

REPO = Path(__file__).resolve().parent.parent
_STDLIB = BytesParser(policy=policy.default)


def default_corpus() -> Path:
    beside = REPO.parent / "shared" / "corpus"
    return beside if beside.is_dir() else Path("/work/shared/corpus")


def stdlib_parse(raw: bytes) -> object:
    return _STDLIB.parsebytes(raw)


def stdlib_everything(raw: bytes) -> object:
    message = _STDLIB.parsebytes(raw)
    assert isinstance(message, EmailMessage)
    for header in ("from", "to", "cc", "subject", "date", "message-id"):
        str(message.get(header, ""))
    for kind in ("plain", "html"):
        body = message.get_body(preferencelist=(kind,))
        if body is not None:
            body.get_content()
    for part in message.iter_attachments():
        part.get_payload(decode=True)
    return message


def mail_parser(raw: bytes) -> object:
    return mailparser.parse_from_bytes(raw)


def warm_up(parse: Callable[[bytes], object], messages: list[bytes]) -> int:
    """One pass (imports, caches); how many messages it raised on."""
    errors = 0
    for raw in messages:
        try:
            parse(raw)
        except Exception:  # noqa: BLE001 -- a parser that raises is counted, not fatal
            errors += 1
    return errors


def measure(parse: Callable[[bytes], object], messages: list[bytes], seconds: float) -> float:
    """Messages per second over whole passes of the corpus for about `seconds`."""
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for raw in messages:
            with contextlib.suppress(Exception):
                parse(raw)
            done += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per parser (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="turns each parser takes")
    parser.add_argument("--corpus", type=Path, default=default_corpus())
    args = parser.parse_args()
    files = sorted(p for p in args.corpus.rglob("*") if p.is_file() and p.name != "README.md")
    messages = [p.read_bytes() for p in files]
    if not messages:
        raise SystemExit(f"no messages under {args.corpus}")
    logging.disable(logging.CRITICAL)  # mail-parser logs every defect it meets
    warnings.simplefilter("ignore")
    total = sum(len(m) for m in messages)
    print(f"corpus: {len(messages)} messages, {total / 1e6:.1f} MB, {args.corpus}")
    rows = [
        ("mxgate", parse_message),
        ("mail-parser", mail_parser),
        ("stdlib policy.default (parse only)", stdlib_parse),
        ("stdlib + bodies + attachments", stdlib_everything),
    ]
    errors = {name: warm_up(parse, messages) for name, parse in rows}
    rates: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _ in range(args.rounds):
        for name, parse in rows:
            rates[name].append(measure(parse, messages, args.seconds / args.rounds))
    reference = statistics.median(rates["mail-parser"])
    print(f"{'parser':<36} {'msg/s':>9} {'spread':>7} {'vs mail-parser':>15} {'raised on':>10}")
    for name, found in rates.items():
        rate = statistics.median(found)
        print(
            f"{name:<36} {rate:>9.0f} {max(found) - min(found):>7.0f} "
            f"{rate / reference:>14.2f}x {errors[name]:>10}"
        )


if __name__ == "__main__":
    main()
