"""photos: face checks' evidence photos (stored once by SHA-256) and the server's own face verdicts on them

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "check_photos",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("chain", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"], name=op.f("fk_check_photos_terminal_id_terminals")),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_check_photos")),
    )
    with op.batch_alter_table("check_photos", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_check_photos_terminal_id"), ["terminal_id"], unique=False)
    op.create_table(
        "face_verdicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("chain", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("session", sa.String(length=64), nullable=True),
        sa.Column("person_id", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=True),
        sa.Column("photo_sha256", sa.String(length=64), nullable=False),
        sa.Column("terminal_result", sa.String(length=16), nullable=True),
        sa.Column("terminal_distance", sa.Integer(), nullable=True),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("distance", sa.Integer(), nullable=True),
        sa.Column("other_person", sa.String(length=16), nullable=True),
        sa.Column("other_distance", sa.Integer(), nullable=True),
        sa.Column("duplicate", sa.String(length=8), nullable=True),
        sa.Column("duplicate_of", sa.String(length=128), nullable=True),
        sa.Column("duplicate_distance", sa.Integer(), nullable=True),
        sa.Column("encoding", sa.Text(), nullable=True),
        sa.Column("alarms", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("compute_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"],
                                name=op.f("fk_face_verdicts_terminal_id_terminals")),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_face_verdicts")),
        sa.UniqueConstraint("terminal_id", "chain", "seq", name="uq_face_verdicts_terminal_chain_seq"),
    )
    with op.batch_alter_table("face_verdicts", schema=None) as batch_op:
        batch_op.create_index("ix_face_verdicts_person", ["person_id"], unique=False)
        batch_op.create_index("ix_face_verdicts_session", ["terminal_id", "session"], unique=False)
        batch_op.create_index(batch_op.f("ix_face_verdicts_photo_sha256"), ["photo_sha256"], unique=False)


def downgrade() -> None:
    op.drop_table("face_verdicts")
    op.drop_table("check_photos")
