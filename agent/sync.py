"""Record sync over MQTT (paho-mqtt, MQTT 5, QoS 1, persistent session).

The agent sends pending records in batches on ``up/records`` and releases a record only when the server's
application ack on ``down/acks`` names its hash (``stored`` or ``duplicate``). The broker's PUBACK only says the
broker has the message: a batch not acked within :data:`ACK_TIMEOUT_S` is sent again (the server answers
``duplicate``). ``down/commands`` brings resend requests; what cannot be served is answered with a signed lost
notice. ``down/roster`` (retained) brings the people this terminal may see.

Evidence photos (``up/photos``) come after records: a round sends photos only when no record is pending, a photo
only once the server has acked the record that names it, and at most :data:`MAX_PHOTOS_IN_FLIGHT` at a time; its
bytes are deleted from the photo store only on the server's photo ack ``stored``/``duplicate``.

Crash at any step: records live in SQLite until acked, so a restart resends whatever was in flight.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.photos import PENDING_RETRY, PhotoStore
from agent.store import ACKED, REJECTED, RecordStore, StoredRecord
from firmware_protocols import envelope, topics
from firmware_protocols.errors import ProtocolError
from firmware_protocols.messages import (
    MAX_BATCH_RECORDS,
    Ack,
    AckStatus,
    Command,
    CommandName,
    LostNotice,
    PhotoAck,
    PhotoStatus,
    PhotoUpload,
    RecordBatch,
    Roster,
    decode_ack,
)

log = logging.getLogger(__name__)

#: A batch without an application ack after this long is sent again.
ACK_TIMEOUT_S = 15.0
#: Batches in flight at once: enough to drain a backlog quickly, few enough to bound duplicates after a reconnect.
MAX_IN_FLIGHT = 4
#: The broker keeps our subscriptions and queued QoS 1 messages this long while we are offline.
SESSION_EXPIRY_S = 7 * 24 * 3600
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30
KEEPALIVE_S = 30
LOOP_IDLE_S = 0.2
#: Photos sent and not acked at once (each ≤ 360 KiB): small, so a photo never holds the link long before records.
MAX_PHOTOS_IN_FLIGHT = 2


@dataclass
class _InFlight:
    keys: set[tuple[int, int]]
    sent_at: float


@dataclass
class SyncStats:
    batches_sent: int = 0
    records_acked: int = 0
    records_rejected: int = 0
    resends_served: int = 0
    lost_notices: int = 0
    photos_sent: int = 0
    photos_acked: int = 0
    photos_rejected: int = 0
    connected: bool = False
    last_ack_at: str | None = None
    errors: dict[str, int] = field(default_factory=dict)


class RecordSync:
    def __init__(
        self,
        store: RecordStore,
        terminal: str,
        host: str,
        port: int,
        private_key: envelope.PrivateKey,
        on_roster: Callable[[Roster], None],
        *,
        batch_size: int = MAX_BATCH_RECORDS,
        tls: dict[str, str] | None = None,
        photos: PhotoStore | None = None,
    ) -> None:
        self.store, self.terminal, self.host, self.port = store, terminal, host, port
        self._key, self._on_roster = private_key, on_roster
        self.batch_size = min(batch_size, MAX_BATCH_RECORDS)
        self.stats = SyncStats()
        self._in_flight: dict[str, _InFlight] = {}
        self.photos = photos
        self._photos_in_flight: dict[str, float] = {}  # sha256 → monotonic time sent
        self._resend: list[Command] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sync-{terminal}", daemon=True)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"terminal-{terminal}",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        if tls:
            self.client.tls_set(ca_certs=tls.get("ca"), certfile=tls.get("cert"), keyfile=tls.get("key"))
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_connect_fail = self._on_connect_fail
        self._connect_error_logged = False

    # --- life cycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S, clean_start=False, properties=props)
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()

    def nudge(self) -> None:
        """A record was committed: send soon."""
        self._wake.set()

    # --- paho callbacks (network thread: keep them short) -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:  # fmt: skip
        if getattr(reason, "is_failure", False):
            if not self._connect_error_logged:
                log.error("broker %s:%d refused the connection: %s (retrying)", self.host, self.port, reason)
                self._connect_error_logged = True
            return
        self._connect_error_logged = False
        log.info("connected to broker %s:%d", self.host, self.port)
        self.stats.connected = True
        client.subscribe([(topics.down_acks(self.terminal), 1), (topics.down_commands(self.terminal), 1),
                          (topics.down_roster(self.terminal), 1)])  # fmt: skip
        with self._lock:  # whatever was in flight may be lost with the old connection: resend after the timeout
            for f in self._in_flight.values():
                f.sent_at = 0.0
            self._photos_in_flight.clear()
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        if not self._connect_error_logged:
            log.error("broker %s:%d not reachable; records stay in the store and are sent once it is (retrying "
                      "every %d-%d s)", self.host, self.port, RECONNECT_MIN_S, RECONNECT_MAX_S)  # fmt: skip
            self._connect_error_logged = True

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:  # fmt: skip
        if self.stats.connected:
            log.warning("disconnected from broker: %s (reconnecting)", reason)
        self.stats.connected = False

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        channel = topics.channel_of(msg.topic)
        try:
            if channel == "down/acks":
                ack = decode_ack(bytes(msg.payload))
                if isinstance(ack, PhotoAck):
                    self._handle_photo_ack(ack)
                else:
                    self._handle_ack(ack)
            elif channel == "down/commands":
                with self._lock:
                    self._resend.append(Command.decode(bytes(msg.payload)))
                self._wake.set()
            elif channel == "down/roster":
                self._on_roster(Roster.decode(bytes(msg.payload)))
        except ProtocolError as exc:
            self.stats.errors[exc.reason] = self.stats.errors.get(exc.reason, 0) + 1
            log.warning("refused a %s message: %s", channel, exc)
        except Exception:  # a callback must never kill paho's network thread
            log.exception("handling %s failed", msg.topic)

    def _handle_ack(self, ack: Ack) -> None:
        if ack.error:
            log.error("server refused batch %s whole: %s", ack.batch, ack.error)
        for r in ack.results:
            if r.status in (AckStatus.STORED, AckStatus.DUPLICATE):
                if self.store.mark(r.chain, r.seq, r.hash, ACKED):
                    self.stats.records_acked += 1
            elif r.status is AckStatus.REJECTED:
                if self.store.mark(r.chain, r.seq, r.hash, REJECTED, r.reason):
                    self.stats.records_rejected += 1
                    log.error("ALARM: server rejected record %d/%d: %s", r.chain, r.seq, r.reason)
        with self._lock:
            self._in_flight.pop(ack.batch, None)
        self.stats.last_ack_at = datetime.now(UTC).isoformat()
        self._wake.set()

    def _handle_photo_ack(self, ack: PhotoAck) -> None:
        if self.photos is None:
            return
        if ack.status in (PhotoStatus.STORED, PhotoStatus.DUPLICATE):
            if self.photos.acked(ack.photo):  # only now are its bytes deleted here
                self.stats.photos_acked += 1
        elif ack.status is PhotoStatus.PENDING:
            self.photos.held(ack.photo, datetime.now(UTC) + PENDING_RETRY)
        elif ack.status is PhotoStatus.REJECTED and self.photos.rejected(ack.photo, ack.reason):
            self.stats.photos_rejected += 1
            log.error("ALARM: server rejected photo %s: %s", ack.photo[:12], ack.reason)
        with self._lock:
            self._photos_in_flight.pop(ack.photo, None)
        self._wake.set()

    # --- sender thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(LOOP_IDLE_S)
            self._wake.clear()
            if not self.client.is_connected():
                continue
            try:
                self._serve_resends()
                self._send_pending()
                self._send_photos()
            except Exception:
                log.exception("sync round failed; retrying")
                time.sleep(1)

    def _send_pending(self) -> None:
        now = time.monotonic()
        with self._lock:
            for batch_id, f in list(self._in_flight.items()):
                if now - f.sent_at > ACK_TIMEOUT_S:
                    del self._in_flight[batch_id]  # its records are still pending: picked up below
            busy = set().union(*(f.keys for f in self._in_flight.values())) if self._in_flight else set()
            room = MAX_IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return
        candidates = [r for r in self.store.pending(self.batch_size * (room + 1)) if (r.chain, r.seq) not in busy]
        for i in range(0, min(len(candidates), room * self.batch_size), self.batch_size):
            self._publish(candidates[i : i + self.batch_size])

    def _send_photos(self) -> None:
        """Photos after records: none while a record is pending, each only once its record was acked."""
        if self.photos is None or self.store.pending(1):
            return
        now = time.monotonic()
        with self._lock:
            for sha, sent in list(self._photos_in_flight.items()):
                if now - sent > ACK_TIMEOUT_S:
                    del self._photos_in_flight[sha]
            room = MAX_PHOTOS_IN_FLIGHT - len(self._photos_in_flight)
            busy = set(self._photos_in_flight)
        if room <= 0:
            return
        due = [p for p in self.photos.sendable(room * 8) if p.sha256 not in busy]
        status = self.store.statuses(sorted({(p.chain, p.seq) for p in due}))
        for p in due:
            if status.get((p.chain, p.seq)) == REJECTED:  # the server refused its record: nothing would vouch for it
                self.photos.rejected(p.sha256, "record_rejected", p)
        for photo in [p for p in due if status.get((p.chain, p.seq)) == ACKED][:room]:
            payload = PhotoUpload(self.terminal, photo.sha256, photo.chain, photo.seq, photo.taken_at,
                                  photo.jpeg).encode()  # fmt: skip
            with self._lock:
                self._photos_in_flight[photo.sha256] = time.monotonic()
            # marked before publishing, so that however fast the ack comes it finds the photo sent
            self.photos.mark_sent(photo, datetime.now(UTC) + timedelta(seconds=ACK_TIMEOUT_S))
            info = self.client.publish(topics.up_photos(self.terminal), payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:  # sent again once its retry time has come
                with self._lock:
                    self._photos_in_flight.pop(photo.sha256, None)
                return
            self.stats.photos_sent += 1

    def _publish(self, records: list[StoredRecord]) -> None:
        batch_id = f"{records[0].chain}-{records[0].seq}-{uuid.uuid4().hex[:8]}"
        payload = RecordBatch(self.terminal, batch_id, tuple(r.raw for r in records)).encode()
        with self._lock:
            self._in_flight[batch_id] = _InFlight({(r.chain, r.seq) for r in records}, time.monotonic())
        info = self.client.publish(topics.up_records(self.terminal), payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish failed (rc=%s); will retry", info.rc)
            with self._lock:
                self._in_flight.pop(batch_id, None)
            return
        self.stats.batches_sent += 1

    def _serve_resends(self) -> None:
        with self._lock:
            commands, self._resend = self._resend, []
        for cmd in commands:
            if cmd.cmd is not CommandName.RESEND:
                continue
            chain, from_seq, to_seq = int(cmd.args["chain"]), int(cmd.args["from_seq"]), cmd.args.get("to_seq")
            records = self.store.records_between(chain, from_seq, None if to_seq is None else int(to_seq))
            log.info("server asked for %d/%d..%s: have %d records", chain, from_seq, to_seq, len(records))
            for i in range(0, len(records), self.batch_size):
                self._publish(records[i : i + self.batch_size])
            self.stats.resends_served += 1
            have = {r.seq for r in records}
            last = int(to_seq) if to_seq is not None else (max(have) if have else from_seq)
            missing = [s for s in range(from_seq, last + 1) if s not in have]
            if missing:  # never silence: say what is gone, signed
                notice = LostNotice(self.terminal, chain, missing[0], missing[-1], "not in the terminal's store",
                                    datetime.now(UTC).replace(microsecond=0))  # fmt: skip
                self.client.publish(topics.up_notices(self.terminal), notice.sign(self._key), qos=1)
                self.stats.lost_notices += 1
                log.error("ALARM: records %d/%d..%d cannot be resent: lost notice sent", chain, missing[0], missing[-1])
