"""Ingest: verify signed records against the registered terminal and its chain, store them raw, build the ack.

One up message is handled in ONE database transaction; the :class:`~firmware_protocols.messages.Ack` is built only
after COMMIT returned, and the caller publishes it. Nothing here raises on bad input: a bad batch becomes an ack with
``error``, a bad record a ``rejected`` result with the contract's reason code, and tampering raises an alarm.

Ingest is order-independent: a record is stored once its own signature verifies, each hash link is checked whenever
both ends are stored, and a gap is only chased (``resend``) after :data:`RESEND_GRACE` has passed.
After commit, the minutes of the sessions touched are re-judged and the hour totals recomputed (:mod:`server.ledger`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from firmware_protocols import envelope, topics
from firmware_protocols.errors import BadSignature, ProtocolError
from firmware_protocols.identifiers import CourseCode
from firmware_protocols.messages import (
    Ack,
    AckResult,
    AckStatus,
    Command,
    KeyVouch,
    LostNotice,
    PhotoAck,
    RecordBatch,
)
from firmware_protocols.records import Record, RecordKind, parse_record, record_hash
from server.clock import Clock
from server.db import SessionFactory
from server.models import (
    MINUTE_UNJUDGED,
    TERMINAL_ACTIVE,
    TERMINAL_REVOKED,
    Alarm,
    Chain,
    Minute,
    RawRecord,
    Rejection,
    Terminal,
    TerminalKey,
    TrainingSession,
)
from server.validation.track import track_fingerprint

log = logging.getLogger(__name__)

#: The tables the batch's rows go to with one Core ``INSERT`` each (no ORM unit of work or bulk machinery per row).
RAW_RECORDS = cast(Table, RawRecord.__table__)
MINUTES = cast(Table, Minute.__table__)


#: How long a hole in a chain may last before the server asks for it (records of one terminal may reach different
#: workers out of order; the next batch usually fills the hole within seconds).
RESEND_GRACE = timedelta(seconds=30)
#: A transaction that lost a race with another worker (unique key, SQLite busy) is retried this many times.
MAX_TX_ATTEMPTS = 3

ALARM_BAD_SIGNATURE = "bad_signature"
ALARM_FORK = "fork"
ALARM_CHAIN_BREAK = "chain_break"
ALARM_UNKNOWN_TERMINAL = "unknown_terminal"
ALARM_FOREIGN_PUBLISH = "foreign_publish"
ALARM_LOST_RECORDS = "lost_records"
ALARM_NEW_CHAIN = "new_chain"
ALARM_GENESIS_KEY = "genesis_key_mismatch"
ALARM_DUPLICATE_RECORD_NO = "duplicate_record_no"
ALARM_REVOKED_TERMINAL = "revoked_terminal"
ALARM_KEY_ROTATION = "key_rotation"
ALARM_BAD_VOUCH = "bad_key_vouch"
ALARM_CHAIN_CLOSED = "chain_closed"


@dataclass(frozen=True, slots=True)
class KnownKey:
    key_id: str
    from_chain: int
    key: envelope.PublicKey


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What ingest did with one record of a batch (``result`` None: not answered yet, the terminal sends it again)."""

    result: AckResult | None
    kind: str | None = None
    alarm: str | None = None


#: record hash → (the key it was checked with, the error or None): signatures checked before the transaction began
_Verified = dict[str, tuple[envelope.PublicKey, ProtocolError | None]]


@dataclass
class _Batch:
    """What one transaction touched, for the work after commit, and what it knows of the stored chain.

    ``links``, ``record_nos`` and ``session_rows`` are loaded in one query each for the whole batch
    (:meth:`Ingestor._prefetch`) and kept up to date as records are stored, so that no record needs a query of its
    own; new raw rows, new sessions and new minutes are inserted together and the chains' bookkeeping is brought up
    to date once, before COMMIT.
    """

    #: ids of the sessions the batch touched (complete once :meth:`Ingestor._store_batch` has run)
    sessions: set[int] = field(default_factory=set)
    alarms_in_batch: set[tuple[str, str]] = field(default_factory=set)
    #: (chain, seq) → (hash, prev) of the stored records around this batch's records, and of the ones it stores.
    links: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)
    #: minute record number → (chain, seq) of the stored minute that holds it (this batch's included).
    record_nos: dict[str, tuple[int, int]] = field(default_factory=dict)
    new_raws: list[dict[str, Any]] = field(default_factory=list)
    #: the batch's terminal row and chain rows once found (rows of the ORM session, cached to spare an identity-map
    #: look-up per record; a row not found is not cached: the next look-up asks the session again)
    terminal: Terminal | None = None
    chains: dict[int, Chain] = field(default_factory=dict)
    #: session key → its row, for the sessions the batch's records name: loaded at once, or created by this batch
    #: (added to the ORM session, inserted with the batch's flush); a key absent here is not stored yet
    session_rows: dict[str, TrainingSession] = field(default_factory=dict)
    #: the rows of the sessions touched (their ids are known after the batch's flush)
    touched: dict[int, TrainingSession] = field(default_factory=dict)
    #: the batch's new minute rows with their session (its id filled in after the flush), in record order
    new_minutes: list[tuple[TrainingSession, dict[str, Any]]] = field(default_factory=list)
    #: the terminal and when its last record of the batch was stored (written once, before COMMIT)
    last_seen: tuple[Terminal, datetime] | None = None
    #: chain row → highest seq this batch stored in it
    advanced: dict[Chain, int] = field(default_factory=dict)
    verified: _Verified = field(default_factory=dict)


