"""ARC (RFC 8617): the Authenticated Received Chain a message arrives with, validated (cv=
none, pass or fail), and, when the gateway has a sealing key, the gateway's own ARC set.

The AMS body hashes come from the same streamed pass as DKIM's (`canonical.BodyHashes`). The IETF
is moving ARC to Historic; sealing still lets a receiver that trusts the gateway as a sealer
(Microsoft 365's "trusted ARC sealers") take the gateway's verdicts across the hop.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm

from mxgate.authn import keys
from mxgate.authn.canonical import (
    BodyHash,
    BodyHashes,
    Field,
    TagList,
    TagListError,
    canonical_field,
    header_names,
    parse_tags,
    signed_header_data,
)
from mxgate.authn.dkim import SignatureUnusable, base64_tag, canonicalization
from mxgate.authn.model import ArcCheck, Result
from mxgate.errors import ConfigError
from mxgate.ports import Resolver

SEAL = b"arc-seal"
MESSAGE_SIGNATURE = b"arc-message-signature"
AUTHENTICATION_RESULTS = b"arc-authentication-results"
ARC_FIELDS = (AUTHENTICATION_RESULTS, MESSAGE_SIGNATURE, SEAL)  # the order an AS signs them
MAX_SETS = 50  # RFC 8617 4.2.1
ALGORITHMS = frozenset({b"rsa-sha256", b"ed25519-sha256"})
_AAR_INSTANCE = re.compile(rb"\s*i\s*=\s*(\d+)\s*;")


class ChainBroken(Exception):  # noqa: N818 -- ends validation with cv=fail
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ArcSet:
    instance: int
    fields: dict[bytes, Field] = field(default_factory=dict)  # by lower-case name
    tags: dict[bytes, TagList] = field(default_factory=dict)  # AMS and AS tags


def _instance(name: bytes, value: bytes) -> tuple[int, TagList | None]:
    if name == AUTHENTICATION_RESULTS:
        match = _AAR_INSTANCE.match(value)
        if match is None:
            raise ChainBroken("an ARC-Authentication-Results field has no i=")
        return int(match.group(1)), None
    try:
        tags = parse_tags(value)
    except TagListError as error:
        raise ChainBroken(f"malformed {name.decode()}: {error}") from error
    instance = tags.get(b"i", b"")
    if not instance.isdigit():
        raise ChainBroken(f"{name.decode()} without a valid i=")
    return int(instance), tags


def collect_sets(fields: list[Field]) -> list[ArcSet]:
    """RFC 8617 5.2 steps 1 and 3: the sets 1..N, each with one AAR, AMS and AS."""
    sets: dict[int, ArcSet] = {}
    for name, value in fields:
        lower = name.lower()
        if lower not in ARC_FIELDS:
            continue
        instance, tags = _instance(lower, value)
        arc_set = sets.setdefault(instance, ArcSet(instance))
        if lower in arc_set.fields:
            raise ChainBroken(f"two {name.decode()} fields for i={instance}")
        arc_set.fields[lower] = (name, value)
        if tags is not None:
            arc_set.tags[lower] = tags
    if not sets:
        return []
    if len(sets) > MAX_SETS:
        raise ChainBroken(f"more than {MAX_SETS} ARC sets")
    if sorted(sets) != list(range(1, len(sets) + 1)):
        raise ChainBroken(f"ARC instances {sorted(sets)} are not 1..{len(sets)}")
    for arc_set in sets.values():
        if len(arc_set.fields) != len(ARC_FIELDS):
            raise ChainBroken(f"the ARC set i={arc_set.instance} is incomplete")
    return [sets[i] for i in sorted(sets)]


def seal_data(sets: list[ArcSet], seal: Field) -> bytes:
    """RFC 8617 5.1.1: every set up to the seal's, AAR, AMS, AS in turn, relaxed; the seal
    itself with b= empty, last."""
    fields = [arc_set.fields[name] for arc_set in sets for name in ARC_FIELDS][:-1]
    data = b"".join(canonical_field(n, v, relaxed=True) for n, v in fields)
    return data + signed_header_data([], [], seal, relaxed=True)


class ArcVerifier:
    """The chain of one header section. Like DkimVerifier: construct, stream the body through
    the shared `hashes`, then `result`."""

    def __init__(self, fields: list[Field], hashes: BodyHashes) -> None:
        self.fields = fields
        self._problem: ChainBroken | None = None
        self._body_hash: BodyHash | None = None
        self._header_relaxed = True
        try:
            self.sets = collect_sets(fields)
            if self.sets:
                self._prepare(hashes)
        except ChainBroken as broken:
            self.sets = []
            self._problem = broken

    def _prepare(self, hashes: BodyHashes) -> None:
        for arc_set in self.sets:
            expected = b"none" if arc_set.instance == 1 else b"pass"
            cv = arc_set.tags[SEAL].get(b"cv", b"")
            if cv == b"fail":
                raise ChainBroken(f"the ARC-Seal i={arc_set.instance} says the chain failed")
            if cv != expected:
                raise ChainBroken(f"the ARC-Seal i={arc_set.instance} has cv={_text(cv)}")
        tags = self.sets[-1].tags[MESSAGE_SIGNATURE]
        try:
            _check_tags(tags, (b"a", b"b", b"bh", b"d", b"h", b"s"))
            if SEAL in header_names(tags[b"h"]):
                raise ChainBroken("the newest ARC-Message-Signature signs ARC-Seal")
            # without c=, relaxed: what the ARC suite, dkimpy and OpenARC read (DKIM's default
            # would be simple/simple)
            self._header_relaxed, body_relaxed = canonicalization(tags, b"relaxed/relaxed")
        except SignatureUnusable as unusable:
            raise ChainBroken(f"ARC-Message-Signature: {unusable.reason}") from unusable
        limit = int(tags[b"l"]) if tags.get(b"l", b"").isdigit() else None
        hash_name = tags[b"a"].rpartition(b"-")[2]
        self._body_hash = hashes.request(relaxed=body_relaxed, hash_name=hash_name, limit=limit)

    def result(self, resolver: Resolver) -> ArcCheck:
        """RFC 8617 5.2; call after the whole body went by."""
        if self._problem is not None:
            return ArcCheck(result=Result.FAIL, reason=self._problem.reason)
        if not self.sets:
            return ArcCheck(result=Result.NONE, reason="no ARC sets")
        try:
            self._validate(resolver)
        except ChainBroken as broken:
            return ArcCheck(result=Result.FAIL, reason=broken.reason, instances=len(self.sets))
        sealers = [_text(s.tags[SEAL][b"d"]) for s in self.sets]
        return ArcCheck(
            result=Result.PASS,
            reason=f"chain of {len(self.sets)} sealed by {', '.join(sealers)}",
            instances=len(self.sets),
            sealers=sealers,
        )

    def _validate(self, resolver: Resolver) -> None:
        newest = self.sets[-1]
        tags = newest.tags[MESSAGE_SIGNATURE]
        assert self._body_hash is not None
        try:
            if self._body_hash.digest() != base64_tag(tags, b"bh"):
                raise ChainBroken("the newest ARC-Message-Signature's body hash did not verify")
            data = signed_header_data(
                self.fields,
                header_names(tags[b"h"]),
                newest.fields[MESSAGE_SIGNATURE],
                relaxed=self._header_relaxed,
            )
        except SignatureUnusable as unusable:
            raise ChainBroken(f"ARC-Message-Signature: {unusable.reason}") from unusable
        _verify(resolver, tags, data, f"ARC-Message-Signature i={newest.instance}")
        for index in range(len(self.sets), 0, -1):
            arc_set = self.sets[index - 1]
            seal = arc_set.tags[SEAL]
            try:
                _check_tags(seal, (b"a", b"b", b"cv", b"d", b"s"))
            except SignatureUnusable as unusable:
                raise ChainBroken(f"ARC-Seal i={index}: {unusable.reason}") from unusable
            if b"h" in seal:
                raise ChainBroken(f"ARC-Seal i={index} has an h= tag")
            data = seal_data(self.sets[:index], arc_set.fields[SEAL])
            _verify(resolver, seal, data, f"ARC-Seal i={index}")


def _check_tags(tags: TagList, required: tuple[bytes, ...]) -> None:
    for name in required:
        if name not in tags:
            raise SignatureUnusable(Result.FAIL, f"no {name.decode()}= tag")
    if tags[b"a"] not in ALGORITHMS:
        raise SignatureUnusable(Result.FAIL, f"unusable a={_text(tags[b'a'])}")


def _verify(resolver: Resolver, tags: TagList, data: bytes, what: str) -> None:
    try:
        signature = base64_tag(tags, b"b")
        key = keys.fetch_key(resolver, _text(tags[b"s"]), _text(tags[b"d"]))
        valid = keys.verify(key, tags[b"a"], data, signature)
    except SignatureUnusable as unusable:
        raise ChainBroken(f"{what}: {unusable.reason}") from unusable
    except keys.KeyProblem as problem:
        raise ChainBroken(f"{what}: {problem}") from problem
    if not valid:
        raise ChainBroken(f"{what} did not verify")


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


# -- sealing (RFC 8617 5.1)


@dataclass(frozen=True)
class Sealer:
    """The gateway's sealing identity: d=, s= and the private key (RSA or Ed25519, PEM)."""

    domain: str
    selector: str
    key: keys.PrivateKey
    signed_headers: tuple[bytes, ...] = (
        b"from",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"reply-to",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
        b"dkim-signature",
        b"arc-authentication-results",
    )


