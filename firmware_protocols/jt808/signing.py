"""RSA signatures of training envelopes: PKCS#1 v1.5 type-1 padding over the bare SHA-256 digest (no DigestInfo).

``sign_envelope`` is what a terminal (or our simulator) does; ``verify_envelope`` is what the platform does before
it trusts a record, with the public key of the terminal's registered certificate. ``sign_timestamp`` /
``verify_timestamp`` are the 0x0102 authentication: the terminal's private key "encrypts" the 4-byte timestamp,
i.e. PKCS#1 v1.5 type-1 padding over the bare DWORD (no digest, no DigestInfo). A signature that does not verify
raises ``BadSignature("bad_signature")``; nothing else escapes (the library's own errors are mapped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo  # cryptography >= 47: a bare digest

from firmware_protocols.errors import BadSignature
from firmware_protocols.jt808.errors import EncodeError
from firmware_protocols.jt808.training_platform import SIGNATURE_SIZE, TrainingEnvelope

_DIGEST_SIZE = 32


def envelope_digest(envelope: TrainingEnvelope) -> bytes:
    """SHA-256 of the envelope's signed fields."""
    return hashlib.sha256(envelope.signed_bytes()).digest()


def sign_digest(digest: bytes, key: RSAPrivateKey) -> bytes:
    if key.key_size != 8 * SIGNATURE_SIZE:
        raise EncodeError(f"RSA-{key.key_size} key: the training protocol signs with RSA-2048", "bad_key")
    return key.sign(digest, padding.PKCS1v15(), NoDigestInfo())


def verify_digest(digest: bytes, signature: bytes, key: RSAPublicKey) -> None:
    if len(signature) != SIGNATURE_SIZE or key.key_size != 8 * SIGNATURE_SIZE or len(digest) != _DIGEST_SIZE:
        raise BadSignature(f"signature of {len(signature)} bytes for an RSA-{key.key_size} key", "bad_signature")
    try:
        # verify() takes NoDigestInfo at run time (cryptography >= 47); its type stub does not list it yet.
        key.verify(signature, digest, padding.PKCS1v15(), NoDigestInfo())  # type: ignore[arg-type]
    except InvalidSignature as exc:
        raise BadSignature("envelope signature does not verify", "bad_signature") from exc


def sign_envelope(envelope: TrainingEnvelope, key: RSAPrivateKey) -> TrainingEnvelope:
    """The envelope with its signature set."""
    return dataclasses.replace(envelope, signature=sign_digest(envelope_digest(envelope), key))


def verify_envelope(envelope: TrainingEnvelope, key: RSAPublicKey) -> None:
    """Raises ``BadSignature`` unless ``envelope.signature`` is the terminal's signature of its fields."""
    verify_digest(envelope_digest(envelope), envelope.signature, key)


def _timestamp_bytes(timestamp: int) -> bytes:
    try:
        return struct.pack(">I", timestamp)
    except struct.error as exc:
        raise EncodeError(f"timestamp {timestamp} is not a DWORD", "value_out_of_range") from exc


def sign_timestamp(timestamp: int, key: RSAPrivateKey) -> bytes:
    """The 256-byte authentication ciphertext of 0x0102 for a Unix ``timestamp``."""
    if key.key_size != 8 * SIGNATURE_SIZE:
        raise EncodeError(f"RSA-{key.key_size} key: the training protocol signs with RSA-2048", "bad_key")
    return key.sign(_timestamp_bytes(timestamp), padding.PKCS1v15(), NoDigestInfo())


def verify_timestamp(timestamp: int, ciphertext: bytes, key: RSAPublicKey) -> None:
    """Raises ``BadSignature`` unless ``ciphertext`` is the key holder's authentication of ``timestamp``."""
    if len(ciphertext) != SIGNATURE_SIZE or key.key_size != 8 * SIGNATURE_SIZE:
        raise BadSignature(f"ciphertext of {len(ciphertext)} bytes for an RSA-{key.key_size} key", "bad_signature")
    try:
        key.verify(ciphertext, _timestamp_bytes(timestamp), padding.PKCS1v15(), NoDigestInfo())  # type: ignore[arg-type]
    except InvalidSignature as exc:
        raise BadSignature("authentication does not verify with the registered key", "bad_signature") from exc
