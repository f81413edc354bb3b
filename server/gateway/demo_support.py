"""What ``jiapei demo`` needs to run one national-protocol car beside the native ones.

:func:`start_national_car` plays the school's office for a car whose certified terminal speaks the 2016 protocol:
the terminal's RSA-2048 key and certificate are made (as the vendor does; the key stays in the car's directory),
the coach and student are enrolled, the operator registers the terminal with its certificate
(``POST /api/national-terminals``), ``jiapei gateway`` starts on the demo's database, and ``jiapei sim national``
trains sessions through it. Its minutes land in the same database, are judged by the same ledger, and its stage
reviews reach the exam simulator through the server's forwarder like the native cars'.

Call it from ``Demo.start`` after ``self.enrol_people()`` (the school exists then)::

    from server.gateway.demo_support import start_national_car
    self.national = start_national_car(self)
"""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TERMINAL = "3710000000000901"
PHONE = "0013910000000901"
PLATE = "鲁L0901学"
COACH = "3711020000000291"
STUDENT = "3711020000000191"
COURSE = "1212120000"  # C1 part 2, field driving
STARTUP_TIMEOUT_S = 60.0


def synthetic_template(seed: int) -> str:
    """A face template in the server's wire form for a person whose face only the certified terminal matches (the
    demo ships no photo of them): 128 float32 values, ``fr1:`` + base64."""
    values = [((seed * 7919 + i * 104729) % 1000) / 1000.0 - 0.5 for i in range(128)]
    return "fr1:" + base64.b64encode(struct.pack("<128f", *values)).decode("ascii")


def make_terminal_identity(directory: Path, terminal: str = TERMINAL) -> tuple[Path, str]:
    """(private key file, certificate PEM): an RSA-2048 key made for the terminal and its certificate (CN = number)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, terminal)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256()))  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "terminal-key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    key_file.chmod(0o600)
    return key_file, cert.public_bytes(serialization.Encoding.PEM).decode()


def start_national_car(demo: Any) -> dict[str, Any]:
    """Register and start one national car in a running demo (``jiapei_cli.demo.Demo``); returns what it started."""
    from jiapei_cli.demo import SCHOOL, _ok, free_port, wait_port

    a = demo.args
    data = demo.dir / "national-car"
    key_file, cert_pem = make_terminal_identity(data)
    with demo.admin() as api:
        _ok(api.post("/coaches", json={"id": COACH, "name": "国标教练 National Coach", "school": SCHOOL[0],
                                        "face_template": synthetic_template(1), "classes": ["C1", "C2"]}))  # fmt: skip
        _ok(api.post("/students", json={"id": STUDENT, "name": "国标学员 National Student", "school": SCHOOL[0],
                                         "face_template": synthetic_template(2), "class": "C1"}))  # fmt: skip
        _ok(api.post("/national-terminals", json={"terminal": TERMINAL, "phone": PHONE, "car_plate": PLATE,
                                                  "school": SCHOOL[0], "certificate": cert_pem}))  # fmt: skip
    port = free_port()
    database_url = a.database_url or f"sqlite:///{demo.dir / 'server.sqlite'}"
    gateway = demo.jiapei("gateway", "gateway", "--database-url", database_url, "--policy", a.policy,
                          "--host", "127.0.0.1", "--port", str(port))  # fmt: skip
    wait_port(port, STARTUP_TIMEOUT_S, gateway, "gateway")
    start = demo.fleet.get("sim_start") if isinstance(getattr(demo, "fleet", None), dict) else None
    argv = ["sim", "national", "--port", str(port), "--terminal", TERMINAL, "--phone", PHONE, "--key", str(key_file),
            "--plate", PLATE, "--coach", COACH, "--student", STUDENT, "--course", COURSE, "--minutes", "22",
            "--factor", str(a.factor)]  # fmt: skip
    if start:
        argv += ["--start", str(start)]
    demo.jiapei("national-car", *argv)
    return {"terminal": TERMINAL, "gateway": f"127.0.0.1:{port}", "coach": COACH, "student": STUDENT,
            "key": str(key_file)}  # fmt: skip
