"""What an archive search asks and what it finds, with Mail Manager's meaning. Pure.

Mail Manager's archive API (`StartArchiveSearch`, `StartArchiveExport`) filters on six string
attributes with `CONTAINS` (case-insensitive), on `HAS_ATTACHMENTS` (`IS_TRUE` / `IS_FALSE`),
and on a time range; `Include` conditions must all hold, the values of one condition are
alternatives, and a search returns at most 1,000 rows. `ArchiveQuery.filters()` writes a
query in the API's words; `ArchiveQuery.matches()` is the same meaning for the local index.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEARCH_RESULTS = 1000  # the API's SearchMaxResults
MAX_VALUES = 10  # StringValueList
StringAttribute = Literal["TO", "FROM", "CC", "SUBJECT", "ENVELOPE_TO", "ENVELOPE_FROM"]
Values = Annotated[list[str], Field(max_length=MAX_VALUES)]

# The query's fields, by the API attribute each filters on.
STRING_FIELDS: dict[str, StringAttribute] = {
    "from_": "FROM",
    "to": "TO",
    "cc": "CC",
    "subject": "SUBJECT",
    "envelope_from": "ENVELOPE_FROM",
    "envelope_to": "ENVELOPE_TO",
}
# Everything before the first archived message: the API wants both ends of the range.
BEGINNING = datetime(2000, 1, 1, tzinfo=UTC)


class ArchivedMessage(BaseModel):
    """One archived message, as a search row shows it (Mail Manager's `Row`, in our names)."""

    archived_message_id: str
    archive_id: str
    received_at: datetime
    message_id: str = ""  # the Message-ID field, without angle brackets
    date: str = ""  # the Date field as written
    from_: str = Field(default="", alias="from")
    to: str = ""
    cc: str = ""
    subject: str = ""
    envelope_from: str = ""
    envelope_to: list[str] = Field(default_factory=list)
    has_attachments: bool = False
    size: int = 0
    ingress_point: str = ""
    sender_ip: str = ""
    helo: str = ""
    key: str = ""  # where its bytes are (locally: the archive object's key)

    model_config = ConfigDict(defer_build=True, frozen=True, populate_by_name=True)

    def value(self, attribute: StringAttribute) -> str:
        if attribute == "ENVELOPE_TO":
            return ", ".join(self.envelope_to)
        field = next(name for name, attr in STRING_FIELDS.items() if attr == attribute)
        return str(getattr(self, field))


class ArchiveQuery(BaseModel):
    """A search or an export: every field given must hold (AND); a field's values are
    alternatives (OR); each value is a case-insensitive substring (CONTAINS)."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid", populate_by_name=True)

    from_: Values = Field(default_factory=list, alias="from")
    to: Values = Field(default_factory=list)
    cc: Values = Field(default_factory=list)
    subject: Values = Field(default_factory=list)
    envelope_from: Values = Field(default_factory=list)
    envelope_to: Values = Field(default_factory=list)
    has_attachments: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=100, ge=1, le=MAX_SEARCH_RESULTS)

    def conditions(self) -> list[tuple[StringAttribute, list[str]]]:
        return [
            (attribute, [v for v in getattr(self, name) if v])
            for name, attribute in STRING_FIELDS.items()
            if any(getattr(self, name))
        ]

    def time_range(self, now: datetime) -> tuple[datetime, datetime]:
        return (self.since or BEGINNING), (self.until or now)

    def matches(self, message: ArchivedMessage) -> bool:
        for attribute, values in self.conditions():
            text = message.value(attribute).casefold()
            if not any(v.casefold() in text for v in values):
                return False
        if self.has_attachments is not None and message.has_attachments != self.has_attachments:
            return False
        if self.since is not None and message.received_at < self.since:
            return False
        return self.until is None or message.received_at <= self.until

    def filters(self) -> dict[str, Any]:
        """`ArchiveFilters` for StartArchiveSearch / StartArchiveExport."""
        include: list[dict[str, Any]] = [
            {
                "StringExpression": {
                    "Evaluate": {"Attribute": attribute},
                    "Operator": "CONTAINS",
                    "Values": values,
                }
            }
            for attribute, values in self.conditions()
        ]
        if self.has_attachments is not None:
            include.append(
                {
                    "BooleanExpression": {
                        "Evaluate": {"Attribute": "HAS_ATTACHMENTS"},
                        "Operator": "IS_TRUE" if self.has_attachments else "IS_FALSE",
                    }
                }
            )
        return {"Include": include} if include else {}

    def describe(self) -> str:
        """The query in a line, for progress and logs."""
        parts = [
            f"{attribute} CONTAINS {' | '.join(repr(v) for v in values)}"
            for attribute, values in self.conditions()
        ]
        if self.has_attachments is not None:
            parts.append(f"HAS_ATTACHMENTS {'IS_TRUE' if self.has_attachments else 'IS_FALSE'}")
        if self.since is not None:
            parts.append(f"since {self.since.isoformat(timespec='seconds')}")
        if self.until is not None:
            parts.append(f"until {self.until.isoformat(timespec='seconds')}")
        return ", ".join(parts) or "every archived message"


# ------------------------------------------------------------------------------- retention

_MONTHS = {
    "THREE_MONTHS": 3,
    "SIX_MONTHS": 6,
    "NINE_MONTHS": 9,
    "ONE_YEAR": 12,
    "EIGHTEEN_MONTHS": 18,
    "TWO_YEARS": 24,
    "THIRTY_MONTHS": 30,
    "THREE_YEARS": 36,
    "FOUR_YEARS": 48,
    "FIVE_YEARS": 60,
    "SIX_YEARS": 72,
    "SEVEN_YEARS": 84,
    "EIGHT_YEARS": 96,
    "NINE_YEARS": 108,
    "TEN_YEARS": 120,
}
RetentionPeriod = Literal[
    "THREE_MONTHS",
    "SIX_MONTHS",
    "NINE_MONTHS",
    "ONE_YEAR",
    "EIGHTEEN_MONTHS",
    "TWO_YEARS",
    "THIRTY_MONTHS",
    "THREE_YEARS",
    "FOUR_YEARS",
    "FIVE_YEARS",
    "SIX_YEARS",
    "SEVEN_YEARS",
    "EIGHT_YEARS",
    "NINE_YEARS",
    "TEN_YEARS",
    "PERMANENT",
]


def retention_cutoff(period: str, now: datetime) -> datetime | None:
    """Messages received before this moment are past the archive's `RetentionPeriod` (calendar
    months back from now, the day clamped to the month's last); None for PERMANENT."""
    if period == "PERMANENT":
        return None
    months = _MONTHS.get(period)
    if months is None:
        raise ValueError(f"unknown RetentionPeriod {period!r}")
    total = now.year * 12 + (now.month - 1) - months
    year, month = divmod(total, 12)
    day = now.day
    while True:
        try:
            return now.replace(year=year, month=month + 1, day=day)
        except ValueError:  # 31 March minus one month: the last day of February
            day -= 1


# ------------------------------------------------------------------------------- query text

QUERY_WORDS = {
    "from": "from_",
    "to": "to",
    "cc": "cc",
    "subject": "subject",
    "envelope-from": "envelope_from",
    "envelope-to": "envelope_to",
}
QUERY_FORMS = (
    "words (searched in the subject) and `field:value` terms: from:, to:, cc:, subject:, "
    "envelope-from:, envelope-to:, has:attachments, -has:attachments, since:, until: "
    '(quote values with spaces: subject:"order 77")'
)


def query_terms(text: str) -> dict[str, Any]:
    """The fields a query text gives (`from:bistro subject:"order 77" has:attachments`), in
    ArchiveQuery's names; `since`/`until` stay text for the caller to read as moments."""
    import shlex  # noqa: PLC0415 -- only for query texts

    try:
        words = shlex.split(text)
    except ValueError as error:
        raise ValueError(f"query {text!r}: {error}") from None
    found: dict[str, Any] = {}
    for word in words:
        name, colon, value = word.partition(":")
        name = name.casefold()
        if word.casefold() in ("has:attachments", "-has:attachments"):
            found["has_attachments"] = not word.startswith("-")
        elif colon and name in QUERY_WORDS and value:
            found.setdefault(QUERY_WORDS[name], []).append(value)
        elif colon and name in ("since", "until") and value:
            found[name] = value
        elif colon and name in (*QUERY_WORDS, "has", "-has", "since", "until"):
            raise ValueError(f"query term {word!r} has no value; a query takes {QUERY_FORMS}")
        else:
            found.setdefault("subject", []).append(word)
    return found
