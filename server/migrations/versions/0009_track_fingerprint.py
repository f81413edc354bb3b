"""track_hash: the fingerprint of each minute's sampled positions (server.validation.track), for replayed tracks

Minutes stored before this revision keep no fingerprint (NULL): they are neither found as copies nor as originals.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("minutes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("track_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_minutes_track_hash"), ["track_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("minutes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_minutes_track_hash"))
        batch_op.drop_column("track_hash")
