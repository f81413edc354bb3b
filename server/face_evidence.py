"""The server's own findings about a session's photos, as the session audit reads them (read-only).

:mod:`server.photos` writes one :class:`~server.models.FaceVerdict` per re-checked photo: its verdict and, when the
photo copies one the server checked before it, a link ``duplicate_of``. Which of two copies links to the other
depends on which was checked first; the audit wants what the stored set says (the later photo is the copy,
:func:`server.validation.session.copied_refs`), so this reads the group of copies that a session's photos belong
to, following links of the policy's decisive kinds both ways, until each of the session's photos is known to copy an
earlier one or the group is read (at most :data:`MAX_COPY_GROUP` photos). A session without copies costs one query
more than its verdicts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from firmware_protocols.jt808.training import PHOTO_STUDENT_LOGIN, PHOTO_STUDENT_LOGOUT
from server.models import FaceVerdict
from server.policy import DUPLICATE_KINDS
from server.validation.session import CHECK, SIGN_IN, SIGN_OUT, PhotoCopy, copied_refs

#: Photos of one group of copies read for a session. An emulator's one picture reused all day makes a group of a few
#: hundred; following the links from the session's photos reaches the earlier copies first, which is all the audit
#: needs to see that the session's photo is not the original.
MAX_COPY_GROUP = 256
#: Refs per ``IN (…)`` (well below every engine's limit on bound parameters).
REF_CHUNK = 200

_COLUMNS = (FaceVerdict.id, FaceVerdict.terminal_id, FaceVerdict.chain, FaceVerdict.seq, FaceVerdict.session,
            FaceVerdict.at, FaceVerdict.verdict, FaceVerdict.photo_sha256, FaceVerdict.duplicate,
            FaceVerdict.duplicate_of)  # fmt: skip


def ref_of(terminal: str, chain: int, seq: int) -> str:
    """A photo's place as :mod:`server.photos` names it in ``duplicate_of``: the face check that names it."""
    return f"{terminal}/{chain}/{seq}"


def photo_kind(body: dict[str, Any]) -> str:
    """What a ``face_check`` was taken for: our agents say ``trigger``, national terminals the photo ``event``."""
    trigger, event = body.get("trigger"), body.get("event")
    if trigger == "login" or event == PHOTO_STUDENT_LOGIN:
        return SIGN_IN
    if trigger == "logout" or event == PHOTO_STUDENT_LOGOUT:
        return SIGN_OUT
    return CHECK


@dataclass(frozen=True)
class Finding:
    """The server's verdict on one photo and the photo's ref."""

    verdict: str
    ref: str


@dataclass(frozen=True)
class SessionFindings:
    """The server's verdicts on a session's photos (by the face check's chain and seq, and by photo SHA-256) and the
    copy links of the groups they belong to."""

    by_place: dict[tuple[int, int], Finding] = field(default_factory=dict)
    by_photo: dict[str, Finding] = field(default_factory=dict)
    copies: tuple[PhotoCopy, ...] = ()

    def at(self, chain: int, seq: int) -> Finding | None:
        return self.by_place.get((chain, seq))

    def named(self, photo: object) -> Finding | None:
        return self.by_photo.get(photo) if isinstance(photo, str) else None


def session_findings(s: Session, terminal: str, session: str,
                     kinds: Collection[str] = DUPLICATE_KINDS) -> SessionFindings:  # fmt: skip
    """What the server found about the photos of one session (nothing when none was re-checked yet); copy links of
    ``kinds`` only (the policy's decisive ones: the others do not change a verdict)."""
    rows = s.execute(select(*_COLUMNS).where(FaceVerdict.terminal_id == terminal,
                                             FaceVerdict.session == session)).all()  # fmt: skip
    if not rows:
        return SessionFindings()
    by_place = {(r.chain, r.seq): Finding(r.verdict, ref_of(r.terminal_id, r.chain, r.seq)) for r in rows}
    by_photo = {r.photo_sha256: by_place[(r.chain, r.seq)] for r in sorted(rows, key=lambda r: (r.chain, r.seq))}
    return SessionFindings(by_place, by_photo, tuple(_copies(_group(s, rows, kinds, settle=True))))


