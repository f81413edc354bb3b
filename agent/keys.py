"""The terminal's signing key: generated on the terminal at first start, kept owner-only, never sent anywhere."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_protocols import envelope

log = logging.getLogger(__name__)

PRIVATE_KEY_FILE = "signing_key.pem"
PUBLIC_KEY_FILE = "signing_key.pub.pem"


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """Load the key, or create it (0600) on first start. Refuses a key file others can read."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PRIVATE_KEY_FILE
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    (data_dir / PUBLIC_KEY_FILE).write_text(envelope.public_key_to_pem(key.public_key()))
    log.info("generated a new signing key %s in %s", envelope.key_id(key.public_key()), data_dir)
    return key
