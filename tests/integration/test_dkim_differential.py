"""DKIM verdicts equal dkimpy's `dkim.verify` (each signature, through `DKIM.verify(idx)`), on the
whole corpus signed here and on generated cases: both canonicalizations, l=, several signatures,
expired, wrong key, header order, folded headers, 8-bit, ed25519. Both verifiers ask the same DNS
server on loopback for the keys.

Where RFC 8301 overrules dkimpy (rsa-sha1, RSA keys under 1024 bits) the RFC wins: those cases
are tested on their own at the end, with dkimpy's answer written down next to ours."""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dkim
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mxgate.authn import keys
from mxgate.authn.canonical import (
    BodyHashes,
    header_names,
    signed_header_data,
    verifier_fields,
)
from mxgate.authn.check import check_signatures
from mxgate.authn.model import DkimCheck, Result
from mxgate.authn.resolver import CachingResolver
from tests.dnsserver import Zone, ZoneServer, dkimpy_dnsfunc
from tests.mailtools import CORPUS, Keys, make_keys

NOW = int(time.time())
HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


@dataclass(frozen=True)
class Signers:
    rsa: Keys
    small_rsa: Keys  # 1024 bits, published under "small": dkimpy signs the corpus faster
    other_rsa: Keys  # published under the selector "wrong": signatures by `rsa` fail there
    ed25519: bytes  # the base64 seed dkimpy signs with


def _weak_public_key() -> str:
    """A 768-bit RSA public key (no library makes such keys any more: any odd modulus will do
    for a key that must be refused before any arithmetic)."""
    modulus = (1 << 767) | 0xC0FFEE1
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    public = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(public).decode()


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Signers, ZoneServer]]:
    rsa_keys, other, small = make_keys(), make_keys(), make_keys(1024)
    seed = nacl.signing.SigningKey.generate()
    zone = Zone()
    for domain in ("example.test", "other.test", "sub.example.test"):
        zone.add(f"sel._domainkey.{domain}", "TXT", f"v=DKIM1; k=rsa; p={rsa_keys.public}")
    zone.add("small._domainkey.example.test", "TXT", f"v=DKIM1; k=rsa; p={small.public}")
    zone.add("wrong._domainkey.example.test", "TXT", f"v=DKIM1; k=rsa; p={other.public}")
    zone.add("weak._domainkey.example.test", "TXT", f"v=DKIM1; k=rsa; p={_weak_public_key()}")
    ed_public = base64.b64encode(bytes(seed.verify_key)).decode()
    zone.add("ed._domainkey.example.test", "TXT", f"v=DKIM1; k=ed25519; p={ed_public}")
    zone.add("revoked._domainkey.example.test", "TXT", "v=DKIM1; k=rsa; p=")
    server = ZoneServer(zone)
    yield Signers(rsa_keys, small, other, base64.b64encode(bytes(seed))), server
    server.stop()


def dkimpy_verdicts(raw: bytes, server: ZoneServer) -> list[bool]:
    """dkimpy's answer for each signature, its DNS through the same server (and cache)."""
    dnsfunc = dkimpy_dnsfunc(_resolver(server))
    try:
        verifier = dkim.DKIM(raw)
    except dkim.DKIMException:
        return [False] * len(re.findall(rb"(?:^|\n)dkim-signature:", raw.lower()))
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    verdicts = []
    for index in range(count):
        try:
            verdicts.append(bool(verifier.verify(idx=index, dnsfunc=dnsfunc)))
        except dkim.DKIMException:
            verdicts.append(False)
    return verdicts


_RESOLVERS: dict[int, CachingResolver] = {}


def _resolver(server: ZoneServer) -> CachingResolver:
    """One cache per server: each key is asked of the DNS server once, for both verifiers."""
    return _RESOLVERS.setdefault(server.port, CachingResolver(server.resolver()))


def our_checks(raw: bytes, server: ZoneServer) -> list[DkimCheck]:
    return check_signatures(io.BytesIO(raw), _resolver(server), now=time.time()).dkim


