"""``jiapei agent``: wiring of the terminal program (settings, adapters, runtime, sync, coach screen)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from agent.keys import PUBLIC_KEY_FILE, exclusive, load_or_create_key

log = logging.getLogger("agent")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jiapei agent", description="the in-car timing terminal")
    sub = p.add_subparsers(dest="cmd")
    init = sub.add_parser("init", help="generate the terminal's signing key (first start) and print its public key")
    init.add_argument("--data-dir", type=Path, required=True)
    enrol = sub.add_parser("enrol", help="register with the server once, with the operator's one-time token")
    enrol.add_argument("--data-dir", type=Path, required=True)
    enrol.add_argument("--terminal", required=True, help="16-character terminal number the token was issued for")
    enrol.add_argument("--server", required=True, help="the server's API base URL, e.g. https://jiapei.example")
    enrol.add_argument("--token", help="one-time enrolment token (default: $JIAPEI_ENROL_TOKEN, not shown by ps)")
    enrol.add_argument("--server-ca", help="CA bundle to trust for the server's HTTPS (default: the system's)")
    rotate = sub.add_parser("rotate-key", help="replace the signing key, vouched for by the old one (agent stopped)")
    rotate.add_argument("--data-dir", type=Path, required=True)
    rotate.add_argument("--terminal", required=True)
    run = sub.add_parser("run", help="run the terminal")
    run.add_argument("--data-dir", type=Path, required=True, help="keys, SQLite record store, roster")
    run.add_argument("--terminal", required=True, help="16-character terminal number")
    run.add_argument("--gps", required=True, help="serial device of the GNSS receiver (NMEA 0183)")
    run.add_argument("--gps-baud", type=int, default=9600)
    run.add_argument("--vehicle", default="none", help="ELM327 serial device, or 'none' (no vehicle signal)")
    run.add_argument("--camera", default="0", help="http://…/snapshot.jpg, a device index, or a video file")
    run.add_argument("--mqtt-host", default=None, help="default: the broker named at enrolment")
    run.add_argument("--mqtt-port", type=int, default=None)
    run.add_argument("--plain-mqtt", action="store_true",
                     help="development only: no TLS, no client certificate (an open broker)")
    run.add_argument("--web-host", default="127.0.0.1")
    run.add_argument("--web-port", type=int, default=8801, help="coach screen; 0 = none")
    run.add_argument("--recheck-minutes", type=int, default=15, help="random face re-check window")
    run.add_argument("--face-threshold", type=float, default=None)
    run.add_argument("--liveness", choices=["enforce", "record", "off"], default="enforce",
                     help="enforce: a check without proof of life fails; record: measured and signed, not decisive")
    run.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "init":
        key = load_or_create_key(args.data_dir)
        from firmware_protocols import envelope

        print(envelope.public_key_to_pem(key.public_key()), end="")  # noqa: T201 - CLI output
        print(f"# key id {envelope.key_id(key.public_key())}; public key in {args.data_dir / PUBLIC_KEY_FILE}")  # noqa: T201
        return 0
    if args.cmd == "enrol":
        return enrol(args)
    if args.cmd == "rotate-key":
        return rotate_key(args)
    if args.cmd != "run":
        build_parser().print_help()
        return 2
    logging.basicConfig(
        level=args.log_level, format=f"%(asctime)s agent[{args.terminal}] %(levelname)s %(name)s: %(message)s"
    )
    from firmware_protocols.errors import ProtocolError

    try:
        with exclusive(args.data_dir):
            return run(args)
    except (ProtocolError, PermissionError, ValueError, RuntimeError, FileNotFoundError) as exc:
        log.error("cannot start: %s", exc)
        return 2


def enrol(args: argparse.Namespace) -> int:
    import os

    from agent.provision import EnrolmentFailed
    from agent.provision import enrol as do_enrol
    from firmware_protocols.identifiers import check_national_id

    logging.basicConfig(level="INFO", format="%(levelname)s %(message)s")
    token = args.token or os.environ.get("JIAPEI_ENROL_TOKEN")
    if not token:
        log.error("no token: pass --token or set JIAPEI_ENROL_TOKEN")
        return 2
    try:
        check_national_id(args.terminal, "terminal")
        with exclusive(args.data_dir):
            broker = do_enrol(args.data_dir, args.terminal, args.server, token, verify=args.server_ca or True)
    except (EnrolmentFailed, ValueError, PermissionError, RuntimeError) as exc:
        log.error("enrolment failed: %s", exc)
        return 1
    print(f"enrolled {args.terminal}: broker {broker.host}:{broker.port}, certificate {broker.cert_file}")  # noqa: T201
    return 0


def rotate_key(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from agent import keys
    from agent.store import RecordStore, StoreError
    from firmware_protocols import envelope

    logging.basicConfig(level="INFO", format="%(levelname)s %(message)s")
    try:
        with exclusive(args.data_dir):
            old = load_or_create_key(args.data_dir)
            store = RecordStore(args.data_dir / "records.sqlite", args.terminal, old, args.data_dir / "chain")
            try:
                new = keys.begin_rotation(args.data_dir)
                stored = store.rotate_key(new, datetime.now(UTC).replace(microsecond=0))
                keys.finish_rotation(args.data_dir)
            finally:
                store.close()
    except (StoreError, PermissionError, RuntimeError, ValueError) as exc:
        log.error("key rotation failed (the old key stays in use): %s", exc)
        return 1
    print(f"signing key {envelope.key_id(old.public_key())} → {envelope.key_id(new.public_key())}; "  # noqa: T201
          f"chain {stored.chain} starts with its vouch; the server adopts it when the genesis syncs")
    return 0


def run(args: argparse.Namespace) -> int:
    from agent import keys
    from agent.camera import open_camera
    from agent.gps import SerialGpsReader
    from agent.identity import IdentityChecker
    from agent.photos import PhotoStore
    from agent.provision import load_broker_settings
    from agent.runtime import TerminalRuntime
    from agent.session import TrainingSession
    from agent.store import RecordStore, StoreError
    from agent.sync import RecordSync
    from agent.vehicle import Elm327Vehicle
    from biometrics.engine import FaceEngine
    from biometrics.templates import DEFAULT_MATCH_THRESHOLD
    from firmware_protocols.identifiers import check_national_id

    check_national_id(args.terminal, "terminal")
    key = load_or_create_key(args.data_dir)
    try:
        store = RecordStore(args.data_dir / "records.sqlite", args.terminal, key, args.data_dir / "chain")
    except StoreError as exc:
        log.error("%s", exc)
        return 1
    if (args.data_dir / keys.NEXT_KEY_FILE).exists():  # a rotation cut short by a crash: finish or undo it
        keys.recover_rotation(args.data_dir, store.newest_chain_key_id())
        key = load_or_create_key(args.data_dir)
        store.use_key(key)
    broker = load_broker_settings(args.data_dir)
    if broker is None and not args.plain_mqtt:
        log.error("not enrolled: run `jiapei agent enrol` first (or --plain-mqtt for an open development broker)")
        return 2
    mqtt_host = args.mqtt_host or (broker.host if broker else "127.0.0.1")
    mqtt_port = args.mqtt_port or (broker.port if broker else 1883)
    tls = None if args.plain_mqtt or broker is None else broker.tls()
    has_vehicle = args.vehicle != "none"
    machine = TrainingSession(args.terminal, recheck_minutes=args.recheck_minutes, has_vehicle_signal=has_vehicle)
    identity = IdentityChecker(open_camera(args.camera), FaceEngine(),
                               args.face_threshold or DEFAULT_MATCH_THRESHOLD, liveness=args.liveness)  # fmt: skip
    photos = PhotoStore(args.data_dir / "photos.sqlite")  # evidence photos, owner-only, until the server acks them
    photos.prune_orphans()
    sync_ref: list[RecordSync] = []
    runtime = TerminalRuntime(args.terminal, store, machine, identity, args.data_dir, photos=photos,
                              on_committed=lambda: sync_ref[0].nudge() if sync_ref else None)  # fmt: skip
    sync = RecordSync(store, args.terminal, mqtt_host, mqtt_port, key, runtime.on_roster, tls=tls, photos=photos)
    sync_ref.append(sync)
    gps = SerialGpsReader(args.gps, args.gps_baud, runtime.on_fix)
    runtime.attach_gps(gps)  # its link state and counters show on the coach screen
    vehicle = None
    if has_vehicle:
        vehicle = Elm327Vehicle(
            args.vehicle, on_signals=lambda s: runtime.on_vehicle(s.ignition, s.rpm, s.speed_kmh, s.vin)
        )
    runtime.start()
    sync.start()
    gps.start()
    if vehicle is not None:
        vehicle.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = None
    if args.web_port:
        import uvicorn

        from agent.web import create_app

        config = uvicorn.Config(create_app(runtime), host=args.web_host, port=args.web_port, log_level="warning")
        server = uvicorn.Server(config)
        threading.Thread(target=server.run, name="coach-screen", daemon=True).start()
        log.info("coach screen on http://%s:%d/", args.web_host, args.web_port)
    stop.wait()
    log.info("stopping")
    if server is not None:
        server.should_exit = True
    gps.stop()
    if vehicle is not None:
        vehicle.stop()
    runtime.stop()
    sync.stop()
    store.close()
    photos.close()
    return 0
