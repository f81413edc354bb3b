"""``jiapei``: one console script for every program of the project.

jiapei demo [--duration S] [--factor F] [--cars N]   the whole system on this machine
jiapei agent init|run …                              the in-car terminal
jiapei server …                                      ingest, validation, hours, exam forwarding, API
jiapei gateway …                                     national-protocol (JT/T 808 training) terminals over TCP
jiapei pki init|worker|broker-config …               the CA, the broker's TLS certificates and config
jiapei sim fleet|exam|bank|national …                simulated cars, exam system, escrow bank, national terminal
jiapei sim fraud [--only NAME…] [--no-faces] …       every fraud scenario through the real server: what it caught
jiapei decode nmea [--min-date YYYY-MM-DD] FILE|-   what our NMEA decoder sees (gpsd TPV JSON lines)
jiapei decode jt808 FILE|-                           what our JT/T 808 codec sees (a JSON line per frame)
jiapei face compare REFERENCE IMAGE…                 what our face engine sees
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd == "demo":
        from jiapei_cli.demo import main as demo

        return demo(rest)
    if cmd == "agent":
        from agent.main import main as agent

        return agent(rest)
    if cmd == "server":
        from server.app import main as server

        return int(server(rest) or 0)
    if cmd == "gateway":
        from server.gateway.main import main as gateway

        return gateway(rest)
    if cmd == "sim" and rest[:1] == ["national"]:
        from simulators.national_terminal import main as national

        return national(rest[1:])
    if cmd == "pki":
        from jiapei_cli.pki import main as pki

        return pki(rest)
    if cmd == "sim" and rest[:1] == ["fleet"]:
        from simulators.fleet import main as fleet

        return fleet(rest[1:])
    if cmd == "sim" and rest[:1] == ["bank"]:
        from simulators.bank import main as bank

        bank(rest[1:])
        return 0
    if cmd == "sim" and rest[:1] == ["fraud"]:
        from jiapei_cli.fraud_report import main as fraud_report

        return fraud_report(rest[1:])
    if cmd == "sim" and rest[:1] == ["exam"]:
        from simulators.exam import main as exam

        exam(rest[1:])
        return 0
    if cmd == "decode" and rest[:1] == ["nmea"] and len(rest) in (2, 4):
        from jiapei_cli.decode_nmea import main as decode_nmea

        return decode_nmea(rest[1:])
    if cmd == "decode" and len(rest) == 2 and rest[0] == "jt808":
        from jiapei_cli.decode_jt808 import run as decode_jt808

        return decode_jt808(rest[1])
    if cmd == "face" and len(rest) >= 3 and rest[0] == "compare":
        from jiapei_cli.face_compare import run as face_compare

        return face_compare(rest[1], rest[2:])
    print(f"jiapei: unknown command {' '.join(args)!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
