"""The invariant checker: compares the terminals' record stores with the server's database, per terminal.

``python -m tools.invariants --agent-db A.sqlite [B.sqlite …] --database-url URL [--json]`` prints, per terminal:

- **produced**: records in the agent stores (every chain), and how many are minute records;
- **stored**: of those, how many the server holds with the very same bytes (same hash at the same chain and seq);
- **missing**: produced but not stored (``missing_acked``: of those, how many the agent already released as acked:
  the worst kind of loss);
- **duplicated**: server rows beyond one per (terminal, chain, seq), the same record hash stored twice, a minute
  record number stored twice, a minute row without its raw record, a stored record whose bytes differ from the
  agent's (``mismatched``);
- **chain breaks**: in the agent store or on the server, a hole in the sequence or a ``prev`` that does not name the
  hash of the record before it (the server's holes only count below the agent's acked records: a hole above them is
  simply not synced yet), and minute record numbers whose date is not the Beijing day of the minute or whose daily
  sequence repeats;
- **double counted**: the same record number counted in two minute rows, one student's same minute start counted
  valid twice (two sessions or two terminals), a session whose totals are not the count of its minutes, and (per
  student and part) an hour total that is not the number of valid minutes (``hour_totals``);
- **unjudged**: stored minutes that validation never judged (stored but never counted either way).

It only reads: agent stores are opened read-only, the server through a plain SQLAlchemy engine and SELECTs. Exit
status 0 when every count that must be zero is zero, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from firmware_protocols.errors import ProtocolError
from firmware_protocols.identifiers import RecordNumber, beijing_day
from firmware_protocols.records import GENESIS_PREV, parse_record, record_hash

#: Problem lines kept per terminal (the counts stay exact; the list only illustrates them).
MAX_PROBLEMS = 20
MINUTE = "minute"


@dataclass(frozen=True, slots=True)
class AgentRecord:
    terminal: str
    chain: int
    seq: int
    hash: str
    prev: str
    kind: str
    at: datetime
    status: str
    record_no: str | None
    raw_ok: bool  # the stored hash is the hash of the stored bytes


@dataclass
class TerminalReport:
    terminal: str
    produced: int = 0
    produced_minutes: int = 0
    stored: int = 0
    pending: int = 0
    missing: int = 0
    missing_acked: int = 0
    duplicated: int = 0
    mismatched: int = 0
    chain_breaks: int = 0
    double_counted: int = 0
    unjudged: int = 0
    server_only: int = 0  # on the server, in no agent store given (informational: e.g. a store not passed)
    problems: list[str] = field(default_factory=list)

    def problem(self, line: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(line)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.mismatched or self.chain_breaks or self.double_counted
                    or self.unjudged)  # fmt: skip


@dataclass
class Report:
    terminals: dict[str, TerminalReport] = field(default_factory=dict)
    hour_totals: list[str] = field(default_factory=list)  # (student, part) whose total ≠ its valid minutes
    integrity: dict[str, str] = field(default_factory=dict)  # agent store → PRAGMA integrity_check when not "ok"

    def of(self, terminal: str) -> TerminalReport:
        if terminal not in self.terminals:
            self.terminals[terminal] = TerminalReport(terminal)
        return self.terminals[terminal]

    def total(self, name: str) -> int:
        return sum(int(getattr(t, name)) for t in self.terminals.values())

    @property
    def missing(self) -> int:
        return self.total("missing")

    @property
    def duplicated(self) -> int:
        return self.total("duplicated") + self.total("mismatched")

    @property
    def double_counted(self) -> int:
        return self.total("double_counted") + len(self.hour_totals)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.terminals.values()) and not self.hour_totals and not self.integrity

    def summary(self) -> str:
        """One line: the figures the fault tests assert and print."""
        return (f"produced={self.total('produced')} stored={self.total('stored')} missing={self.missing} "
                f"duplicated={self.duplicated} chain_breaks={self.total('chain_breaks')} "
                f"double_counted={self.double_counted} unjudged={self.total('unjudged')}")  # fmt: skip

    def assert_clean(self) -> None:
        """Raise AssertionError with every problem when any invariant is broken."""
        if self.ok:
            return
        lines = [self.summary(), *[f"integrity {p}: {r}" for p, r in self.integrity.items()], *self.hour_totals]
        for t in self.terminals.values():
            lines += [f"{t.terminal}: {p}" for p in t.problems]
        raise AssertionError("invariants broken:\n  " + "\n  ".join(lines))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "terminals": {k: {**asdict(v), "ok": v.ok} for k, v in sorted(self.terminals.items())},
            "hour_totals": self.hour_totals,
            "integrity": self.integrity,
        }

    def table(self) -> str:
        cols = ("terminal", "produced", "stored", "missing", "duplicated", "chain_breaks", "double_counted",
                "unjudged")  # fmt: skip
        rows = [cols] + [
            (t.terminal, str(t.produced), str(t.stored), str(t.missing), str(t.duplicated + t.mismatched),
             str(t.chain_breaks), str(t.double_counted), str(t.unjudged))  # fmt: skip
            for t in sorted(self.terminals.values(), key=lambda t: t.terminal)
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        out += [f"hour total: {h}" for h in self.hour_totals]
        out += [f"integrity {p}: {r}" for p, r in self.integrity.items()]
        for t in self.terminals.values():
            out += [f"{t.terminal}: {p}" for p in t.problems]
        out.append("OK" if self.ok else "BROKEN")
        return "\n".join(out)


# --------------------------------------------------------------------------------------------------------- agent


def integrity_check(path: Path) -> str:
    """``PRAGMA integrity_check`` of an SQLite file ("ok" when sound)."""
    with _open_ro(path) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(r[0]) for r in rows)


def read_agent_store(path: Path) -> list[AgentRecord]:
    """Every record of one agent store, in chain order, parsed from its signed bytes."""
    with _open_ro(path) as conn:
        rows = conn.execute("SELECT chain, seq, hash, raw, status FROM records ORDER BY chain, seq").fetchall()
    out = []
    for chain, seq, digest, raw, status in rows:
        raw = bytes(raw)
        try:
            rec = parse_record(raw)
        except ProtocolError:
            out.append(AgentRecord("?", int(chain), int(seq), str(digest), "", "?", datetime.min.replace(tzinfo=UTC),
                                   str(status), None, False))  # fmt: skip
            continue
        no = rec.body.get("record_no")
        out.append(AgentRecord(rec.terminal, int(chain), int(seq), str(digest), rec.prev, str(rec.kind), rec.at,
                               str(status), no if isinstance(no, str) else None,
                               record_hash(raw) == digest and (rec.chain, rec.seq) == (chain, seq)))  # fmt: skip
    return out


def _open_ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(path)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _check_agent_chain(t: TerminalReport, records: Sequence[AgentRecord]) -> None:
    by_chain: dict[int, list[AgentRecord]] = defaultdict(list)
    for r in records:
        by_chain[r.chain].append(r)
    for chain, rows in by_chain.items():
        prev_hash: str | None = None
        for expected, r in enumerate(sorted(rows, key=lambda r: r.seq)):
            if not r.raw_ok:
                t.chain_breaks += 1
                t.problem(f"agent {chain}/{r.seq}: stored hash or position does not match the signed bytes")
            if r.seq != expected:
                t.chain_breaks += 1
                t.problem(f"agent chain {chain}: seq {r.seq} where {expected} was expected (hole)")
                prev_hash = r.hash
                break
            want = GENESIS_PREV if r.seq == 0 else prev_hash
            if r.prev != want:
                t.chain_breaks += 1
                t.problem(f"agent {chain}/{r.seq}: prev does not name the record before it")
            prev_hash = r.hash
    _check_record_numbers(t, [(r.record_no, r.at) for r in records if r.kind == MINUTE], "agent")


def _check_record_numbers(t: TerminalReport, minutes: Iterable[tuple[str | None, datetime]], side: str) -> None:
    """Record numbers carry the Beijing day of the minute, and each (day, sequence) is used once."""
    seen: Counter[tuple[str, int]] = Counter()
    for no, at in minutes:
        try:
            parsed = RecordNumber.parse(no)
        except ProtocolError:
            t.chain_breaks += 1
            t.problem(f"{side}: minute without a valid record number ({no!r})")
            continue
        if parsed.day != beijing_day(at):
            t.chain_breaks += 1
            t.problem(f"{side}: record number {no} is dated {parsed.day}, its minute starts on {beijing_day(at)}")
        seen[(parsed.day.isoformat(), parsed.sequence)] += 1
    for (day, n), count in seen.items():
        if count > 1:
            t.double_counted += count - 1
            t.problem(f"{side}: daily sequence {day}/{n} used by {count} minutes")


# --------------------------------------------------------------------------------------------------------- server


def check(agent_dbs: Iterable[Path], database_url: str, terminals: Iterable[str] | None = None) -> Report:
    """Compare ``agent_dbs`` with the server database at ``database_url``. ``terminals`` limits the server side (by
    default: the terminals found in the agent stores, or every terminal when no store is given)."""
    report = Report()
    produced: dict[str, dict[tuple[int, int], AgentRecord]] = defaultdict(dict)
    for path in agent_dbs:
        result = integrity_check(path)
        if result != "ok":
            report.integrity[str(path)] = result
        records = read_agent_store(path)
        for terminal in sorted({r.terminal for r in records}):
            _check_agent_chain(report.of(terminal), [r for r in records if r.terminal == terminal])
        for r in records:
            t = report.of(r.terminal)
            if (r.chain, r.seq) in produced[r.terminal]:
                t.duplicated += 1
                t.problem(f"agent {r.chain}/{r.seq} is in two stores")
            produced[r.terminal][(r.chain, r.seq)] = r
            t.produced += 1
            t.produced_minutes += r.kind == MINUTE
            t.pending += r.status == "pending"
    wanted = set(terminals) if terminals is not None else set(produced)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            _check_server(report, conn, produced, wanted or None)
    finally:
        engine.dispose()
    return report


def _rows(conn: Any, sql: str, **params: Any) -> list[Any]:
    return list(conn.execute(text(sql), params).all())


def _check_server(report: Report, conn: Any, produced: dict[str, dict[tuple[int, int], AgentRecord]],
                  wanted: set[str] | None) -> None:  # fmt: skip
    def keep(terminal: str) -> bool:
        return wanted is None or terminal in wanted

    raw = [r for r in _rows(conn, "SELECT terminal_id, chain, seq, hash, prev FROM raw_records") if keep(r[0])]
    per_position: Counter[tuple[str, int, int]] = Counter((r[0], r[1], r[2]) for r in raw)
    per_hash: Counter[str] = Counter(r[3] for r in raw)
    server: dict[str, dict[tuple[int, int], tuple[str, str]]] = defaultdict(dict)
    for terminal, chain, seq, digest, prev in raw:
        server[terminal][(chain, seq)] = (digest, prev)
    for (terminal, chain, seq), n in per_position.items():
        if n > 1:
            report.of(terminal).duplicated += n - 1
            report.of(terminal).problem(f"server holds {chain}/{seq} {n} times")
    for terminal, chain, seq, digest, _prev in raw:
        if per_hash[digest] > 1 and per_position[(terminal, chain, seq)] == 1:
            report.of(terminal).duplicated += 1
            report.of(terminal).problem(f"server holds the bytes of {chain}/{seq} under another position too")

    for terminal in sorted(set(produced) | set(server)):
        t = report.of(terminal)
        mine, theirs = produced.get(terminal, {}), server.get(terminal, {})
        for key, rec in mine.items():
            got = theirs.get(key)
            if got is None:
                t.missing += 1
                t.missing_acked += rec.status == "acked"
                t.problem(f"{key[0]}/{key[1]} ({rec.kind}, {rec.status} on the agent) is not on the server")
            elif got[0] != rec.hash:
                t.mismatched += 1
                t.problem(f"{key[0]}/{key[1]}: the server holds other bytes than the agent signed")
            else:
                t.stored += 1
        t.server_only += sum(1 for key in theirs if key not in mine)
        _check_server_chain(t, theirs, mine)

    minutes = [m for m in _rows(conn, "SELECT record_no, terminal_id, chain, seq, session_id, student_id, part, start,"
                                      " valid FROM minutes") if keep(m[1])]  # fmt: skip
    per_no: Counter[str] = Counter(m[0] for m in minutes)
    for no, n in per_no.items():
        if n > 1:
            terminal = next(m[1] for m in minutes if m[0] == no)
            report.of(terminal).double_counted += n - 1
            report.of(terminal).problem(f"record number {no} counted in {n} minute rows")
    valid_at: dict[tuple[str, datetime], list[Any]] = defaultdict(list)
    for m in minutes:
        t = report.of(m[1])
        if (m[2], m[3]) not in server.get(m[1], {}):
            t.duplicated += 1
            t.problem(f"minute {m[0]} has no raw record at {m[2]}/{m[3]}")
        if m[8] is None:
            t.unjudged += 1
            t.problem(f"minute {m[0]} stored but never judged")
        elif m[8]:
            valid_at[(m[5], _aware(m[7]))].append(m)
    for (student, start), ms in valid_at.items():
        if len(ms) > 1:
            t = report.of(ms[0][1])
            t.double_counted += len(ms) - 1
            t.problem(f"student {student}'s minute at {start.isoformat()} counted valid {len(ms)} times "
                      f"({', '.join(sorted(m[0] for m in ms))})")  # fmt: skip
    _check_record_numbers_server(report, minutes)
    _check_sessions(report, conn, minutes, keep)
    _check_hour_totals(report, conn, minutes)


def _check_server_chain(t: TerminalReport, theirs: dict[tuple[int, int], tuple[str, str]],
                        mine: dict[tuple[int, int], AgentRecord]) -> None:  # fmt: skip
    """Hash links between stored neighbours; holes below the agent's highest acked record of the chain."""
    acked_top: dict[int, int] = defaultdict(lambda: -1)
    for (chain, seq), rec in mine.items():
        if rec.status == "acked":
            acked_top[chain] = max(acked_top[chain], seq)
    by_chain: dict[int, list[int]] = defaultdict(list)
    for chain, seq in theirs:
        by_chain[chain].append(seq)
    for chain, seqs in by_chain.items():
        present = set(seqs)
        for seq in sorted(seqs):
            digest, prev = theirs[(chain, seq)]
            if seq == 0 and prev != GENESIS_PREV:
                t.chain_breaks += 1
                t.problem(f"server {chain}/0: a genesis whose prev is not the genesis marker")
            before = theirs.get((chain, seq - 1))
            if before is not None and before[0] != prev:
                t.chain_breaks += 1
                t.problem(f"server {chain}/{seq}: prev does not name the stored record {chain}/{seq - 1}")
        holes = [s for s in range(0, acked_top[chain] + 1) if s not in present]
        if holes:
            t.chain_breaks += len(holes)
            t.problem(f"server chain {chain}: {len(holes)} hole(s) below the agent's acked records, first {holes[0]}")