class Ingestor:
    """Turns up messages into stored records, acks, alarms and resend commands."""

    def __init__(
        self,
        session_factory: SessionFactory,
        clock: Clock,
        *,
        resend_grace: timedelta = RESEND_GRACE,
        after_commit: Callable[[set[int]], object] | None = None,
    ) -> None:
        self._sf = session_factory
        self._clock = clock
        self.resend_grace = resend_grace
        self._after_commit = after_commit
        self._keys: dict[str, list[KnownKey]] = {}  # terminal → its keys, oldest first (keys are only ever added)

    # ------------------------------------------------------------------ dispatch
    def handle_message(self, topic: str, payload: bytes) -> Ack | PhotoAck | None:
        """Route an up message by its channel; returns the ack to publish on ``down/acks`` (or None)."""
        channel = topics.channel_of(topic)
        if channel == "up/records":
            return self.handle_batch(topic, payload)[0]
        if channel == "up/notices":
            self.handle_notice(topic, payload)
            return None
        if channel == "up/photos":  # evidence photos: checked against their record, stored, re-checked (server.photos)
            from server.photos import photo_ingest_of

            return photo_ingest_of(self, self._sf, self._clock).handle(topic, payload)
        log.warning("ignoring message on unexpected topic %r", topic)
        self._count("unexpected_topic")
        return None

    # ------------------------------------------------------------------ batches
    def handle_batch(self, topic: str, payload: bytes) -> tuple[Ack | None, list[RecordOutcome]]:
        topic_terminal = topics.terminal_of(topic)
        if topic_terminal is None:
            self._count("bad_topic")
            return None, []
        try:
            batch = RecordBatch.decode(payload)
        except ProtocolError as exc:
            log.info("refused batch from %s: %s", topic_terminal, exc)
            self._count(exc.reason)
            return Ack(_batch_id_of(payload), (), error=exc.reason), []
        if batch.terminal != topic_terminal:
            self._count("terminal_mismatch")
            self._alarm_now(topic_terminal, ALARM_FOREIGN_PUBLISH, {"batch": batch.batch, "claims": batch.terminal})
            return Ack(batch.batch, (), error="terminal_mismatch"), []

        parsed = [_parse(raw) for raw in batch.records]
        verified = self._verify_ahead(topic_terminal, parsed)
        for attempt in range(1, MAX_TX_ATTEMPTS + 1):
            ctx = _Batch(verified=verified)
            try:
                with self._sf() as s, s.begin():
                    self._prefetch(s, topic_terminal, parsed, ctx)
                    outcomes = [self._ingest_record(s, topic_terminal, p, ctx) for p in parsed]
                    self._store_batch(s, ctx)
                    s.flush()
                # COMMIT returned: only now may the ack exist.
                break
            except (IntegrityError, OperationalError) as exc:
                if attempt == MAX_TX_ATTEMPTS:
                    raise
                log.info("batch %s of %s retried after %s", batch.batch, topic_terminal, type(exc).__name__)
        ack = Ack(batch.batch, tuple(o.result for o in outcomes if o.result is not None))
        if ctx.sessions and self._after_commit is not None:
            try:
                self._after_commit(ctx.sessions)
            except Exception:  # noqa: BLE001 - derived data is recomputed later; the records are safe
                log.exception("re-judging sessions %s failed", sorted(ctx.sessions))
        return ack, outcomes

    def _verify_ahead(self, terminal_id: str, parsed: list[_Parsed]) -> _Verified:
        """Check signatures before the transaction, with the keys already known for the terminal (none: nothing
        is checked here). The transaction picks each record's key again and uses a result only when it picked the
        same key object; otherwise it verifies itself, so the outcome is the same, the database lock is just held
        for less time."""
        keys = self._keys.get(terminal_id)
        out: _Verified = {}
        if not keys:
            return out
        for _raw, h, rec in parsed:
            if not isinstance(rec, Record) or rec.terminal != terminal_id or rec.kind is RecordKind.GENESIS:
                continue
            key = _pick_key(keys, rec.chain, rec.envelope.kid)
            if key is None:
                continue
            try:
                envelope.verify(rec.envelope, key)
            except ProtocolError as exc:
                out[h] = (key, exc)
            else:
                out[h] = (key, None)
        return out

    def _prefetch(self, s: Session, terminal_id: str, parsed: list[_Parsed], ctx: _Batch) -> None:
        """Lock the batch's chain rows (a terminal's batches handled by two workers at once then take turns, so each
        sees the other's records), then load the stored neighbours of its records and its minutes' numbers."""
        wanted: dict[int, set[int]] = {}
        numbers: list[str] = []
        session_keys: set[str] = set()
        for _raw, _h, rec in parsed:
            if not isinstance(rec, Record) or rec.terminal != terminal_id:
                continue
            wanted.setdefault(rec.chain, set()).update((rec.seq - 1, rec.seq, rec.seq + 1))
            if rec.kind is RecordKind.MINUTE:
                numbers.append(str(rec.body["record_no"]))
            key = _session_key(rec)
            if key is not None:
                session_keys.add(key)
        for chain_no in sorted(wanted):
            chain = s.get(Chain, (terminal_id, chain_no), with_for_update=True)
            if chain is not None:
                ctx.chains[chain_no] = chain
        for chain_no, seqs in wanted.items():
            low, high = min(seqs), max(seqs)
            # a dense set of seqs (a batch of consecutive records) as one index range, else the seqs themselves;
            # a range may load stored records the batch never looks up, which changes nothing
            dense = high - low < 2 * len(seqs)
            seq_cond = RawRecord.seq.between(low, high) if dense else RawRecord.seq.in_(sorted(seqs))
            rows = s.execute(
                select(RawRecord.seq, RawRecord.hash, RawRecord.prev).where(
                    RawRecord.terminal_id == terminal_id, RawRecord.chain == chain_no, seq_cond
                )
            )
            for seq, h, prev in rows:
                ctx.links[(chain_no, seq)] = (h, prev)
        if numbers:
            minutes = s.execute(
                select(Minute.record_no, Minute.chain, Minute.seq).where(Minute.record_no.in_(sorted(set(numbers))))
            )
            for number, chain_no, seq in minutes:
                ctx.record_nos[number] = (chain_no, seq)
        if session_keys:
            sessions = s.scalars(
                select(TrainingSession).where(
                    TrainingSession.terminal_id == terminal_id, TrainingSession.session.in_(sorted(session_keys))
                )
            )
            ctx.session_rows.update((ts.session, ts) for ts in sessions)

    def _store_batch(self, s: Session, ctx: _Batch) -> None:
        """Insert the batch's raw rows at once (the flush before it inserts the batch's new sessions and brings the
        touched ones up to date), then its minutes at once, then advance each chain touched once."""
        if not ctx.new_raws:
            return
        s.flush()  # new chains and sessions, alarms, the sessions' new values; new sessions have their ids from here
        s.execute(insert(RAW_RECORDS), ctx.new_raws)
        if ctx.touched:
            ctx.sessions.update(ts.id for ts in ctx.touched.values())
        if ctx.new_minutes:
            rows = []
            for ts, row in ctx.new_minutes:
                row["session_id"] = ts.id
                rows.append(row)
            s.execute(insert(MINUTES), rows)
        if ctx.last_seen is not None:
            terminal, seen = ctx.last_seen
            terminal.last_seen_at = seen
        now = self._clock()
        for chain, max_seq in ctx.advanced.items():
            chain.max_seq = max(chain.max_seq, max_seq)
            _recompute_gap(s, chain, now)

    def _ingest_record(self, s: Session, topic_terminal: str, parsed: _Parsed, ctx: _Batch) -> RecordOutcome:
        now = self._clock()
        raw, h, rec = parsed
        if not isinstance(rec, Record):
            chain, seq = _chain_seq_of(raw)
            return self._reject(s, chain, seq, h, rec.reason)

        def reject(reason: str, alarm: str | None = None, **detail: Any) -> RecordOutcome:
            if alarm is not None:
                key = (alarm, topic_terminal)
                if key not in ctx.alarms_in_batch or alarm != ALARM_UNKNOWN_TERMINAL:
                    self._alarm(s, topic_terminal, alarm, {"chain": rec.chain, "seq": rec.seq, "hash": h, **detail})
                ctx.alarms_in_batch.add(key)
            return self._reject(s, rec.chain, rec.seq, h, reason, kind=str(rec.kind), alarm=alarm)

        if rec.terminal != topic_terminal:
            return reject("terminal_mismatch", ALARM_FOREIGN_PUBLISH, claims=rec.terminal)
        terminal = ctx.terminal if ctx.terminal is not None else s.get(Terminal, topic_terminal)
        if terminal is None:
            return reject("unknown_terminal", ALARM_UNKNOWN_TERMINAL, status=None)
        if terminal.status == TERMINAL_REVOKED:
            return reject("terminal_revoked", ALARM_REVOKED_TERMINAL, revoked_at=str(terminal.revoked_at))
        if terminal.status != TERMINAL_ACTIVE:
            return reject("unknown_terminal", ALARM_UNKNOWN_TERMINAL, status=terminal.status)
        ctx.terminal = terminal
        rotation = rec.kind is RecordKind.GENESIS and rec.body.get("reason") == "key_rotation"
        if rotation:
            refused = self._check_rotation(s, terminal, rec)
            if refused is not None:
                return reject(refused[0], refused[1], error=refused[2])
        else:
            key = self._key_for(s, terminal, rec.chain, rec.envelope.kid)
            if key is None:  # signed by a key the server does not know (yet): its rotation genesis may be on its way
                _bump(s, "key_not_known_yet")
                return RecordOutcome(None, str(rec.kind))
            ahead = ctx.verified.get(h)
            try:
                if ahead is not None and ahead[0] is key:
                    if ahead[1] is not None:
                        raise ahead[1]
                else:
                    envelope.verify(rec.envelope, key)
            except ProtocolError as exc:
                return reject(exc.reason, ALARM_BAD_SIGNATURE, error=str(exc))

        existing = ctx.links.get((rec.chain, rec.seq))
        if existing is not None:
            if existing[0] == h:
                return RecordOutcome(AckResult(rec.chain, rec.seq, h, AckStatus.DUPLICATE), str(rec.kind))
            return reject("fork", ALARM_FORK, stored_hash=existing[0])

        if rec.kind is RecordKind.GENESIS and not rotation:
            try:
                body_key = envelope.key_id(envelope.public_key_from_pem(str(rec.body["public_key"])))
            except ProtocolError:
                body_key = None
            if body_key != rec.envelope.kid:
                return reject("genesis_key_mismatch", ALARM_GENESIS_KEY, genesis_key_id=body_key)
        closed = ctx.chains.get(rec.chain)
        if closed is None:
            closed = s.get(Chain, (terminal.id, rec.chain))
        if closed is not None and closed.closed_after_seq is not None and rec.seq > closed.closed_after_seq:
            return reject("chain_closed", ALARM_CHAIN_CLOSED, closed_after_seq=closed.closed_after_seq)

        before = ctx.links.get((rec.chain, rec.seq - 1)) if rec.seq > 0 else None
        if before is not None and before[0] != rec.prev:
            return reject("chain_break", ALARM_CHAIN_BREAK, expected_prev=before[0], prev=rec.prev)
        after = ctx.links.get((rec.chain, rec.seq + 1))
        if after is not None and after[1] != h:
            return reject("chain_break", ALARM_CHAIN_BREAK, next_seq=rec.seq + 1, next_prev=after[1])

        if rec.kind is RecordKind.MINUTE:
            other = ctx.record_nos.get(str(rec.body["record_no"]))
            if other is not None:
                return reject(
                    "duplicate_record_no",
                    ALARM_DUPLICATE_RECORD_NO,
                    record_no=rec.body["record_no"],
                    stored_chain=other[0],
                    stored_seq=other[1],
                )
            ctx.record_nos[str(rec.body["record_no"])] = (rec.chain, rec.seq)

        ctx.new_raws.append(
            {"terminal_id": topic_terminal, "chain": rec.chain, "seq": rec.seq, "hash": h, "prev": rec.prev,
             "kind": str(rec.kind), "at": rec.at, "body": rec.body, "raw": raw, "received_at": now}
        )  # fmt: skip
        ctx.links[(rec.chain, rec.seq)] = (h, rec.prev)
        if rotation:
            self._adopt_rotated_key(s, terminal, rec, now)
        self._advance_chain(s, terminal, rec, h, now, ctx)
        # _derive queries nothing (the batch's sessions were prefetched): its sessions go in with the batch's flush,
        # its minutes with the batch's one INSERT of minutes.
        self._derive(s, rec, ctx)
        ctx.last_seen = (terminal, now)
        return RecordOutcome(AckResult(rec.chain, rec.seq, h, AckStatus.STORED), str(rec.kind))

    def _reject(
        self,
        s: Session,
        chain: int,
        seq: int,
        h: str,
        reason: str,
        *,
        kind: str | None = None,
        alarm: str | None = None,
    ) -> RecordOutcome:
        _bump(s, reason)
        return RecordOutcome(AckResult(chain, seq, h, AckStatus.REJECTED, reason), kind, alarm)

    # ------------------------------------------------------------------ keys
    def _known_keys(self, s: Session, terminal_id: str, refresh: bool = False) -> list[KnownKey]:
        keys = self._keys.get(terminal_id)
        if keys is None or refresh:
            rows = s.scalars(
                select(TerminalKey).where(TerminalKey.terminal_id == terminal_id).order_by(TerminalKey.from_chain)
            )
            keys = [KnownKey(r.key_id, r.from_chain, envelope.public_key_from_pem(r.public_key)) for r in rows]
            self._keys[terminal_id] = keys
        return keys

    def _key_for(self, s: Session, terminal: Terminal, chain: int, kid: str) -> envelope.PublicKey | None:
        """The key that signs ``chain``: the newest key whose first chain is ≤ it. None when ``kid`` is a key the
        server does not know, for a chain past every known key's first chain (a rotation not seen yet)."""
        keys = self._known_keys(s, terminal.id)
        if all(k.key_id != kid for k in keys):
            keys = self._known_keys(s, terminal.id, refresh=True)
        if not keys:  # registered before keys were kept: its one key
            return envelope.public_key_from_pem(terminal.public_key)
        return _pick_key(keys, chain, kid)

    def _check_rotation(self, s: Session, terminal: Terminal, rec: Record) -> tuple[str, str, str] | None:
        """A key-rotation genesis: signed by the new key it carries, vouched for by the key of the previous chain."""
        try:
            new_key = envelope.public_key_from_pem(str(rec.body["public_key"]))
            envelope.verify(rec.envelope, new_key)
        except ProtocolError as exc:
            return exc.reason, ALARM_BAD_SIGNATURE, str(exc)
        try:
            vouch, vouch_env = KeyVouch.parse(str(rec.body.get("vouch", "")))
        except ProtocolError as exc:
            return "bad_vouch", ALARM_BAD_VOUCH, str(exc)
        if (vouch.terminal, vouch.chain, vouch.new_key_id) != (terminal.id, rec.chain, envelope.key_id(new_key)):
            return "bad_vouch", ALARM_BAD_VOUCH, "the vouch names another terminal, chain or key"
        old = [k for k in self._known_keys(s, terminal.id, refresh=True) if k.from_chain <= vouch.previous_chain]
        if not old or old[-1].key_id != vouch_env.kid:
            return "bad_vouch", ALARM_BAD_VOUCH, "the vouch is not signed by the key of the previous chain"
        try:
            envelope.verify(vouch_env, old[-1].key)
        except ProtocolError as exc:
            return "bad_vouch", ALARM_BAD_VOUCH, str(exc)
        return None

    def _adopt_rotated_key(self, s: Session, terminal: Terminal, rec: Record, now: datetime) -> None:
        vouch, _ = KeyVouch.parse(str(rec.body["vouch"]))
        pem = envelope.public_key_to_pem(envelope.public_key_from_pem(str(rec.body["public_key"])))
        if s.scalar(select(TerminalKey).where(TerminalKey.terminal_id == terminal.id,
                                              TerminalKey.key_id == vouch.new_key_id)) is None:  # fmt: skip
            s.add(TerminalKey(terminal_id=terminal.id, key_id=vouch.new_key_id, public_key=pem, from_chain=rec.chain,
                              added_at=now, vouch=str(rec.body["vouch"])))  # fmt: skip
        if rec.chain >= max((k.from_chain for k in self._known_keys(s, terminal.id)), default=0):
            terminal.public_key, terminal.key_id = pem, vouch.new_key_id
        previous = _chain_row(s, terminal, vouch.previous_chain)
        previous.closed_after_seq = vouch.last_seq
        self._keys.pop(terminal.id, None)
        self._alarm(s, terminal.id, ALARM_KEY_ROTATION, {"chain": rec.chain, "new_key_id": vouch.new_key_id,
                                                        "previous_chain": vouch.previous_chain,
                                                        "last_seq": vouch.last_seq})  # fmt: skip

    # ------------------------------------------------------------------ chains
    def _advance_chain(self, s: Session, terminal: Terminal, rec: Record, h: str, now: datetime, ctx: _Batch) -> None:
        """The genesis is noted at once; ``max_seq`` and the gap are brought up to date in :meth:`_store_batch`."""
        chain = ctx.chains.get(rec.chain)
        if chain is None:
            chain = ctx.chains[rec.chain] = _chain_row(s, terminal, rec.chain)
        if rec.kind is RecordKind.GENESIS:
            chain.genesis_hash = h
            if rec.chain > 1:
                self._alarm(
                    s,
                    terminal.id,
                    ALARM_NEW_CHAIN,
                    {
                        "chain": rec.chain,
                        "hash": h,
                        "reason": rec.body.get("reason"),
                        "previous_chain": rec.body.get("previous_chain"),
                    },
                )
        ctx.advanced[chain] = max(ctx.advanced.get(chain, -1), rec.seq)

    def due_resends(self, now: datetime) -> list[tuple[str, Command]]:
        """Resend commands for chains whose gap has lasted past the grace period (at most one per grace period)."""
        out: list[tuple[str, Command]] = []
        with self._sf() as s, s.begin():
            cutoff = now - self.resend_grace
            chains = s.scalars(select(Chain).where(Chain.gap_since.is_not(None), Chain.gap_since <= cutoff)).all()
            for chain in chains:
                if chain.last_resend_at is not None and chain.last_resend_at > cutoff:
                    continue
                hole = _first_hole(s, chain)
                if hole is None:
                    chain.gap_since = None
                    continue
                out.append((chain.terminal_id, Command.resend(chain.chain, hole[0], hole[1])))
                chain.last_resend_at = now
        return out

    # ------------------------------------------------------------------ notices
    def handle_notice(self, topic: str, payload: bytes) -> bool:
        """A signed lost notice: alarm ``lost_records`` and stop chasing that range. True when accepted."""
        topic_terminal = topics.terminal_of(topic)
        try:
            notice, env = LostNotice.parse(payload)
        except ProtocolError as exc:
            self._count(exc.reason)
            return False
        now = self._clock()
        with self._sf() as s, s.begin():
            terminal = s.get(Terminal, notice.terminal)
            if notice.terminal != topic_terminal:
                _bump(s, "terminal_mismatch")
                self._alarm(s, topic_terminal, ALARM_FOREIGN_PUBLISH, {"notice_claims": notice.terminal})
                return False
            if terminal is None or terminal.status != TERMINAL_ACTIVE:
                _bump(s, "unknown_terminal")
                self._alarm(s, notice.terminal, ALARM_UNKNOWN_TERMINAL, {"notice": "lost"})
                return False
            try:
                key = self._key_for(s, terminal, notice.chain, env.kid)
                if key is None:
                    raise BadSignature("notice signed by an unknown key", "unknown_key")
                envelope.verify(env, key)
            except ProtocolError as exc:
                _bump(s, exc.reason)
                self._alarm(s, terminal.id, ALARM_BAD_SIGNATURE, {"notice": "lost", "error": str(exc)})
                return False
            self._alarm(
                s,
                terminal.id,
                ALARM_LOST_RECORDS,
                {
                    "chain": notice.chain,
                    "from_seq": notice.from_seq,
                    "to_seq": notice.to_seq,
                    "reason": notice.reason,
                    "notice": payload.decode("ascii"),
                },
            )
            chain = _chain_row(s, terminal, notice.chain)
            chain.lost_ranges = [*chain.lost_ranges, [notice.from_seq, notice.to_seq]]
            _recompute_gap(s, chain, now)
        return True

    # ------------------------------------------------------------------ derived rows
    def _derive(self, s: Session, rec: Record, ctx: _Batch) -> None:
        """Sessions and minutes of a stored record. Reads nothing from the database: the batch's sessions were loaded
        by :meth:`_prefetch`, new ones are created in memory (inserted with the batch's flush) and the minute rows
        are inserted at once by :meth:`_store_batch`."""
        key = _session_key(rec)
        if key is None:
            return
        ts = _batch_session(s, ctx, rec.terminal, key)
        ctx.touched[id(ts)] = ts
        body = rec.body
        if rec.kind is RecordKind.STUDENT_LOGIN:
            ts.student_id, ts.coach_id, ts.course = body["student"], body["coach"], body["course"]
            ts.login_chain, ts.login_seq, ts.started_at = rec.chain, rec.seq, rec.at
        elif rec.kind is RecordKind.STUDENT_LOGOUT:
            ts.student_id = ts.student_id or body["student"]
            ts.coach_id = ts.coach_id or body["coach"]
            ts.logout_chain, ts.logout_seq, ts.ended_at = rec.chain, rec.seq, rec.at
            minutes = body.get("minutes")
            ts.declared_minutes = minutes if isinstance(minutes, int) and not isinstance(minutes, bool) else None
        elif rec.kind is RecordKind.MINUTE:
            if ts.student_id is None:  # the login has not arrived yet
                ts.student_id, ts.coach_id, ts.course = body["student"], body["coach"], body["course"]
            ts.minutes_count += 1
            ctx.new_minutes.append(
                (
                    ts,
                    {
                        "record_no": body["record_no"],
                        "terminal_id": rec.terminal,
                        "chain": rec.chain,
                        "seq": rec.seq,
                        "session_id": None,  # filled in once the session row has its id
                        "student_id": body["student"],
                        "coach_id": body["coach"],
                        "course": body["course"],
                        "part": CourseCode.parse(body["course"]).part,
                        "start": rec.at,
                        "facts": minute_facts_json(rec),
                        "valid": None,
                        "reasons": [],
                        "judged_at": None,
                        "status": MINUTE_UNJUDGED,
                        "track_hash": track_fingerprint(body.get("fixes"), body["distance_m"]),
                    },
                )
            )
        # a face check of the session (a photo of it): only touched, its photo windows and face re-checks are
        # judged again after commit

    # ------------------------------------------------------------------ alarms and counters
    def _alarm(self, s: Session, terminal: str | None, kind: str, detail: dict[str, Any]) -> None:
        log.warning("alarm %s on terminal %s: %s", kind, terminal, json.dumps(detail)[:300])
        s.add(Alarm(kind=kind, terminal_id=terminal, detail=detail, at=self._clock(), acknowledged=False))

    def _alarm_now(self, terminal: str | None, kind: str, detail: dict[str, Any]) -> None:
        with self._sf() as s, s.begin():
            self._alarm(s, terminal, kind, detail)

    def _count(self, reason: str) -> None:
        with self._sf() as s, s.begin():
            _bump(s, reason)


