"""``jiapei pki``: the project's CA and the broker's TLS set-up.

    jiapei pki init --dir DIR [--broker-dir DIR] [--hosts 127.0.0.1,broker.example] [--worker jiapei-server-1]
        a new CA (ca.key 0600, ca.crt), the broker's certificate for those names, a server worker's client
        certificate, an empty CRL and the ACL
    jiapei pki worker --dir DIR --name jiapei-server-2
        another server worker's client certificate (the server rewrites the ACL at its next start)
    jiapei pki broker-config --dir DIR [--broker-dir DIR] [--port 8883] [--bind 0.0.0.0]
        print the Mosquitto config that uses them
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from server.broker import DEFAULT_WORKER, add_worker, init_pki, render_mosquitto_conf
from server.pki import CertificateAuthority


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="jiapei pki", description="the project's CA and the broker's TLS set-up")
    sub = p.add_subparsers(dest="cmd", required=True)
    init = sub.add_parser("init")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--broker-dir", type=Path, default=None)
    init.add_argument("--hosts", default="127.0.0.1,localhost", help="names and addresses of the broker")
    init.add_argument("--worker", action="append", default=None, help=f"worker identity (default {DEFAULT_WORKER})")
    worker = sub.add_parser("worker")
    worker.add_argument("--dir", type=Path, required=True)
    worker.add_argument("--name", required=True)
    config = sub.add_parser("broker-config")
    config.add_argument("--dir", type=Path, required=True)
    config.add_argument("--broker-dir", type=Path, default=None)
    config.add_argument("--port", type=int, default=8883)
    config.add_argument("--bind", default="0.0.0.0")  # noqa: S104 - a broker listens for cars
    config.add_argument("--no-persistence", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "init":
        workers = tuple(args.worker or [DEFAULT_WORKER])
        try:
            init_pki(args.dir, args.broker_dir or args.dir, [h.strip() for h in args.hosts.split(",") if h.strip()],
                     workers)  # fmt: skip
        except (FileExistsError, ValueError) as exc:
            print(f"jiapei pki init: {exc}")  # noqa: T201
            return 1
        print(f"CA, broker certificate ({args.hosts}) and worker certificates {', '.join(workers)} in {args.dir}")  # noqa: T201
        print(f"keep {args.dir / 'ca.key'} on the server only (mode 600)")  # noqa: T201
        return 0
    if args.cmd == "worker":
        cert, key = add_worker(CertificateAuthority.load(args.dir), args.name)
        print(f"{cert} and {key}; the server adds {args.name} to the broker's ACL at its next start")  # noqa: T201
        return 0
    conf = render_mosquitto_conf(port=args.port, bind=args.bind, pki_dir=args.dir.resolve(),
                                 broker_dir=(args.broker_dir or args.dir).resolve(),
                                 persistence=not args.no_persistence, run_as_root=os.geteuid() == 0)  # fmt: skip
    print(conf, end="")  # noqa: T201
    return 0
