"""Fleet: simulated terminals at 1 minute record a minute plus a position every 5 s, raised until ingest lag > 2 s.

    .venv/bin/python bench/bench_fleet.py [--connections 50] [--step-seconds 10] [--rates 25,50,100,...]
                                          [--database-url URL | --postgres]

Lightweight terminals, not agents: a publisher *process* holds ``--connections`` TLS clients, each with its own
certificate from the broker's CA (CN = terminal id) and its own pre-signed chain. **Time-accelerated**: a
connection stands for many terminals — at a step of R records/s in total, the equivalent fleet is N = 60 × R
terminals, each sending its minute record alone (batch of 1, as a live terminal does) and 12 positions a minute
(QoS 0 on ``up/positions``: the broker carries them; no server consumer subscribes to positions yet). ONE ingest
worker (:class:`server.mqtt_consumer.IngestConsumer`) runs in this process. Ingest lag = from the record's publish to
its application ack at the terminal. Each step runs ``--step-seconds``; the first step whose p95 lag exceeds 2 s ends
the run, and N is the equivalent fleet of the last step under it. Broker, publisher and worker share the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import SERVER_IDENTITY  # noqa: E402
from harness import T0, TestTerminal, enrol, machine, migrated, start_mosquitto, throwaway_postgres  # noqa: E402

from firmware_protocols import topics  # noqa: E402

LAG_LIMIT_S = 2.0
POSITIONS_PER_RECORD = 12  # one every 5 s, a record every 60 s
DRAIN_S = 3.0  # after a step, how long its last records may take to be acked before they count as late


def fleet(host: str, port: int, cars: list[tuple[str, dict[str, str], list[bytes]]], rates: list[int],
          step_s: float, out: Any) -> None:  # fmt: skip
    """Child process: run the steps; report one (rate, lags, sent) tuple per step to ``out``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from firmware_protocols.messages import Ack, RecordBatch

    sent_at: dict[tuple[str, int], float] = {}
    lags: dict[tuple[str, int], float] = {}
    lock = threading.Lock()
    clients = []
    ready = threading.Semaphore(0)
    for terminal, files, _records in cars:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=terminal, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=files["ca"], certfile=files["cert"], keyfile=files["key"])
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)

        def on_message(_c: Any, _u: Any, msg: Any, terminal: str = terminal) -> None:
            now = time.perf_counter()
            for r in Ack.decode(bytes(msg.payload)).results:
                with lock:
                    t = sent_at.get((terminal, r.seq))
                    if t is not None and (terminal, r.seq) not in lags:
                        lags[(terminal, r.seq)] = now - t

        c.on_message = on_message
        c.on_subscribe = lambda *_a: ready.release()
        c.connect(host, port)
        c.subscribe(topics.down_acks(terminal), qos=1)
        c.loop_start()
        clients.append(c)
    for _ in clients:
        ready.acquire(timeout=60)
    position = b'{"lat":35416000,"lon":119527000,"speed":250,"course":90,"at":"2026-11-27T02:00:00Z"}'
    cursor = [0] * len(cars)
    seq_of = [0] * len(cars)
    for rate in rates:
        step_keys: list[tuple[str, int]] = []
        events = int(rate * step_s)
        interval = 1.0 / (rate * (1 + POSITIONS_PER_RECORD))
        start = time.perf_counter()
        k = 0
        for e in range(events * (1 + POSITIONS_PER_RECORD)):
            due = start + e * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            i = e % len(cars)
            terminal, _files, records = cars[i]
            if e % (1 + POSITIONS_PER_RECORD) == 0:
                i = k % len(cars)
                k += 1
                terminal, _files, records = cars[i]
                raw = records[cursor[i]]
                cursor[i] += 1
                seq = seq_of[i] = seq_of[i] + 1
                payload = RecordBatch(terminal, f"f{seq}", (raw,)).encode()
                with lock:
                    sent_at[(terminal, seq)] = time.perf_counter()
                step_keys.append((terminal, seq))
                clients[i].publish(topics.up_records(terminal), payload, qos=1)
            else:
                clients[i].publish(f"{topics.PREFIX}/{terminal}/up/positions", position, qos=0)
        elapsed = time.perf_counter() - start
        deadline = time.perf_counter() + DRAIN_S
        while time.perf_counter() < deadline:
            with lock:
                if all(key in lags for key in step_keys):
                    break
            time.sleep(0.05)
        with lock:
            step_lags = [lags.get(key, time.perf_counter() - sent_at[key]) for key in step_keys]
            unacked = sum(1 for key in step_keys if key not in lags)
        out.put((rate, step_lags, unacked, len(step_keys) / elapsed))
        if statistics.quantiles(step_lags, n=20)[18] > LAG_LIMIT_S:
            break
    out.put(None)
    for c in clients:
        c.disconnect()
        c.loop_stop()


