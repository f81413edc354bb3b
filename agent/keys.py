"""The terminal's signing key: generated on the terminal at first start, kept owner-only, never sent anywhere.

Rotation (``jiapei agent rotate-key``, with the agent stopped): the new key is written to ``signing_key.next.pem``
first; the store then commits a new chain whose genesis carries the new public key and the old key's
:class:`~firmware_protocols.messages.KeyVouch`; only then does the new key replace the old file. A crash between
the steps is finished at the next start by :func:`recover_rotation`: the next key is adopted if the store's newest
chain is signed by it, and discarded otherwise.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_protocols import envelope

log = logging.getLogger(__name__)

PRIVATE_KEY_FILE = "signing_key.pem"
PUBLIC_KEY_FILE = "signing_key.pub.pem"
NEXT_KEY_FILE = "signing_key.next.pem"
LOCK_FILE = "agent.lock"


def check_owner_only(path: Path) -> None:
    """Refuse a secret that others can read (a key copied around with the wrong mode)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")


def write_owner_only(path: Path, data: bytes) -> None:
    """Write a secret 0600, durably, replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _load(path: Path) -> Ed25519PrivateKey:
    check_owner_only(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """Load the key, or create it (0600) on first start. Refuses a key file others can read."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PRIVATE_KEY_FILE
    if path.exists():
        return _load(path)
    key = Ed25519PrivateKey.generate()
    write_owner_only(path, _pem(key))
    (data_dir / PUBLIC_KEY_FILE).write_text(envelope.public_key_to_pem(key.public_key()))
    log.info("generated a new signing key %s in %s", envelope.key_id(key.public_key()), data_dir)
    return key


def begin_rotation(data_dir: Path) -> Ed25519PrivateKey:
    """A new key, on disk as the *next* key (not used for anything until the store has committed its genesis)."""
    key = Ed25519PrivateKey.generate()
    write_owner_only(data_dir / NEXT_KEY_FILE, _pem(key))
    return key


def finish_rotation(data_dir: Path) -> Ed25519PrivateKey:
    """The next key becomes the key (after the store committed the chain it signs)."""
    key = _load(data_dir / NEXT_KEY_FILE)
    (data_dir / NEXT_KEY_FILE).replace(data_dir / PRIVATE_KEY_FILE)
    (data_dir / PUBLIC_KEY_FILE).write_text(envelope.public_key_to_pem(key.public_key()))
    log.warning("signing key rotated: now %s", envelope.key_id(key.public_key()))
    return key


def recover_rotation(data_dir: Path, newest_chain_key_id: str | None) -> None:
    """Finish or undo a rotation cut short by a crash (see the module docstring)."""
    path = data_dir / NEXT_KEY_FILE
    if not path.exists():
        return
    next_kid = envelope.key_id(_load(path).public_key())
    if next_kid == newest_chain_key_id:
        finish_rotation(data_dir)
    else:
        log.warning("discarding an unfinished key rotation (%s was never used)", next_kid)
        path.unlink()


@contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the terminal's data directory: one agent (or key rotation) at a time."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"another agent is using {data_dir} (stop it first)") from exc
        yield
    finally:
        os.close(fd)
