"""What `mxgate check` reports: checks with a status, evidence and a fix, and the settings of
Google Workspace and Microsoft 365 it cannot read, as a checklist with the values to enter."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 -- a check's status, not a password
    WARN = "warn"
    FAIL = "fail"


_RANK = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_RANK.__getitem__, default=Status.PASS)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Check(Frozen):
    name: str  # e.g. "mx", "spf", "dmarc", "dkim", "smtp.starttls"
    subject: str  # what was checked: a domain, a host:port, a stack
    status: Status
    summary: str  # one line
    evidence: list[str] = Field(default_factory=list)  # what was seen: records, replies, TTLs
    fix: str = ""  # what to do; empty when nothing is to be done


class ChecklistItem(Frozen):
    """A setting of a mailbox provider that only its admin console shows."""

    provider: str  # "Google Workspace", "Microsoft 365"
    where: str  # the console path
    setting: str
    value: str


class CutoverReport(Frozen):
    domain: str
    checks: list[Check]
    checklist: list[ChecklistItem] = Field(default_factory=list)

    @property
    def status(self) -> Status:
        return worst(check.status for check in self.checks)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(c.status is s for c in self.checks) for s in Status}