def minute_facts_json(rec: Record) -> dict[str, Any]:
    """The facts the minute audit needs, as stored in ``minutes.facts`` (see :func:`server.ledger.facts_of`)."""
    body = rec.body
    vehicle = body.get("vehicle")
    face = body.get("face")
    rpm = vehicle.get("rpm") if isinstance(vehicle, dict) else None
    speed = vehicle.get("speed") if isinstance(vehicle, dict) else None
    readings = vehicle.get("speed_readings") if isinstance(vehicle, dict) else None
    return {
        "max_speed": body["max_speed"],
        "distance_m": body["distance_m"],
        "fix_count": body["fix_count"],
        "fix30": body["fix30"],
        "rpm": rpm if isinstance(rpm, int) and not isinstance(rpm, bool) else None,
        "face_result": face.get("result") if isinstance(face, dict) else None,
        "vehicle_speed": speed if isinstance(speed, int) and not isinstance(speed, bool) else None,
        "speed_readings": readings if isinstance(readings, int) and not isinstance(readings, bool) else None,
        **({"vin": vehicle["vin"]} if isinstance(vehicle, dict) and isinstance(vehicle.get("vin"), str) else {}),
    }


def _bump(s: Session, reason: str) -> None:
    row = s.get(Rejection, reason)
    if row is None:
        s.add(Rejection(reason=reason, count=1))
    else:
        row.count += 1