def assert_same(raw: bytes, server: ZoneServer) -> list[bool]:
    theirs = dkimpy_verdicts(raw, server)
    checks = our_checks(raw, server)
    ours = [check.result is Result.PASS for check in checks]
    assert ours == theirs, [(c.result.value, c.reason) for c in checks]
    return ours


def sign(raw: bytes, signers: Signers, selector: bytes = b"sel", **options) -> bytes:
    domain = options.pop("domain", b"example.test")
    options.setdefault("include_headers", HEADERS)
    private = signers.small_rsa.private if selector == b"small" else signers.rsa.private
    if options.get("signature_algorithm") == b"ed25519-sha256":
        private = signers.ed25519
    return dkim.sign(raw, selector, domain, private, **options) + raw


def our_signature(
    raw: bytes,
    private_pem: bytes,
    *,
    tags: str,
    relaxed: bool = True,
    names: bytes = b"from:to:subject",
) -> bytes:
    """A DKIM-Signature with tags of our choosing (x=, t=), made with the gateway's own
    canonicalization and keys: dkimpy, verifying it, is the independent side."""
    header, _, body = raw.partition(b"\r\n\r\n")
    hashes = BodyHashes()
    body_hash = hashes.request(relaxed=relaxed, hash_name=b"sha256", limit=None)
    hashes.feed(body)
    hashes.end()
    c = b"relaxed/relaxed" if relaxed else b"simple/simple"
    value = (
        b" v=1; a=rsa-sha256; c="
        + c
        + b"; d=example.test; s=sel; "
        + tags.encode()
        + b"; h="
        + names
        + b"; bh="
        + base64.b64encode(body_hash.digest())
        + b"; b="
    )
    field = (b"DKIM-Signature", value + b"\r\n")
    data = signed_header_data(
        verifier_fields(header + b"\r\n"), header_names(names), field, relaxed=relaxed
    )
    _, signature = keys.sign(keys.load_private_key(private_pem), data)
    return b"DKIM-Signature:" + value + base64.b64encode(signature) + b"\r\n" + raw


BASE = (
    b"From: Alice <alice@example.test>\r\nTo: bob@nutrition.co\r\nSubject: Quarterly figures\r\n"
    b"Date: Sat, 28 Nov 2026 08:30:00 +0000\r\nMessage-ID: <q4@example.test>\r\n\r\n"
    b"Hello Bob,\r\n\r\nthe figures  are attached. \r\n\r\n\r\n"
)


def _swap_to_and_subject(raw: bytes) -> bytes:
    lines = raw.split(b"\r\n")
    to = next(i for i, line in enumerate(lines) if line.startswith(b"To:"))
    subject = next(i for i, line in enumerate(lines) if line.startswith(b"Subject:"))
    lines[to], lines[subject] = lines[subject], lines[to]
    return b"\r\n".join(lines)


