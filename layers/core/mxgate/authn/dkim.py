"""DKIM (RFC 6376): every DKIM-Signature of a message, verified.

The body hashes are computed while the body streams by (`canonical.BodyHashes`), so a 40 MB
message is never held in memory; keys come through the Resolver port; the cryptography is the
`cryptography` package's (`keys.py`). Verdicts equal `dkim.verify`'s (dkimpy) on the same
messages: `tests/integration/test_dkim_differential.py` checks that over the corpus and
generated cases. Where RFC 8301 and dkimpy part (rsa-sha1 and RSA keys under 1024 bits), the
RFC wins: such signatures are `policy`, never `pass`.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass

from mxgate.authn import keys
from mxgate.authn.canonical import (
    BodyHash,
    BodyHashes,
    Field,
    TagList,
    TagListError,
    header_names,
    parse_tags,
    signed_header_data,
    unfolded,
)
from mxgate.authn.model import DkimCheck, Result
from mxgate.ports import Resolver

SIGNATURE_FIELD = b"dkim-signature"
ALGORITHMS = frozenset({b"rsa-sha256", b"rsa-sha1", b"ed25519-sha256"})
CLOCK_SKEW = 36000  # seconds of t=/x= leeway for signers' clocks (dkimpy's ten hours)
_REQUIRED = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")
_DOMAIN_SPECIALS = re.compile(rb"[()<>\[\]:;@\\,]")

# What a key problem means for the signature (RFC 8601 2.7.1 results).
_KEY_RESULTS: dict[type[keys.KeyProblem], Result] = {
    keys.KeyLookupFailed: Result.TEMPERROR,
    keys.NoKey: Result.PERMERROR,
    keys.KeyRevoked: Result.FAIL,
    keys.KeyUnusable: Result.PERMERROR,
    keys.KeyNotForThisSignature: Result.PERMERROR,
    keys.KeyTooWeak: Result.POLICY,
}


class SignatureUnusable(Exception):  # noqa: N818 -- ends the check of one signature
    def __init__(self, result: Result, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def describe(tags: TagList, result: Result, reason: str) -> DkimCheck:
    return DkimCheck(
        domain=_text(tags.get(b"d", b"")),
        selector=_text(tags.get(b"s", b"")),
        identity=_text(tags.get(b"i", b"")),
        algorithm=_text(tags.get(b"a", b"")),
        signature=_text(unfolded(tags.get(b"b", b""))[:12]),
        result=result,
        reason=reason,
    )


def unreadable_signatures(reason: str) -> DkimCheck:
    """Signatures in a header section no verifier can read: one permerror for them all."""
    return DkimCheck(
        domain="", selector="", result=Result.PERMERROR, reason=f"unreadable header: {reason}"
    )


def canonicalization(tags: TagList, default: bytes = b"simple/simple") -> tuple[bool, bool]:
    """c=: (header relaxed, body relaxed); simple/simple by default, simple body when only the
    header algorithm is given."""
    header, _, body = tags.get(b"c", default).partition(b"/")
    algorithms = {b"simple": False, b"relaxed": True}
    if header not in algorithms or (body or b"simple") not in algorithms:
        raise SignatureUnusable(Result.NEUTRAL, f"unknown c={_text(tags[b'c'])}")
    return algorithms[header], algorithms[body or b"simple"]


def base64_tag(tags: TagList, name: bytes) -> bytes:
    try:
        return base64.b64decode(unfolded(tags[name]), validate=True)
    except binascii.Error as error:
        raise SignatureUnusable(Result.NEUTRAL, f"{name.decode()}= is not base64") from error


def _check_times(tags: TagList, now: float) -> None:
    signed = expires = None
    for name in (b"t", b"x"):
        if name in tags and not tags[name].isdigit():
            raise SignatureUnusable(Result.NEUTRAL, f"{name.decode()}= is not a number")
    if b"t" in tags:
        signed = int(tags[b"t"])
        if signed > now + CLOCK_SKEW:
            raise SignatureUnusable(Result.NEUTRAL, "t= is in the future")
    if b"x" in tags:
        expires = int(tags[b"x"])
        if signed is not None and expires < signed:
            raise SignatureUnusable(Result.NEUTRAL, "x= is before t=")
        if expires < now - CLOCK_SKEW:
            raise SignatureUnusable(Result.FAIL, "the signature has expired (x=)")


def check_signature_tags(tags: TagList, now: float) -> None:
    """RFC 6376 6.1.1: the tags a verifier must find, and their values."""
    for name in _REQUIRED:
        if name not in tags:
            raise SignatureUnusable(Result.NEUTRAL, f"no {name.decode()}= tag")
    if tags[b"v"] != b"1":
        raise SignatureUnusable(Result.NEUTRAL, f"v={_text(tags[b'v'])} is not 1")
    if tags[b"a"] not in ALGORITHMS:
        raise SignatureUnusable(Result.NEUTRAL, f"unknown a={_text(tags[b'a'])}")
    if tags[b"a"] == b"rsa-sha1":
        raise SignatureUnusable(Result.POLICY, "rsa-sha1 signs nothing valid (RFC 8301)")
    domain = tags[b"d"].lower()
    if domain.isascii() and _DOMAIN_SPECIALS.search(domain):
        raise SignatureUnusable(Result.NEUTRAL, f"d={_text(domain)} is not a domain")
    identity = tags.get(b"i", b"@" + domain).lower()
    if not (identity.endswith((b"@" + domain, b"." + domain))):
        raise SignatureUnusable(Result.NEUTRAL, "i= is not d= or a subdomain of it")
    if b"l" in tags and not re.fullmatch(rb"\d{1,76}", tags[b"l"]):
        raise SignatureUnusable(Result.NEUTRAL, "l= is not a number")
    if tags.get(b"q", b"dns/txt") != b"dns/txt":
        raise SignatureUnusable(Result.NEUTRAL, f"unknown q={_text(tags[b'q'])}")
    if b"from" not in header_names(tags[b"h"]):
        raise SignatureUnusable(Result.NEUTRAL, "From is not signed (RFC 6376 6.1.1)")
    _check_times(tags, now)


@dataclass
class _Signature:
    field: Field
    tags: TagList
    body_hash: BodyHash | None = None
    header_relaxed: bool = False
    problem: DkimCheck | None = None  # decided before the body: a signature that cannot pass


class DkimVerifier:
    """The DKIM signatures of one header section. The caller streams the body through
    `hashes` (shared with ARC), then asks for `results`."""

    def __init__(
        self, fields: list[Field], hashes: BodyHashes, *, now: float | None = None
    ) -> None:
        self.fields = fields
        self.now = time.time() if now is None else now
        self._signatures = [
            self._prepare(field, hashes) for field in fields if field[0].lower() == SIGNATURE_FIELD
        ]

    def _prepare(self, field: Field, hashes: BodyHashes) -> _Signature:
        try:
            tags = parse_tags(field[1])
        except TagListError as error:
            problem = describe({}, Result.NEUTRAL, f"malformed signature: {error}")
            return _Signature(field, {}, problem=problem)
        signature = _Signature(field, tags)
        try:
            check_signature_tags(tags, self.now)
            signature.header_relaxed, body_relaxed = canonicalization(tags)
        except SignatureUnusable as unusable:
            signature.problem = describe(tags, unusable.result, unusable.reason)
            return signature
        limit = int(tags[b"l"]) if b"l" in tags else None
        hash_name = tags[b"a"].rpartition(b"-")[2]
        signature.body_hash = hashes.request(relaxed=body_relaxed, hash_name=hash_name, limit=limit)
        return signature

    @property
    def signed(self) -> bool:
        return bool(self._signatures)

    def results(self, resolver: Resolver) -> list[DkimCheck]:
        """One check per signature, top to bottom; call after the whole body went by."""
        return [s.problem or self._verify(s, resolver) for s in self._signatures]

    def _verify(self, signature: _Signature, resolver: Resolver) -> DkimCheck:
        tags = signature.tags
        try:
            if signature.body_hash is None or signature.body_hash.digest() != base64_tag(
                tags, b"bh"
            ):
                return describe(
                    tags, Result.FAIL, "body hash did not verify: altered after signing"
                )
            names = header_names(tags[b"h"])
            if b"from" in names:
                names.append(b"from")  # a From added above the signed one breaks the signature
            data = signed_header_data(
                self.fields, names, signature.field, relaxed=signature.header_relaxed
            )
            b_value = base64_tag(tags, b"b")
        except SignatureUnusable as unusable:
            return describe(tags, unusable.result, unusable.reason)
        try:
            key = keys.fetch_key(resolver, _text(tags[b"s"]), _text(tags[b"d"]))
            if key.strict_identity and not tags.get(b"i", b"@").lower().endswith(
                b"@" + tags[b"d"].lower()
            ):
                raise keys.KeyNotForThisSignature("the key's t=s allows no subdomain in i=")
            valid = keys.verify(key, tags[b"a"], data, b_value)
        except keys.KeyProblem as problem:
            return describe(tags, _KEY_RESULTS[type(problem)], str(problem))
        if not valid:
            return describe(tags, Result.FAIL, "signature did not verify: altered after signing")
        return describe(tags, Result.PASS, f"valid signature of {_text(tags[b'd'])}")
