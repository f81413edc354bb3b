"""deploy/'s broker config says what the tested one says (server.broker renders the one tests and the demo run)."""

from __future__ import annotations

from pathlib import Path

from server.broker import render_acl, render_mosquitto_conf

ROOT = Path(__file__).resolve().parents[2]


def _directives(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value
    return out


def test_deploy_config_matches_the_tested_config() -> None:
    tested = _directives(render_mosquitto_conf(port=8883, bind="0.0.0.0", pki_dir=Path("/etc/jiapei/pki"),  # noqa: S104
                                               broker_dir=Path("/etc/jiapei/pki"), persistence=True,
                                               run_as_root=False))  # fmt: skip
    deployed = _directives((ROOT / "deploy" / "mosquitto" / "jiapei.conf").read_text())
    tested.pop("pid_file")  # Debian's service unit owns the pid file; the tests point theirs at a temp dir
    tested.pop("persistence_location")
    deployed.pop("persistence_location")
    assert deployed == tested


def test_acl_denies_revoked_terminals_and_grants_workers() -> None:
    acl = render_acl(["T000000000000009"], ("jiapei-server-1", "jiapei-server-2"))
    assert "pattern write jiapei/v1/terminals/%u/up/#" in acl and "pattern read jiapei/v1/terminals/%u/down/#" in acl
    assert "user T000000000000009\ntopic deny #" in acl
    assert acl.count("topic write jiapei/v1/terminals/+/down/#") == 2
