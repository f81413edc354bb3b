"""The signed envelope: JWS Compact Serialization (RFC 7515) over canonical JSON.

``BASE64URL(header) . BASE64URL(payload) . BASE64URL(signature)``, ASCII. The protected header names the
algorithm (``Ed25519``, the fully specified name of RFC 9864 that replaces RFC 8037's ``EdDSA``; ``RS256`` =
RSA-2048 PKCS#1 v1.5 over SHA-256, for terminals provisioned with national certificates), the key id ``kid`` and
the content type ``typ``. The payload is canonical JSON (sorted keys, no whitespace, UTF-8, integers only): anyone
with the public key can verify it with any JOSE library.

The bytes of the compact form are what is stored, hashed into the chain and verified; the payload is never
re-serialised to check a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware_protocols.errors import BadSignature, LocalProtocolError, MalformedMessage, UnsupportedVersion

#: A compact JWS larger than this is refused before any parsing (a minute record is ~1.5 KiB).
MAX_ENVELOPE_BYTES = 16 * 1024
ALGORITHMS = ("Ed25519", "RS256")

PublicKey = Ed25519PublicKey | rsa.RSAPublicKey
PrivateKey = Ed25519PrivateKey | rsa.RSAPrivateKey


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not text or not _B64URL.issuperset(text):
        raise MalformedMessage("not base64url", "bad_base64")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage("not base64url", "bad_base64") from exc


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8. Floats are refused: the contract carries integers only."""
    _refuse_floats(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _refuse_floats(obj: Any) -> None:
    if isinstance(obj, float):
        raise LocalProtocolError("floats are not allowed in signed payloads; scale to integers")
    if isinstance(obj, dict):
        for v in obj.values():
            _refuse_floats(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _refuse_floats(v)


def key_id(public_key: PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo: names a key in ``kid``."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def public_key_to_pem(public_key: PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(
        "ascii"
    )


def public_key_from_pem(pem: str | bytes) -> PublicKey:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise MalformedMessage(f"unreadable public key: {exc}", "bad_public_key") from exc
    if not isinstance(key, Ed25519PublicKey | rsa.RSAPublicKey):
        raise MalformedMessage("only Ed25519 and RSA keys are accepted", "bad_public_key")
    return key


def algorithm_of(key: PublicKey | PrivateKey) -> str:
    return "Ed25519" if isinstance(key, Ed25519PublicKey | Ed25519PrivateKey) else "RS256"


def sign(payload: dict[str, Any], private_key: PrivateKey, typ: str) -> bytes:
    """Build the compact JWS of ``payload``; returns ASCII bytes."""
    kid = key_id(private_key.public_key())
    header = {"alg": algorithm_of(private_key), "kid": kid, "typ": typ}
    signing_input = (b64url_encode(canonical_json(header)) + "." + b64url_encode(canonical_json(payload))).encode(
        "ascii"
    )
    if isinstance(private_key, Ed25519PrivateKey):
        signature = private_key.sign(signing_input)
    else:
        signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input + b"." + b64url_encode(signature).encode("ascii")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed, not yet verified, compact JWS."""

    raw: bytes
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str:
        return str(self.header["kid"])

    @property
    def typ(self) -> str:
        return str(self.header["typ"])

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def parse(raw: bytes | str, expected_typ: str | None = None) -> Envelope:
    """Split and decode a compact JWS; check its header. Does not verify the signature."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("ascii")
        except UnicodeEncodeError as exc:
            raise MalformedMessage("envelope is not ASCII", "bad_envelope") from exc
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise MalformedMessage(f"envelope of {len(raw)} bytes > {MAX_ENVELOPE_BYTES}", "too_large")
    parts = raw.split(b".")
    if len(parts) != 3:
        raise MalformedMessage("a compact JWS has three parts", "bad_envelope")
    try:
        h64, p64, s64 = (p.decode("ascii") for p in parts)
    except UnicodeDecodeError as exc:
        raise MalformedMessage("envelope is not ASCII", "bad_envelope") from exc
    header = _json_object(b64url_decode(h64), "header")
    payload = _json_object(b64url_decode(p64), "payload")
    signature = b64url_decode(s64)
    for name in ("alg", "kid", "typ"):
        if not isinstance(header.get(name), str):
            raise MalformedMessage(f"header lacks {name}", "bad_envelope")
    if header["alg"] not in ALGORITHMS:
        raise UnsupportedVersion(f"algorithm {header['alg']!r} not accepted", "bad_algorithm")
    if expected_typ is not None and header["typ"] != expected_typ:
        raise UnsupportedVersion(f"typ {header['typ']!r}, expected {expected_typ!r}", "unsupported_version")
    return Envelope(raw, header, payload, (h64 + "." + p64).encode("ascii"), signature)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"{what} is not JSON", "bad_json") from exc
    if not isinstance(obj, dict):
        raise MalformedMessage(f"{what} is not a JSON object", "bad_json")
    return obj


def verify(envelope: Envelope, public_key: PublicKey) -> None:
    """Raise :class:`BadSignature` unless ``envelope`` is signed by ``public_key`` with the algorithm it names."""
    if envelope.alg != algorithm_of(public_key):
        raise BadSignature("algorithm does not match the terminal's key", "bad_algorithm")
    if envelope.kid != key_id(public_key):
        raise BadSignature("kid does not name the terminal's key", "unknown_key")
    try:
        if isinstance(public_key, Ed25519PublicKey):
            public_key.verify(envelope.signature, envelope.signing_input)
        else:
            public_key.verify(envelope.signature, envelope.signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise BadSignature("signature does not verify", "bad_signature") from exc
