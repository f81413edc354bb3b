"""Enrolment of this terminal with the server, once, with the operator's one-time token.

``jiapei agent enrol --data-dir D --terminal T --server https://… --token …``:

1. the signing key (Ed25519) and the TLS key (ECDSA P-256) are created here if they do not exist yet, owner-only,
   and never leave this directory;
2. an :class:`~firmware_protocols.messages.EnrolmentRequest` carrying the token, the signing public key and a CSR
   for ``CN=<terminal>`` is signed with the signing key and POSTed to ``/api/provision``;
3. the answer (client certificate, CA certificate, broker address) is written to ``tls/`` and ``broker.json``.

Crash safety: both keys are on disk before the request leaves, so a retry after a lost answer sends the same keys
and the server returns the same certificate; a certificate is written only after the server committed it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.keys import check_owner_only, load_or_create_key, write_owner_only
from firmware_protocols import envelope
from firmware_protocols.messages import EnrolmentRequest

log = logging.getLogger(__name__)

TLS_DIR = "tls"
TLS_KEY_FILE = "client.key"
TLS_CERT_FILE = "client.crt"
CA_FILE = "ca.crt"
BROKER_FILE = "broker.json"


class EnrolmentFailed(Exception):
    """The server refused (``reason`` from its answer) or could not be reached."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how this terminal talks MQTT: written at enrolment, read at every start."""

    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path

    def tls(self) -> dict[str, str]:
        return {"ca": str(self.ca_file), "cert": str(self.cert_file), "key": str(self.key_file)}


def load_or_create_tls_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    path = data_dir / TLS_DIR / TLS_KEY_FILE
    if path.exists():
        check_owner_only(path)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} is not an ECDSA key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    write_owner_only(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))  # fmt: skip
    return key


def make_csr(key: ec.EllipticCurvePrivateKey, terminal: str) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, terminal)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def build_request(data_dir: Path, terminal: str, token: str, now: datetime | None = None) -> bytes:
    signing_key = load_or_create_key(data_dir)
    tls_key = load_or_create_tls_key(data_dir)
    at = (now or datetime.now(UTC)).replace(microsecond=0)
    public = envelope.public_key_to_pem(signing_key.public_key())
    request = EnrolmentRequest(terminal, token, public, make_csr(tls_key, terminal), at)
    return request.sign(signing_key)


def enrol(data_dir: Path, terminal: str, server_url: str, token: str, *, verify: bool | str = True,
          timeout: float = 30.0) -> BrokerSettings:  # fmt: skip
    """Enrol with the server; returns the broker settings now saved in ``data_dir``."""
    raw = build_request(data_dir, terminal, token)
    try:
        r = httpx.post(f"{server_url.rstrip('/')}/api/provision", json={"request": raw.decode("ascii")},
                       timeout=timeout, verify=verify)  # fmt: skip
    except httpx.HTTPError as exc:
        raise EnrolmentFailed(f"server {server_url} not reachable: {exc}; run the same command again",
                              "unreachable") from exc  # fmt: skip
    if r.status_code != 201:
        detail = _detail(r)
        raise EnrolmentFailed(f"enrolment refused ({r.status_code}): {detail.get('message', r.text[:200])}",
                              str(detail.get("reason", r.status_code)))  # fmt: skip
    answer = r.json()
    if answer.get("terminal") != terminal:
        raise EnrolmentFailed("the server answered for another terminal", "terminal_mismatch")
    tls = data_dir / TLS_DIR
    _write(tls / CA_FILE, answer["ca_certificate"])
    _write(tls / TLS_CERT_FILE, answer["certificate"])
    _write(data_dir / BROKER_FILE, json.dumps({"terminal": terminal, "host": answer["mqtt_host"],
                                               "port": int(answer["mqtt_port"]),
                                               "certificate_serial": answer["certificate_serial"],
                                               "not_after": answer["not_after"]}, indent=1))  # fmt: skip
    log.info("enrolled %s: certificate %s until %s", terminal, answer["certificate_serial"], answer["not_after"])
    settings = load_broker_settings(data_dir)
    assert settings is not None  # noqa: S101 - written just above
    return settings


def load_broker_settings(data_dir: Path) -> BrokerSettings | None:
    """The saved broker settings, or None when this terminal has not enrolled yet."""
    path = data_dir / BROKER_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    tls = data_dir / TLS_DIR
    for f in (tls / CA_FILE, tls / TLS_CERT_FILE, tls / TLS_KEY_FILE):
        if not f.exists():
            raise FileNotFoundError(f"{f} is missing: enrol again (`jiapei agent enrol`)")
    check_owner_only(tls / TLS_KEY_FILE)
    return BrokerSettings(str(saved["host"]), int(saved["port"]), tls / CA_FILE, tls / TLS_CERT_FILE,
                          tls / TLS_KEY_FILE)  # fmt: skip


def _detail(r: httpx.Response) -> dict[str, object]:
    try:
        detail = r.json().get("detail")
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {"message": str(detail)}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