#: A record of a batch, read before any transaction: its bytes, its chain hash, and the parsed record or why not.
_Parsed = tuple[bytes, str, "Record | ProtocolError"]


def _parse(raw: bytes) -> _Parsed:
    try:
        return raw, record_hash(raw), parse_record(raw)
    except ProtocolError as exc:
        return raw, record_hash(raw), exc


def _pick_key(keys: list[KnownKey], chain: int, kid: str) -> envelope.PublicKey | None:
    """The newest key whose first chain is ≤ ``chain``; None for a chain past every known key's first chain signed by
    a key the server does not know (a rotation not seen yet)."""
    if chain > keys[-1].from_chain and all(k.key_id != kid for k in keys):
        return None
    valid = [k for k in keys if k.from_chain <= chain] or keys[:1]
    return valid[-1].key  # a mismatching kid is refused by verify() with reason unknown_key


def _chain_row(s: Session, terminal: Terminal, chain_no: int) -> Chain:
    """The chain's bookkeeping row, created empty on its first record (or notice)."""
    chain = s.get(Chain, (terminal.id, chain_no))
    if chain is None:
        chain = Chain(terminal_id=terminal.id, chain=chain_no, key_id=terminal.key_id, genesis_hash=None,
                      contiguous_seq=-1, max_seq=-1, gap_since=None, last_resend_at=None, lost_ranges=[])  # fmt: skip
        s.add(chain)
    return chain