def _check_record_numbers_server(report: Report, minutes: list[Any]) -> None:
    by_terminal: dict[str, list[tuple[str | None, datetime]]] = defaultdict(list)
    for m in minutes:
        by_terminal[m[1]].append((m[0], _aware(m[7])))
    for terminal, rows in by_terminal.items():
        t = report.of(terminal)
        before = t.double_counted
        _check_record_numbers(t, rows, "server")
        if t.double_counted > before:  # the same daily number twice on the server is a duplicate, not a count
            t.duplicated += t.double_counted - before
            t.double_counted = before


def _check_sessions(report: Report, conn: Any, minutes: list[Any], keep: Any) -> None:
    count: Counter[int] = Counter(m[4] for m in minutes)
    valid: Counter[int] = Counter(m[4] for m in minutes if m[8])
    judged_sessions = {m[4] for m in minutes if m[8] is not None}
    for sid, terminal, minutes_count, valid_minutes in _rows(
        conn, "SELECT id, terminal_id, minutes_count, valid_minutes FROM sessions"
    ):
        if not keep(terminal):
            continue
        t = report.of(terminal)
        if minutes_count != count[sid]:
            t.double_counted += abs(minutes_count - count[sid])
            t.problem(f"session {sid} says {minutes_count} minutes, {count[sid]} are stored")
        if sid in judged_sessions and valid_minutes != valid[sid]:
            t.double_counted += abs(valid_minutes - valid[sid])
            t.problem(f"session {sid} says {valid_minutes} valid minutes, {valid[sid]} are valid")


