"""The contract's test vectors: the bytes, hashes and messages of CONTRACT.md, reproduced and verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_protocols import envelope
from firmware_protocols.errors import BadSignature, LocalProtocolError, MalformedMessage, UnsupportedVersion
from firmware_protocols.identifiers import CourseCode, RecordNumber
from firmware_protocols.messages import Ack, Command, LostNotice, RecordBatch
from firmware_protocols.records import GENESIS_PREV, RecordKind, parse_record, record_hash, sign_record

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "firmware_protocols" / "vectors" / "records_v1.json").read_text("utf-8")
)
KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["ed25519_seed_hex"]))


def test_signing_the_payloads_reproduces_the_vector_bytes() -> None:
    for rec in VECTORS["records"]:
        assert sign_record(rec["payload"], KEY).decode() == rec["compact"]


def test_vectors_verify_and_chain() -> None:
    pub = envelope.public_key_from_pem(VECTORS["public_key_pem"])
    assert envelope.key_id(pub) == VECTORS["key_id"]
    prev = GENESIS_PREV
    for seq, rec in enumerate(VECTORS["records"]):
        r = parse_record(rec["compact"])
        envelope.verify(r.envelope, pub)
        assert (r.seq, r.prev, r.hash) == (seq, prev, rec["hash"])
        assert record_hash(r.raw) == rec["hash"]
        prev = r.hash
    assert parse_record(VECTORS["records"][0]["compact"]).kind is RecordKind.GENESIS


def test_minute_vector_fields() -> None:
    m = parse_record(VECTORS["records"][3]["compact"])
    assert m.kind is RecordKind.MINUTE
    number = RecordNumber.parse(m.body["record_no"])
    assert (number.terminal, number.day.isoformat(), number.sequence) == (VECTORS["terminal"], "2026-11-27", 1)
    course = CourseCode.parse(m.body["course"])
    assert (course.mode, course.licence_class, course.part, course.item) == (1, "C1", 2, 13)


def test_minute_with_the_optional_vin_chains_on_and_verifies() -> None:
    rec = VECTORS["minute_with_vin"]
    assert sign_record(rec["payload"], KEY).decode() == rec["compact"]
    m = parse_record(rec["compact"])
    envelope.verify(m.envelope, envelope.public_key_from_pem(VECTORS["public_key_pem"]))
    assert (m.seq, m.prev, m.hash) == (len(VECTORS["records"]), VECTORS["records"][-1]["hash"], rec["hash"])
    assert m.body["vehicle"]["vin"] == "LSVAU218XN2183294"
    # the field is optional: the minute of ``records`` has none, and null says the same
    assert "vin" not in parse_record(VECTORS["records"][3]["compact"]).body["vehicle"]
    payload = {
        **rec["payload"],
        "body": {**rec["payload"]["body"], "vehicle": {"rpm": 1, "speed": 0, "ignition": True, "vin": None}},
    }
    assert parse_record(envelope.sign(payload, KEY, "jiapei.record.v1")).body["vehicle"]["vin"] is None


@pytest.mark.parametrize("vin", ["LSVAU218XN218329", "LSVAU218XN21832945", "LSVAU218XN218329O", "lsvau218xn2183294",
                                 "LSVAU218XN218329\n", 17, ""])  # fmt: skip
def test_minutes_with_a_malformed_vin_are_refused(vin: object) -> None:
    payload = dict(VECTORS["minute_with_vin"]["payload"])
    payload["body"] = {**payload["body"], "vehicle": {"rpm": 1700, "speed": 160, "ignition": True, "vin": vin}}
    with pytest.raises(MalformedMessage) as exc:
        parse_record(envelope.sign(payload, KEY, "jiapei.record.v1"))
    assert exc.value.reason == "bad_vin"


def test_an_edited_record_does_not_verify() -> None:
    pub = envelope.public_key_from_pem(VECTORS["public_key_pem"])
    h, p, s = VECTORS["records"][3]["compact"].split(".")
    payload = json.loads(envelope.b64url_decode(p))
    payload["body"]["distance_m"] = 9999
    forged = f"{h}.{envelope.b64url_encode(envelope.canonical_json(payload))}.{s}"
    with pytest.raises(BadSignature):
        envelope.verify(parse_record(forged).envelope, pub)


def test_another_key_does_not_verify() -> None:
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(BadSignature) as exc:
        envelope.verify(parse_record(VECTORS["records"][1]["compact"]).envelope, other)
    assert exc.value.reason == "unknown_key"


def test_messages_round_trip() -> None:
    batch = RecordBatch.decode(VECTORS["batch"].encode())
    assert batch.encode().decode() == VECTORS["batch"]
    assert [r.decode() for r in batch.records] == [r["compact"] for r in VECTORS["records"]]
    ack = Ack.decode(VECTORS["ack"].encode())
    assert ack.encode().decode() == VECTORS["ack"]
    assert [r.hash for r in ack.results] == [r["hash"] for r in VECTORS["records"]]
    cmd = Command.decode(VECTORS["resend_command"].encode())
    assert cmd.args == {"chain": 1, "from_seq": 4, "to_seq": None}
    notice, env = LostNotice.parse(VECTORS["lost_notice"].encode())
    envelope.verify(env, KEY.public_key())
    assert (notice.chain, notice.from_seq, notice.to_seq) == (1, 4, 9)


@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (b"", MalformedMessage, "bad_envelope"),
        (b"a.b", MalformedMessage, "bad_envelope"),
        (b"!!.??.##", MalformedMessage, "bad_base64"),
        (b"x" * 20000, MalformedMessage, "too_large"),
        ("é.é.é".encode(), MalformedMessage, "bad_envelope"),
    ],
)
def test_broken_envelopes_are_refused_with_a_reason(raw: bytes, error: type[Exception], reason: str) -> None:
    with pytest.raises(error) as exc:
        parse_record(raw)
    assert exc.value.reason == reason  # type: ignore[attr-defined]


def test_unknown_version_and_floats() -> None:
    payload = dict(VECTORS["records"][1]["payload"], v=2)
    with pytest.raises(UnsupportedVersion):
        parse_record(envelope.sign(payload, KEY, "jiapei.record.v1"))
    with pytest.raises(LocalProtocolError):
        envelope.canonical_json({"lat": 35.4})


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[]", b'{"v":2}', b'{"v":1,"terminal":"short","batch":"b","records":["x"]}',
     b'{"v":1,"terminal":"3710000000000001","batch":"b","records":[]}'],
)  # fmt: skip
def test_malformed_batches_are_refused(data: bytes) -> None:
    with pytest.raises((MalformedMessage, UnsupportedVersion)):
        RecordBatch.decode(data)


@pytest.mark.parametrize(
    "change", [{"chain": "1"}, {"from_seq": None}, {"to_seq": True}, {"reason": None}, {"kind": "found"}, {"v": 2}]
)
def test_lost_notices_with_loose_fields_are_refused(change: dict[str, object]) -> None:
    env = envelope.parse(VECTORS["lost_notice"])
    payload = {**env.payload, **change}
    with pytest.raises((MalformedMessage, UnsupportedVersion)):
        LostNotice.parse(envelope.sign(payload, KEY, "jiapei.lost.v1"))


def test_login_records_with_bad_people_ids_are_refused() -> None:
    payload = dict(VECTORS["records"][2]["payload"])
    payload["body"] = {**payload["body"], "student": "not-an-id"}
    with pytest.raises(MalformedMessage) as exc:
        parse_record(envelope.sign(payload, KEY, "jiapei.record.v1"))
    assert exc.value.reason == "bad_student"


def test_a_third_party_jose_library_verifies_the_records() -> None:
    """Anyone with the public key can check a record without jiapei: here joserfc, an independent JOSE library."""
    from joserfc import jws
    from joserfc.jwk import OKPKey

    key = OKPKey.import_key(VECTORS["public_key_pem"])
    for rec in VECTORS["records"]:
        verified = jws.deserialize_compact(rec["compact"], key, algorithms=["Ed25519"])
        assert json.loads(verified.payload) == rec["payload"]
    h, p, s = VECTORS["records"][3]["compact"].split(".")
    with pytest.raises(Exception, match="(?i)signature"):
        jws.deserialize_compact(f"{h}.{envelope.b64url_encode(b'{}')}.{s}", key, algorithms=["Ed25519"])


def test_rs256_records_of_nationally_provisioned_terminals() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc import jws
    from joserfc.jwk import RSAKey

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw = sign_record(VECTORS["records"][1]["payload"], key)
    rec = parse_record(raw)
    assert rec.envelope.alg == "RS256"
    envelope.verify(rec.envelope, key.public_key())
    pem = envelope.public_key_to_pem(key.public_key())
    jws.deserialize_compact(raw.decode(), RSAKey.import_key(pem), algorithms=["RS256"])
    with pytest.raises(BadSignature):  # an Ed25519 terminal key does not accept an RS256 record
        envelope.verify(rec.envelope, KEY.public_key())
