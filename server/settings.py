"""Server settings (pydantic-settings, environment prefix ``JIAPEI_``); loaded only in :mod:`server.app`."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JIAPEI_", extra="ignore")

    database_url: str = "sqlite:///jiapei-server.db"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_client_id: str = "jiapei-server-1"
    exam_url: str = "http://127.0.0.1:8090"
    # A built-in policy name or a path to a policy TOML file; or several, comma-separated: the versions over time,
    # each judging the minutes of the days from its effective_from (the one in force today runs the rest).
    policy: str = "national-2016"
    admin_token: str | None = None  # admin writes are refused (401) while unset
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    resend_grace_seconds: float = 30.0
    resend_check_seconds: float = 5.0
    # Trust (issue 8). With pki_dir set the server talks TLS to the broker with its client certificate
    # ``<mqtt_client_id>.crt`` from that directory, issues terminals' certificates from its CA and keeps the
    # broker's CRL and ACL (in broker_dir, default pki_dir) in step with revocations.
    pki_dir: str | None = None
    broker_dir: str | None = None
    broker_pid_file: str | None = None  # SIGHUP goes there after a revocation; else reload the broker yourself
    mqtt_public_host: str | None = None  # what terminals are told to connect to (default: mqtt_host)
    mqtt_public_port: int | None = None
    # Operators (issue 7). The key that signs operators' access tokens (HS256, at least 32 bytes): a file only the
    # server's user can read (``jwt_key_file``, mode 0600), or ``JIAPEI_JWT_KEY`` in the environment. Neither set:
    # a random key per process (every token dies with a restart; fine for development, wrong behind a balancer).
    jwt_key_file: str | None = None
    jwt_key: str | None = None
    access_token_minutes: int = 30
    # Stage reviews (issue 5): the server signs every notice to the exam system with this Ed25519 key (PKCS#8 PEM,
    # 0600, made on first start). Unset: ``<pki_dir>/stage-review-signing.key``, else ``jiapei-stage-review.key``
    # beside the SQLite database (in the working directory for other databases). Its public key is served at
    # ``GET /api/stage-reviews/key``.
    notice_key_file: str | None = None
    dashboard_cookie_secure: bool = False  # set behind TLS: the dashboard's session cookie then needs HTTPS
    # Platform (issue 13). The bank that holds students' fees in escrow (simulators/bank.py in tests and the demo):
    # its URL, the shared secret its callbacks are signed with (HMAC-SHA256), and where it should send them.
    bank_url: str = "http://127.0.0.1:8091"
    bank_secret: str | None = None  # callbacks are refused (401) while unset
    platform_poll_seconds: float = 2.0
