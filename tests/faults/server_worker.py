"""The server's ingest consumer as a process of its own, for kill -9 tests (as ``jiapei server`` wires it).

``python tests/faults/server_worker.py --db URL --port P --tls CA CERT KEY [--die STAGE --die-after K]``; stages:

- ``before_validation``: the batch's transaction committed, the minutes are not judged yet;
- ``before_ack``: judged and totalled, the ack not published;
- ``before_mqtt_ack``: the ack published, the MQTT message not acknowledged (the broker delivers it again).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from typing import Any

from server import mqtt_consumer
from server.broker import tls_context
from server.clock import utcnow
from server.db import make_engine, make_session_factory
from server.ingest import Ingestor
from server.ledger import Ledger
from server.mqtt_consumer import IngestConsumer
from server.policy import load_builtin_policy


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", nargs=3, required=True)
    p.add_argument("--die", default=None)
    p.add_argument("--die-after", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s server[{os.getpid()}] %(name)s: %(message)s")
    hits: dict[str, int] = {}

    def stage(name: str) -> None:
        if name == args.die:
            hits[name] = hits.get(name, 0) + 1
            if hits[name] == args.die_after:
                os.kill(os.getpid(), signal.SIGKILL)

    mqtt_consumer.RECONNECT_MIN_SECONDS, mqtt_consumer.RECONNECT_MAX_SECONDS = 0.2, 1  # type: ignore[assignment]
    sf = make_session_factory(make_engine(args.db))
    ledger = Ledger(sf, load_builtin_policy("demo"), utcnow)

    def after_commit(sessions: set[int]) -> object:
        stage("before_validation")
        created = ledger.after_ingest(sessions)
        stage("before_ack")
        return created

    ingestor = Ingestor(sf, utcnow, resend_grace=timedelta(seconds=2), after_commit=after_commit)
    consumer = IngestConsumer(ingestor, sf, "127.0.0.1", args.port, resend_check_seconds=0.5,
                              tls=tls_context(*args.tls))  # fmt: skip
    ack = consumer._client.ack

    def mqtt_ack(mid: int, qos: int) -> Any:
        stage("before_mqtt_ack")
        return ack(mid, qos)

    consumer._client.ack = mqtt_ack  # type: ignore[method-assign]
    consumer.start()
    print("STARTED", flush=True)  # noqa: T201
    threading.Event().wait()  # until killed
    return 0


if __name__ == "__main__":
    sys.exit(main())
