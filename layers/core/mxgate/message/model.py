"""The parsed message: one immutable model built from raw bytes.

Every text field is a `str` with no surrogate escapes (undecodable bytes become U+FFFD), so it
can go into JSON, logs and rule conditions as it is.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True, populate_by_name=True)


class ParseLimits(BaseModel):
    """What one message may hold before the parse stops and the message is quarantined."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    max_depth: int = Field(default=20, ge=1, description="MIME nesting (multiparts and messages)")
    max_parts: int = Field(default=1000, ge=1, description="MIME parts in all")
    max_header_fields: int = Field(default=1000, ge=1, description="fields in one header section")
    max_header_bytes: int = Field(
        default=1 << 20, ge=1024, description="bytes of one header section"
    )
    max_decoded_bytes: int = Field(
        default=128 << 20, ge=1024, description="decoded content in all, nested messages included"
    )


class Address(Frozen):
    name: str = ""
    address: str
    # The domain as DNS knows it (IDNA A-labels, lower case), e.g. for DMARC; "" if none.
    ascii_domain: str = ""


class HeaderField(Frozen):
    name: str
    value: str  # unfolded, RFC 2047 encoded words decoded
    raw: str  # as received after the colon (folding kept); 8-bit bytes decoded leniently


class SmtpEnvelope(Frozen):
    """What the SMTP session said, when known (it is not part of the message itself)."""

    mail_from: str = ""
    recipients: list[str] = Field(default_factory=list)
    helo: str = ""
    client_ip: str = ""


class DeliveryStatus(Frozen):
    """One recipient's entry in a delivery status notification (RFC 3464)."""

    final_recipient: str = ""
    original_recipient: str = ""
    action: str = ""  # failed | delayed | delivered | relayed | expanded
    status: str = ""  # e.g. 5.1.1
    diagnostic_code: str = ""
    remote_mta: str = ""


class Attachment(Frozen):
    filename: str | None  # the name a mail client shows (RFC 2231 filename, else name)
    content_type: str  # as declared (lower case)
    size: int  # decoded bytes
    sha256: str  # of the decoded bytes
    disposition: str  # "attachment" | "inline"
    sniffed_type: str | None = None  # from the content's first bytes, when recognised
    # every name the part carries (filename and name, duplicates, RFC 2231 pieces), as written
    names: list[str] = Field(default_factory=list)
    safe_filename: str = ""  # the filename made safe to write anywhere (never empty)
    content_id: str | None = None
    key: str | None = None  # where the content was stored (content-addressed), if it was
    message: ParsedMessage | None = None  # a message/rfc822 attachment, parsed


class Signature(Frozen):
    """A detached signature part (RFC 1847 multipart/signed: S/MIME, OpenPGP), which mail
    programs show as the message's signature rather than as a file."""

    content_type: str  # application/pkcs7-signature, application/pgp-signature, ...
    protocol: str | None = None  # multipart/signed's protocol parameter, when there is one
    micalg: str | None = None  # multipart/signed's micalg (the digest the signer used)
    filename: str | None = None
    size: int  # decoded bytes
    sha256: str  # of the decoded bytes


class ParsedMessage(Frozen):
    message_id: str | None = None  # without angle brackets
    subject: str = ""
    date: str | None = None  # the Date field as written
    sent_at: datetime | None = None  # the Date field understood, when it can be
    from_: list[Address] = Field(default_factory=list, alias="from")
    sender: list[Address] = Field(default_factory=list)
    reply_to: list[Address] = Field(default_factory=list)
    to: list[Address] = Field(default_factory=list)
    cc: list[Address] = Field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    text: str | None = None  # the plain-text body (inline text parts joined), or None
    html: str | None = None  # the HTML body, or None
    attachments: list[Attachment] = Field(default_factory=list)
    signatures: list[Signature] = Field(default_factory=list)  # detached, not attachments
    headers: list[HeaderField] = Field(default_factory=list)
    envelope: SmtpEnvelope | None = None
    # Flags. RFC 3834 Auto-Submitted, RFC 2369/2919 List-*, Precedence, RFC 3462/3464 reports.
    auto_submitted: bool = False
    auto_reply: bool = False
    bulk: bool = False
    list_id: str | None = None
    precedence: str | None = None
    report_type: str | None = None  # multipart/report's report-type, lower case
    dsn: bool = False  # a delivery status notification (bounce, delay)
    delivery_status: list[DeliveryStatus] = Field(default_factory=list)
    read_receipt_requested: bool = False
    size: int = 0  # bytes of the raw message
    sha256: str = ""  # of the raw message
    defects: list[str] = Field(default_factory=list)
    # Why the message cannot be understood (a limit exceeded, not a message at all), or None.
    # Such a message is quarantined with this reason.
    unreadable: str | None = None


# An attachment may hold a parsed message, a forward reference: pydantic resolves it in this
# module when the models are first built (defer_build), so importing them builds nothing.