def load_sealer(domain: str, selector: str, secret: str) -> Sealer:
    """The sealer the template's ArcSeal* parameters name; `secret` is the key's secret value:
    the PEM itself, or JSON with the PEM under "private_key" (a Secrets Manager key/value)."""
    if not domain:
        raise ConfigError("ARC sealing needs ArcSealDomain (the d= of the seals)")
    pem = secret
    if secret.lstrip().startswith("{"):
        try:
            pem = str(json.loads(secret)["private_key"])
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError('the ARC sealing secret is JSON without "private_key"') from error
    try:
        key = keys.load_private_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ConfigError(
            f"the ARC sealing key is not an RSA or Ed25519 private key in PEM ({error})"
        ) from error
    return Sealer(domain.lower().rstrip("."), selector or "arc", key)


def _highest_instance(fields: list[Field]) -> int:
    """The newest i= among the ARC fields, read leniently: a broken chain still numbers its
    sets."""
    found = [0]
    for name, value in fields:
        match = re.search(rb"(?:^|;)\s*i\s*=\s*(\d+)", value)
        if name.lower() in ARC_FIELDS and match is not None:
            found.append(int(match.group(1)))
    return max(found)


def _declared_failed(fields: list[Field]) -> bool:
    return any(
        name.lower() == SEAL and re.search(rb"(?:^|;)\s*cv\s*=\s*fail\b", value, re.I)
        for name, value in fields
    )


