"""DKIM (RFC 6376): every signature on a message, verified.

dkimpy checks each signature's fields, hashes the signed header fields and verifies the
cryptography. The body hash is computed here while the body streams by, one canonicalized
copy per (canonicalization, hash, l=) in use, so a 40 MB message is never held in memory.
Keys come through the Resolver port.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dkim
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, parse_tag_value

from mxgate.authn.model import DkimCheck, Result
from mxgate.ports import DnsFailure, Resolver

log = logging.getLogger("mxgate.authn")

_HASHES: dict[bytes, Callable[[], Any]] = {
    b"rsa-sha256": hashlib.sha256,
    b"rsa-sha1": hashlib.sha1,
    b"ed25519-sha256": hashlib.sha256,
}
_TRAILING_WSP = re.compile(rb"[ \t]+\n")
_WSP = re.compile(rb"[ \t]+")


class _Hasher:
    """A hash over the first `limit` bytes of a canonical body (all of it without l=)."""

    def __init__(self, algorithm: bytes, limit: int | None) -> None:
        self._hash = _HASHES[algorithm]()
        self._left = limit

    def update(self, data: bytes) -> None:
        if self._left is not None:
            data = data[: self._left]
            self._left -= len(data)
        self._hash.update(data)

    def digest(self) -> bytes:
        return bytes(self._hash.digest())


class BodyCanonicalizer:
    """RFC 6376 3.4.3 (simple) or 3.4.4 (relaxed) body canonicalization, streamed: lines end
    in CRLF, empty lines at the end are dropped, and relaxed also folds whitespace."""

    def __init__(self, relaxed: bool) -> None:
        self.relaxed = relaxed
        self.hashers: list[_Hasher] = []
        self._rest = b""
        self._blank_lines = 0  # empty lines seen but not yet written: they may end the body
        self._written = False

    def _emit(self, data: bytes) -> None:
        self._written = True
        for hasher in self.hashers:
            hasher.update(data)

    def _lines(self, block: bytes) -> None:
        """Whole lines, the block ending with a line break."""
        block = block.replace(b"\r\n", b"\n")
        if self.relaxed:
            block = _WSP.sub(b" ", _TRAILING_WSP.sub(b"\n", block))
        text = block.rstrip(b"\n")
        if not text:
            self._blank_lines += len(block)
            return
        self._emit(b"\r\n" * self._blank_lines + text.replace(b"\n", b"\r\n") + b"\r\n")
        self._blank_lines = len(block) - len(text) - 1

    def feed(self, data: bytes) -> None:
        data = self._rest + data
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        if cut:
            self._lines(data[:cut])

    def end(self) -> None:
        if self._rest:
            last, self._rest = self._rest, b""
            self._lines(last + b"\n")
        if not self._written and not self.relaxed:
            self._emit(b"\r\n")  # an empty body is one CRLF in simple


@dataclass
class _Signature:
    index: int
    tags: dict[bytes, bytes] = field(default_factory=dict)
    include_headers: list[bytes] = field(default_factory=list)
    header: tuple[bytes, bytes] = (b"", b"")
    hasher: _Hasher | None = None
    problem: DkimCheck | None = None  # decided before the body: a broken signature

    def check(self, result: Result, reason: str) -> DkimCheck:
        return DkimCheck(
            domain=_text(self.tags.get(b"d", b"")),
            selector=_text(self.tags.get(b"s", b"")),
            identity=_text(self.tags.get(b"i", b"")),
            algorithm=_text(self.tags.get(b"a", b"")),
            signature=_text(re.sub(rb"\s+", b"", self.tags.get(b"b", b""))[:12]),
            result=result,
            reason=reason,
        )


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


class DkimVerifier:
    """Verifies the signatures of one message: `feed` it the body after constructing it with
    the header section, then `results`."""

    def __init__(self, header_section: bytes) -> None:
        self._signatures: list[_Signature] = []
        self._canonicalizers: dict[bool, BodyCanonicalizer] = {}
        if b"dkim-signature" not in header_section.lower():
            self._dkim = None
            return
        try:
            self._dkim = dkim.DKIM(header_section, logger=log)
        except dkim.DKIMException as error:
            self._dkim = None
            self._signatures.append(
                _Signature(
                    index=0,
                    problem=DkimCheck(
                        domain="",
                        selector="",
                        result=Result.PERMERROR,
                        reason=f"unreadable header section: {error}",
                    ),
                )
            )
            return
        count = sum(1 for name, _ in self._dkim.headers if name.lower() == b"dkim-signature")
        for index in range(count):
            self._signatures.append(self._prepare(index))

    def _prepare(self, index: int) -> _Signature:
        assert self._dkim is not None
        signature = _Signature(index=index)
        headers = [(n, v) for n, v in self._dkim.headers if n.lower() == b"dkim-signature"]
        signature.header = headers[index]
        try:
            signature.tags = parse_tag_value(headers[index][1])
        except InvalidTagValueList as error:
            signature.problem = signature.check(Result.NEUTRAL, f"malformed signature: {error}")
            return signature
        try:
            prepared = self._dkim.verify_headerprep(index)
            policy = CanonicalizationPolicy.from_c_value(signature.tags.get(b"c", b"simple/simple"))
        except (dkim.DKIMException, InvalidCanonicalizationPolicyError) as error:
            reason = str(error)
            result = Result.FAIL if "x= value is past" in reason else Result.NEUTRAL
            signature.problem = signature.check(result, f"signature not usable: {reason}")
            return signature
        assert prepared
        signature.tags, signature.include_headers, _ = prepared
        relaxed = policy.body_algorithm.name == b"relaxed"
        limit = int(signature.tags[b"l"]) if b"l" in signature.tags else None
        signature.hasher = _Hasher(signature.tags[b"a"], limit)
        canonicalizer = self._canonicalizers.setdefault(relaxed, BodyCanonicalizer(relaxed))
        canonicalizer.hashers.append(signature.hasher)
        return signature

    @property
    def signed(self) -> bool:
        return bool(self._signatures)

    def feed(self, data: bytes) -> None:
        for canonicalizer in self._canonicalizers.values():
            canonicalizer.feed(data)

    def results(self, resolver: Resolver) -> list[DkimCheck]:
        for canonicalizer in self._canonicalizers.values():
            canonicalizer.end()
        return [
            signature.problem or self._verify(signature, resolver) for signature in self._signatures
        ]

    def _verify(self, signature: _Signature, resolver: Resolver) -> DkimCheck:
        assert self._dkim is not None
        assert signature.hasher is not None
        tags = signature.tags
        try:
            expected = base64.b64decode(re.sub(rb"\s+", b"", tags[b"bh"]))
        except binascii.Error:
            return signature.check(Result.NEUTRAL, "bh= is not base64")
        if signature.hasher.digest() != expected:
            return signature.check(Result.FAIL, "body hash did not verify: altered after signing")
        key, problem = _public_key(signature, resolver)
        if problem is not None:
            return problem
        self._dkim.pk, self._dkim.keysize, self._dkim.ktag, self._dkim.seqtlsrpt = key
        without_body_hash = {k: v for k, v in tags.items() if k != b"bh"}  # checked above
        try:
            valid = self._dkim.verify_sig_process(
                without_body_hash, list(signature.include_headers), signature.header, None
            )
        except dkim.DKIMException as error:
            return signature.check(Result.PERMERROR, f"cannot verify: {error}")
        if not valid:
            return signature.check(Result.FAIL, "signature did not verify: altered after signing")
        return signature.check(Result.PASS, f"valid signature of {_text(tags[b'd'])}")


def _public_key(
    signature: _Signature, resolver: Resolver
) -> tuple[tuple[Any, Any, Any, Any], DkimCheck | None]:
    tags = signature.tags
    domain = _text(tags[b"d"]).rstrip(".")
    name = f"{_text(tags[b's'])}._domainkey.{domain}"
    nothing = (None, None, None, None)
    try:
        answer = resolver.query(name, "TXT")
    except DnsFailure as error:
        return nothing, signature.check(Result.TEMPERROR, f"key lookup failed: {error}")
    if not answer.records:
        return nothing, signature.check(Result.PERMERROR, f"no key at {name}")
    record = answer.records[0]
    try:
        if parse_tag_value(record.encode()).get(b"p", None) == b"":
            return nothing, signature.check(Result.FAIL, f"key at {name} is revoked")
        return dkim.evaluate_pk(name.encode(), record.encode()), None
    except (dkim.DKIMException, InvalidTagValueList, binascii.Error) as error:
        return nothing, signature.check(Result.PERMERROR, f"unusable key at {name}: {error}")
