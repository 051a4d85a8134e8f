"""The Archive port on Mail Manager's own archive, through its API (botocore's `mailmanager`
model): a search is a job (`StartArchiveSearch`, polled with `GetArchiveSearch`, read with
`GetArchiveSearchResults`); one message is `GetArchiveMessage`, whose presigned link holds its
bytes; an export is a job that writes `.eml` files to S3 (`StartArchiveExport`,
`GetArchiveExport`), which the operator's machine then downloads."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from mxgate.adapters.aws.failures import error_code, transient_failures
from mxgate.archive.entry import archived_message
from mxgate.archive.query import ArchivedMessage, ArchiveQuery
from mxgate.errors import PermanentError, TransientError
from mxgate.message.raw import RawMessage
from mxgate.ports import Clock
from mxgate.records import Envelope

if TYPE_CHECKING:
    from mypy_boto3_mailmanager import MailManagerClient
    from mypy_boto3_s3 import S3Client

POLL_SECONDS = 1.0
JOB_TIMEOUT = 600.0  # seconds an operator waits for a search or an export job
_DONE = {"COMPLETED"}
_FAILED = {"FAILED", "CANCELLED"}
DOWNLOAD_TIMEOUT = 60


def _row(row: Any, archive_id: str) -> ArchivedMessage:
    envelope = row.get("Envelope") or {}
    return ArchivedMessage(
        archived_message_id=row["ArchivedMessageId"],
        archive_id=archive_id,
        received_at=row["ReceivedTimestamp"],
        message_id=str(row.get("MessageId", "")).strip("<>"),
        date=row.get("Date", ""),
        from_=row.get("From", ""),
        to=row.get("To", ""),
        cc=row.get("Cc", ""),
        subject=row.get("Subject", ""),
        envelope_from=envelope.get("From", ""),
        envelope_to=list(envelope.get("To", [])),
        has_attachments=bool(row.get("HasAttachments", False)),
        ingress_point=row.get("IngressPointId", ""),
        sender_ip=row.get("SenderIpAddress", ""),
        helo=envelope.get("Helo", ""),
    )


class MailManagerArchive:
    def __init__(
        self,
        client: MailManagerClient,
        archive_id: str,
        clock: Clock,
        *,
        fetch: Callable[[str], bytes] | None = None,
    ) -> None:
        self.client = client
        self.archive_id = archive_id
        self.clock = clock
        self.fetch = fetch or _download

    def _wait(self, what: str, state: Callable[[], tuple[str, str]], on_state: Any) -> None:
        started = self.clock.now()
        while True:
            current, error = state()
            on_state(current)
            if current in _DONE:
                return
            if current in _FAILED:
                raise PermanentError(f"{what} {current.lower()}: {error or 'no reason given'}")
            if (self.clock.now() - started).total_seconds() > JOB_TIMEOUT:
                raise TransientError(f"{what} still {current} after {JOB_TIMEOUT:.0f}s")
            self.clock.sleep(POLL_SECONDS)

    def search(
        self, query: ArchiveQuery, on_state: Callable[[str], None] = lambda _: None
    ) -> list[ArchivedMessage]:
        since, until = query.time_range(self.clock.now())
        with transient_failures("Mail Manager StartArchiveSearch"):
            search_id = self.client.start_archive_search(
                ArchiveId=self.archive_id,
                Filters=query.filters(),  # type: ignore[arg-type]
                FromTimestamp=since,
                ToTimestamp=until,
                MaxResults=query.limit,
            )["SearchId"]

        def state() -> tuple[str, str]:
            with transient_failures("Mail Manager GetArchiveSearch"):
                status = self.client.get_archive_search(SearchId=search_id)["Status"]
            return str(status.get("State", "")), str(status.get("ErrorMessage", ""))

        self._wait(f"archive search {search_id}", state, on_state)
        with transient_failures("Mail Manager GetArchiveSearchResults"):
            rows = self.client.get_archive_search_results(SearchId=search_id)["Rows"]
        return [_row(row, self.archive_id) for row in rows][: query.limit]

    def _message(self, archived_message_id: str) -> tuple[str, Any]:
        try:
            with transient_failures("Mail Manager GetArchiveMessage"):
                found = self.client.get_archive_message(ArchivedMessageId=archived_message_id)
        except ClientError as error:
            if error_code(error) in ("ResourceNotFoundException", "ValidationException"):
                raise PermanentError(f"no archived message {archived_message_id!r}") from error
            raise
        return found["MessageDownloadLink"], found

    def get(self, archived_message_id: str) -> ArchivedMessage | None:
        try:
            link, found = self._message(archived_message_id)
        except PermanentError:
            return None
        raw = self.fetch(link)
        envelope = found.get("Envelope") or {}
        metadata = found.get("Metadata") or {}
        return archived_message(
            archive_id=self.archive_id,
            archived_message_id=archived_message_id,
            key="",
            message=RawMessage.of(raw),
            envelope=Envelope(
                message_id=archived_message_id,
                mail_from=envelope.get("From", ""),
                recipients=list(envelope.get("To", [])),
                helo=envelope.get("Helo", ""),
                source_ip=metadata.get("SenderIpAddress", ""),
                ingress_point=metadata.get("IngressPointId", ""),
            ),
            recipients=list(envelope.get("To", [])),
            archived_at=metadata.get("Timestamp") or self.clock.now(),
        )

    def raw(self, archived_message_id: str) -> bytes:
        link, _ = self._message(archived_message_id)
        return self.fetch(link)

    def export(
        self,
        query: ArchiveQuery,
        s3: S3Client,
        location: tuple[str, str],
        *,
        on_state: Callable[[str], None] = lambda _: None,
        max_results: int | None = None,
    ) -> Iterator[tuple[str, bytes]]:
        """Run an export job into s3://bucket/prefix, then yield (name, bytes) of each `.eml`
        it wrote (the keys below the prefix are Mail Manager's own: read as opaque)."""
        bucket, prefix = location
        since, until = query.time_range(self.clock.now())
        request: dict[str, Any] = {
            "ArchiveId": self.archive_id,
            "Filters": query.filters(),
            "FromTimestamp": since,
            "ToTimestamp": until,
            "ExportDestinationConfiguration": {"S3": {"S3Location": f"s3://{bucket}/{prefix}"}},
            "IncludeMetadata": False,
        }
        if max_results is not None:
            request["MaxResults"] = max_results
        with transient_failures("Mail Manager StartArchiveExport"):
            export_id = self.client.start_archive_export(**request)["ExportId"]

        def state() -> tuple[str, str]:
            with transient_failures("Mail Manager GetArchiveExport"):
                status = self.client.get_archive_export(ExportId=export_id)["Status"]
            return str(status.get("State", "")), str(status.get("ErrorMessage", ""))

        self._wait(f"archive export {export_id}", state, on_state)
        for key in exported_keys(s3, bucket, prefix):
            with transient_failures(f"S3 s3://{bucket}/{key}"):
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            yield key.rsplit("/", 1)[-1].removesuffix(".eml"), body


def exported_keys(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    with transient_failures(f"S3 list s3://{bucket}/{prefix}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".eml")]
    return sorted(keys)


def _download(link: str) -> bytes:
    """A presigned S3 link (https on AWS)."""
    if not link.startswith(("https://", "http://")):
        raise PermanentError(f"not a download link: {link[:60]!r}")
    with urllib.request.urlopen(link, timeout=DOWNLOAD_TIMEOUT) as answer:  # noqa: S310 -- http(s) only, checked above
        body: bytes = answer.read()
    return body
