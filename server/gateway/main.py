"""``jiapei gateway``: the national-protocol gateway as a program (settings → migrations → ingest → TCP server).

``jiapei gateway [--database-url URL] [--policy NAME|PATH] [--host H] [--port P] [--auth-timeout S]
[--idle-timeout S] [--log-level L]``; the database and policy default to the server's ``JIAPEI_*`` settings, so the
gateway writes into the same database as ``jiapei server`` (whose forwarder then carries the hours to the exam side).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from server.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PORT = 6808


def build_gateway(settings: Settings, **config: float) -> object:
    """The gateway wired to the database and the ledger named by ``settings`` (not started)."""
    from server import db
    from server.app import load_configured_policies
    from server.clock import utcnow
    from server.gateway.service import Gateway, GatewayConfig
    from server.ingest_jt808 import NationalIngestor
    from server.ledger import Ledger

    policies = load_configured_policies(settings.policy)
    db.upgrade(settings.database_url)
    sf = db.make_session_factory(db.make_engine(settings.database_url))
    ledger = Ledger(sf, policies, utcnow)
    ingestor = NationalIngestor(sf, utcnow, after_commit=ledger.after_ingest)
    return Gateway(ingestor, GatewayConfig(**config))  # type: ignore[arg-type]


async def _run(settings: Settings, host: str, port: int, config: dict[str, float]) -> None:
    from server.gateway.service import Gateway

    gateway = build_gateway(settings, **config)
    assert isinstance(gateway, Gateway)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start(host, port)
    await gateway.serve_until(stop)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jiapei gateway", description="Accept national-protocol (JT/T 808) terminals.")
    p.add_argument("--database-url")
    p.add_argument("--policy", help="built-in policy name (national-2016, demo) or a policy TOML path")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--auth-timeout", type=float, help="seconds from connecting to a successful 0x0102")
    p.add_argument("--idle-timeout", type=float, help="seconds without a frame before an authenticated terminal is cut")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    overrides = {k: v for k, v in (("database_url", args.database_url), ("policy", args.policy)) if v is not None}
    config = {k: v for k, v in (("auth_timeout_s", args.auth_timeout), ("idle_timeout_s", args.idle_timeout))
              if v is not None}  # fmt: skip
    try:
        asyncio.run(_run(Settings(**overrides), args.host, args.port, config))
    except OSError as exc:
        log.error("gateway cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    return 0
