"""Operators' identity: Argon2id password hashes, short-lived access tokens (JWT, HS256), roles and tenancy.

Who may call what (domain.md "Roles"; the tests in ``tests/integration/test_api_roles.py`` check every endpoint):

================  ==========================================================================================
regulator         every school: read everything, review decisions, revoke terminals, create schools and accounts
school_admin      one school (``school_id``): its coaches, students, cars/terminals (enrolment tokens), sessions,
                  hours, review queue (read), enrolment photos; student accounts of its own students
exam_clerk        eligibility and stage reviews (students' hours, stage-review notices), read-only
student           their own student record, hours, sessions and minutes, their own enrolment photo; their
                  enrolment, escrow, bookings, ratings and complaints (server.api_platform)
police            traffic police (公安交管): every school's eligibility and exam results, read-only
market_regulator  market regulation (市场监管): every school's prices, complaints, escrow balances and releases
================  ==========================================================================================

An object outside the caller's tenancy answers 404 (as if it did not exist: no probing other schools' ids); an
endpoint the caller's role may not use answers 403. The bootstrap admin token (``JIAPEI_ADMIN_TOKEN``) is a
regulator named ``admin-token``: it creates the first accounts and runs the demo.

Tokens carry ``sub`` (account id), ``role``, ``iat``/``exp``/``nbf``, ``iss`` and ``jti``; every request re-reads the
account, so disabling an account or changing its role takes effect at once, not at expiry.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from server.models import (
    ROLE_EXAM_CLERK,
    ROLE_MARKET,
    ROLE_POLICE,
    ROLE_REGULATOR,
    ROLE_SCHOOL_ADMIN,
    ROLE_STUDENT,
    OperatorAccount,
)
from server.settings import Settings
from webguard import RateLimiter

log = logging.getLogger(__name__)

TOKEN_ALGORITHM = "HS256"  # noqa: S105 - an algorithm name
TOKEN_ISSUER = "jiapei-server"  # noqa: S105 - an issuer name
#: HS256 keys shorter than the hash output are guessable offline from one token (RFC 7518 §3.2).
MIN_KEY_BYTES = 32
#: Wrong admin tokens or access tokens per client address (10 per 5 minutes) before it must wait.
BEARER_FAILURE_LIMIT = (10, 300.0)
#: Failed logins per client address and per username (10 per 5 minutes): password guessing is slow.
LOGIN_FAILURE_LIMIT = (10, 300.0)
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256  # Argon2 takes any length; a megabyte "password" is only a way to burn CPU
ADMIN_TOKEN_NAME = "admin-token"  # noqa: S105 - the name the bootstrap token acts under

_hasher = PasswordHasher()  # argon2-cffi's defaults: Argon2id, RFC 9106 "low memory" profile
#: A hash to verify against when the username is unknown, so that the answer takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


def check_password_rules(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")


# ---------------------------------------------------------------------------------------------- keys and tokens
class SigningKeyError(RuntimeError):
    """The access-token signing key is unusable (too short, readable by others)."""


def load_signing_key(settings: Settings) -> bytes:
    """From ``jwt_key_file`` (mode 0600) or ``jwt_key``; else a random key for this process only."""
    if settings.jwt_key_file:
        from server.pki import check_private_file

        path = Path(settings.jwt_key_file)
        check_private_file(path)
        key = path.read_bytes().strip()
    elif settings.jwt_key:
        key = settings.jwt_key.encode()
    else:
        log.warning("no JIAPEI_JWT_KEY_FILE or JIAPEI_JWT_KEY: access tokens signed with a key that dies with "
                    "this process (development only)")  # fmt: skip
        return os.urandom(MIN_KEY_BYTES)
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(f"the access-token key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
                              "(e.g. `head -c 48 /dev/urandom | base64 > jwt.key; chmod 600 jwt.key`)")  # fmt: skip
    return key


class TokenIssuer:
    """Signs and checks access tokens with one key."""

    def __init__(self, key: bytes, lifetime: timedelta, clock: Callable[[], datetime]) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise SigningKeyError(f"signing key shorter than {MIN_KEY_BYTES} bytes")
        self._key, self.lifetime, self._clock = key, lifetime, clock

    def issue(self, account: OperatorAccount) -> str:
        now = self._clock()
        claims = {"sub": str(account.id), "role": account.role, "iss": TOKEN_ISSUER, "iat": now, "nbf": now,
                  "exp": now + self.lifetime, "jti": uuid.uuid4().hex}  # fmt: skip
        return jwt.encode(claims, self._key, algorithm=TOKEN_ALGORITHM)

    def decode(self, token: str) -> dict[str, Any]:
        """The claims; raises :class:`jwt.InvalidTokenError` (expired, bad signature, not a token)."""
        claims: dict[str, Any] = jwt.decode(token, self._key, algorithms=[TOKEN_ALGORITHM], issuer=TOKEN_ISSUER,
                                            options={"require": ["sub", "exp", "iat", "iss"]}, leeway=5)  # fmt: skip
        return claims


# ---------------------------------------------------------------------------------------------- principals
@dataclass(frozen=True)
class Principal:
    """Who is calling: a logged-in account, or the bootstrap admin token (``account_id`` None)."""

    name: str
    role: str
    school: str | None = None
    student: str | None = None
    account_id: int | None = None

    @property
    def all_schools(self) -> bool:
        return self.role in (ROLE_REGULATOR, ROLE_EXAM_CLERK, ROLE_POLICE, ROLE_MARKET)

    def school_scope(self) -> str | None:
        """None: every school; else the one school this principal sees."""
        return None if self.all_schools else self.school

    def sees_school(self, school: str | None) -> bool:
        return self.all_schools or (self.role == ROLE_SCHOOL_ADMIN and school is not None and school == self.school)


def principal_of(account: OperatorAccount) -> Principal:
    return Principal(name=account.username, role=account.role, school=account.school_id,
                     student=account.student_id, account_id=account.id)  # fmt: skip


#: Documents the password flow in OpenAPI; ``auto_error=False``: the dependency below answers 401 itself.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, {"reason": "not_authenticated", "message": message},
                         headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def principal_from_token(request: Request, db: Session, token: str) -> Principal:
    """The principal a bearer token stands for; 401 (and a counted failure) when it stands for nobody."""
    state = request.app.state
    limiter: RateLimiter = state.bearer_failures
    who = _client(request)
    wait = limiter.blocked(who)
    if wait:
        raise HTTPException(429, {"reason": "rate_limited", "message": "too many failed logins; try later"},
                            headers={"Retry-After": str(int(wait) + 1)})  # fmt: skip
    admin: str | None = state.settings.admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal(name=ADMIN_TOKEN_NAME, role=ROLE_REGULATOR)
    issuer: TokenIssuer = state.tokens
    try:
        claims = issuer.decode(token)
        account = db.get(OperatorAccount, int(claims["sub"]))
    except jwt.ExpiredSignatureError as exc:
        raise _unauthorized("access token expired: log in again") from exc  # not a guess: not counted
    except (jwt.InvalidTokenError, ValueError) as exc:
        limiter.hit(who)
        raise _unauthorized("invalid bearer token") from exc
    if account is None or account.disabled:
        raise _unauthorized("account disabled or removed")
    return principal_of(account)


def current_principal(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
    if not token:
        raise _unauthorized("log in: POST /api/auth/token, then send Authorization: Bearer <access_token>")
    with request.app.state.session_factory() as db:
        return principal_from_token(request, db, token)


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency: the caller, who must hold one of ``roles`` (403 otherwise)."""
    allowed = frozenset(roles)

    def dependency(p: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if p.role not in allowed:
            needs = " or ".join(sorted(allowed))
            raise HTTPException(403, {"reason": "forbidden_role",
                                      "message": f"role {p.role} may not do this (needs {needs})"})
        return p

    dependency.__name__ = f"require_{'_or_'.join(sorted(allowed))}"
    return dependency


ANY_ROLE = (ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_EXAM_CLERK, ROLE_STUDENT, ROLE_POLICE, ROLE_MARKET)
Regulator = Annotated[Principal, Depends(require(ROLE_REGULATOR))]
Staff = Annotated[Principal, Depends(require(ROLE_REGULATOR, ROLE_SCHOOL_ADMIN))]
Eligibility = Annotated[Principal, Depends(require(ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_EXAM_CLERK))]
AnyRole = Annotated[Principal, Depends(require(*ANY_ROLE))]
StaffOrStudent = Annotated[Principal, Depends(require(ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_STUDENT))]
Student = Annotated[Principal, Depends(require(ROLE_STUDENT))]
Police = Annotated[Principal, Depends(require(ROLE_REGULATOR, ROLE_POLICE, ROLE_EXAM_CLERK))]
Market = Annotated[Principal, Depends(require(ROLE_REGULATOR, ROLE_MARKET))]
#: Complaints: the student files, the regulator assigns, the school answers; market regulation reads them all.
ComplaintParty = Annotated[Principal, Depends(require(ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_STUDENT, ROLE_MARKET))]


def login(request: Request, db: Session, username: str, password: str) -> OperatorAccount:
    """The account whose password this is; 401 otherwise (rate-limited per address and per username)."""
    limiter: RateLimiter = request.app.state.login_failures
    keys = (f"addr:{_client(request)}", f"user:{username.lower()}")
    wait = max(limiter.blocked(k) for k in keys)
    if wait:
        raise HTTPException(429, {"reason": "rate_limited", "message": "too many failed logins; try later"},
                            headers={"Retry-After": str(int(wait) + 1)})  # fmt: skip
    from sqlalchemy import select

    account = db.scalar(select(OperatorAccount).where(OperatorAccount.username == username))
    ok = verify_password(account.password_hash if account else _DUMMY_HASH, password[:MAX_PASSWORD_LENGTH])
    if account is None or not ok or account.disabled:
        for k in keys:
            limiter.hit(k)
        log.warning("failed login for %r from %s", username[:64], _client(request))
        raise _unauthorized("wrong username or password")
    if needs_rehash(account.password_hash):
        account.password_hash = hash_password(password)
    return account


__all__ = ["ROLE_EXAM_CLERK", "ROLE_REGULATOR", "ROLE_SCHOOL_ADMIN", "ROLE_STUDENT", "Principal", "TokenIssuer"]