def _tag_list(tags: dict[bytes, bytes]) -> bytes:
    """A signature field's value as the ARC suite standardizes it: tags in alphabetical order,
    "; " between them, no final ";" (an empty b= while signing)."""
    return b"; ".join(name + b"=" + tags[name] for name in sorted(tags))


def _folded(value: bytes) -> bytes:
    """The same value folded after each ";": relaxed canonicalization reads it unchanged.
    Continuation lines start with a space, not a tab: dkimpy (and so authheaders) finds an
    AMS by the text " i=N;"."""
    return b" " + value.replace(b"; ", b";\r\n ")


def seal(
    sealer: Sealer,
    fields: list[Field],
    chain: ArcCheck,
    body_hash: bytes,
    authentication_results: str,
    *,
    timestamp: int,
) -> list[Field]:
    """The gateway's ARC set for a message whose header `fields` (as received) and chain
    validation are given, with `body_hash` the relaxed SHA-256 body hash: AS, AMS and AAR,
    in the order to prepend them (the seal on top). A chain that failed here is sealed cv=fail,
    the seal covering its own set only (RFC 8617 5.1.1); one a sealer before us already
    declared failed, or that is full, gets nothing more (as the ARC suite's signers do)."""
    instance = _highest_instance(fields) + 1
    if instance > MAX_SETS or _declared_failed(fields):
        return []
    cv = {Result.NONE: b"none", Result.PASS: b"pass"}.get(chain.result, b"fail")
    common = {
        b"i": str(instance).encode(),
        b"a": keys.algorithm_of(sealer.key),
        b"d": sealer.domain.lower().encode(),
        b"s": sealer.selector.encode(),
        b"t": str(timestamp).encode(),
    }
    aar = (
        b"ARC-Authentication-Results",
        b" i=" + common[b"i"] + b"; " + authentication_results.encode(),
    )
    ams_tags = {
        **common,
        b"c": b"relaxed/relaxed",
        b"h": b":".join(sealer.signed_headers),
        b"bh": base64.b64encode(body_hash),
        b"b": b"",
    }
    unsigned = (b"ARC-Message-Signature", b" " + _tag_list(ams_tags))
    data = signed_header_data([aar, *fields], list(sealer.signed_headers), unsigned, relaxed=True)
    ams_tags[b"b"] = base64.b64encode(keys.sign(sealer.key, data)[1])
    ams = (b"ARC-Message-Signature", _folded(_tag_list(ams_tags)))
    seal_tags = {**common, b"cv": cv, b"b": b""}
    unsigned = (b"ARC-Seal", b" " + _tag_list(seal_tags))
    sets = collect_sets(fields) if cv == b"pass" else []
    ours = ArcSet(instance, {AUTHENTICATION_RESULTS: aar, MESSAGE_SIGNATURE: ams, SEAL: unsigned})
    seal_tags[b"b"] = base64.b64encode(keys.sign(sealer.key, seal_data([*sets, ours], unsigned))[1])
    return [(b"ARC-Seal", _folded(_tag_list(seal_tags))), ams, aar]