# (name, how the message is made from BASE, what a correct verifier says of each signature)
Case = tuple[str, Callable[[Signers], bytes], list[bool]]
GENERATED: list[Case] = [
    ("relaxed-relaxed", lambda s: sign(BASE, s, canonicalize=(b"relaxed", b"relaxed")), [True]),
    ("simple-simple", lambda s: sign(BASE, s, canonicalize=(b"simple", b"simple")), [True]),
    ("relaxed-simple", lambda s: sign(BASE, s, canonicalize=(b"relaxed", b"simple")), [True]),
    ("simple-relaxed", lambda s: sign(BASE, s, canonicalize=(b"simple", b"relaxed")), [True]),
    ("length", lambda s: sign(BASE, s, length=True), [True]),
    ("length-footer", lambda s: sign(BASE, s, length=True) + b"-- \r\nlist footer\r\n", [True]),
    ("footer-without-length", lambda s: sign(BASE, s) + b"-- \r\nlist footer\r\n", [False]),
    ("body-altered", lambda s: sign(BASE, s).replace(b"figures  are", b"figures were"), [False]),
    ("subject-altered", lambda s: sign(BASE, s).replace(b"Quarterly", b"Annual"), [False]),
    ("wrong-key", lambda s: sign(BASE, s, selector=b"wrong"), [False]),
    ("no-key", lambda s: sign(BASE, s, selector=b"missing"), [False]),
    ("revoked-key", lambda s: sign(BASE, s, selector=b"revoked"), [False]),
    ("ed25519", lambda s: sign(BASE, s, b"ed", signature_algorithm=b"ed25519-sha256"), [True]),
    (
        "ed25519-altered",
        lambda s: sign(BASE, s, b"ed", signature_algorithm=b"ed25519-sha256").replace(
            b"Bob,", b"Rob,"
        ),
        [False],
    ),
    ("two-signatures", lambda s: sign(sign(BASE, s, domain=b"other.test"), s), [True, True]),
    (
        "two-signatures-one-broken",
        lambda s: sign(sign(BASE, s, domain=b"other.test"), s, selector=b"wrong"),
        [False, True],
    ),
    (
        "three-signatures-mixed",
        lambda s: sign(
            sign(sign(BASE, s, b"ed", signature_algorithm=b"ed25519-sha256"), s, b"missing"),
            s,
            canonicalize=(b"simple", b"simple"),
        ),
        [True, False, True],
    ),
    ("subdomain-identity", lambda s: sign(BASE, s, identity=b"@sub.example.test"), [True]),
    ("headers-reordered-relaxed", lambda s: _swap_to_and_subject(sign(BASE, s)), [True]),
    (
        "headers-reordered-simple",
        lambda s: _swap_to_and_subject(sign(BASE, s, canonicalize=(b"simple", b"simple"))),
        [True],
    ),
    ("from-added-on-top", lambda s: b"From: mallory@evil.test\r\n" + sign(BASE, s), [False]),
    ("subject-added-on-top", lambda s: b"Subject: free\r\n" + sign(BASE, s), [True]),
    (
        "subject-added-below",
        lambda s: sign(BASE, s).replace(b"\r\n\r\n", b"\r\nSubject: free\r\n\r\n", 1),
        [False],
    ),
    (
        "folded-relaxed",
        lambda s: sign(BASE, s).replace(b"Subject: Quarterly", b"Subject:\r\n\t Quarterly"),
        [True],
    ),
    (
        "folded-simple",
        lambda s: sign(BASE, s, canonicalize=(b"simple", b"simple")).replace(
            b"Subject: Quarterly", b"Subject:\r\n\t Quarterly"
        ),
        [False],
    ),
    (
        "folded-when-signed",
        lambda s: sign(BASE.replace(b"Subject: Quarterly", b"Subject: Q\r\n  uarterly"), s),
        [True],
    ),
    (
        "whitespace-changed-relaxed",
        lambda s: sign(BASE, s, canonicalize=(b"relaxed", b"relaxed")).replace(
            b"figures  are attached. ", b"figures are   attached."
        ),
        [True],
    ),
    (
        "whitespace-changed-simple",
        lambda s: sign(BASE, s, canonicalize=(b"simple", b"simple")).replace(
            b"figures  are", b"figures are"
        ),
        [False],
    ),
    ("blank-lines-added", lambda s: sign(BASE, s) + b"\r\n\r\n", [True]),
    (
        "8bit-body",
        lambda s: sign(BASE.replace(b"Hello Bob", "Grüße, Bob — ça va".encode()), s),
        [True],
    ),
    (
        "8bit-header-latin1",
        lambda s: sign(BASE.replace(b"Quarterly", b"Qu\xe4rterly \xff"), s),
        [True],
    ),
    (
        "8bit-header-altered",
        lambda s: sign(BASE.replace(b"Quarterly", "Übersicht".encode()), s).replace(
            "Ü".encode(), b"U"
        ),
        [False],
    ),
    ("bare-line-feeds", lambda s: sign(BASE, s).replace(b"\r\n", b"\n"), [True]),
    ("no-final-line-break", lambda s: sign(BASE.rstrip(b"\r\n") + b"  ", s), [True]),
    (
        "no-final-line-break-simple",
        lambda s: sign(BASE.rstrip(b"\r\n") + b" \r", s, canonicalize=(b"simple", b"simple")),
        [True],
    ),
    ("empty-body", lambda s: sign(BASE.partition(b"\r\n\r\n")[0] + b"\r\n\r\n", s), [True]),
    (
        "expired",
        lambda s: our_signature(BASE, s.rsa.private, tags=f"t={NOW - 3 * 86400}; x={NOW - 86400}"),
        [False],
    ),
    (
        "expired-within-clock-skew",
        lambda s: our_signature(BASE, s.rsa.private, tags=f"t={NOW - 7200}; x={NOW - 3600}"),
        [True],
    ),
    (
        "expires-later",
        lambda s: our_signature(BASE, s.rsa.private, tags=f"t={NOW}; x={NOW + 86400}"),
        [True],
    ),
    (
        "signed-in-the-future",
        lambda s: our_signature(BASE, s.rsa.private, tags=f"t={NOW + 86400}"),
        [False],
    ),
    (
        "expires-before-signed",
        lambda s: our_signature(BASE, s.rsa.private, tags=f"t={NOW}; x={NOW - 10}"),
        [False],
    ),
    (
        "ours-simple",
        lambda s: our_signature(BASE, s.rsa.private, tags=f"t={NOW}", relaxed=False),
        [True],
    ),
    (
        "ours-oversigned-from",
        lambda s: our_signature(BASE, s.rsa.private, tags=f"t={NOW}", names=b"from:from:to"),
        [True],
    ),
    (
        "bad-version",
        lambda s: sign(BASE, s).replace(b"v=1;", b"v=2;", 1),
        [False],
    ),
    ("unknown-algorithm", lambda s: sign(BASE, s).replace(b"a=rsa-sha256", b"a=rsa-md5"), [False]),
    ("identity-outside-domain", lambda s: sign(BASE, s).replace(b"i=@", b"i=@x.", 1), [False]),
    ("malformed-tags", lambda s: sign(BASE, s).replace(b"; s=sel", b"; s sel", 1), [False]),
]


