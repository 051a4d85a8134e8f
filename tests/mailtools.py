"""Helpers for the message and authentication tests: the shared corpus, slow streams, an
attachment store in memory, DKIM keys made on the spot."""

from __future__ import annotations

import base64
import hashlib
import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import REPO


def _corpus() -> Path:
    beside = REPO.parent / "shared" / "corpus"  # a clone of main, with shared/ beside it
    return beside if beside.is_dir() else Path("/work/shared/corpus")  # a helper's worktree


CORPUS = _corpus()


class Trickle(io.RawIOBase):
    """A stream that hands out a few bytes per read, as a slow socket or S3 body may."""

    def __init__(self, data: bytes, most: int, seed: int = 7) -> None:
        self.data = data
        self.position = 0
        self.most = most
        self.random = random.Random(seed)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        count = self.random.randint(1, self.most)
        chunk = self.data[self.position : self.position + count]
        self.position += len(chunk)
        return chunk


class Store:
    """Keeps attachment content in memory, by digest, as the object store does on disk."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}

    def keep(self, sha256: str, content_type: str, content: BinaryIO) -> str:
        data = content.read()
        assert hashlib.sha256(data).hexdigest() == sha256
        self.content[sha256] = data
        return f"attachments/{sha256}"


@dataclass
class Keys:
    private: bytes  # PEM, for dkim.sign
    public: str  # base64 DER, for the p= of a key record


def make_keys(bits: int = 2048) -> Keys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Keys(private, base64.b64encode(public).decode())