def sessions_to_rejudge(s: Session, terminal: str, chain: int, seq: int) -> set[tuple[str, str]]:
    """(terminal, session) whose verdicts a new verdict at (terminal, chain, seq) may change: its own session and,
    when it is a copy of a photo taken *after* it (a photo checked late), every session of its group: the group's
    original may be another photo now. A copy of an earlier photo changes nothing but its own session."""
    rows = s.execute(select(*_COLUMNS).where(FaceVerdict.terminal_id == terminal, FaceVerdict.chain == chain,
                                             FaceVerdict.seq == seq)).all()  # fmt: skip
    own = {(r.terminal_id, r.session) for r in rows if r.session is not None}
    target = _place(rows[0].duplicate_of) if rows and rows[0].duplicate else None
    if target is None:
        return own
    of = s.execute(select(FaceVerdict.at).where(FaceVerdict.terminal_id == target[0], FaceVerdict.chain == target[1],
                                                FaceVerdict.seq == target[2])).first()  # fmt: skip
    if of is not None and (of.at, rows[0].duplicate_of) < (rows[0].at, ref_of(terminal, chain, seq)):
        return own
    group = _group(s, rows, DUPLICATE_KINDS, settle=False)
    return own | {(r.terminal_id, r.session) for r in group.values() if r.session is not None}


def _group(s: Session, start: Sequence[Any], kinds: Collection[str], *, settle: bool) -> dict[str, Any]:
    """The verdict rows joined to ``start`` by copy links of ``kinds``, both ways (ref → row), at most
    :data:`MAX_COPY_GROUP`. ``settle``: stop once every photo of ``start`` is known to copy an earlier one (more of
    the group cannot change that), so a session of copies is read in a round or two."""
    wanted_kinds = sorted(set(kinds))
    rows = {ref_of(r.terminal_id, r.chain, r.seq): r for r in start}
    frontier = list(start)
    mine = set(rows)
    while frontier and len(rows) < MAX_COPY_GROUP and wanted_kinds:
        if settle and mine <= copied_refs(_copies(rows), wanted_kinds):
            break
        found: list[Any] = []
        wanted = sorted({r.duplicate_of for r in frontier if r.duplicate in wanted_kinds and r.duplicate_of
                         and r.duplicate_of not in rows})  # fmt: skip
        for i in range(0, len(wanted), REF_CHUNK):  # the photos these copy
            places = [p for p in (_place(ref) for ref in wanted[i : i + REF_CHUNK]) if p is not None]
            if places:
                found += s.execute(select(*_COLUMNS).where(or_(*(
                    and_(FaceVerdict.terminal_id == t, FaceVerdict.chain == c, FaceVerdict.seq == q)
                    for t, c, q in places)))).all()  # fmt: skip
        refs = sorted(ref_of(r.terminal_id, r.chain, r.seq) for r in frontier)
        low = min(r.id for r in frontier)  # a copy was checked after what it copies: its id is higher
        for i in range(0, len(refs), REF_CHUNK):  # the photos that copy these
            copying = FaceVerdict.duplicate_of.in_(refs[i : i + REF_CHUNK])
            found += s.execute(select(*_COLUMNS).where(FaceVerdict.id > low, FaceVerdict.duplicate.in_(wanted_kinds),
                                                       copying)).all()  # fmt: skip
        frontier = []
        for r in found:
            ref = ref_of(r.terminal_id, r.chain, r.seq)
            if ref not in rows and len(rows) < MAX_COPY_GROUP:
                rows[ref] = r
                frontier.append(r)
    return rows


def _copies(rows: dict[str, Any]) -> list[PhotoCopy]:
    out = []
    for ref, r in sorted(rows.items()):
        of = rows.get(r.duplicate_of) if r.duplicate else None
        if of is not None:
            out.append(PhotoCopy(ref, r.at, r.duplicate_of, of.at, r.duplicate))
    return out


def _place(ref: str) -> tuple[str, int, int] | None:
    terminal, _, rest = ref.partition("/")
    chain, _, seq = rest.partition("/")
    try:
        return terminal, int(chain), int(seq)
    except ValueError:
        return None
