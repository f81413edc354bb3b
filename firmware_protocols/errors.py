"""Errors of the wire formats.

    ProtocolError                 base of everything raised here
    ├── RemoteProtocolError       the peer sent something we refuse (bad bytes, bad signature, unknown version)
    │   ├── MalformedMessage      not parseable / fields missing or of the wrong type or range
    │   ├── UnsupportedVersion    a `v` or `typ` we do not know
    │   └── BadSignature          the envelope does not verify with the key it names
    └── LocalProtocolError        we were asked to build something invalid (a bug on our side)

Every error carries a short machine-readable ``reason`` code that ends up in logs, counters and rejection acks.
"""

from __future__ import annotations


class ProtocolError(Exception):
    reason: str = "protocol_error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class RemoteProtocolError(ProtocolError):
    reason = "remote_protocol_error"


class MalformedMessage(RemoteProtocolError):
    reason = "malformed"


class UnsupportedVersion(RemoteProtocolError):
    reason = "unsupported_version"


class BadSignature(RemoteProtocolError):
    reason = "bad_signature"


class LocalProtocolError(ProtocolError):
    reason = "local_protocol_error"
