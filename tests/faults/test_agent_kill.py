"""kill -9 of the agent: at random moments of record commit and sync, and at each stage of a commit (power loss).

The agent is a real process (``agent_worker.py``: the RecordStore and RecordSync of ``jiapei agent run``) talking to
a real Mosquitto and the server's consumer. After every kill: ``PRAGMA integrity_check`` is ``ok``, the chain is
whole, and every record the agent had counted (printed after COMMIT) is still in its store. At the end the agent
drains and the invariant checker compares both ends.

A real power cut also loses what the kernel had not written; that rests on SQLite's guarantee with
``synchronous=FULL`` (architecture.md "Testing what this machine cannot do"): these tests prove nothing is counted
or acked before COMMIT returned, and that a process dying anywhere inside a commit or a checkpoint leaves a sound
database.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker, TestTerminal, enrol

from agent.keys import load_or_create_key
from faults.harness import ServerStack, finish
from tools.invariants import integrity_check, read_agent_store

WORKER = Path(__file__).with_name("agent_worker.py")
TERMINAL = "T000000000000009"
#: Default run: this long of random kills; the soak runs much longer.
RANDOM_KILL_SECONDS = float(os.environ.get("JIAPEI_KILL_SECONDS", "8"))
STAGES = ("before_commit", "mid_commit", "after_commit", "before_ack_mark", "mid_checkpoint")


class AgentProcess:
    def __init__(self, data: Path, broker: Broker, tls: dict[str, str]) -> None:
        self.data, self.broker, self.tls = data, broker, tls
        self.counted: set[tuple[int, int]] = set()

    def start(self, *extra: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, str(WORKER), "--data", str(self.data), "--terminal", TERMINAL,
               "--port", str(self.broker.port), "--tls", self.tls["ca"], self.tls["cert"], self.tls["key"], *extra]
        with (self.data / "worker.log").open("a") as log:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)  # noqa: S603

    def collect(self, proc: subprocess.Popen[str]) -> str:
        try:
            out, _ = proc.communicate(timeout=float(os.environ.get('JIAPEI_WORKER_TIMEOUT', '150')))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            proc.kill()
            raise AssertionError(f"agent worker stuck; log: {(self.data / 'worker.log').read_text()[-3000:]}") from None
        for line in out.splitlines():
            if line.startswith("C "):
                _, chain, seq = line.split()
                self.counted.add((int(chain), int(seq)))
        return out

    def assert_sound(self) -> None:
        db = self.data / "records.sqlite"
        assert integrity_check(db) == "ok"
        records = read_agent_store(db)
        have = {(r.chain, r.seq) for r in records}
        assert self.counted <= have, f"counted but not in the store: {sorted(self.counted - have)[:5]}"
        assert [r.seq for r in records] == list(range(len(records)))  # one chain, no hole
        assert all(r.raw_ok for r in records)

    def drain(self) -> None:
        proc = self.start("--drain")
        out = self.collect(proc)
        assert proc.returncode == 0 and "DRAINED" in out, out[-500:]


@pytest.fixture
def agent(tmp_path: Path, broker: Broker, server_db: Any, fast_retries: None) -> Any:
    data = tmp_path / "agent"
    key = load_or_create_key(data)
    enrol(server_db, TestTerminal(id=TERMINAL, key=key))
    server = ServerStack(server_db, broker.port, broker.pki).start()
    yield AgentProcess(data, broker, broker.tls(TERMINAL))
    server.stop()


def _random_kills(agent: AgentProcess, sf: Any, seconds: float, fault: str) -> None:
    rng = random.Random(int(time.time()))  # noqa: S311 - fault timing
    started = time.monotonic()
    iterations, target = 0, 0
    while time.monotonic() - started < seconds:
        target += 40
        proc = agent.start("--target", str(target), "--every-ms", str(rng.uniform(0.5, 5)))
        time.sleep(rng.uniform(0.3, 1.5))  # somewhere in start-up, commits, publishes or ack handling
        proc.send_signal(signal.SIGKILL)
        agent.collect(proc)
        agent.assert_sound()
        iterations += 1
    agent.drain()
    agent.assert_sound()
    finish(fault, iterations, [agent.data / "records.sqlite"], sf, started, f"{len(agent.counted)} counted")


def test_kill_9_at_random_points_of_commit_and_sync(agent: AgentProcess, server_db: Any) -> None:
    _random_kills(agent, server_db, RANDOM_KILL_SECONDS, "agent kill -9, random points")


@pytest.mark.soak
def test_kill_9_soak(agent: AgentProcess, server_db: Any) -> None:
    _random_kills(agent, server_db, float(os.environ.get("JIAPEI_SOAK_SECONDS", "300")), "agent kill -9 soak")


def test_kill_9_at_each_stage_of_a_commit(agent: AgentProcess, server_db: Any) -> None:
    """Power loss between write and fsync, approximated: the process dies at a named point of each stage."""
    started = time.monotonic()
    rng = random.Random(7)  # noqa: S311 - fault schedule
    iterations, target, died = 0, 0, 0
    for _round in range(int(os.environ.get("JIAPEI_STAGE_ROUNDS", "2"))):
        for stage in STAGES:
            target += 30
            proc = agent.start("--target", str(target), "--die", stage, "--die-after", str(rng.randint(2, 30)))
            agent.collect(proc)
            died += proc.returncode == -signal.SIGKILL
            agent.assert_sound()
            iterations += 1
    assert died >= len(STAGES)  # most rounds really died at their stage (a late stage may be passed by the target)
    agent.drain()
    agent.assert_sound()
    finish("agent kill -9 at commit stages", iterations, [agent.data / "records.sqlite"], server_db, started,
           f"{died} died at their stage")  # fmt: skip