def _session_key(rec: Record) -> str | None:
    """The session a record's derived rows belong to, or None (the record derives nothing)."""
    kind = rec.kind
    if kind is RecordKind.MINUTE or kind is RecordKind.STUDENT_LOGIN or kind is RecordKind.STUDENT_LOGOUT:
        return str(rec.body["session"])
    if kind is RecordKind.FACE_CHECK:
        session = rec.body.get("session")
        return session if isinstance(session, str) else None
    return None


def _batch_session(s: Session, ctx: _Batch, terminal: str, session: str) -> TrainingSession:
    """The session's row from the batch's prefetch, or a new one (inserted with the batch's flush)."""
    row = ctx.session_rows.get(session)
    if row is None:
        row = TrainingSession(terminal_id=terminal, session=session, minutes_count=0, valid_minutes=0)
        s.add(row)
        ctx.session_rows[session] = row
    return row


def _session_row(s: Session, terminal: str, session: str) -> TrainingSession:
    """The session's row, created (and flushed, so that it has its id) when it does not exist yet (one query: for
    callers handling one record at a time, e.g. :mod:`server.ingest_jt808`)."""
    row = s.scalar(
        select(TrainingSession).where(TrainingSession.terminal_id == terminal, TrainingSession.session == session)
    )
    if row is None:
        row = TrainingSession(terminal_id=terminal, session=session, minutes_count=0, valid_minutes=0)
        s.add(row)
        s.flush()
    return row


