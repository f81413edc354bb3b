"""Logging in (OAuth2 password flow → a short-lived access token) and the operator accounts themselves.

``POST /api/auth/token`` (form: ``username``, ``password``) answers ``{"access_token", "token_type": "bearer",
"expires_in", "role"}``; failures are rate-limited per address and per username. ``GET /api/auth/me`` says who the
token stands for. Accounts: a regulator creates any; a school admin creates and disables student accounts of its
own school's students only.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select

from server.api_deps import DB, Page, RowId, not_found, paginate
from server.api_schemas import OperatorCreate, OperatorPublic, PrincipalPublic, TokenAnswer
from server.auth import AnyRole, Staff, TokenIssuer, check_password_rules, hash_password, login
from server.clock import utcnow
from server.models import (
    ROLE_REGULATOR,
    ROLE_SCHOOL_ADMIN,
    ROLE_STUDENT,
    OperatorAccount,
    School,
    Student,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["operators"])


def operator_public(a: OperatorAccount) -> OperatorPublic:
    return OperatorPublic(id=a.id, username=a.username, role=a.role, school=a.school_id, student=a.student_id,
                          disabled=a.disabled, created_at=a.created_at, last_login_at=a.last_login_at)  # fmt: skip


def issue_token(request: Request, db: DB, username: str, password: str) -> tuple[OperatorAccount, str]:
    account = login(request, db, username, password)
    account.last_login_at = utcnow()
    db.commit()
    tokens: TokenIssuer = request.app.state.tokens
    log.info("%s (%s) logged in", account.username, account.role)
    return account, tokens.issue(account)


@router.post("/auth/token")
def token(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, db: DB) -> TokenAnswer:
    """OAuth2 password flow: a bearer access token valid for ``expires_in`` seconds."""
    account, access = issue_token(request, db, form.username, form.password)
    tokens: TokenIssuer = request.app.state.tokens
    return TokenAnswer(access_token=access, expires_in=int(tokens.lifetime.total_seconds()), role=account.role)


@router.get("/auth/me")
def me(p: AnyRole) -> PrincipalPublic:
    return PrincipalPublic(name=p.name, role=p.role, school=p.school, student=p.student)


@router.get("/operators")
def list_operators(db: DB, p: Staff, page: Page, request: Request, response: Response,
                   role: str | None = None) -> list[OperatorPublic]:  # fmt: skip
    q = select(OperatorAccount).order_by(OperatorAccount.id)
    if p.role == ROLE_SCHOOL_ADMIN:
        q = q.where(OperatorAccount.school_id == p.school)
    if role:
        q = q.where(OperatorAccount.role == role)
    return [operator_public(a) for a in paginate(db, q, page, request, response)]


@router.post("/operators", status_code=201)
def create_operator(body: OperatorCreate, db: DB, p: Staff) -> OperatorPublic:
    """A new account. ``school`` is required for a school admin; ``student`` for a student (its school is the
    student's). A school admin may only create student accounts of its own students."""
    try:
        check_password_rules(body.password)
    except ValueError as exc:
        raise HTTPException(422, {"reason": "weak_password", "message": str(exc)}) from exc
    school = body.school
    if body.role == ROLE_STUDENT:
        student = db.get(Student, body.student) if body.student else None
        if student is None:
            raise HTTPException(422, {"reason": "unknown_student", "message": "a student account names its student"})
        school = student.school_id
    elif body.role == ROLE_SCHOOL_ADMIN:
        if not body.school or db.get(School, body.school) is None:
            raise HTTPException(422, {"reason": "unknown_school", "message": "a school admin names its school"})
    else:
        school = None
    if p.role != ROLE_REGULATOR and not (body.role == ROLE_STUDENT and school == p.school):
        raise HTTPException(403, {"reason": "forbidden_role",
                                  "message": "school admins create student accounts of their own students only"})
    if db.scalar(select(OperatorAccount.id).where(OperatorAccount.username == body.username)) is not None:
        raise HTTPException(409, {"reason": "exists", "message": "username taken"})
    a = OperatorAccount(username=body.username, password_hash=hash_password(body.password), role=body.role,
                        school_id=school, student_id=body.student if body.role == ROLE_STUDENT else None,
                        disabled=False, created_at=utcnow())  # fmt: skip
    db.add(a)
    db.commit()
    log.info("account %s (%s) created by %s", a.username, a.role, p.name)
    return operator_public(a)


@router.post("/operators/{account_id}/disable")
def disable_operator(account_id: RowId, db: DB, p: Staff) -> OperatorPublic:
    """Disable an account: its tokens stop working at once (every request re-reads the account)."""
    a = db.get(OperatorAccount, account_id)
    if a is None or (p.role != ROLE_REGULATOR and a.school_id != p.school):
        raise not_found("account")
    if p.role != ROLE_REGULATOR and a.role != ROLE_STUDENT:
        raise HTTPException(403, {"reason": "forbidden_role", "message": "school admins disable student accounts only"})
    a.disabled = True
    db.commit()
    log.warning("account %s disabled by %s", a.username, p.name)
    return operator_public(a)
