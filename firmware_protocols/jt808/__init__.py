"""JT/T 808 and the 2016 national driver-training terminal protocol built on it: a sans-IO codec.

Layers, one module each (conventions 1-3):

- ``framing``: ``7e`` flags, ``7d`` escapes, XOR check, junk between frames, bounded frame size (``Deframer``);
- ``header``: 2011/2013, 2019 and the training platform's own header (``Header``, ``Dialect``, ``Version``);
- ``reassembly``: sub-packaged messages joined in bounded buffers, expired by the caller's clock;
- ``registry``: message ids -> typed messages (``messages``, ``location``, ``training_platform``, ``training``);
- ``signing``: the RSA-2048 / SHA-256 signature of training envelopes;
- ``codec``: the whole path (``Jt808Decoder``, ``decode_payload``, ``encode_packet``).

Errors are in ``errors`` (subclasses of ``firmware_protocols.errors``, each with a ``reason``).
"""

from __future__ import annotations

from firmware_protocols.jt808.base import Message, TrainingMessage
from firmware_protocols.jt808.codec import (
    Event,
    Jt808Decoder,
    PackageHeld,
    Packet,
    Refused,
    decode_payload,
    encode_packet,
    encode_packets,
)
from firmware_protocols.jt808.framing import MAX_FRAME_SIZE, Deframer, Frame, FrameRefused, build_frame
from firmware_protocols.jt808.header import Dialect, Header, Version, decode_header, encode_header
from firmware_protocols.jt808.location import Location, LocationBatch
from firmware_protocols.jt808.messages import (
    Authenticate,
    DownlinkPassthrough,
    Heartbeat,
    PlatformResponse,
    Register,
    RegisterResponse,
    TerminalResponse,
    Unknown,
    UplinkPassthrough,
)
from firmware_protocols.jt808.registry import MessageId, TrainingId, decode_body
from firmware_protocols.jt808.training import (
    CoachLogin,
    CoachLogout,
    MinuteRecord,
    PhotoData,
    PhotoInit,
    PhotoNowReply,
    PhotoQueryReply,
    PhotoQueryResult,
    PhotoUploadReply,
    ReuploadReply,
    ReuploadRequest,
    StudentLogin,
    StudentLogout,
    TerminalParameters,
    TerminalParametersReply,
    TrainingBan,
    TrainingUnknown,
    decode_training,
)
from firmware_protocols.jt808.training_platform import (
    TrainingAuthenticate,
    TrainingDownlink,
    TrainingEnvelope,
    TrainingRegisterResponse,
    TrainingUplink,
)

__all__ = [
    "MAX_FRAME_SIZE",
    "Authenticate",
    "CoachLogin",
    "CoachLogout",
    "Deframer",
    "Dialect",
    "DownlinkPassthrough",
    "Event",
    "Frame",
    "FrameRefused",
    "Header",
    "Heartbeat",
    "Jt808Decoder",
    "Location",
    "LocationBatch",
    "Message",
    "MessageId",
    "MinuteRecord",
    "PackageHeld",
    "Packet",
    "PhotoData",
    "PhotoInit",
    "PhotoNowReply",
    "PhotoQueryReply",
    "PhotoQueryResult",
    "PhotoUploadReply",
    "PlatformResponse",
    "Refused",
    "Register",
    "RegisterResponse",
    "ReuploadReply",
    "ReuploadRequest",
    "StudentLogin",
    "StudentLogout",
    "TerminalParameters",
    "TerminalParametersReply",
    "TerminalResponse",
    "TrainingAuthenticate",
    "TrainingBan",
    "TrainingDownlink",
    "TrainingEnvelope",
    "TrainingId",
    "TrainingMessage",
    "TrainingRegisterResponse",
    "TrainingUnknown",
    "TrainingUplink",
    "Unknown",
    "UplinkPassthrough",
    "Version",
    "build_frame",
    "decode_body",
    "decode_header",
    "decode_payload",
    "decode_training",
    "encode_header",
    "encode_packet",
    "encode_packets",
]