def run(url: str, connections: int, rates: list[int], step_s: float, tmp: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from firmware_protocols.messages import RecordBatch
    from server.ingest import Ingestor
    from server.mqtt_consumer import IngestConsumer

    sf = migrated(url)
    broker = start_mosquitto(tmp)
    per_car = sum(int(r * step_s) for r in rates) // connections + 2  # records go round robin over the cars
    cars = []
    t = time.perf_counter()
    for i in range(connections):
        car = TestTerminal(id=f"T{800000000000000 + i:015d}")
        enrol(sf, car)
        records = [car.genesis()]  # sent first below, outside the measured steps
        records += [car.minute(T0 + timedelta(minutes=m), session="S1") for m in range(per_car)]
        cars.append((car.id, broker.tls(car.id), records))
    print(f"{connections} terminal connections, {connections * per_car:,} records signed in "
          f"{time.perf_counter() - t:.1f} s (not measured)")  # fmt: skip
    consumer = IngestConsumer(Ingestor(sf, lambda: datetime.now(UTC)), sf, broker.host, broker.port,
                              client_id=SERVER_IDENTITY, tls=broker.context(SERVER_IDENTITY),
                              resend_check_seconds=3600)  # fmt: skip
    consumer.start()
    if not consumer.subscribed.wait(30):
        raise RuntimeError("the worker did not subscribe")
    for car_id, files, records in cars:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=car_id, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=files["ca"], certfile=files["cert"], keyfile=files["key"])
        c.connect(broker.host, broker.port)
        c.loop_start()
        genesis = RecordBatch(car_id, "g", (records[0],)).encode()  # before the clock starts
        c.publish(topics.up_records(car_id), genesis, qos=1).wait_for_publish(30)
        c.disconnect()
        c.loop_stop()
    work = [(car_id, files, records[1:]) for car_id, files, records in cars]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=fleet, args=(broker.host, broker.port, work, rates, step_s, out), daemon=True)
    proc.start()
    print(f"\n{'records/s':>10}{'≈ terminals':>13}{'positions/s':>13}{'acked':>8}{'late':>6}{'p50 lag':>9}"
          f"{'p95 lag':>9}{'max lag':>9}")  # fmt: skip
    best = None
    try:
        while (item := out.get(timeout=step_s * 4 + 120)) is not None:
            rate, lags, unacked, achieved = item
            q = statistics.quantiles(lags, n=20)
            acked, positions = len(lags) - unacked, achieved * POSITIONS_PER_RECORD
            print(f"{achieved:>10,.0f}{rate * 60:>13,}{positions:>13,.0f}{acked:>8,}{unacked:>6}"
                  f"{statistics.median(lags):>8.2f}s{q[18]:>8.2f}s{max(lags):>8.2f}s", flush=True)  # fmt: skip
            if q[18] <= LAG_LIMIT_S:
                best = rate
    finally:
        proc.join(30)
        consumer.stop()
        broker.process.terminate()
        broker.process.wait(5)
    if best is None:
        print(f"\nN: below {rates[0] * 60:,} terminals (p95 lag > {LAG_LIMIT_S} s at the first step)")
    else:
        print(f"\nN = {best * 60:,} terminals at 1 record/min + a position every 5 s with p95 ingest lag ≤ "
              f"{LAG_LIMIT_S:.0f} s ({best} records/s, {best * POSITIONS_PER_RECORD:,} positions/s; "
              f"one worker, {url.split(':')[0]}); the limit: lag > {LAG_LIMIT_S:.0f} s at the next step")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--step-seconds", type=float, default=10.0)
    ap.add_argument("--rates", default="25,50,100,150,200,250,300,400,600,800")
    ap.add_argument("--database-url")
    ap.add_argument("--postgres", action="store_true")
    args = ap.parse_args()
    rates = [int(x) for x in args.rates.split(",")]
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        if args.postgres:
            with throwaway_postgres() as url:
                if url is not None:
                    run(url, args.connections, rates, args.step_seconds, Path(d))
        else:
            run(args.database_url or f"sqlite:///{d}/server.db", args.connections, rates, args.step_seconds, Path(d))


if __name__ == "__main__":
    main()
