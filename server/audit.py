"""Re-verify a terminal's stored evidence: every raw record against the key history, and every hash link.

Revoking a terminal or rotating its key never makes its earlier records unverifiable: the keys stay in
``terminal_keys`` with the first chain each signs, and this audit proves it on demand.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from firmware_protocols import envelope
from firmware_protocols.errors import ProtocolError
from firmware_protocols.records import GENESIS_PREV, parse_record, record_hash
from server.models import RawRecord, Terminal, TerminalKey

MAX_FAILURES_LISTED = 100


def audit_terminal(s: Session, terminal_id: str) -> dict[str, Any] | None:
    terminal = s.get(Terminal, terminal_id)
    if terminal is None:
        return None
    keys = list(s.scalars(select(TerminalKey).where(TerminalKey.terminal_id == terminal_id)
                          .order_by(TerminalKey.from_chain)))  # fmt: skip
    public = [(k.from_chain, k.key_id, envelope.public_key_from_pem(k.public_key)) for k in keys]
    if not public:
        public = [(1, terminal.key_id, envelope.public_key_from_pem(terminal.public_key))]
    failures: list[dict[str, Any]] = []
    verified = total = 0
    previous: tuple[int, int, str] | None = None
    rows = s.execute(select(RawRecord.chain, RawRecord.seq, RawRecord.raw).where(RawRecord.terminal_id == terminal_id)
                     .order_by(RawRecord.chain, RawRecord.seq))  # fmt: skip
    for chain, seq, raw in rows:
        problem = None
        total += 1
        try:
            rec = parse_record(raw)
            key = [k for k in public if k[0] <= chain] or public[:1]
            envelope.verify(rec.envelope, key[-1][2])  # the newest key whose first chain is ≤ this chain
            if seq == 0 and rec.prev != GENESIS_PREV:
                problem = "genesis_prev"
            elif previous is not None and previous[:2] == (chain, seq - 1) and rec.prev != previous[2]:
                problem = "chain_break"
        except ProtocolError as exc:
            problem = exc.reason
        if problem is None:
            verified += 1
        elif len(failures) < MAX_FAILURES_LISTED:
            failures.append({"chain": chain, "seq": seq, "problem": problem})
        previous = (chain, seq, record_hash(raw))
    return {"terminal": terminal_id, "status": terminal.status, "keys": [k[1] for k in public], "records": total,
            "verified": verified, "failures": failures}  # fmt: skip