def _is_lost(chain: Chain, seq: int) -> bool:
    return any(lo <= seq <= hi for lo, hi in chain.lost_ranges)


def _stored_seqs_above(s: Session, chain: Chain, seq: int) -> list[int]:
    return list(
        s.scalars(
            select(RawRecord.seq)
            .where(RawRecord.terminal_id == chain.terminal_id, RawRecord.chain == chain.chain, RawRecord.seq > seq)
            .order_by(RawRecord.seq)
        )
    )


def _recompute_gap(s: Session, chain: Chain, now: datetime) -> None:
    """Advance ``contiguous_seq``; set ``gap_since`` while a hole (not declared lost) lies below ``max_seq``."""
    above = _stored_seqs_above(s, chain, chain.contiguous_seq)
    for seq in above:
        if seq != chain.contiguous_seq + 1:
            break
        chain.contiguous_seq = seq
    if _first_hole(s, chain, above) is None:
        chain.gap_since = None
        chain.last_resend_at = None
    elif chain.gap_since is None:
        chain.gap_since = now


def _first_hole(s: Session, chain: Chain, above: list[int] | None = None) -> tuple[int, int] | None:
    """The first missing, not declared lost, range ``(from_seq, to_seq)`` below the highest stored seq."""
    if above is None:
        above = _stored_seqs_above(s, chain, chain.contiguous_seq)
    expected = chain.contiguous_seq + 1
    for seq in above:
        if seq > expected:
            for missing in range(expected, seq):
                if not _is_lost(chain, missing):
                    end = missing
                    while end + 1 < seq and not _is_lost(chain, end + 1):
                        end += 1
                    return missing, end
        expected = seq + 1
    return None


def _chain_seq_of(raw: bytes) -> tuple[int, int]:
    """Best-effort chain and seq of a record that did not parse (for the rejected ack result)."""
    try:
        payload = envelope.parse(raw).payload
    except ProtocolError:
        return 0, -1
    chain, seq = payload.get("chain"), payload.get("seq")
    ok = all(isinstance(x, int) and not isinstance(x, bool) for x in (chain, seq))
    return (chain, seq) if ok else (0, -1)  # type: ignore[return-value]


def _batch_id_of(payload: bytes) -> str:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return ""
    batch = obj.get("batch") if isinstance(obj, dict) else None
    return batch if isinstance(batch, str) and len(batch) <= 64 else ""
