"""The parsed message: one immutable model built from raw bytes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Address(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = ""
    address: str


class Attachment(BaseModel):
    model_config = ConfigDict(frozen=True)

    filename: str | None
    content_type: str
    size: int
    sha256: str
    disposition: str  # "attachment" | "inline"


class ParsedMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_id: str | None = None
    subject: str = ""
    date: str | None = None
    from_: list[Address] = Field(default_factory=list, alias="from")
    sender: list[Address] = Field(default_factory=list)
    reply_to: list[Address] = Field(default_factory=list)
    to: list[Address] = Field(default_factory=list)
    cc: list[Address] = Field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    auto_submitted: bool = False
    read_receipt_requested: bool = False
    size: int = 0
    defects: list[str] = Field(default_factory=list)
