"""The archive's search meaning (Mail Manager's CONTAINS, case-insensitive; AND across
filters, OR within one), its API filters, retention cut-offs, and the SQLite index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mxgate.adapters.local.archive import ARCHIVE_BUCKET, INDEX_BATCH, SqliteArchive
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.archive.entry import archived_message
from mxgate.archive.query import ArchivedMessage, ArchiveQuery, query_terms, retention_cutoff
from mxgate.message.raw import RawMessage
from mxgate.moment import moment
from mxgate.records import Envelope

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def row(**fields: object) -> ArchivedMessage:
    base: dict[str, object] = {
        "archived_message_id": "01A",
        "archive_id": "Archive",
        "received_at": NOW,
        "from": "Buyer <purchasing@Bistro.example>",
        "to": "orders@customer-support.nutrition.co",
        "subject": "Order 2026-1187",
        "envelope_from": "purchasing@bistro.example",
        "envelope_to": ["orders@customer-support.nutrition.co"],
    }
    return ArchivedMessage.model_validate({**base, **fields})


def test_contains_is_case_insensitive_and_filters_are_anded_values_ored():
    message = row()
    assert ArchiveQuery(from_=["BISTRO"]).matches(message)
    assert ArchiveQuery(subject=["order 2026"], to=["orders@"]).matches(message)
    assert not ArchiveQuery(subject=["order 2026"], to=["returns@"]).matches(message)
    assert ArchiveQuery(to=["returns@", "orders@"]).matches(message)  # values: OR
    assert ArchiveQuery(envelope_to=["CUSTOMER-support"]).matches(message)
    assert not ArchiveQuery(has_attachments=True).matches(message)
    assert ArchiveQuery(has_attachments=False).matches(message)
    assert not ArchiveQuery(since=NOW + timedelta(seconds=1)).matches(message)
    assert ArchiveQuery(until=NOW).matches(message)


def test_filters_are_mail_managers_archive_filters():
    query = ArchiveQuery(subject=["order"], envelope_from=["a", "b"], has_attachments=True)
    assert query.filters() == {
        "Include": [
            {
                "StringExpression": {
                    "Evaluate": {"Attribute": "SUBJECT"},
                    "Operator": "CONTAINS",
                    "Values": ["order"],
                }
            },
            {
                "StringExpression": {
                    "Evaluate": {"Attribute": "ENVELOPE_FROM"},
                    "Operator": "CONTAINS",
                    "Values": ["a", "b"],
                }
            },
            {
                "BooleanExpression": {
                    "Evaluate": {"Attribute": "HAS_ATTACHMENTS"},
                    "Operator": "IS_TRUE",
                }
            },
        ]
    }
    assert ArchiveQuery().filters() == {}


def test_at_most_a_thousand_results():
    with pytest.raises(ValueError, match="1000"):
        ArchiveQuery(limit=1001)


def test_retention_counts_calendar_months():
    assert retention_cutoff("THREE_MONTHS", NOW) == datetime(2026, 8, 28, 8, 0, tzinfo=UTC)
    assert retention_cutoff("ONE_YEAR", NOW) == datetime(2025, 11, 28, 8, 0, tzinfo=UTC)
    march = datetime(2026, 5, 31, tzinfo=UTC)
    assert retention_cutoff("THREE_MONTHS", march) == datetime(2026, 2, 28, tzinfo=UTC)
    assert retention_cutoff("PERMANENT", NOW) is None


def test_query_text_and_moments():
    assert query_terms('from:bistro subject:"order 77" has:attachments lunch') == {
        "from_": ["bistro"],
        "subject": ["order 77", "lunch"],
        "has_attachments": True,
    }
    with pytest.raises(ValueError, match="has no value"):
        query_terms("from:")
    assert moment("1h", NOW) == NOW - timedelta(hours=1)
    assert moment("2026-11-27", NOW) == datetime(2026, 11, 27, tzinfo=UTC)
    with pytest.raises(ValueError, match="duration back from now"):
        moment("yesterday", NOW)


def test_sqlite_index_finds_substrings_of_any_length(tmp_path):
    objects = FileObjectStore(tmp_path / "objects")
    index = SqliteArchive(tmp_path / "archive.db", objects)
    raws = {
        "01A": b"From: Buyer <purchasing@bistro.example>\r\nTo: orders@customer-support.nutrition.co"
        b"\r\nSubject: Order 2026-1187\r\nMessage-ID: <o1@bistro.example>\r\n\r\nhello\r\n",
        "01B": b"From: =?utf-8?q?J=C3=BCrgen?= <j@m\xc3\xbcnchen.example>\r\nTo: alice@nutrition.co\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        b'hi\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"'
        b"\r\n\r\n%PDF\r\n--b--\r\n",
    }
    for number, (archived_id, raw) in enumerate(raws.items()):
        key = f"Archive/{archived_id}.eml"
        objects.put(ARCHIVE_BUCKET, key, raw)
        index.add(
            archived_message(
                archive_id="Archive",
                archived_message_id=archived_id,
                key=key,
                message=RawMessage.of(raw),
                envelope=Envelope(
                    message_id=archived_id, mail_from="bounce@shop.example", recipients=[]
                ),
                recipients=["alice@nutrition.co"] if archived_id == "01B" else ["orders@x.co"],
                archived_at=NOW + timedelta(minutes=number),
            )
        )

    def ids(**fields: object) -> list[str]:
        return [m.archived_message_id for m in index.search(ArchiveQuery.model_validate(fields))]

    assert ids() == ["01B", "01A"]  # newest first
    assert ids(subject=["ORDER 2026"]) == ["01A"]  # through the trigram index
    assert ids(subject=["grüße"]) == ["01B"]  # decoded, case-folded beyond ASCII
    assert ids(subject=["20"]) == ["01A"]  # shorter than a trigram: still found
    assert ids(from_=["jürgen"], has_attachments=True) == ["01B"]
    assert ids(envelope_to=["alice"]) == ["01B"]
    assert ids(subject=["order"], to=["alice"]) == []
    assert ids(limit=1) == ["01B"]
    assert ids(since=NOW + timedelta(seconds=30)) == ["01B"]
    assert index.raw("01A") == raws["01A"]
    assert index.find("01") == ["01A", "01B"]

    again = index.get("01A")
    assert again is not None
    index.add(again.model_copy(update={"subject": "Order changed"}))  # re-indexed, not doubled
    assert ids(subject=["order"]) == ["01A"]
    assert ids(subject=["2026-1187"]) == []

    later = NOW + timedelta(days=400)
    assert [
        m.archived_message_id for m in index.purge({"Archive": "ONE_YEAR"}, later, dry_run=True)
    ] == [
        "01A",
        "01B",
    ]
    assert ids() == ["01B", "01A"]  # a dry run deletes nothing
    assert index.purge({"Archive": "PERMANENT"}, later) == []
    index.purge({"Archive": "ONE_YEAR"}, later)
    assert ids() == []
    assert not objects.exists(ARCHIVE_BUCKET, "Archive/01A.eml")


def counts(archive: SqliteArchive) -> tuple[int, int]:
    """Rows in the trigram index, and rows waiting for it."""
    indexed = archive.db.execute("SELECT count(*) FROM archived_text").fetchone()[0]
    waiting = archive.db.execute(
        "SELECT count(*) FROM archived WHERE rowid > (SELECT upto FROM archived_indexed)"
    ).fetchone()[0]
    return indexed, waiting


def ids(archive: SqliteArchive, **fields: object) -> list[str]:
    query = ArchiveQuery.model_validate({"limit": 1000, **fields})
    return [m.archived_message_id for m in archive.search(query)]


def test_rows_waiting_for_the_trigram_index_are_found_indexed_or_not(tmp_path):
    """A row's texts wait in the database and go into the trigram index a batch at a time: a
    search finds a row either way, a process that dies (no close) leaves its rows findable by
    the next one, and a replaced or purged row leaves nothing behind in either place."""
    objects = FileObjectStore(tmp_path / "objects")
    index = SqliteArchive(tmp_path / "archive.db", objects)
    total = INDEX_BATCH + 3  # one batch indexed, three rows waiting
    for number in range(total):
        index.add(
            row(
                archived_message_id=f"{number:03d}",
                key=f"Archive/{number:03d}.eml",
                subject=f"Invoice {number:03d}",
                received_at=NOW + timedelta(minutes=number),
            )
        )

    assert counts(index) == (INDEX_BATCH, 3)
    assert ids(index, subject=["invoice 000"]) == ["000"]  # indexed
    assert ids(index, subject=["INVOICE 034"]) == ["034"]  # waiting
    assert len(ids(index, subject=["invoice"])) == total

    after_a_crash = SqliteArchive(tmp_path / "archive.db", objects)  # the first never closed
    assert ids(after_a_crash, subject=["invoice 033"]) == ["033"]
    replaced = after_a_crash.get("000")
    assert replaced is not None  # an indexed row replaced: its old texts leave the index
    after_a_crash.add(replaced.model_copy(update={"subject": "Credit note"}))
    assert ids(after_a_crash, subject=["invoice 000"]) == []
    assert ids(after_a_crash, subject=["credit"]) == ["000"]
    waiting = after_a_crash.get("034")
    assert waiting is not None
    after_a_crash.remove(waiting)  # a waiting row purged: its texts go too
    assert ids(after_a_crash, subject=["invoice 034"]) == []
    assert counts(after_a_crash) == (INDEX_BATCH - 1, 3)

    after_a_crash.close()  # a process that stops indexes what it added
    reopened = SqliteArchive(tmp_path / "archive.db", objects)
    assert counts(reopened) == (INDEX_BATCH + 2, 0)
    assert len(ids(reopened, subject=["invoice"])) == total - 2
    assert ids(reopened, subject=["invoice 033"]) == ["033"]


def test_a_row_after_the_last_one_purged_waits_for_the_trigram_index(tmp_path):
    """SQLite gives a new row the largest rowid plus one: the last row gone, its rowid is
    the next row's, which must not be taken as indexed already."""
    objects = FileObjectStore(tmp_path / "objects")
    index = SqliteArchive(tmp_path / "archive.db", objects)
    for number in range(INDEX_BATCH):  # one batch: every row indexed
        index.add(
            row(
                archived_message_id=f"{number:03d}",
                key=f"Archive/{number:03d}.eml",
                subject=f"Invoice {number:03d}",
            )
        )
    assert counts(index) == (INDEX_BATCH, 0)
    last = index.get(f"{INDEX_BATCH - 1:03d}")
    assert last is not None
    index.remove(last)
    index.add(row(archived_message_id="NEW", subject="Credit note"))
    assert counts(index) == (INDEX_BATCH - 1, 1)
    assert ids(index, subject=["credit note"]) == ["NEW"]
    index.index_waiting()
    assert counts(index) == (INDEX_BATCH, 0)
    assert ids(index, subject=["credit note"]) == ["NEW"]


