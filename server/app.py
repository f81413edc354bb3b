"""Wiring of the server program: settings → migrations → ingest consumer, forwarder and API, until a signal.

``jiapei server [--database-url URL] [--mqtt-host H] [--mqtt-port P] [--exam-url URL] [--policy NAME|PATH]
[--api-host H] [--api-port P] [--no-api] [--no-forwarder]``; flags override ``JIAPEI_*`` environment settings.
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from server.clock import utcnow
from server.policy import Policy, PolicyError, load_builtin_policy, load_policy, policy_in_force
from server.settings import Settings

if TYPE_CHECKING:
    from server.api_trust import Trust

log = logging.getLogger(__name__)


def load_configured_policies(spec: str) -> list[Policy]:
    """Each comma-separated item a path to a policy TOML file or the name of a built-in policy: the versions of the
    rules over time (each judges the days from its ``effective_from``)."""
    policies = []
    for item in (i.strip() for i in spec.split(",")):
        if not item:
            continue
        path = Path(item)
        policies.append(load_policy(path) if path.suffix == ".toml" or path.exists() else load_builtin_policy(item))
    if not policies:
        raise PolicyError("no policy configured")
    return policies


def load_configured_policy(spec: str) -> Policy:
    """The configured policy in force today (the oldest configured one if none is in force yet)."""
    policies = load_configured_policies(spec)
    try:
        return policy_in_force(policies, utcnow())
    except PolicyError:
        return min(policies, key=lambda p: p.effective_from)


def notice_key_path(settings: Settings) -> Path:
    """Where the stage-review signing key lives (see :attr:`Settings.notice_key_file`)."""
    if settings.notice_key_file:
        return Path(settings.notice_key_file)
    if settings.pki_dir:
        return Path(settings.pki_dir) / "stage-review-signing.key"
    url = settings.database_url
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        return Path(url.removeprefix("sqlite:///")).parent / "jiapei-stage-review.key"
    return Path("jiapei-stage-review.key")


def run_server(
    settings: Settings, *, api: bool = True, forwarder: bool = True, stop: threading.Event | None = None
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set)."""
    import uvicorn

    from server import db
    from server.api import create_app
    from server.exam_client import ExamClient, NoticeSigner
    from server.forwarder import Forwarder
    from server.ingest import Ingestor
    from server.ledger import Ledger
    from server.mqtt_consumer import IngestConsumer

    stop = stop or threading.Event()
    policies = load_configured_policies(settings.policy)
    policy = load_configured_policy(settings.policy)
    db.upgrade(settings.database_url)
    sf = db.make_session_factory(db.make_engine(settings.database_url))
    ledger = Ledger(sf, policies, utcnow)
    ingestor = Ingestor(
        sf, utcnow, resend_grace=timedelta(seconds=settings.resend_grace_seconds), after_commit=ledger.after_ingest
    )
    trust, tls = load_trust(settings)
    consumer = IngestConsumer(
        ingestor,
        sf,
        settings.mqtt_host,
        settings.mqtt_port,
        client_id=settings.mqtt_client_id,
        resend_check_seconds=settings.resend_check_seconds,
        tls=tls,
        policy=policy,
    )
    consumer.start()
    if trust is not None:
        from server.api_trust import sync_broker

        sync_broker(sf, trust)  # a revocation whose broker step was cut short by a crash is finished here
    threads: list[threading.Thread] = []
    signer = NoticeSigner.from_file(notice_key_path(settings))
    exam = ExamClient(settings.exam_url, signer=signer)
    if forwarder:
        fw = Forwarder(sf, exam, utcnow, after_rejection=ledger.after_exam_reply)
        threads.append(threading.Thread(target=fw.run, args=(stop,), name="forwarder", daemon=True))
    from server.escrow.bank import BankClient
    from server.escrow.service import EscrowService
    from server.platform import PlatformWorker

    bank = BankClient(settings.bank_url)
    escrow = EscrowService(sf, policy, bank, utcnow)
    worker = PlatformWorker(sf, policy, utcnow, escrow=escrow, exam_results=exam.results,
                            poll_seconds=settings.platform_poll_seconds)  # fmt: skip
    threads.append(threading.Thread(target=worker.run, args=(stop,), name="platform", daemon=True))
    server: uvicorn.Server | None = None
    if api:
        app = create_app(settings, session_factory=sf, policy=policy, on_people_change=consumer.publish_school_rosters,
                         trust=trust)  # fmt: skip
        app.state.notice_signer = signer
        app.state.policies = policies
        app.state.escrow = escrow  # one escrow service: the API, the pages and the worker share its bank client
        config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="info")
        server = uvicorn.Server(config)
        # uvicorn installs no signal handlers outside the main thread: SIGINT/SIGTERM are ours (below).
        threads.append(threading.Thread(target=server.run, name="api", daemon=True))
    for t in threads:
        t.start()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: shutting down", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
    log.info(
        "jiapei server running (database %s, broker %s:%s, API %s)",
        _redact(settings.database_url),
        settings.mqtt_host,
        settings.mqtt_port,
        f"http://{settings.api_host}:{settings.api_port}" if api else "off",
    )
    stop.wait()
    if server is not None:
        server.should_exit = True
    consumer.stop()
    for t in threads:
        t.join(10)
    exam.close()
    bank.close()
    log.info("jiapei server stopped")


