"""MQTT topic names: every topic jiapei uses is built here and nowhere else."""

from __future__ import annotations

PREFIX = "jiapei/v1/terminals"
INGEST_SHARE_GROUP = "ingest"


def up_records(terminal: str) -> str:
    return f"{PREFIX}/{terminal}/up/records"


def up_notices(terminal: str) -> str:
    return f"{PREFIX}/{terminal}/up/notices"


def up_photos(terminal: str) -> str:
    return f"{PREFIX}/{terminal}/up/photos"


def down_acks(terminal: str) -> str:
    return f"{PREFIX}/{terminal}/down/acks"


def down_commands(terminal: str) -> str:
    return f"{PREFIX}/{terminal}/down/commands"


def down_roster(terminal: str) -> str:
    return f"{PREFIX}/{terminal}/down/roster"


#: What server ingest workers subscribe to (MQTT 5 shared subscriptions spread the load).
INGEST_SUBSCRIPTIONS = (
    f"$share/{INGEST_SHARE_GROUP}/{PREFIX}/+/up/records",
    f"$share/{INGEST_SHARE_GROUP}/{PREFIX}/+/up/notices",
    f"$share/{INGEST_SHARE_GROUP}/{PREFIX}/+/up/photos",
)


def terminal_of(topic: str) -> str | None:
    """The terminal number in a ``jiapei/v1/terminals/{T}/…`` topic, or None."""
    parts = topic.split("/")
    if len(parts) >= 5 and "/".join(parts[:3]) == PREFIX:
        return parts[3]
    return None


def channel_of(topic: str) -> str | None:
    """``up/records``, ``down/acks`` … of a terminal topic, or None."""
    parts = topic.split("/")
    if len(parts) == 6 and "/".join(parts[:3]) == PREFIX:
        return f"{parts[4]}/{parts[5]}"
    return None
