"""validation: minute status, session distance and reasons, review queue, hash-chained review decisions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("minutes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="unjudged"))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("distance_m", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("reasons", sa.JSON(), nullable=True))
    # Minutes judged before this revision: their status follows their verdict.
    op.execute("UPDATE minutes SET status = 'auto_passed' WHERE valid = true")
    op.execute("UPDATE minutes SET status = 'auto_failed' WHERE valid = false")

    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("session", sa.String(length=64), nullable=False),
        sa.Column("record_no", sa.String(length=26), nullable=True),
        sa.Column("student_id", sa.String(length=16), nullable=False),
        sa.Column("parts", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("records", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
        sa.UniqueConstraint("key", name=op.f("uq_review_items_key")),
    )
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.create_index("ix_review_items_student_status", ["student_id", "status"], unique=False)

    op.create_table(
        "review_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
        sa.UniqueConstraint("hash", name=op.f("uq_review_decisions_hash")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_review_decisions_prev_hash")),
    )
    with op.batch_alter_table("review_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_decisions_target"), ["target"], unique=False)


def downgrade() -> None:
    op.drop_table("review_decisions")
    op.drop_table("review_items")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("reasons")
        batch_op.drop_column("distance_m")
    with op.batch_alter_table("minutes", schema=None) as batch_op:
        batch_op.drop_column("status")
