"""minute indexes: re-judging looks minutes up by chain position (backdating) and by coach and time (overlaps)

Without them every re-judged session scanned the whole minutes table twice: re-validation slowed down with the
table's size (the student's overlaps use ix_minutes_student_part).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("minutes", schema=None) as batch_op:
        batch_op.create_index("ix_minutes_terminal_chain_seq", ["terminal_id", "chain", "seq"], unique=False)
        batch_op.create_index("ix_minutes_coach_start", ["coach_id", "start"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("minutes", schema=None) as batch_op:
        batch_op.drop_index("ix_minutes_coach_start")
        batch_op.drop_index("ix_minutes_terminal_chain_seq")
