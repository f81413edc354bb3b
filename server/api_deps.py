"""What every router of the operator API shares: the database session, pagination, and tenancy look-ups.

Lists are paginated with ``limit`` (1–500, default 100) and ``offset``; the body stays a JSON array, the total is in
``X-Total-Count`` and the next page in a ``Link: <…>; rel="next"`` header (RFC 8288). Look-ups by id go through
``visible_*``: an object outside the caller's tenancy is answered 404, exactly like one that does not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Query, Request, Response
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from firmware_protocols.errors import ProtocolError
from firmware_protocols.identifiers import check_national_id
from server.auth import Principal
from server.models import ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_STUDENT, Coach, Student, Terminal, TrainingSession

log = logging.getLogger(__name__)

#: A row id in a path: 1 … 2⁶³−1 (larger numbers are no row of ours, and overflow the database's integers).
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
MAX_PAGE = 500
DEFAULT_PAGE = 100
T = TypeVar("T")
#: Called with a school id after its terminals or people changed (publishes the retained rosters).
PeopleChanged = Callable[[str], object]


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as s:
        yield s


DB = Annotated[Session, Depends(get_db)]


class PageParams:
    def __init__(self, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
                 offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> None:  # fmt: skip
        self.limit, self.offset = limit, offset


Page = Annotated[PageParams, Depends()]


def paginate(db: Session, q: Select[Any], page: PageParams, request: Request, response: Response) -> Sequence[Any]:
    """One page of ``q`` (which must be ordered), with ``X-Total-Count`` and a ``next`` link when more follow."""
    total = db.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0
    rows = db.scalars(q.limit(page.limit).offset(page.offset)).all()
    response.headers["X-Total-Count"] = str(total)
    if page.offset + page.limit < total:
        url = request.url.include_query_params(offset=page.offset + page.limit, limit=page.limit)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return rows


def check_id(value: str, what: str) -> str:
    try:
        return check_national_id(value, what)
    except ProtocolError as exc:
        raise HTTPException(422, {"reason": "bad_id", "message": f"{what}: {exc}"}) from exc


def people_changed(request: Request, school: str) -> None:
    hook: PeopleChanged | None = request.app.state.on_people_change
    if hook is not None:
        try:
            hook(school)
        except Exception:  # noqa: BLE001 - the roster is republished on the next change; the write stands
            log.exception("publishing rosters of school %s failed", school)


def not_found(what: str) -> HTTPException:
    return HTTPException(404, {"reason": "not_found", "message": f"no such {what}"})


def own_school_only(p: Principal, school: str) -> None:
    """Writes: a school admin names only their own school (403: the caller said which school)."""
    if p.role != ROLE_REGULATOR and not (p.role == ROLE_SCHOOL_ADMIN and p.school == school):
        raise HTTPException(403, {"reason": "other_school", "message": "school admins manage their own school only"})


def visible_student(db: Session, p: Principal, student_id: str) -> Student:
    s = db.get(Student, student_id)
    if s is None:
        raise not_found("student")
    if p.role == ROLE_STUDENT:
        if p.student != s.id:
            raise not_found("student")
    elif not p.sees_school(s.school_id):
        raise not_found("student")
    return s


def visible_coach(db: Session, p: Principal, coach_id: str) -> Coach:
    c = db.get(Coach, coach_id)
    if c is None or p.role == ROLE_STUDENT or not p.sees_school(c.school_id):
        raise not_found("coach")
    return c


def visible_terminal(db: Session, p: Principal, terminal_id: str) -> Terminal:
    t = db.get(Terminal, terminal_id)
    if t is None or p.role == ROLE_STUDENT or not p.sees_school(t.school_id):
        raise not_found("terminal")
    return t


def session_school(db: Session, ts: TrainingSession) -> str | None:
    t = db.get(Terminal, ts.terminal_id)
    return t.school_id if t else None


def visible_session(db: Session, p: Principal, session_id: int) -> TrainingSession:
    ts = db.get(TrainingSession, session_id)
    if ts is None:
        raise not_found("session")
    if p.role == ROLE_STUDENT:
        if ts.student_id is None or ts.student_id != p.student:
            raise not_found("session")
    elif not p.sees_school(session_school(db, ts)):
        raise not_found("session")
    return ts