@pytest.mark.parametrize(("name", "make", "expected"), GENERATED, ids=[c[0] for c in GENERATED])
def test_generated(world, name, make, expected):
    signers, server = world
    assert assert_same(make(signers), server) == expected


CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")


def _corpus_variants(raw: bytes, signers: Signers) -> Iterator[bytes]:
    yield raw  # as it is: real signatures whose keys this zone does not have
    for canonicalize in ((b"relaxed", b"relaxed"), (b"simple", b"simple")):
        try:
            signed = sign(
                raw, signers, b"small", canonicalize=canonicalize, include_headers=[b"from"]
            )
        except (dkim.DKIMException, ValueError, IndexError, TypeError):
            continue  # dkimpy cannot sign this one (no body, unreadable header section)
        yield signed
        yield signed.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")  # line ends converted
        yield signed[: len(signed) - 3] + b"XYZ"  # the body's end altered


def test_corpus(world):
    signers, server = world
    assert len(CORPUS_FILES) > 100, f"no corpus under {CORPUS}"
    passed = compared = 0
    for path in CORPUS_FILES:
        for raw in _corpus_variants(path.read_bytes(), signers):
            try:
                verdicts = assert_same(raw, server)
            except AssertionError as error:
                raise AssertionError(f"{path.relative_to(CORPUS)}: {error}") from error
            compared += len(verdicts)
            passed += sum(verdicts)
    assert compared > 400
    assert passed > 150  # most corpus messages, signed here, verify


# -- where RFC 8301 overrules dkimpy


def test_rsa_sha1_is_policy_where_dkimpy_passes_it(world):
    signers, server = world
    raw = sign(BASE, signers, signature_algorithm=b"rsa-sha1")
    assert dkimpy_verdicts(raw, server) == [True]
    [check] = our_checks(raw, server)
    assert (check.result, check.reason) == (
        Result.POLICY,
        "rsa-sha1 signs nothing valid (RFC 8301)",
    )


def test_weak_rsa_key_is_policy_where_dkimpy_fails_it(world):
    signers, server = world
    raw = sign(BASE, signers, selector=b"weak")
    assert dkimpy_verdicts(raw, server) == [False]
    [check] = our_checks(raw, server)
    assert (check.result, check.reason) == (
        Result.POLICY,
        "768-bit key at weak._domainkey.example.test",
    )
