"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 12:50:24.828030
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("terminal_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarms_terminal_id"), ["terminal_id"], unique=False)

    op.create_table(
        "hour_totals",
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("licence_class", sa.String(length=4), nullable=False),
        sa.Column("valid_minutes", sa.Integer(), nullable=False),
        sa.Column("required_minutes", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("student_id", "part", name=op.f("pk_hour_totals")),
    )
    op.create_table(
        "rejections",
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("reason", name=op.f("pk_rejections")),
    )
    op.create_table(
        "schools",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schools")),
    )
    op.create_table(
        "stage_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("notice_id", sa.String(length=64), nullable=False),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("notice", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("reply", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_reviews")),
        sa.UniqueConstraint("notice_id", name=op.f("uq_stage_reviews_notice_id")),
    )
    with op.batch_alter_table("stage_reviews", schema=None) as batch_op:
        batch_op.create_index("ix_stage_reviews_status_next", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "coaches",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("face_template", sa.Text(), nullable=False),
        sa.Column("photo_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_coaches_school_id_schools")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coaches")),
    )
    with op.batch_alter_table("coaches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coaches_school_id"), ["school_id"], unique=False)

    op.create_table(
        "students",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("licence_class", sa.String(length=4), nullable=False),
        sa.Column("face_template", sa.Text(), nullable=False),
        sa.Column("photo_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_students_school_id_schools")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_students")),
    )
    with op.batch_alter_table("students", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_students_school_id"), ["school_id"], unique=False)

    op.create_table(
        "terminals",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("car_plate", sa.String(length=32), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_terminals_school_id_schools")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminals")),
    )
    with op.batch_alter_table("terminals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terminals_school_id"), ["school_id"], unique=False)

    op.create_table(
        "chains",
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("chain", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("genesis_hash", sa.String(length=64), nullable=True),
        sa.Column("contiguous_seq", sa.Integer(), nullable=False),
        sa.Column("max_seq", sa.Integer(), nullable=False),
        sa.Column("gap_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_resend_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_ranges", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"], name=op.f("fk_chains_terminal_id_terminals")),
        sa.PrimaryKeyConstraint("terminal_id", "chain", name=op.f("pk_chains")),
    )
    op.create_table(
        "raw_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("chain", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("prev", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"], name=op.f("fk_raw_records_terminal_id_terminals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_records")),
        sa.UniqueConstraint("terminal_id", "chain", "seq", name="uq_raw_records_terminal_chain_seq"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("session", sa.String(length=64), nullable=False),
        sa.Column("student_id", sa.String(length=16), nullable=True),
        sa.Column("coach_id", sa.String(length=16), nullable=True),
        sa.Column("course", sa.String(length=10), nullable=True),
        sa.Column("login_chain", sa.Integer(), nullable=True),
        sa.Column("login_seq", sa.Integer(), nullable=True),
        sa.Column("logout_chain", sa.Integer(), nullable=True),
        sa.Column("logout_seq", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("declared_minutes", sa.Integer(), nullable=True),
        sa.Column("minutes_count", sa.Integer(), nullable=False),
        sa.Column("valid_minutes", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"], name=op.f("fk_sessions_terminal_id_terminals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("terminal_id", "session", name="uq_sessions_terminal_session"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_student_id"), ["student_id"], unique=False)

    op.create_table(
        "minutes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("record_no", sa.String(length=26), nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("chain", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("coach_id", sa.String(length=16), nullable=False),
        sa.Column("course", sa.String(length=10), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("judged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name=op.f("fk_minutes_session_id_sessions")),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"], name=op.f("fk_minutes_terminal_id_terminals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_minutes")),
        sa.UniqueConstraint("record_no", name=op.f("uq_minutes_record_no")),
    )
    with op.batch_alter_table("minutes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_minutes_session_id"), ["session_id"], unique=False)
        batch_op.create_index("ix_minutes_student_part", ["student_id", "part"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("minutes", schema=None) as batch_op:
        batch_op.drop_index("ix_minutes_student_part")
        batch_op.drop_index(batch_op.f("ix_minutes_session_id"))

    op.drop_table("minutes")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_student_id"))

    op.drop_table("sessions")
    op.drop_table("raw_records")
    op.drop_table("chains")
    with op.batch_alter_table("terminals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_terminals_school_id"))

    op.drop_table("terminals")
    with op.batch_alter_table("students", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_students_school_id"))

    op.drop_table("students")
    with op.batch_alter_table("coaches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coaches_school_id"))

    op.drop_table("coaches")
    with op.batch_alter_table("stage_reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_stage_reviews_status_next")

    op.drop_table("stage_reviews")
    op.drop_table("schools")
    op.drop_table("rejections")
    op.drop_table("hour_totals")
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarms_terminal_id"))
        batch_op.drop_index(batch_op.f("ix_alarms_kind"))

    op.drop_table("alarms")
