"""The ingest consumer: paho-mqtt 2 (MQTT 5, persistent session, shared subscription) around the Ingestor.

paho's network thread only queues messages; a worker thread runs ingest (one DB transaction per message), publishes
the ack on ``down/acks`` after COMMIT and only then acknowledges the MQTT message (manual PUBACK), so a crash before
commit makes the broker deliver it again. A periodic task publishes due ``resend`` commands and re-judges sessions
whose stored minutes were never judged (a crash between COMMIT and validation: the redelivered batch is all
duplicates and triggers nothing), and stores photos held until their record came. Photos (``up/photos``) have a
worker of their own, so the server's face re-check (~0.1-0.5 s a photo) never delays records. A broken message is
logged and counted, never fatal. The first connection is
retried with backoff and a clear log line.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import select

from firmware_protocols import topics
from firmware_protocols.messages import Roster, RosterBooking, RosterPerson
from server.clock import Clock, utcnow
from server.db import SessionFactory
from server.ingest import Ingestor
from server.models import Coach, Minute, Student, Terminal
from server.policy import Policy

log = logging.getLogger(__name__)


#: Broker keeps our subscription and queued QoS 1 messages this long while we are away.
SESSION_EXPIRY_SECONDS = 7 * 24 * 3600
KEEPALIVE_SECONDS = 30
RECONNECT_MIN_SECONDS = 1
RECONNECT_MAX_SECONDS = 30
#: Messages waiting for the worker; paho's thread blocks when full (back-pressure instead of unbounded memory).
MAX_PENDING_MESSAGES = 1000
#: Photo messages (≤ 512 KiB each) waiting for the photo worker: ≤ 50 MiB held.
MAX_PENDING_PHOTOS = 100


class IngestConsumer:
    def __init__(
        self,
        ingestor: Ingestor,
        session_factory: SessionFactory,
        host: str,
        port: int,
        *,
        client_id: str = "jiapei-server-1",
        clock: Clock = utcnow,
        resend_check_seconds: float = 5.0,
        tls: ssl.SSLContext | None = None,
        rejudge: Callable[[set[int]], object] | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.policy = policy  # with a policy, rosters carry its booking rule and today's bookings
        # The ingestor's own after-commit work (the ledger) by default: what a crash may have cut short.
        self._rejudge = rejudge if rejudge is not None else ingestor._after_commit
        self._sf = session_factory
        self.host, self.port = host, port
        self._clock = clock
        self.resend_check_seconds = resend_check_seconds
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.stats: dict[str, int] = {"messages": 0, "acks": 0, "errors": 0, "resends": 0, "rejudged": 0}
        self._queue: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue(MAX_PENDING_MESSAGES)
        self._photo_queue: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue(MAX_PENDING_PHOTOS)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.reconnect_delay_set(RECONNECT_MIN_SECONDS, RECONNECT_MAX_SECONDS)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker and resend threads and connect in the background (retrying until it works)."""
        for name, target in (
            ("ingest-worker", self._work),
            ("photo-worker", self._work_photos),
            ("resend-ticker", self._resend_loop),
            ("mqtt-connect", self._connect_loop),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for q in (self._queue, self._photo_queue):
            try:
                q.put_nowait(None)
            except queue.Full:
                pass
        self._client.disconnect()
        self._client.loop_stop()
        for t in self._threads:
            t.join(timeout)

    def _connect_loop(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        delay = RECONNECT_MIN_SECONDS
        logged = False
        while not self._stop.is_set():
            try:
                self._client.connect(self.host, self.port, KEEPALIVE_SECONDS, clean_start=False, properties=props)
            except (OSError, ssl.SSLError) as exc:
                if not logged:
                    log.error(
                        "MQTT broker not reachable at %s:%s (%s); retrying with backoff up to %ss",
                        self.host,
                        self.port,
                        exc,
                        RECONNECT_MAX_SECONDS,
                    )
                    logged = True
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            self._client.loop_start()  # paho reconnects by itself from here on
            return

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused by %s:%s: %s", self.host, self.port, reason_code)
            return
        log.info("connected to MQTT broker %s:%s", self.host, self.port)
        client.subscribe([(t, 1) for t in topics.INGEST_SUBSCRIPTIONS])
        self.connected.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reason_codes: Any, _p: Any) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("subscription refused: %s", failed)
        else:
            self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason_code: Any, _p: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stop.is_set():
            log.warning("disconnected from MQTT broker (%s); paho reconnects", reason_code)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        (self._photo_queue if topics.channel_of(msg.topic) == "up/photos" else self._queue).put(msg)

    # ------------------------------------------------------------------ worker
    def _work_photos(self) -> None:
        self._work(self._photo_queue)

    def _work(self, messages: queue.Queue[mqtt.MQTTMessage | None] | None = None) -> None:
        source = self._queue if messages is None else messages
        while True:
            msg = source.get()
            if msg is None or self._stop.is_set():
                return
            self.stats["messages"] += 1
            try:
                ack = self.ingestor.handle_message(msg.topic, bytes(msg.payload))
            except Exception:  # noqa: BLE001 - one broken message must never kill the consumer
                self.stats["errors"] += 1
                log.exception("ingest failed for a message on %s; it stays unacked for redelivery", msg.topic)
                continue
            terminal = topics.terminal_of(msg.topic)
            if ack is not None and terminal is not None:
                self._client.publish(topics.down_acks(terminal), ack.encode(), qos=1)
                self.stats["acks"] += 1
            self._client.ack(msg.mid, msg.qos)

    def _resend_loop(self) -> None:
        while not self._stop.wait(self.resend_check_seconds):
            self.send_due_resends()
            self.rejudge_unjudged()
            self.store_held_photos()

    def store_held_photos(self) -> int:
        """Photos held ``pending`` whose record has arrived since: stored, re-checked, acked to their terminal."""
        from server.photos import photo_ingest_of

        try:
            acks = photo_ingest_of(self.ingestor, self._sf, self._clock).resolve_pending()
        except Exception:  # noqa: BLE001 - retried next tick
            log.exception("storing held photos failed")
            return 0
        for terminal, ack in acks:
            self._client.publish(topics.down_acks(terminal), ack.encode(), qos=1)
        return len(acks)

    def rejudge_unjudged(self) -> int:
        """Re-run validation for sessions holding minutes that were stored but never judged; returns how many."""
        if self._rejudge is None:
            return 0
        try:
            with self._sf() as s:
                sessions = set(s.scalars(select(Minute.session_id).where(Minute.judged_at.is_(None)).distinct()))
            if sessions:
                log.warning("sessions %s hold unjudged minutes (validation cut short): judging them", sorted(sessions))
                self._rejudge(sessions)
        except Exception:  # noqa: BLE001 - retried next tick
            log.exception("re-judging unjudged minutes failed")
            return 0
        self.stats["rejudged"] += len(sessions)
        return len(sessions)

    def send_due_resends(self) -> int:
        try:
            due = self.ingestor.due_resends(self._clock())
        except Exception:  # noqa: BLE001 - retried next tick
            log.exception("resend check failed")
            return 0
        for terminal, command in due:
            log.info("asking %s to resend %s", terminal, command.args)
            self._client.publish(topics.down_commands(terminal), command.encode(), qos=1)
        self.stats["resends"] += len(due)
        return len(due)

    # ------------------------------------------------------------------ roster
    def publish_roster(self, terminal: str) -> bool:
        """Publish the retained roster of ``terminal``'s school. False when the terminal is unknown."""
        roster = build_roster(self._sf, terminal, self._clock(), self.policy)
        if roster is None:
            return False
        self._client.publish(topics.down_roster(terminal), roster.encode(), qos=1, retain=True)
        return True

    def publish_school_rosters(self, school: str) -> int:
        with self._sf() as s:
            ids = list(s.scalars(select(Terminal.id).where(Terminal.school_id == school)))
        for t in ids:
            self.publish_roster(t)
        return len(ids)


def build_roster(session_factory: SessionFactory, terminal_id: str, now: datetime,
                 policy: Policy | None = None) -> Roster | None:  # fmt: skip
    """The roster of ``terminal_id``; with ``policy``, also whether walk-ins are allowed and the car's bookings of
    today (Beijing), each open for sign-in from the policy's early allowance before the slot until its end."""
    from server.platform import roster_bookings

    with session_factory() as s:
        terminal = s.get(Terminal, terminal_id)
        if terminal is None:
            return None
        coaches = s.scalars(select(Coach).where(Coach.school_id == terminal.school_id).order_by(Coach.id))
        students = s.scalars(select(Student).where(Student.school_id == terminal.school_id).order_by(Student.id))
        return Roster(
            terminal=terminal.id,
            school=terminal.school_id,
            issued_at=now,
            coaches=tuple(RosterPerson(c.id, c.name, tuple(c.classes), c.face_template) for c in coaches),
            students=tuple(RosterPerson(p.id, p.name, (p.licence_class,), p.face_template) for p in students),
            walk_ins=None if policy is None else policy.booking.walk_ins,
            bookings=None if policy is None else tuple(
                RosterBooking(b.student, b.coach, b.starts_at - timedelta(minutes=policy.booking.sign_in_early_minutes),
                              b.ends_at) for b in roster_bookings(s, terminal.id, now)),
        )  # fmt: skip
