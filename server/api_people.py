"""People in the operator API: coaches and students, their enrolment photos and face templates, students' hours.

Enrolment (issue 4): ``POST /api/students/enrol`` and ``POST /api/coaches/enrol`` take a multipart form with the
person's fields, ``consent=true`` (PIPL: sensitive personal information needs the person's consent, recorded with the
photo) and the registration ``photo``; the server computes the face template (:mod:`server.enrolment`) or answers 422
with the reason (``no_face``, ``several_faces``, ``face_too_small``, ``not_an_image``; 413 for ``photo_too_large``).
``PUT /api/{students|coaches}/{id}/photo`` re-enrols. ``GET …/photo`` serves the newest photo as JPEG to the roles
allowed (regulator, the person's school admin, a student their own) and logs every read. Templates never leave
through this API: they reach terminals over the roster channel only.

``POST /api/coaches`` and ``POST /api/students`` with a ready ``face_template`` stay for tools that enrol offline.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile
from sqlalchemy import select
from sqlalchemy.orm import Session

from firmware_protocols.identifiers import CLASS_CODES
from server.api_deps import (
    DB,
    Page,
    check_id,
    own_school_only,
    paginate,
    people_changed,
    visible_coach,
    visible_student,
)
from server.api_schemas import (
    CoachCreate,
    EnrolmentPhotoPublic,
    PartProgressPublic,
    PersonPublic,
    StudentCreate,
    StudentPublic,
)
from server.auth import AnyRole, Eligibility, Principal, Staff, StaffOrStudent
from server.clock import utcnow
from server.enrolment import MAX_PHOTO_BYTES, EnrolledPhoto, PhotoRefused, process_photo
from server.hours import progress
from server.models import ROLE_STUDENT, Coach, EnrolmentPhoto, HourTotal, School, Student
from server.policy import Policy

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["people"])
_engine_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------- helpers
def _check_classes(classes: list[str]) -> None:
    unknown = [c for c in classes if c not in CLASS_CODES]
    if unknown:
        raise HTTPException(422, {"reason": "unknown_class", "message": f"unknown licence classes {unknown}"})


def _check_template(text: str) -> None:
    from biometrics.errors import TemplateDecodeError
    from biometrics.templates import decode_template

    try:
        decode_template(text)
    except (TemplateDecodeError, ValueError) as exc:
        raise HTTPException(422, {"reason": "bad_template", "message": f"face_template: {exc}"}) from exc


def _school_exists(db: Session, school: str) -> None:
    if db.get(School, school) is None:
        raise HTTPException(422, {"reason": "unknown_school", "message": f"unknown school {school!r}"})


def hours_of(db: Session, student: Student, policy: Policy) -> list[PartProgressPublic]:
    rows = {h.part: h for h in db.scalars(select(HourTotal).where(HourTotal.student_id == student.id))}
    valid = {p: h.valid_minutes for p, h in rows.items()}
    return [PartProgressPublic(part=p.part, valid_minutes=p.valid_minutes, required_minutes=p.required_minutes,
                               complete=p.complete, xueshi=p.valid_minutes // policy.minutes_per_xueshi)
            for p in progress(student.id, student.licence_class, valid, policy)]  # fmt: skip


def student_public(db: Session, s: Student, policy: Policy) -> StudentPublic:
    return StudentPublic(id=s.id, name=s.name, school=s.school_id, classes=[s.licence_class],
                         licence_class=s.licence_class, photo_sha256=s.photo_sha256,
                         hours=hours_of(db, s, policy))  # fmt: skip


def coach_public(c: Coach) -> PersonPublic:
    return PersonPublic(id=c.id, name=c.name, school=c.school_id, classes=list(c.classes), photo_sha256=c.photo_sha256)


def face_engine(request: Request) -> Any:
    """The app's face engine, made at the first enrolment (loading dlib's models takes a second)."""
    with _engine_lock:
        if request.app.state.face_engine is None:
            from biometrics.engine import FaceEngine
            from biometrics.errors import EngineUnavailable

            try:
                request.app.state.face_engine = FaceEngine()
            except EngineUnavailable as exc:
                raise HTTPException(503, {"reason": "face_engine_unavailable", "message": str(exc)}) from exc
        return request.app.state.face_engine


def _read_photo(request: Request, photo: UploadFile, consent: bool) -> EnrolledPhoto:
    if not consent:
        raise HTTPException(422, {"reason": "no_consent", "message": "the person's consent to process their face "
                                  "(PIPL art. 29) must be recorded: consent=true"})  # fmt: skip
    data = photo.file.read(MAX_PHOTO_BYTES + 1)
    try:
        return process_photo(data, face_engine(request))
    except PhotoRefused as exc:
        log.info("enrolment photo refused: %s (%s)", exc.reason, exc)
        raise HTTPException(exc.status, {"reason": exc.reason, "message": str(exc)}) from exc


def _store_photo(db: Session, kind: str, person_id: str, got: EnrolledPhoto, p: Principal) -> None:
    db.add(EnrolmentPhoto(person_kind=kind, person_id=person_id, sha256=got.sha256, media_type="image/jpeg",
                          data=got.jpeg, width=got.width, height=got.height, face_box=list(got.face_box), consent=True,
                          uploaded_by=p.name[:64], created_at=utcnow()))  # fmt: skip


def latest_photo(db: Session, kind: str, person_id: str) -> EnrolmentPhoto | None:
    return db.scalar(select(EnrolmentPhoto).where(EnrolmentPhoto.person_kind == kind,
                                                  EnrolmentPhoto.person_id == person_id)
                     .order_by(EnrolmentPhoto.id.desc()).limit(1))  # fmt: skip


def _photo_response(db: Session, kind: str, person_id: str, p: Principal) -> Response:
    row = latest_photo(db, kind, person_id)
    if row is None:
        raise HTTPException(404, {"reason": "no_photo", "message": f"no enrolment photo for this {kind}"})
    log.info("enrolment photo of %s %s read by %s (%s)", kind, person_id, p.name, p.role)  # PIPL: every access
    return Response(row.data, media_type=row.media_type, headers={"Cache-Control": "private, no-store",
                                                                  "ETag": f'"{row.sha256}"'})  # fmt: skip


def _photo_public(row: EnrolmentPhoto) -> EnrolmentPhotoPublic:
    return EnrolmentPhotoPublic(person_kind=row.person_kind, person_id=row.person_id, sha256=row.sha256,
                                width=row.width, height=row.height, face_box=[int(v) for v in row.face_box],
                                created_at=row.created_at)  # fmt: skip


# ---------------------------------------------------------------------------------------------- coaches
@router.get("/coaches")
def list_coaches(db: DB, p: Staff, page: Page, request: Request, response: Response,
                 school: str | None = None) -> list[PersonPublic]:  # fmt: skip
    q = select(Coach).order_by(Coach.id)
    if p.school_scope() is not None:
        q = q.where(Coach.school_id == p.school_scope())
    if school:
        q = q.where(Coach.school_id == school)
    return [coach_public(c) for c in paginate(db, q, page, request, response)]


@router.get("/coaches/{coach_id}")
def get_coach(coach_id: str, db: DB, p: Staff) -> PersonPublic:
    return coach_public(visible_coach(db, p, coach_id))


@router.post("/coaches", status_code=201)
def create_coach(body: CoachCreate, request: Request, db: DB, p: Staff) -> PersonPublic:
    """A coach with a template computed elsewhere (prefer ``/api/coaches/enrol`` with the photo)."""
    check_id(body.id, "coach")
    own_school_only(p, body.school)
    _school_exists(db, body.school)
    _check_classes(body.classes)
    _check_template(body.face_template)
    if db.get(Coach, body.id) is not None:
        raise HTTPException(409, {"reason": "exists", "message": "coach exists"})
    c = Coach(id=body.id, name=body.name, school_id=body.school, classes=body.classes, face_template=body.face_template,
              photo_sha256=body.photo_sha256, created_at=utcnow())  # fmt: skip
    db.add(c)
    db.commit()
    people_changed(request, body.school)
    return coach_public(c)


@router.post("/coaches/enrol", status_code=201)
def enrol_coach(request: Request, db: DB, p: Staff, id: Annotated[str, Form(min_length=16, max_length=16)],
                name: Annotated[str, Form(min_length=1, max_length=200)],
                school: Annotated[str, Form(min_length=16, max_length=16)],
                classes: Annotated[list[str], Form(min_length=1, max_length=20)],
                consent: Annotated[bool, Form()], photo: Annotated[UploadFile, File()]) -> PersonPublic:  # fmt: skip
    """Enrol a coach from their registration photo: the server computes the face template."""
    check_id(id, "coach")
    own_school_only(p, school)
    _school_exists(db, school)
    _check_classes(classes)
    if db.get(Coach, id) is not None:
        raise HTTPException(409, {"reason": "exists", "message": "coach exists"})
    got = _read_photo(request, photo, consent)
    c = Coach(id=id, name=name, school_id=school, classes=classes, face_template=got.template, photo_sha256=got.sha256,
              created_at=utcnow())  # fmt: skip
    db.add(c)
    _store_photo(db, "coach", id, got, p)
    db.commit()
    people_changed(request, school)
    return coach_public(c)


@router.put("/coaches/{coach_id}/photo")
def replace_coach_photo(coach_id: str, request: Request, db: DB, p: Staff, consent: Annotated[bool, Form()],
                        photo: Annotated[UploadFile, File()]) -> EnrolmentPhotoPublic:  # fmt: skip
    """Re-enrol a coach: a new photo, a new template (the old photo stays, for the record)."""
    c = visible_coach(db, p, coach_id)
    got = _read_photo(request, photo, consent)
    c.face_template, c.photo_sha256 = got.template, got.sha256
    _store_photo(db, "coach", c.id, got, p)
    db.commit()
    people_changed(request, c.school_id)
    row = latest_photo(db, "coach", c.id)
    assert row is not None
    return _photo_public(row)


@router.get("/coaches/{coach_id}/photo", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the newest enrolment photo"}})
def get_coach_photo(coach_id: str, db: DB, p: Staff) -> Response:
    c = visible_coach(db, p, coach_id)
    return _photo_response(db, "coach", c.id, p)


# ---------------------------------------------------------------------------------------------- students
@router.get("/students")
def list_students(request: Request, db: DB, p: Eligibility, page: Page, response: Response,
                  school: str | None = None, licence_class: Annotated[str | None, Query(alias="class")] = None
                  ) -> list[StudentPublic]:  # fmt: skip
    """Students with their hours (regulator, exam clerk: all; school admin: its own)."""
    policy = request.app.state.policy
    q = select(Student).order_by(Student.id)
    if p.school_scope() is not None:
        q = q.where(Student.school_id == p.school_scope())
    if school:
        q = q.where(Student.school_id == school)
    if licence_class:
        q = q.where(Student.licence_class == licence_class)
    return [student_public(db, s, policy) for s in paginate(db, q, page, request, response)]


@router.get("/students/{student_id}")
def get_student(student_id: str, request: Request, db: DB, p: AnyRole) -> StudentPublic:
    return student_public(db, visible_student(db, p, student_id), request.app.state.policy)


@router.get("/students/{student_id}/hours")
def get_student_hours(student_id: str, request: Request, db: DB, p: AnyRole) -> list[PartProgressPublic]:
    """Valid minutes per part against the syllabus (what eligibility for each part's exam rests on)."""
    return hours_of(db, visible_student(db, p, student_id), request.app.state.policy)


@router.post("/students", status_code=201)
def create_student(body: StudentCreate, request: Request, db: DB, p: Staff) -> StudentPublic:
    """A student with a template computed elsewhere (prefer ``/api/students/enrol`` with the photo)."""
    check_id(body.id, "student")
    own_school_only(p, body.school)
    _school_exists(db, body.school)
    _check_classes([body.licence_class])
    _check_template(body.face_template)
    if db.get(Student, body.id) is not None:
        raise HTTPException(409, {"reason": "exists", "message": "student exists"})
    s = Student(id=body.id, name=body.name, school_id=body.school, licence_class=body.licence_class,
                face_template=body.face_template, photo_sha256=body.photo_sha256, created_at=utcnow())  # fmt: skip
    db.add(s)
    db.commit()
    people_changed(request, body.school)
    return student_public(db, s, request.app.state.policy)


@router.post("/students/enrol", status_code=201)
def enrol_student(request: Request, db: DB, p: Staff, id: Annotated[str, Form(min_length=16, max_length=16)],
                  name: Annotated[str, Form(min_length=1, max_length=200)],
                  school: Annotated[str, Form(min_length=16, max_length=16)],
                  licence_class: Annotated[str, Form(alias="class", min_length=1, max_length=4)],
                  consent: Annotated[bool, Form()], photo: Annotated[UploadFile, File()]) -> StudentPublic:  # fmt: skip
    """Enrol a student from their registration photo: the server computes the face template."""
    check_id(id, "student")
    own_school_only(p, school)
    _school_exists(db, school)
    _check_classes([licence_class])
    if db.get(Student, id) is not None:
        raise HTTPException(409, {"reason": "exists", "message": "student exists"})
    got = _read_photo(request, photo, consent)
    s = Student(id=id, name=name, school_id=school, licence_class=licence_class, face_template=got.template,
                photo_sha256=got.sha256, created_at=utcnow())  # fmt: skip
    db.add(s)
    _store_photo(db, "student", id, got, p)
    db.commit()
    people_changed(request, school)
    return student_public(db, s, request.app.state.policy)


@router.put("/students/{student_id}/photo")
def replace_student_photo(student_id: str, request: Request, db: DB, p: Staff, consent: Annotated[bool, Form()],
                          photo: Annotated[UploadFile, File()]) -> EnrolmentPhotoPublic:  # fmt: skip
    s = visible_student(db, p, student_id)
    got = _read_photo(request, photo, consent)
    s.face_template, s.photo_sha256 = got.template, got.sha256
    _store_photo(db, "student", s.id, got, p)
    db.commit()
    people_changed(request, s.school_id)
    row = latest_photo(db, "student", s.id)
    assert row is not None
    return _photo_public(row)


@router.get("/students/{student_id}/photo", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the newest enrolment photo"}})
def get_student_photo(student_id: str, db: DB, p: StaffOrStudent) -> Response:
    s = visible_student(db, p, student_id)
    if p.role == ROLE_STUDENT and p.student != s.id:  # visible_student already refuses; explicit for readers
        raise HTTPException(404, {"reason": "not_found", "message": "no such student"})
    return _photo_response(db, "student", s.id, p)
