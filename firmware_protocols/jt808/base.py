"""The base of every typed JT/T 808 message: an id, a name, ``decode(body, version)`` and ``encode(version)``."""

from __future__ import annotations

from typing import ClassVar

from firmware_protocols.jt808.header import Version


class Message:
    """A message body. Subclasses are frozen dataclasses; ``decode(encode(m)) == m`` and ``encode(decode(b)) == b``."""

    __slots__ = ()
    MSG_ID: ClassVar[int] = -1
    NAME: ClassVar[str] = "message"

    @property
    def msg_id(self) -> int:
        return self.MSG_ID

    @property
    def name(self) -> str:
        return self.NAME

    def encode(self, version: Version) -> bytes:
        raise NotImplementedError


class TrainingMessage:
    """A message of the training envelope (passthrough type 0x13): ``decode(data)`` and ``encode()``."""

    __slots__ = ()
    MSG_ID: ClassVar[int] = -1
    NAME: ClassVar[str] = "training message"

    @property
    def msg_id(self) -> int:
        return self.MSG_ID

    @property
    def name(self) -> str:
        return self.NAME

    def encode(self) -> bytes:
        raise NotImplementedError
