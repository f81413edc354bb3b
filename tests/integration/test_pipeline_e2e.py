"""The whole pipeline with real parts: broker, server, exam simulator, one simulated car, one agent process.

Every record the agent committed reaches the server exactly once (same bytes), every minute is judged and counted
once, a completed part reaches the exam system traced to valid minutes, and a replay of everything changes nothing.
Runs on SQLite and on PostgreSQL (when one is reachable at 127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text

from firmware_protocols import topics
from firmware_protocols.messages import Ack, AckStatus, RecordBatch
from jiapei_cli.demo import Demo
from server.db import make_engine

pytestmark = pytest.mark.slow


def wait_for(what: str, predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)  # polling another process's database: there is no event to wait on
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def agent_rows(db: Path) -> list[tuple[int, int, str, bytes, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT chain, seq, hash, raw, kind, status FROM records ORDER BY chain, seq").fetchall()


def test_every_recorded_minute_is_stored_once_and_counted(tmp_path: Path, db_url: str) -> None:
    own_db = None if db_url.startswith("sqlite") else db_url
    args = argparse.Namespace(duration=None, factor=120.0, cars=1, policy="demo", api_port=0, data_dir=tmp_path,
                              database_url=own_db)  # fmt: skip
    demo = Demo(args)
    try:
        demo.start()
        car = demo.cars[0]
        url = db_url if args.database_url else f"sqlite:///{demo.dir / 'server.sqlite'}"
        scenario = threading.Thread(target=demo.scenario, args=(car,), daemon=True)
        scenario.start()
        exam = f"http://127.0.0.1:{demo.exam_port}/api/v1/stage-reviews"
        notices = wait_for("an accepted stage review", lambda: [n for n in httpx.get(exam).json()
                                                                if n["status"] == "accepted"], 120)  # fmt: skip
        demo.stop.set()
        scenario.join(timeout=60)
        agent_db = Path(car["data"]) / "records.sqlite"
        wait_for("the agent to drain", lambda: all(r[5] == "acked" for r in agent_rows(agent_db)), 60)
        rows = agent_rows(agent_db)

        engine = make_engine(url)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT chain, seq, hash, raw FROM raw_records WHERE terminal_id = :t"),
                                  {"t": car["terminal"]}).all()  # fmt: skip
            minutes = conn.execute(text("SELECT record_no, valid FROM minutes WHERE terminal_id = :t"),
                                   {"t": car["terminal"]}).all()  # fmt: skip
            totals = conn.execute(text("SELECT part, valid_minutes FROM hour_totals WHERE student_id = :s"),
                                  {"s": car["student"][0]}).all()  # fmt: skip
        # Every record exactly once, byte for byte.
        assert sorted((c, s, h, bytes(r)) for c, s, h, r in stored) == [(c, s, h, bytes(r)) for c, s, h, r, *_ in rows]
        agent_minutes = [json.loads(_payload(r[3]))["body"]["record_no"] for r in rows if r[4] == "minute"]
        assert len(agent_minutes) >= 15
        assert sorted(m[0] for m in minutes) == sorted(agent_minutes)  # each minute once
        assert all(m[1] is not None for m in minutes)  # and judged
        valid = {m[0] for m in minutes if m[1]}
        assert sum(v for _, v in totals) == len(valid)  # and counted once
        # The exam notice is traced to valid, signed minutes.
        notice = notices[0]["notice"]
        assert notice["student"] == car["student"][0] and set(notice["records"]) <= valid

        # A replay of everything, by someone holding the terminal's own certificate (the agent is stopped first so
        # that the two do not take the session from each other), changes nothing and is answered "duplicate".
        agent = next(p for p in demo.procs if p.name == f"agent-{car['name']}")
        agent.popen.terminate()
        agent.popen.wait(15)
        tls = Path(car["data"]) / "tls"
        results = replay(demo.mqtt_port, car["terminal"], [r[3] for r in rows], tls)
        assert results and {r.status for r in results} == {AckStatus.DUPLICATE}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM raw_records")).scalar() == len(rows)
            assert conn.execute(text("SELECT count(*) FROM minutes")).scalar() == len(agent_minutes)
            assert sum(v for (v,) in conn.execute(text("SELECT valid_minutes FROM hour_totals")).all()) == len(valid)
        engine.dispose()
        assert len(httpx.get(exam).json()) == len(notices)
    finally:
        demo.stop.set()
        demo.shutdown()


def _payload(raw: bytes) -> bytes:
    from firmware_protocols.envelope import b64url_decode

    return b64url_decode(raw.split(b".")[1].decode())


def replay(port: int, terminal: str, raws: list[bytes], tls: Path) -> list[Any]:
    """Publish the records again as an attacker with broker access would, and collect the server's answers."""
    results: list[Any] = []
    batches = [raws[i : i + 50] for i in range(0, len(raws), 50)]
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        ack = Ack.decode(msg.payload)
        if ack.batch.startswith("replay-"):
            results.extend(ack.results)
            if len(results) >= len(raws):
                done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="replayer", protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(tls / "ca.crt"), certfile=str(tls / "client.crt"), keyfile=str(tls / "client.key"))
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topics.down_acks(terminal), qos=1)
    assert subscribed.wait(10)
    for i, batch in enumerate(batches):
        client.publish(topics.up_records(terminal), RecordBatch(terminal, f"replay-{i}", tuple(batch)).encode(), qos=1)
    assert done.wait(60), f"only {len(results)} of {len(raws)} replayed records were answered"
    client.loop_stop()
    client.disconnect()
    return results
