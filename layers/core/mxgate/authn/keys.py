"""DKIM keys (RFC 6376 3.6) through the Resolver port, and the signatures made and checked with
them: RSASSA-PKCS1-v1_5 (RFC 8017) and Ed25519 (RFC 8463), by the `cryptography` package.

Each problem is its own exception type, so callers decide results from types, never from text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mxgate.authn.canonical import TagListError, parse_tags, unfolded
from mxgate.ports import DnsFailure, Resolver

MIN_RSA_BITS = 1024  # RFC 8301 3.2: shorter keys sign nothing valid
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class KeyProblem(Exception):  # noqa: N818 -- a family of reasons, each a type of its own
    """The signature cannot be checked against this selector's key."""


class KeyLookupFailed(KeyProblem):
    """DNS gave no answer: a temporary error."""


class NoKey(KeyProblem):
    """No key record at the selector."""


class KeyRevoked(KeyProblem):
    """The record's p= is empty: the signer withdrew the key."""


class KeyUnusable(KeyProblem):
    """A record that is not a usable key: bad syntax, unknown k= or s=, undecodable p=."""


class KeyNotForThisSignature(KeyProblem):
    """The record's h= (hashes) or t=s (no subdomains in i=) excludes this signature."""


class KeyTooWeak(KeyProblem):
    """An RSA key shorter than RFC 8301 allows."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    name: str  # <selector>._domainkey.<domain>
    key: PublicKey
    hashes: frozenset[bytes] | None  # h=: the hashes the key may be used with (None: any)
    strict_identity: bool  # t=s: i= must be d= itself, no subdomain

    @property
    def kind(self) -> bytes:
        return b"ed25519" if isinstance(self.key, ed25519.Ed25519PublicKey) else b"rsa"

    @property
    def bits(self) -> int:
        return self.key.key_size if isinstance(self.key, rsa.RSAPublicKey) else 256


def key_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain.rstrip('.')}"


def fetch_key(resolver: Resolver, selector: str, domain: str) -> DkimKey:
    name = key_name(selector, domain)
    try:
        answer = resolver.query(name, "TXT")
    except DnsFailure as error:
        raise KeyLookupFailed(f"key lookup failed: {error}") from error
    if not answer.records:
        raise NoKey(f"no key at {name}")
    return parse_key(name, answer.records[0])


def parse_key(name: str, record: str) -> DkimKey:
    try:
        tags = parse_tags(record.encode())
    except (TagListError, UnicodeEncodeError) as error:
        raise KeyUnusable(f"unusable key record at {name}: {error}") from error
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        raise KeyUnusable(f"key record at {name} is not v=DKIM1")
    services = set(tags.get(b"s", b"*").replace(b" ", b"").split(b":"))
    if not services & {b"*", b"email"}:
        raise KeyUnusable(f"key at {name} is not for email (s={tags[b's'].decode()})")
    data = unfolded(tags.get(b"p", b""))
    if not data:
        raise KeyRevoked(f"key at {name} is revoked (empty p=)")
    kind = tags.get(b"k", b"rsa")
    try:
        der = base64.b64decode(data, validate=True)
        key = _public_key(kind, der)
    except (binascii.Error, ValueError, UnsupportedAlgorithm) as error:
        raise KeyUnusable(f"unusable key at {name}: {type(error).__name__}") from error
    if key is None:
        raise KeyUnusable(f"unknown key type k={kind.decode(errors='replace')} at {name}")
    allowed = tags.get(b"h")
    flags = set(tags.get(b"t", b"").replace(b" ", b"").split(b":"))
    return DkimKey(
        name=name,
        key=key,
        hashes=frozenset(allowed.replace(b" ", b"").split(b":")) if allowed else None,
        strict_identity=b"s" in flags,
    )


def _public_key(kind: bytes, der: bytes) -> PublicKey | None:
    if kind == b"ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(der)
    if kind != b"rsa":
        return None
    try:
        key = serialization.load_der_public_key(der)  # SubjectPublicKeyInfo, as RFC 6376 asks
    except ValueError:
        # some publish the bare RSAPublicKey (PKCS #1), which verifiers accept as well
        pem = (
            b"-----BEGIN RSA PUBLIC KEY-----\n"
            + base64.encodebytes(der)
            + b"-----END RSA PUBLIC KEY-----\n"
        )
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    return key


_DIGESTS = {b"sha256": hashes.SHA256, b"sha1": hashes.SHA1}


def verify(key: DkimKey, algorithm: bytes, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is `key`'s over `data` with a= `algorithm` (rsa-sha256, rsa-sha1,
    ed25519-sha256). Raises KeyProblem when the key cannot be used for this algorithm."""
    kind, _, hash_name = algorithm.partition(b"-")
    if kind != key.kind:
        raise KeyNotForThisSignature(f"a={algorithm.decode()} with a {key.kind.decode()} key")
    if key.hashes is not None and hash_name not in key.hashes:
        raise KeyNotForThisSignature(f"the key at {key.name} is not for {hash_name.decode()}")
    try:
        if isinstance(key.key, ed25519.Ed25519PublicKey):
            key.key.verify(signature, hashlib.sha256(data).digest())  # RFC 8463 3
        else:
            if key.key.key_size < MIN_RSA_BITS:
                raise KeyTooWeak(f"{key.key.key_size}-bit key at {key.name}")
            key.key.verify(signature, data, padding.PKCS1v15(), _DIGESTS[hash_name]())
    except InvalidSignature:
        return False
    return True


def load_private_key(pem: bytes) -> PrivateKey:
    """A signing key in PEM (PKCS #1 or PKCS #8, RSA or Ed25519)."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("only RSA and Ed25519 keys sign DKIM and ARC")
    return key


def algorithm_of(key: PrivateKey) -> bytes:
    """The a= value a signature by `key` carries."""
    return b"ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else b"rsa-sha256"


def sign(key: PrivateKey, data: bytes) -> tuple[bytes, bytes]:
    """The a= value and the signature over `data` (rsa-sha256 or ed25519-sha256)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return algorithm_of(key), key.sign(hashlib.sha256(data).digest())
    return algorithm_of(key), key.sign(data, padding.PKCS1v15(), hashes.SHA256())
