"""Errors of the JT/T 808 codec, each a subclass of ``firmware_protocols.errors`` with a specific ``reason``.

    ProtocolError
    ├── RemoteProtocolError
    │   ├── MalformedMessage
    │   │   ├── FramingError         bad_checksum, bad_escape, frame_too_large, frame_too_short, junk, truncated
    │   │   ├── HeaderError          length_mismatch, header_too_short, bad_package_index
    │   │   ├── BodyError            body_too_short, body_too_long, bad_bcd, bad_time, bad_text, bad_extra_item,
    │   │   │                        bad_envelope, envelope_length_mismatch, bad_signature_length
    │   │   ├── UnknownMessageId     unknown_vendor_id (only when the caller asks for strict decoding)
    │   │   └── ReassemblyError      too_many_packages, reassembly_overflow, reassembly_timeout
    │   ├── UnsupportedVersion
    │   │   └── EncryptedBody        encrypted_body (RSA-encrypted bodies: the key is the terminal's business)
    │   └── BadSignature             bad_signature (an envelope that does not verify)
    └── LocalProtocolError
        └── EncodeError              value_out_of_range, text_too_long, bad_digits (we were asked to build nonsense)

A decoder never raises anything else on any input: third-party errors (``struct.error``, ``UnicodeDecodeError``,
``ValueError`` from ``datetime``) are mapped to these at the boundary.
"""

from __future__ import annotations

from firmware_protocols.errors import LocalProtocolError, MalformedMessage, UnsupportedVersion


class FramingError(MalformedMessage):
    reason = "bad_frame"


class HeaderError(MalformedMessage):
    reason = "bad_header"


class BodyError(MalformedMessage):
    reason = "bad_body"


class UnknownMessageId(MalformedMessage):
    reason = "unknown_vendor_id"


class ReassemblyError(MalformedMessage):
    reason = "reassembly_error"


class EncryptedBody(UnsupportedVersion):
    reason = "encrypted_body"


class EncodeError(LocalProtocolError):
    reason = "encode_error"
