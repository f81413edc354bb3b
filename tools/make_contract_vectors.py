"""Regenerate firmware_protocols/vectors/records_v1.json, the contract's test vectors.

Ed25519 is deterministic, so the same key and payloads always give the same bytes: the vectors pin the envelope,
the canonical encoding and the chain hash. Run: ``python -m tools.make_contract_vectors``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_protocols import envelope
from firmware_protocols.messages import Ack, AckResult, AckStatus, Command, LostNotice, RecordBatch
from firmware_protocols.records import GENESIS_PREV, RecordKind, build_payload, record_hash, sign_record

OUT = Path(__file__).resolve().parents[1] / "firmware_protocols" / "vectors" / "records_v1.json"
# RFC 8032 section 7.1, TEST 1 secret key: public, so anyone can reproduce these vectors.
SEED_HEX = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
TERMINAL = "3710000000000001"
STUDENT = "3711020000000101"
COACH = "3711020000000201"
#: The car's VIN in the optional ``vehicle.vin`` of a minute (a well-formed ISO 3779 VIN with a valid check digit).
VIN = "LSVAU218XN2183294"


def build() -> dict[str, Any]:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEED_HEX))
    pem = envelope.public_key_to_pem(key.public_key())
    t0 = datetime(2026, 11, 27, 0, 30, 0, tzinfo=UTC)  # 08:30 Beijing
    bodies: list[tuple[RecordKind, datetime, dict[str, Any]]] = [
        (RecordKind.GENESIS, t0, {"public_key": pem, "reason": "new", "previous_chain": None}),
        (RecordKind.COACH_LOGIN, t0.replace(minute=31), {"coach": COACH, "face": {"result": "pass", "distance": 312}}),
        (
            RecordKind.STUDENT_LOGIN,
            t0.replace(minute=32),
            {"student": STUDENT, "coach": COACH, "course": "1212130000", "session": f"{TERMINAL}-1-3",
             "face": {"result": "pass", "distance": 287}},
        ),
        (
            RecordKind.MINUTE,
            t0.replace(minute=33),
            {
                "record_no": f"{TERMINAL}2611270001",
                "student": STUDENT, "coach": COACH, "course": "1212130000", "session": f"{TERMINAL}-1-3",
                "max_speed": 182, "distance_m": 211, "fix_count": 60,
                "fix30": {"lat": 35420150, "lon": 119520310, "mode": 3, "sats": 9, "hdop": 9, "speed": 151,
                          "course": 87, "t": "2026-11-27T00:33:30Z"},
                "fixes": [[0, 35420101, 119520102, 120], [30, 35420150, 119520310, 151]],
                "vehicle": {"rpm": 1650, "speed": 150, "ignition": True},
                "face": {"result": "pass", "seq": 2},
            },
        ),
    ]  # fmt: skip
    records: list[dict[str, Any]] = []
    prev = GENESIS_PREV
    for seq, (kind, at, body) in enumerate(bodies):
        payload = build_payload(kind, TERMINAL, 1, seq, prev, at, body)
        raw = sign_record(payload, key)
        prev = record_hash(raw)
        records.append({"payload": payload, "compact": raw.decode("ascii"), "hash": prev})
    # The next minute of the chain from a car that reports its VIN (``vehicle.vin``, optional): kept apart from
    # ``records`` so that the batch and ack vectors stay what they were before the field existed.
    later = {**bodies[3][2], "record_no": f"{TERMINAL}2611270002",
             "vehicle": {"rpm": 1700, "speed": 160, "ignition": True, "vin": VIN}}  # fmt: skip
    payload = build_payload(RecordKind.MINUTE, TERMINAL, 1, len(records), prev, t0.replace(minute=34), later)
    raw = sign_record(payload, key)
    minute_with_vin = {"payload": payload, "compact": raw.decode("ascii"), "hash": record_hash(raw)}
    batch = RecordBatch(TERMINAL, "1-0-3", tuple(r["compact"].encode() for r in records))
    ack = Ack("1-0-3", tuple(AckResult(1, i, r["hash"], AckStatus.STORED) for i, r in enumerate(records)))
    lost = LostNotice(TERMINAL, 1, 4, 9, "database restored from backup without these records", t0.replace(hour=2))
    return {
        "about": "jiapei record contract v1 test vectors (see firmware_protocols/CONTRACT.md); regenerate with "
        "python -m tools.make_contract_vectors",
        "ed25519_seed_hex": SEED_HEX,
        "public_key_pem": pem,
        "key_id": envelope.key_id(key.public_key()),
        "terminal": TERMINAL,
        "records": records,
        "minute_with_vin": minute_with_vin,
        "batch": batch.encode().decode(),
        "ack": ack.encode().decode(),
        "resend_command": Command.resend(1, 4, None).encode().decode(),
        "lost_notice": lost.sign(key).decode(),
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