def test_an_index_whose_texts_waited_in_a_table_of_their_own_is_brought_up_to_date(tmp_path):
    """An index written before the texts were in `archived`: its waiting texts go into the
    trigram index when it is opened, its rows are all found, and new rows wait as usual."""
    import sqlite3  # noqa: PLC0415

    columns = "from_text, to_text, cc_text, subject_text, envelope_from_text, envelope_to_text"
    with sqlite3.connect(tmp_path / "archive.db") as before:  # as the earlier version wrote it
        before.executescript(
            "CREATE TABLE archived (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
            "received_at TEXT NOT NULL, row TEXT NOT NULL);"
            "CREATE INDEX archived_by_time ON archived (received_at);"
            f"CREATE VIRTUAL TABLE archived_text USING fts5({columns}, tokenize = 'trigram');"
            "CREATE TABLE archived_unindexed (rowid INTEGER PRIMARY KEY, "
            + ", ".join(f"{c} TEXT NOT NULL" for c in columns.split(", "))
            + ");"
        )
        for number, table in [(1, "archived_text"), (2, "archived_unindexed")]:
            message = row(archived_message_id=f"OLD{number}", subject=f"Invoice {number:03d}")
            before.execute(
                "INSERT INTO archived (rowid, id, received_at, row) VALUES (?,?,?,?)",
                (number, message.archived_message_id, str(number), message.model_dump_json()),
            )
            texts = [message.value(a) for a in ("FROM", "TO", "CC", "SUBJECT")]
            texts += [message.value("ENVELOPE_FROM"), message.value("ENVELOPE_TO")]
            before.execute(
                f"INSERT INTO {table} (rowid, {columns}) VALUES (?,?,?,?,?,?,?)",
                (number, *texts),
            )
    index = SqliteArchive(tmp_path / "archive.db", FileObjectStore(tmp_path / "objects"))
    assert counts(index) == (2, 0)
    assert ids(index, subject=["invoice 001"]) == ["OLD1"]
    assert ids(index, subject=["invoice 002"]) == ["OLD2"]
    index.add(row(archived_message_id="NEW", subject="Invoice 003"))
    assert counts(index) == (2, 1)
    assert sorted(ids(index, subject=["invoice"])) == ["NEW", "OLD1", "OLD2"]
    assert SqliteArchive(tmp_path / "archive.db", index.objects).get("OLD2") is not None
