"""Evidence photos on the terminal: the JPEG of each face check (downscaled, with a visible caption) and the store
that keeps them, owner-only, until the server acks them.

A face check's photo is made by :func:`evidence_jpeg` from the frame the decision was made on; its SHA-256 goes into
the signed ``face_check`` record (and the login/logout ``face`` body), so the chain vouches for the bytes. The photo
is kept in :class:`PhotoStore` *before* the record is committed, then linked to the record's (chain, seq) once it is
(:meth:`PhotoStore.link`), sent on ``up/photos`` only after that record was acked by the server (records first), and
its bytes are deleted only when the server acks the photo ``stored``/``duplicate``.

Records come first, on disk too: the photo store is its own SQLite file (its writes never take the record store's
lock or grow its WAL), it is bounded (:data:`MAX_STORE_BYTES`, :data:`MAX_STORE_PHOTOS`), and it refuses a photo when
the disk has less than :data:`MIN_FREE_BYTES` free, so a filling disk stops photos long before it stops records.
The record then still names the photo's hash: the server sees a check whose photo never came, which is the truth.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware_protocols.messages import MAX_PHOTO_BYTES, photo_sha256
from firmware_protocols.records import format_time

log = logging.getLogger(__name__)

#: Longest side of an evidence photo: enough for the server's face re-check (a driver's face at 640 px is 120-250 px
#: wide) and for a person to recognise; a 640x480 JPEG at quality 80 is 30-90 KiB.
PHOTO_MAX_SIDE = 640
PHOTO_QUALITY = 80
#: Height of the caption band added under the frame (the face is never covered by the caption).
CAPTION_LINE_PX = 14

#: The photo store holds at most this many bytes of JPEG and this many photos (a week offline: ~4 checks an hour,
#: 12 h a day → ~350 photos, ~25 MiB); past either, new photos are refused (never a record).
MAX_STORE_BYTES = 256 * 1024 * 1024
MAX_STORE_PHOTOS = 20_000
#: A photo is not kept when the disk has less free space than this: what is left is for records.
MIN_FREE_BYTES = 64 * 1024 * 1024
#: A photo taken for a check whose record never committed (a crash in between) is dropped after this long.
ORPHAN_AFTER = timedelta(days=2)
#: A photo the server held as ``pending`` (its record had not reached it) is sent again after this long.
PENDING_RETRY = timedelta(seconds=30)

# photo status on the terminal
UNLINKED, WAITING, SENT, ACKED, REJECTED = "unlinked", "waiting", "sent", "acked", "rejected"


# --- the photo ---------------------------------------------------------------------------------------------


def caption_lines(
    *, terminal: str, school: str | None, coach: str | None, student: str | None, at: datetime,
    lat: float | None, lon: float | None,
) -> list[str]:  # fmt: skip
    """The watermark: who, when (UTC) and where, in ASCII (IDs are national numbers)."""
    place = "no fix" if lat is None or lon is None else f"{lat:.6f},{lon:.6f}"
    return [
        f"school {school or '-'}  terminal {terminal}",
        f"coach {coach or '-'}  student {student or '-'}",
        f"{format_time(at)}  {place}",
    ]


def evidence_jpeg(
    rgb: Any, caption: Sequence[str] = (), *, max_side: int = PHOTO_MAX_SIDE, quality: int = PHOTO_QUALITY
) -> bytes:
    """An RGB frame (HxWx3 uint8) as a JPEG of at most ``max_side`` px, with the caption in a band below it.

    The caption is drawn under the frame, not over it, so the server's face re-check sees the face as the terminal
    did. Pillow (part of the face stack) is imported here, not when the module is imported."""
    import numpy as np
    from PIL import Image, ImageDraw

    arr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    if arr.ndim == 2:
        arr = np.stack([arr, arr, arr], axis=-1)
    img = Image.fromarray(arr[:, :, :3], "RGB")
    img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    if caption:
        band = CAPTION_LINE_PX * len(caption) + 4
        canvas = Image.new("RGB", (img.width, img.height + band), (0, 0, 0))
        canvas.paste(img, (0, 0))
        draw = ImageDraw.Draw(canvas)
        for i, line in enumerate(caption):
            draw.text((3, img.height + 2 + i * CAPTION_LINE_PX), line, fill=(255, 255, 255))
        img = canvas
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, optimize=True)
    data = out.getvalue()
    if len(data) > MAX_PHOTO_BYTES and quality > 40:  # a noisy frame: try harder rather than lose the photo
        return evidence_jpeg(rgb, caption, max_side=max_side, quality=quality - 20)
    return data


# --- the store ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    sha256: str
    chain: int
    seq: int
    taken_at: datetime
    jpeg: bytes = field(repr=False)
    id: int = 0


class PhotoStore:
    """Evidence photos waiting for the server, in their own owner-only SQLite file.

    Thread-safe (one connection, one lock): the face worker puts photos, the runtime links them, sync sends them.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = MAX_STORE_BYTES,
        max_photos: int = MAX_STORE_PHOTOS,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> None:
        self.path = path
        self.max_bytes, self.max_photos, self.min_free_bytes = max_bytes, max_photos, min_free_bytes
        self.refused = 0  # photos not kept (store full, disk low, write failed)
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Biometric evidence: owner-only from the first byte; SQLite gives its -wal/-shm files the database's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        # One row per check: two checks may give byte-identical photos (a frozen feed within one second), and each
        # record naming them needs its own upload.
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS photos (id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL,"
            " chain INTEGER, seq INTEGER, taken_at TEXT NOT NULL, jpeg BLOB, size INTEGER NOT NULL,"
            " status TEXT NOT NULL, reason TEXT, next_attempt_at TEXT, created_at TEXT NOT NULL, acked_at TEXT)"
        )
        self._conn.execute("CREATE INDEX IF NOT EXISTS ix_photos_status ON photos(status, chain, seq)")
        self._conn.execute("CREATE INDEX IF NOT EXISTS ix_photos_sha256 ON photos(sha256)")

    def put(self, jpeg: bytes, taken_at: datetime) -> str | None:
        """Keep a photo (before its record is committed). Its SHA-256, or None when it was not kept."""
        sha = photo_sha256(jpeg)
        if len(jpeg) > MAX_PHOTO_BYTES:
            self._refuse(sha, f"{len(jpeg)} bytes > {MAX_PHOTO_BYTES}")
            return None
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = 0
        if free < self.min_free_bytes:
            self._refuse(sha, f"only {free} bytes free on disk: kept for records")
            return None
        with self._lock:
            try:
                n, size = self._conn.execute(
                    "SELECT count(*), coalesce(sum(size), 0) FROM photos WHERE jpeg IS NOT NULL"
                ).fetchone()
                if n >= self.max_photos or size + len(jpeg) > self.max_bytes:
                    self._refuse(sha, f"photo store full ({n} photos, {size} bytes)")
                    return None
                self._conn.execute(
                    "INSERT INTO photos (sha256, taken_at, jpeg, size, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [sha, taken_at.astimezone(UTC).isoformat(), jpeg, len(jpeg), UNLINKED, _now().isoformat()],
                )
            except sqlite3.Error as exc:  # disk full, I/O error: the record goes on without the photo
                self._refuse(sha, str(exc))
                return None
        return sha

    def link(self, sha256: str, chain: int, seq: int) -> bool:
        """The ``face_check`` record naming the photo was committed at (chain, seq): it may be sent once acked."""
        with self._lock:
            try:
                cur = self._conn.execute(
                    "UPDATE photos SET chain = ?, seq = ?, status = ? WHERE id = (SELECT min(id) FROM photos"
                    " WHERE sha256 = ? AND status = ?)",
                    [chain, seq, WAITING, sha256, UNLINKED],
                )
            except sqlite3.Error as exc:
                log.error("photo %s not linked to %d/%d: %s", sha256[:12], chain, seq, exc)
                return False
        return cur.rowcount > 0

    def sendable(self, limit: int, now: datetime | None = None) -> list[StoredPhoto]:
        """Linked photos not acked yet and due (a ``pending`` answer waits :data:`PENDING_RETRY`), oldest first.
        The caller sends only those whose record the server has acked."""
        now = now or _now()
        with self._lock:
            rows = self._conn.execute(
                "SELECT sha256, chain, seq, taken_at, jpeg, id FROM photos WHERE status IN (?, ?) AND jpeg IS NOT NULL"
                " AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY chain, seq LIMIT ?",
                [WAITING, SENT, now.isoformat(), limit],
            ).fetchall()
        return [StoredPhoto(r[0], int(r[1]), int(r[2]), datetime.fromisoformat(r[3]), bytes(r[4]), int(r[5]))
                for r in rows]  # fmt: skip

    def mark_sent(self, photo: StoredPhoto, retry_at: datetime) -> None:
        with self._lock:
            self._conn.execute("UPDATE photos SET status = ?, next_attempt_at = ? WHERE id = ? AND status IN (?, ?)",
                               [SENT, retry_at.isoformat(), photo.id, WAITING, SENT])  # fmt: skip

    def acked(self, sha256: str) -> bool:
        """The server stored the photo: its bytes are deleted here (the row stays as a note of what was sent).
        Only uploads already sent are released: a twin not sent yet still goes up for its own record."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE photos SET status = ?, jpeg = NULL, acked_at = ? WHERE sha256 = ? AND status = ?",
                [ACKED, _now().isoformat(), sha256, SENT],
            )
        return cur.rowcount > 0

    def held(self, sha256: str, retry_at: datetime) -> None:
        """The server holds it ``pending`` (its record has not reached it): send again at ``retry_at``."""
        with self._lock:
            self._conn.execute("UPDATE photos SET next_attempt_at = ? WHERE sha256 = ? AND status = ?",
                               [retry_at.isoformat(), sha256, SENT])  # fmt: skip

    def rejected(self, sha256: str, reason: str | None, photo: StoredPhoto | None = None) -> bool:
        """Refused for good (the server's answer to what was sent, or ``photo`` when its record was rejected): kept
        (evidence of what happened), never sent again."""
        with self._lock:
            if photo is not None:
                cur = self._conn.execute("UPDATE photos SET status = ?, reason = ? WHERE id = ?",
                                         [REJECTED, reason, photo.id])  # fmt: skip
            else:
                cur = self._conn.execute("UPDATE photos SET status = ?, reason = ? WHERE sha256 = ? AND status = ?",
                                         [REJECTED, reason, sha256, SENT])  # fmt: skip
        return cur.rowcount > 0

    def prune_orphans(self, now: datetime | None = None) -> int:
        """Drop photos whose record never committed (older than :data:`ORPHAN_AFTER`): nothing names them."""
        cutoff = (now or _now()) - ORPHAN_AFTER
        with self._lock:
            cur = self._conn.execute("DELETE FROM photos WHERE status = ? AND created_at < ?",
                                     [UNLINKED, cutoff.isoformat()])  # fmt: skip
        return cur.rowcount

    def get(self, sha256: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT sha256, chain, seq, status, reason, size, jpeg IS NOT NULL FROM photos WHERE sha256 = ?"
                " ORDER BY id DESC LIMIT 1",
                [sha256],
            ).fetchone()
        if row is None:
            return None
        return {"sha256": row[0], "chain": row[1], "seq": row[2], "status": row[3], "reason": row[4],
                "size": row[5], "has_bytes": bool(row[6])}  # fmt: skip

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT status, count(*) FROM photos GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows} | {"refused": self.refused}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _refuse(self, sha: str, why: str) -> None:
        self.refused += 1
        log.warning("photo %s not kept: %s (the record still names it)", sha[:12], why)


def _now() -> datetime:
    return datetime.now(UTC)