def _check_hour_totals(report: Report, conn: Any, minutes: list[Any]) -> None:
    """Per student and part: the hour total is the number of valid minutes (every terminal's, each once)."""
    students = {m[5] for m in minutes}
    if not students:
        return
    valid: Counter[tuple[str, int]] = Counter()
    for student, part, ok in _rows(conn, "SELECT student_id, part, valid FROM minutes"):
        if ok and student in students:
            valid[(student, part)] += 1
    enrolled = {r[0] for r in _rows(conn, "SELECT id FROM students")}
    totals = {(r[0], r[1]): r[2] for r in _rows(conn, "SELECT student_id, part, valid_minutes FROM hour_totals")}
    for key in sorted(set(valid) | {k for k in totals if k[0] in students}):
        if key[0] not in enrolled:
            continue
        have = totals.get(key, 0)
        if have != valid[key]:
            report.hour_totals.append(f"student {key[0]} part {key[1]}: hour total {have} ≠ {valid[key]} valid "
                                      "minutes")  # fmt: skip


def _aware(value: Any) -> datetime:
    t: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


# --------------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.invariants", description=__doc__.split("\n\n")[0])
    p.add_argument("--agent-db", type=Path, nargs="*", default=[], help="agent record stores (records.sqlite)")
    p.add_argument("--database-url", required=True, help="the server's database URL")
    p.add_argument("--terminal", action="append", help="only these terminals (default: those in the stores)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = p.parse_args(argv)
    report = check(args.agent_db, args.database_url, args.terminal)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))  # noqa: T201 - CLI output
    else:
        print(report.table())  # noqa: T201 - CLI output
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
