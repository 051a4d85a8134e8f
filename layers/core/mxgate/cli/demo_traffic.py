"""A day of mixed demo traffic for `mxgate demo --traffic N`: invoices, orders, returns, news
and chatter from outside senders to the example company's people and applications, the same
for the same seed, so `mxgate rules replay` has real history to run a changed rule over."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from mxgate.routing.routes import Routes

SENDERS = (
    "billing@oats-supplier.example",
    "purchasing@bistro.example",
    "tom@logistics.example",
    "news@trade-weekly.example",
    "anna@partner-lab.example",
    "accounts@packaging.example",
)
SUBJECTS = (
    "Invoice {n:04d} for November",
    "Order 2026-{n:04d}",
    "Return request {n}",
    "Delivery window for truck {n}",
    "Trade weekly #{n}",
    "Lunch on Friday?",
    "Re: contract draft v{n}",
    "Invoice {n:04d}: payment reminder",
)


@dataclass(frozen=True)
class DemoMessage:
    mail_from: str
    recipients: tuple[str, ...]
    subject: str
    raw: bytes


def demo_traffic(count: int, seed: int, routes: Routes) -> list[DemoMessage]:
    chooser = random.Random(seed)  # noqa: S311 -- demo data, the same for the same seed
    people = sorted(routes.directory.users)  # an unlisted one would be refused at RCPT
    apps = sorted(a for app in routes.apps.values() for a in app.addresses)
    start = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    messages = []
    for number in range(1, count + 1):
        sender = chooser.choice(SENDERS)
        subject = chooser.choice(SUBJECTS).format(n=chooser.randint(1, 9999))
        pool = apps if subject.startswith(("Order", "Return")) and apps else people
        recipients = tuple(chooser.sample(pool, k=min(len(pool), chooser.choice((1, 1, 1, 2, 3)))))
        sent = start + timedelta(seconds=number * 86400 // max(count, 1))
        raw = (
            f"From: <{sender}>\r\n"
            f"To: {', '.join(recipients)}\r\n"
            f"Subject: {subject}\r\n"
            f"Date: {format_datetime(sent)}\r\n"
            f"Message-ID: <demo-{seed}-{number}@{sender.rpartition('@')[2]}>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
            f"Demo message {number} of {count}.\r\n"
        ).encode()
        messages.append(DemoMessage(sender, recipients, subject, raw))
    return messages
