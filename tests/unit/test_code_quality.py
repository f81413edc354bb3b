"""The architecture's boundaries and the project's lint, checked on every run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/bootstrap.sh")
    return str(path)


def test_import_boundaries_hold() -> None:
    """agent and server never import each other; firmware_protocols is sans-IO; simulators use protocols only."""
    r = subprocess.run([tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "broken" in r.stdout and ", 0 broken" in r.stdout


def test_ruff_is_clean() -> None:
    r = subprocess.run([tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def test_typing_of_everything() -> None:
    targets = ["agent", "server", "simulators", "biometrics", "webguard", "jiapei_cli", "tools", "bench"]
    r = subprocess.run([tool("mypy"), *targets], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def test_strict_typing_of_protocols_and_pure_cores() -> None:
    targets = ["firmware_protocols", "agent/session.py", "server/validation", "server/hours.py", "server/policy.py"]
    r = subprocess.run([tool("mypy"), "--strict", *targets], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def test_no_secret_is_committed() -> None:
    """Keys and tokens come from files and the environment on the machine, never from the repository."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    leaks = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".jpg", ".png", ".mp4"}:
            continue
        text = path.read_bytes()
        if b"PRIVATE KEY-----" in text and not name.startswith("tests/"):
            leaks.append(name)
    assert leaks == []
