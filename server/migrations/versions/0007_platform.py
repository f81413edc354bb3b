"""platform: enrolments and escrow (double-entry ledger in fen, bank instructions and callbacks, reconciliation),
booking slots, ratings, complaints, exam results

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bank_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("txn_id", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_bank_events")),
    )
    op.create_table(
        "escrow_accounts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=16), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind = 'external' OR balance >= 0", name=op.f("ck_escrow_accounts_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escrow_accounts")),
    )
    with op.batch_alter_table("escrow_accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_escrow_accounts_owner"), ["owner"], unique=False)

    op.create_table(
        "exam_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source_seq", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=True),
        sa.Column("coach_id", sa.String(length=16), nullable=True),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("sat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exam_results")),
        sa.UniqueConstraint("source_seq", name=op.f("uq_exam_results_source_seq")),
    )
    with op.batch_alter_table("exam_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exam_results_coach_id"), ["coach_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_exam_results_school_id"), ["school_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_exam_results_student_id"), ["student_id"], unique=False)

    op.create_table(
        "reconciliations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("statement_lines", sa.Integer(), nullable=False),
        sa.Column("ledger_lines", sa.Integer(), nullable=False),
        sa.Column("differences", sa.JSON(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliations")),
    )
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reconciliations_day"), ["day"], unique=False)

    op.create_table(
        "complaints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("assigned_to", sa.String(length=64), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assign_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answer_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_complaints_school_id_schools")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_complaints")),
    )
    with op.batch_alter_table("complaints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_complaints_school_id"), ["school_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_complaints_student_id"), ["student_id"], unique=False)

    op.create_table(
        "school_offers",
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("licence_class", sa.String(length=4), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("price_fen > 0", name=op.f("ck_school_offers_price_positive")),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_school_offers_school_id_schools")),
        sa.PrimaryKeyConstraint("school_id", "licence_class", name=op.f("pk_school_offers")),
    )
    op.create_table(
        "enrolments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("licence_class", sa.String(length=4), nullable=False),
        sa.Column("fee_fen", sa.BigInteger(), nullable=False),
        sa.Column("allocation", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("fee_fen > 0", name=op.f("ck_enrolments_fee_positive")),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_enrolments_school_id_schools")),
        sa.ForeignKeyConstraint(["student_id"], ["students.id"], name=op.f("fk_enrolments_student_id_students")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolments")),
    )
    with op.batch_alter_table("enrolments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrolments_school_id"), ["school_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_enrolments_student_id"), ["student_id"], unique=False)

    op.create_table(
        "slots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("coach_id", sa.String(length=16), nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("coach_no_show", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("capacity >= 1", name=op.f("ck_slots_capacity_positive")),
        sa.ForeignKeyConstraint(["coach_id"], ["coaches.id"], name=op.f("fk_slots_coach_id_coaches")),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_slots_school_id_schools")),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"], name=op.f("fk_slots_terminal_id_terminals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slots")),
        sa.UniqueConstraint("terminal_id", "starts_at", name="uq_slots_terminal_start"),
    )
    with op.batch_alter_table("slots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slots_school_id"), ["school_id"], unique=False)

    op.create_table(
        "bank_instructions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("enrolment_id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("notice_id", sa.String(length=64), nullable=True),
        sa.Column("records_digest", sa.String(length=64), nullable=True),
        sa.Column("bank_txn", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_bank_instructions_amount_positive")),
        sa.ForeignKeyConstraint(
            ["enrolment_id"], ["enrolments.id"], name=op.f("fk_bank_instructions_enrolment_id_enrolments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_instructions")),
        sa.UniqueConstraint("key", name=op.f("uq_bank_instructions_key")),
    )
    with op.batch_alter_table("bank_instructions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bank_instructions_enrolment_id"), ["enrolment_id"], unique=False)
        batch_op.create_index("ix_bank_instructions_status_next", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "bookings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("slot_id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name=op.f("fk_bookings_session_id_sessions")),
        sa.ForeignKeyConstraint(["slot_id"], ["slots.id"], name=op.f("fk_bookings_slot_id_slots")),
        sa.ForeignKeyConstraint(["student_id"], ["students.id"], name=op.f("fk_bookings_student_id_students")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
        sa.UniqueConstraint("slot_id", "student_id", name="uq_bookings_slot_student"),
    )
    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bookings_slot_id"), ["slot_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_bookings_student_id"), ["student_id"], unique=False)

    op.create_table(
        "escrow_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("enrolment_id", sa.Integer(), nullable=True),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=True),
        sa.Column("event", sa.String(length=32), nullable=True),
        sa.Column("instruction_key", sa.String(length=160), nullable=True),
        sa.Column("notice_id", sa.String(length=64), nullable=True),
        sa.Column("records_digest", sa.String(length=64), nullable=True),
        sa.Column("bank_txn", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_escrow_entries_amount_positive")),
        sa.ForeignKeyConstraint(
            ["enrolment_id"], ["enrolments.id"], name=op.f("fk_escrow_entries_enrolment_id_enrolments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escrow_entries")),
        sa.UniqueConstraint("key", name=op.f("uq_escrow_entries_key")),
    )
    with op.batch_alter_table("escrow_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_escrow_entries_bank_txn"), ["bank_txn"], unique=False)
        batch_op.create_index(batch_op.f("ix_escrow_entries_enrolment_id"), ["enrolment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_escrow_entries_student_id"), ["student_id"], unique=False)

    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("coach_id", sa.String(length=16), nullable=True),
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("stars", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("stars >= 1 AND stars <= 5", name=op.f("ck_ratings_stars_1_to_5")),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name=op.f("fk_ratings_session_id_sessions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ratings")),
        sa.UniqueConstraint("session_id", name=op.f("uq_ratings_session_id")),
    )
    with op.batch_alter_table("ratings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ratings_coach_id"), ["coach_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ratings_school_id"), ["school_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ratings_student_id"), ["student_id"], unique=False)

    op.create_table(
        "escrow_legs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_escrow_legs_amount_nonzero")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["escrow_accounts.id"], name=op.f("fk_escrow_legs_account_id_escrow_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["escrow_entries.id"], name=op.f("fk_escrow_legs_entry_id_escrow_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escrow_legs")),
    )
    with op.batch_alter_table("escrow_legs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_escrow_legs_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_escrow_legs_entry_id"), ["entry_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("escrow_legs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_escrow_legs_entry_id"))
        batch_op.drop_index(batch_op.f("ix_escrow_legs_account_id"))

    op.drop_table("escrow_legs")
    with op.batch_alter_table("ratings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ratings_student_id"))
        batch_op.drop_index(batch_op.f("ix_ratings_school_id"))
        batch_op.drop_index(batch_op.f("ix_ratings_coach_id"))

    op.drop_table("ratings")
    with op.batch_alter_table("escrow_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_escrow_entries_student_id"))
        batch_op.drop_index(batch_op.f("ix_escrow_entries_enrolment_id"))
        batch_op.drop_index(batch_op.f("ix_escrow_entries_bank_txn"))

    op.drop_table("escrow_entries")
    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bookings_student_id"))
        batch_op.drop_index(batch_op.f("ix_bookings_slot_id"))

    op.drop_table("bookings")
    with op.batch_alter_table("bank_instructions", schema=None) as batch_op:
        batch_op.drop_index("ix_bank_instructions_status_next")
        batch_op.drop_index(batch_op.f("ix_bank_instructions_enrolment_id"))

    op.drop_table("bank_instructions")
    with op.batch_alter_table("slots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slots_school_id"))

    op.drop_table("slots")
    with op.batch_alter_table("enrolments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrolments_student_id"))
        batch_op.drop_index(batch_op.f("ix_enrolments_school_id"))

    op.drop_table("enrolments")
    op.drop_table("school_offers")
    with op.batch_alter_table("complaints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_complaints_student_id"))
        batch_op.drop_index(batch_op.f("ix_complaints_school_id"))

    op.drop_table("complaints")
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reconciliations_day"))

    op.drop_table("reconciliations")
    with op.batch_alter_table("exam_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exam_results_student_id"))
        batch_op.drop_index(batch_op.f("ix_exam_results_school_id"))
        batch_op.drop_index(batch_op.f("ix_exam_results_coach_id"))

    op.drop_table("exam_results")
    with op.batch_alter_table("escrow_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_escrow_accounts_owner"))

    op.drop_table("escrow_accounts")
    op.drop_table("bank_events")
