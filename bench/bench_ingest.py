"""Server ingest through the real broker, per worker process, against the Ed25519 verify ceiling of this machine.

    .venv/bin/python bench/bench_ingest.py [--records 6000] [--terminals 10] [--batch-sizes 1,10,60]
                                           [--databases sqlite,postgresql] [--ledger]

First the ceiling: how many record signatures one core verifies per second (the raw binding call on a real signed
minute record, no parsing), with the binding the project uses (pyca/cryptography) and with PyNaCl when it can be
imported (it is not a dependency: put it on PYTHONPATH to compare). Then, for every database and batch size: a fresh
database, ``--terminals`` enrolled terminals, their records signed beforehand (genesis, then sessions of 58 minutes);
a publisher *process* connects one TLS client per terminal (its own certificate from the broker's CA) and keeps up
to 4 batches per terminal waiting for their application ack, as the agent does (``agent.sync.MAX_IN_FLIGHT``); ONE
:class:`server.mqtt_consumer.IngestConsumer` (the worker: TLS, ``$share/ingest`` subscription, verify → store →
COMMIT → ack → PUBACK) runs in this process. The figure is records/s from the first publish to the last ack the
terminals received, and the worker's CPU seconds per 1,000 records; the ratio is against the ceiling measured above.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import T0, TestTerminal, enrol, machine, migrated, start_mosquitto, throwaway_postgres  # noqa: E402

from firmware_protocols import envelope, topics  # noqa: E402
from firmware_protocols.records import parse_record  # noqa: E402

#: Batches a terminal keeps waiting for their application ack (the agent's ``MAX_IN_FLIGHT``).
WINDOW = 4
#: Seconds a run may take before it is declared stuck.
RUN_TIMEOUT = 600.0
SERVER_IDENTITY = "jiapei-server-1"


# ---------------------------------------------------------------------------------------------------- the ceiling
def verify_ceiling(seconds: float = 2.0) -> dict[str, float]:
    """Signature verifications per second on one core, per available binding, on a real signed minute record."""
    t = TestTerminal()
    t.genesis()
    rec = parse_record(t.minute(T0))
    env = rec.envelope
    public = t.key.public_key()
    out: dict[str, float] = {}

    def rate(fn: Any) -> float:
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(200):
                fn()
            n += 200
        return n / elapsed

    out["cryptography (raw verify)"] = rate(lambda: public.verify(env.signature, env.signing_input))
    out["cryptography (envelope.verify: + alg/kid checks)"] = rate(lambda: envelope.verify(env, public))
    try:
        import nacl.signing
    except ImportError:
        print("PyNaCl               not importable (not a dependency; PYTHONPATH=/tmp/tools to compare)")
    else:
        from cryptography.hazmat.primitives import serialization

        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        vk = nacl.signing.VerifyKey(raw)
        out["PyNaCl (libsodium)"] = rate(lambda: vk.verify(env.signing_input, env.signature))
    return out


# ---------------------------------------------------------------------------------------------------- publisher
def publisher(
    host: str, port: int, terminals: list[tuple[str, dict[str, str], list[bytes]]], total: int, go: Any, out: Any
) -> None:
    """Child process: one TLS client per terminal; each keeps WINDOW batches unacked; reports timings to ``out``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from firmware_protocols.messages import Ack, AckStatus

    done = threading.Event()
    lock = threading.Lock()
    counts = {"acked": 0, "records": 0, "bad": 0}
    ready = threading.Semaphore(0)
    clients = []
    first_publish: list[float] = []
    last_ack = [0.0]

    for terminal, files, batches in terminals:
        pending = list(reversed(batches))
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=terminal, protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=files["ca"], certfile=files["cert"], keyfile=files["key"])
        client.max_inflight_messages_set(WINDOW * 2)

        def send_next(c: Any, pending: list[bytes] = pending, terminal: str = terminal) -> None:
            with lock:
                payload = pending.pop() if pending else None
            if payload is not None:
                c.publish(topics.up_records(terminal), payload, qos=1)

        def on_message(c: Any, _u: Any, msg: Any, send_next: Any = send_next) -> None:
            ack = Ack.decode(bytes(msg.payload))
            n = sum(1 for r in ack.results if r.status is AckStatus.STORED)
            with lock:
                counts["acked"] += n
                counts["bad"] += len(ack.results) - n
                counts["records"] += len(ack.results)
                last_ack[0] = time.perf_counter()
                finished = counts["records"] >= total
            if finished:
                done.set()
            send_next(c)

        client.on_message = on_message
        client.on_subscribe = lambda *_a: ready.release()
        client.connect(host, port)
        client.subscribe(topics.down_acks(terminal), qos=1)
        client.loop_start()
        clients.append((client, send_next))
    for _ in clients:
        if not ready.acquire(timeout=30):
            out.put(("error", "a terminal client did not subscribe"))
            return
    out.put(("ready", len(clients)))
    go.wait()
    first_publish.append(time.perf_counter())
    for client, send_next in clients:
        for _ in range(WINDOW):
            send_next(client)
    ok = done.wait(RUN_TIMEOUT)
    out.put(("done", ok, counts, last_ack[0] - first_publish[0]))
    for client, _ in clients:
        client.disconnect()
        client.loop_stop()