def load_trust(settings: Settings) -> tuple[Trust | None, ssl.SSLContext | None]:
    """The CA, broker control and TLS context from ``settings.pki_dir`` (None, None: plain MQTT, no provisioning)."""
    if not settings.pki_dir:
        log.warning("no JIAPEI_PKI_DIR: plain MQTT to the broker and no terminal provisioning (development only)")
        return None, None
    from server.api_trust import Trust
    from server.broker import BrokerControl, tls_context
    from server.pki import CertificateAuthority, check_private_file

    pki = Path(settings.pki_dir)
    worker = settings.mqtt_client_id
    for f in (pki / "ca.key", pki / f"{worker}.key"):
        if not f.exists():
            raise TrustConfigError(f"{f} is missing: run `jiapei pki init --dir {pki}` (and `jiapei pki worker`)")
    ca = CertificateAuthority.load(pki)  # refuses a CA key others can read
    check_private_file(pki / f"{worker}.key")
    tls = tls_context(pki / "ca.crt", pki / f"{worker}.crt", pki / f"{worker}.key")
    pid = Path(settings.broker_pid_file) if settings.broker_pid_file else None
    broker = BrokerControl(ca, Path(settings.broker_dir or pki), pid_file=pid, mqtt_host=settings.mqtt_host,
                           mqtt_port=settings.mqtt_port)  # fmt: skip
    trust = Trust(ca, broker, settings.mqtt_public_host or settings.mqtt_host,
                  settings.mqtt_public_port or settings.mqtt_port)  # fmt: skip
    return trust, tls


class TrustConfigError(RuntimeError):
    """The PKI directory is incomplete or unsafe."""


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="jiapei server", description="Run the jiapei server (ingest, forwarder, API).")
    p.add_argument("--database-url")
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--exam-url")
    p.add_argument("--policy", help="built-in policy name (national-2016, demo) or a policy TOML path")
    p.add_argument("--admin-token")
    p.add_argument("--api-host")
    p.add_argument("--api-port", type=int)
    p.add_argument("--resend-grace-seconds", type=float)
    p.add_argument("--pki-dir", help="CA + server certificate directory (`jiapei pki init`): TLS and provisioning")
    p.add_argument("--broker-dir", help="where the broker's ACL lives (default: the PKI directory)")
    p.add_argument("--broker-pid-file", help="Mosquitto's pid file: SIGHUP after a revocation")
    p.add_argument("--notice-key-file", help="the Ed25519 key stage reviews are signed with (made on first start)")
    p.add_argument("--mqtt-client-id", help="this worker's identity (its certificate's CN), default jiapei-server-1")
    p.add_argument("--no-api", action="store_true", help="ingest and forward only")
    p.add_argument("--no-forwarder", action="store_true")
    p.add_argument("--migrate-only", action="store_true", help="bring the database schema up to date and exit")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k in Settings.model_fields}
    return Settings(**overrides), args


def main(argv: Sequence[str] | None = None) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from server.policy import PolicyError

    settings, args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        if args.migrate_only:
            from server import db

            db.upgrade(settings.database_url)
            return 0
        run_server(settings, api=not args.no_api, forwarder=not args.no_forwarder)
    except SQLAlchemyError as exc:
        log.error(
            "database %s unusable: %s", _redact(settings.database_url), str(getattr(exc, "orig", None) or exc).strip()
        )
        return 1
    except PolicyError as exc:
        log.error("training policy unusable: %s", exc)
        return 1
    except (TrustConfigError, PermissionError, ssl.SSLError) as exc:
        log.error("trust set-up unusable: %s", exc)
        return 1
    return 0