# ---------------------------------------------------------------------------------------------------- one run
def signed_batches(terminal: TestTerminal, records: int, batch: int) -> list[bytes]:
    raws = [terminal.genesis()]
    day = 0
    while len(raws) < records:
        raws += terminal.session(T0 + timedelta(days=day), 58, session=f"S{day}")
        day += 1
    raws = raws[:records]
    return [terminal.batch(raws[i : i + batch]) for i in range(0, len(raws), batch)]


def run_once(broker: Any, url: str, terminals: int, records: int, batch: int, ledger: bool) -> dict[str, Any]:
    from server.ingest import Ingestor
    from server.mqtt_consumer import IngestConsumer

    sf = migrated(url)
    cars = [TestTerminal(id=f"T{900000000000000 + i:015d}") for i in range(terminals)]
    for car in cars:
        enrol(sf, car)
    per = max(1, records // terminals)
    work = [(car.id, broker.tls(car.id), signed_batches(car, per, batch)) for car in cars]
    n = sum(per for _ in cars)

    def clock() -> datetime:
        return datetime.now(UTC)

    after = None
    if ledger:
        from server.ledger import Ledger
        from server.policy import load_builtin_policy

        after = Ledger(sf, load_builtin_policy("national-2016"), clock).after_ingest
    ingestor = Ingestor(sf, clock, after_commit=after)
    consumer = IngestConsumer(ingestor, sf, broker.host, broker.port, client_id=SERVER_IDENTITY,
                              tls=broker.context(SERVER_IDENTITY), resend_check_seconds=3600)  # fmt: skip
    consumer.start()
    if not consumer.subscribed.wait(30):
        raise RuntimeError("the worker did not subscribe")
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=publisher, args=(broker.host, broker.port, work, n, go, out), daemon=True)
    proc.start()
    try:
        kind, *rest = out.get(timeout=120)
        if kind != "ready":
            raise RuntimeError(f"publisher: {rest}")
        cpu0 = time.process_time()
        go.set()
        kind, ok, counts, elapsed = out.get(timeout=RUN_TIMEOUT + 30)
        cpu = time.process_time() - cpu0
    finally:
        proc.join(30)
        consumer.stop()
        sf.kw["bind"].dispose()
    if not ok or counts["acked"] != n:
        raise RuntimeError(f"run incomplete: {counts} of {n} records acked")
    return {"records": n, "messages": consumer.stats["messages"], "elapsed": elapsed, "rate": n / elapsed,
            "cpu_ms_per_1k": cpu / n * 1e6}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=6000, help="records per run at batch ≥ 10 (batch 1: a quarter)")
    p.add_argument("--terminals", type=int, default=10)
    p.add_argument("--batch-sizes", default="1,10,60")
    p.add_argument("--databases", default="sqlite,postgresql")
    p.add_argument("--ledger", action="store_true", help="also re-judge minutes and recompute totals after commit")
    args = p.parse_args()
    print(f"machine: {machine()}")
    ceilings = verify_ceiling()
    for name, per_s in ceilings.items():
        print(f"ceiling  {name:<50} {per_s:9,.0f} verifies/s on one core")
    ceiling = ceilings["cryptography (raw verify)"]
    fastest = max(ceilings, key=lambda k: ceilings[k])
    print(f"binding: the project verifies with pyca/cryptography; fastest measured here: {fastest}")
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    print(f"\n{'database':<11}{'batch':>6}{'records':>9}{'msgs':>7}{'records/s':>11}{'ceiling':>10}{'ratio':>8}"
          f"{'worker CPU ms/1k rec':>22}")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        broker = start_mosquitto(Path(d))
        try:
            for db in args.databases.split(","):
                for batch in sizes:
                    records = args.records if batch >= 10 else max(args.terminals, args.records // 4)
                    if db == "sqlite":
                        url = f"sqlite:///{d}/ingest-{batch}.db"
                        r = run_once(broker, url, args.terminals, records, batch, args.ledger)
                    else:
                        with throwaway_postgres() as pg:
                            if pg is None:
                                break
                            r = run_once(broker, pg, args.terminals, records, batch, args.ledger)
                    print(f"{db:<11}{batch:>6}{r['records']:>9,}{r['messages']:>7,}{r['rate']:>11,.0f}"
                          f"{ceiling:>10,.0f}{r['rate'] / ceiling:>8.1%}{r['cpu_ms_per_1k']:>22,.0f}",
                          flush=True)  # fmt: skip
        finally:
            broker.process.terminate()
            broker.process.wait(5)
    print(f"\n(one worker process; broker, publisher process and database share this machine's {os.cpu_count()} CPUs;"
          f" ledger after commit: {'on' if args.ledger else 'off'})")  # fmt: skip


if __name__ == "__main__":
    main()
